//! The one place vtorc reads a clock.
//!
//! Decisions take `now` as a parameter (STYLE rule 8); the code that calls
//! them reads it here. `std::time::Instant::now`, `tokio::time::Instant::now`
//! and `std::time::SystemTime::now` are banned everywhere else by
//! `clippy.toml` (`disallowed-methods`), so every read of the current time
//! is a call to this module and easy to find. `Instant::elapsed` still
//! reads the clock implicitly; it is allowed for measuring durations (logs,
//! metrics, timeouts), never for a decision's `now`. The `integration`
//! crate has its own `clippy.toml` without the ban.

use std::time::SystemTime;

use tokio::time::Instant;

/// The monotonic time now, for deadlines, timings and `analyze`'s `now`.
/// It is tokio's clock, so it follows a paused runtime in tests
/// (`start_paused`, `tokio::time::advance`); outside a runtime it is the
/// system's monotonic clock.
#[allow(clippy::disallowed_methods)] // the sanctioned reader
pub fn now() -> Instant {
    Instant::now()
}

/// The wall-clock time now, for facts other processes read (lock contents,
/// journal rows, audit and event timestamps). Nothing is scheduled from it.
#[allow(clippy::disallowed_methods)] // the sanctioned reader
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}
