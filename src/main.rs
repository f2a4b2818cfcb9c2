//! The `vtorc` binary: parse the configuration, start logging, run.

use std::process::ExitCode;

use vtorc::config::{Config, LoadError};

fn main() -> ExitCode {
    let config = match Config::load(std::env::args_os()) {
        Ok(config) => config,
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
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vtorc::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("vtorc failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
