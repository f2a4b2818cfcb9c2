//! The `vtorc` binary: parse the configuration, start logging, run.

use std::process::ExitCode;
use std::time::Duration;

use vtorc::config::{Config, LoadError};

/// How long the runtime's leftover tasks may take to end after `run` returns.
const RUNTIME_STOP_GRACE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let (config, source) = match Config::load_with_source(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Cli(e)) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line naming the option, e.g. "invalid value '-5s' for '--instance-poll-time ...'".
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("vtorc: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(LoadError::Config(e)) => {
            eprintln!("vtorc: {e}");
            return ExitCode::from(2);
        }
    };
    vtorc::telemetry::init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vtorc: failed to start the async runtime: {e}");
            vtorc::telemetry::shutdown();
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(vtorc::app::run_with_source(config, Some(source))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("vtorc failed: {e:#}");
            ExitCode::FAILURE
        }
    };
    // `run` has stopped everything gracefully; whatever task is left gets a
    // bounded time to end (a plain drop would wait for blocking tasks forever).
    runtime.shutdown_timeout(RUNTIME_STOP_GRACE);
    // Export the last batch of spans, including those the runtime's drop ended
    // (bounded; a no-op when telemetry was not set up).
    vtorc::telemetry::shutdown();
    code
}
