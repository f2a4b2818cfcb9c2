//! Logging (and, later, metrics and OpenTelemetry traces).
//!
//! Log levels carry operational meaning: ERROR = a recovery failed or vtorc
//! cannot do its job; WARN = a problem was detected or an operation was
//! refused; INFO = a recovery or lifecycle step; DEBUG = per-poll detail.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, overrides
/// `--log-level`.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true)).try_init(),
    };
    if let Err(e) = result {
        eprintln!("vtorc: logging was already initialised: {e}");
    }
}
