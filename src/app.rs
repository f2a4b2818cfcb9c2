//! The process around the runtime: signals in, graceful stop out.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs vtorc with a validated configuration until SIGTERM or Ctrl-C, then
/// stops gracefully (see [`crate::runtime::run`] for the shutdown order).
pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        topo = ?config.topo_global_server_address,
        root = %config.topo_global_root,
        cell = %config.cell,
        "vtorc starting"
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested (SIGTERM or Ctrl-C)");
        on_signal.cancel();
    });
    let result = crate::runtime::run(config, shutdown).await;
    signals.abort();
    tracing::info!("vtorc stopped");
    result
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
