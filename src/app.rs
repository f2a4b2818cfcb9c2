//! The process around the runtime: signals in, graceful stop out.

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigSource};

/// Runs vtorc with a validated configuration until SIGTERM or Ctrl-C, then
/// stops gracefully (see [`crate::runtime::run`] for the shutdown order).
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_with_source(config, None).await
}

/// [`run`], watching the config file of `source` for dynamic keys. Logs the
/// start-up notes (flags accepted without effect, deprecated spellings) and
/// writes `--pid-file` (removed again at a graceful stop).
pub async fn run_with_source(config: Config, source: Option<ConfigSource>) -> anyhow::Result<()> {
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    if let Some(file) = &config.config_file {
        tracing::info!(file = %file.display(), "config file");
    }
    let pid_file = config.pid_file.clone();
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("--pid-file {}: {e}", path.display()))?;
    }
    let result = run_inner(config, source).await;
    if let Some(path) = &pid_file
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!("could not remove --pid-file {}: {e}", path.display());
    }
    result
}

async fn run_inner(config: Config, source: Option<ConfigSource>) -> anyhow::Result<()> {
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
    let result = crate::runtime::run_with_source(config, source, shutdown).await;
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
