//! The step log of a reparent: what vtctld returns as `repeated
//! logutil.Event events` and what the recovery audit stores as recovery steps.
//!
//! Every entry is also emitted through `tracing` (inside the phase span) at
//! the matching level, so the log and the process log tell the same story.

use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto::{logutil, vttime};

/// A wall clock for event timestamps and reparent-journal times; tests
/// pass a fixed one.
pub type WallClock = fn() -> SystemTime;

/// The system wall clock. Event times and the reparent journal's
/// `time_created_ns` are wall-clock facts other processes read; nothing is
/// scheduled from them.
pub fn system_wall_clock() -> SystemTime {
    crate::clock::wall_now()
}

/// Severity of an entry (Vitess's `logutil.Level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventLevel {
    /// Progress.
    Info,
    /// Something went wrong but the reparent goes on (or a refusal).
    Warning,
    /// The reparent failed.
    Error,
}

impl EventLevel {
    fn proto(self) -> logutil::Level {
        match self {
            EventLevel::Info => logutil::Level::Info,
            EventLevel::Warning => logutil::Level::Warning,
            EventLevel::Error => logutil::Level::Error,
        }
    }
}

/// One entry of the step log.
#[derive(Clone, Debug, PartialEq)]
pub struct ReparentEvent {
    /// When it was logged (wall clock).
    pub time: SystemTime,
    /// Severity.
    pub level: EventLevel,
    /// The phase it was logged in (`stop_replication`, `promote`, …), or
    /// `None` before the first phase.
    pub phase: Option<&'static str>,
    /// Source file of the log call (Vitess fills `file`/`line` the same way).
    pub file: &'static str,
    /// Source line of the log call.
    pub line: u32,
    /// The message.
    pub message: String,
}

impl ReparentEvent {
    /// As Vitess's `logutil.Event` (file = base name, as Vitess prints it).
    pub fn to_proto(&self) -> logutil::Event {
        let since = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        logutil::Event {
            time: Some(vttime::Time {
                seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                nanoseconds: i32::try_from(since.subsec_nanos()).unwrap_or(0),
            }),
            level: self.level.proto() as i32,
            file: self.file.rsplit('/').next().unwrap_or(self.file).to_string(),
            line: i64::from(self.line),
            value: self.message.clone(),
        }
    }
}

/// Shared state of an [`EventLog`].
#[derive(Debug, Default)]
struct LogState {
    /// Entries in order.
    events: Vec<ReparentEvent>,
    /// The phase new entries are tagged with.
    phase: Option<&'static str>,
}

/// An append-only step log, cheap to clone (clones share the entries). The
/// caller creates it and keeps it, so the entries survive a failed reparent.
#[derive(Clone, Debug)]
pub struct EventLog {
    /// Entries and current phase. A `std::sync::Mutex`: held only to push or
    /// copy, never across an `.await`.
    state: Arc<Mutex<LogState>>,
    /// Clock for the timestamps.
    clock: WallClock,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(system_wall_clock)
    }
}

impl EventLog {
    /// An empty log stamping entries with `clock`.
    pub fn new(clock: WallClock) -> Self {
        EventLog {
            state: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tags the following entries with `phase`.
    pub fn set_phase(&self, phase: &'static str) {
        self.lock().phase = Some(phase);
    }

    #[track_caller]
    fn push(&self, level: EventLevel, message: String) {
        let location = Location::caller();
        let phase = {
            let mut state = self.lock();
            let phase = state.phase;
            state.events.push(ReparentEvent {
                time: (self.clock)(),
                level,
                phase,
                file: location.file(),
                line: location.line(),
                message: message.clone(),
            });
            phase
        };
        let phase = phase.unwrap_or("");
        match level {
            EventLevel::Info => tracing::info!(phase, "{message}"),
            EventLevel::Warning => tracing::warn!(phase, "{message}"),
            EventLevel::Error => tracing::error!(phase, "{message}"),
        }
    }

    /// Logs progress.
    #[track_caller]
    pub fn info(&self, message: impl Into<String>) {
        self.push(EventLevel::Info, message.into());
    }

    /// Logs a problem the reparent survives, or a refusal.
    #[track_caller]
    pub fn warn(&self, message: impl Into<String>) {
        self.push(EventLevel::Warning, message.into());
    }

    /// Logs the failure of the reparent.
    #[track_caller]
    pub fn error(&self, message: impl Into<String>) {
        self.push(EventLevel::Error, message.into());
    }

    /// A copy of the entries so far.
    pub fn events(&self) -> Vec<ReparentEvent> {
        self.lock().events.clone()
    }

    /// The entries as Vitess `logutil.Event`s.
    pub fn to_proto(&self) -> Vec<logutil::Event> {
        self.lock().events.iter().map(ReparentEvent::to_proto).collect()
    }

    /// The messages only, in order (handy for audits and tests).
    pub fn messages(&self) -> Vec<String> {
        self.lock().events.iter().map(|e| e.message.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_764_000_000, 250)
    }

    #[test]
    fn entries_carry_phase_level_time_and_caller() {
        let log = EventLog::new(fixed);
        log.info("will initiate emergency reparent");
        log.set_phase("stop_replication");
        log.warn("tablet zone1-0000000100 unreachable");
        let events = log.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].phase, None);
        assert_eq!(events[1].phase, Some("stop_replication"));
        assert_eq!(events[1].level, EventLevel::Warning);
        assert!(events[1].file.ends_with("events.rs"), "{}", events[1].file);
        let proto = log.to_proto();
        assert_eq!(proto[1].level, logutil::Level::Warning as i32);
        assert_eq!(proto[1].file, "events.rs");
        assert_eq!(
            proto[1].time,
            Some(vttime::Time {
                seconds: 1_764_000_000,
                nanoseconds: 250
            })
        );
        assert_eq!(proto[1].value, "tablet zone1-0000000100 unreachable");
    }

    #[test]
    fn clones_share_the_entries() {
        let log = EventLog::new(fixed);
        let other = log.clone();
        other.info("from a clone");
        assert_eq!(log.messages(), vec!["from a clone".to_string()]);
    }
}
