//! Wires the modules together and runs until SIGTERM / Ctrl-C.

use crate::config::Config;

/// Runs vtorc with a validated configuration until it is asked to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        topo = ?config.topo_global_server_address,
        root = %config.topo_global_root,
        "vtorc starting"
    );
    shutdown_signal().await;
    tracing::info!("vtorc stopping");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
