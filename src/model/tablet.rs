//! One tablet: its topo record, its last observation and how polls went.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::TopoTime;
use super::health::{PeerHealthReport, PrimaryHealthWindow};
use super::observation::Observation;
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};

/// Times of a tablet's polls (Go VTOrc's `last_checked` / `last_seen` /
/// `last_attempted_check`). `None` = never happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollTimes {
    /// When the last poll finished, successfully or not.
    pub last_checked: Option<Instant>,
    /// When the last *successful* poll finished.
    pub last_seen: Option<Instant>,
    /// When a poll was last started and still running after a while (a
    /// possibly hung poll), or when the last successful poll finished.
    pub last_attempted_check: Option<Instant>,
    /// The last poll got a FullStatus but then failed (Go's
    /// `last_check_partial_success`; also set by a successful poll).
    pub partial_success: bool,
}

impl PollTimes {
    /// Go VTOrc's `LastCheckValid`: a successful poll is the latest one
    /// (`last_checked <= last_seen`) and no poll has hung for more than
    /// `poll_time` since (`last_attempted_check <= last_seen + poll_time`).
    /// False if the tablet was never reached.
    pub fn last_check_valid(&self, poll_time: Duration) -> bool {
        let Some(seen) = self.last_seen else {
            return false;
        };
        self.last_checked.is_none_or(|c| c <= seen)
            && self.last_attempted_check.is_none_or(|a| a <= seen + poll_time)
    }

    /// The looser test Go VTOrc applies to replicas when counting valid ones:
    /// only `last_checked <= last_seen`.
    pub fn last_poll_succeeded(&self) -> bool {
        match (self.last_checked, self.last_seen) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(c), Some(s)) => c <= s,
        }
    }
}

/// Whether VTOrc can currently reach a tablet, for APIs and logs. Analysis
/// uses [`PollTimes`] (Go VTOrc's exact rule); both are updated together by
/// the `record_poll_*` methods so they cannot disagree about the latest poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// No poll has finished yet.
    #[default]
    Unknown,
    /// The latest poll succeeded; polls have succeeded since `since`.
    Reachable {
        /// First success of the current run of successes.
        since: Instant,
    },
    /// The latest poll failed; polls have failed since `since`.
    Unreachable {
        /// First failure of the current run of failures.
        since: Instant,
        /// Why the latest poll failed.
        reason: String,
    },
}

/// What the tablet's `StreamHealth` stream last said; discovery keeps it
/// current. Analysis decides on polls ([`PollTimes`]); this is the stream's
/// faster view (a change triggers a poll), for APIs and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StreamHealth {
    /// No health message yet (stream not open yet).
    #[default]
    Unknown,
    /// The last message had no health error. `serving`: the tablet serves
    /// queries (false is normal for e.g. DRAINED or a demoted primary).
    Healthy {
        /// First healthy message of the current run.
        since: Instant,
        /// The message's `serving` flag.
        serving: bool,
    },
    /// The last message carried a health error (e.g. MySQL unreachable).
    Unhealthy {
        /// First unhealthy message of the current run.
        since: Instant,
        /// The health error text.
        reason: String,
    },
    /// The stream broke or cannot be opened (tablet process gone or unreachable).
    Unreachable {
        /// When the stream broke.
        since: Instant,
        /// Why.
        reason: String,
    },
}

/// A replica's heartbeat lag as its health stream last reported it
/// (`realtime_stats.replication_lag_seconds`). With vttablet's
/// `--heartbeat-enable` this is the time since the replica last applied a
/// heartbeat the primary wrote: how long it has not heard from the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Reported lag, whole seconds (truncated, as vttablet sends it).
    pub lag_seconds: u32,
    /// When vtorc received the report.
    pub at: Instant,
}

/// One tablet as VTOrc knows it.
#[derive(Clone, Debug)]
pub struct TabletState {
    /// The topo tablet record.
    pub tablet: Tablet,
    /// The last successful poll; `None` = never reached since VTOrc started
    /// or since the tablet appeared (Go: no `database_instance` row, "invalid").
    pub observation: Option<Arc<Observation>>,
    /// Poll times (drive "last check valid").
    pub poll: PollTimes,
    /// Current reachability (see [`Reachability`]).
    pub reachability: Reachability,
    /// The latest poll (successful or not) reported a stalled disk.
    pub disk_stalled: bool,
    /// Outcomes of polls made while the tablet was the shard's PRIMARY.
    pub primary_health: PrimaryHealthWindow,
    /// The latest shard-peer health report this tablet sent (v25); `None` = none.
    pub peer_health: Option<Arc<PeerHealthReport>>,
    /// What the health stream last said.
    pub stream_health: StreamHealth,
    /// The latest error-free health report of a non-primary (its heartbeat
    /// lag); `None` = none yet, or the latest report carried an error.
    pub heartbeat: Option<HeartbeatReport>,
    /// Since when every failed check found nothing listening on the
    /// tablet's gRPC port (connection refused: the host answers, the tablet
    /// server is down); `None` = the tablet answers, or fails otherwise.
    pub server_down_since: Option<Instant>,
}

impl TabletState {
    /// A tablet known from the topo, not polled yet.
    pub fn new(tablet: Tablet) -> Self {
        TabletState {
            tablet,
            observation: None,
            poll: PollTimes::default(),
            reachability: Reachability::Unknown,
            disk_stalled: false,
            primary_health: PrimaryHealthWindow::default(),
            peer_health: None,
            stream_health: StreamHealth::Unknown,
            heartbeat: None,
            server_down_since: None,
        }
    }

    /// The tablet's alias (a record without one sorts as the empty alias).
    pub fn alias(&self) -> &TabletAlias {
        static EMPTY: TabletAlias = TabletAlias {
            cell: String::new(),
            uid: 0,
        };
        self.tablet.alias.as_ref().unwrap_or(&EMPTY)
    }

    /// The topo tablet type.
    pub fn tablet_type(&self) -> TabletType {
        self.tablet.r#type()
    }

    /// The topo `primary_term_start_time` (`None` = not set).
    pub fn primary_term_start(&self) -> Option<TopoTime> {
        TopoTime::from_proto(self.tablet.primary_term_start_time.as_ref())
    }

    /// Whether the topo record marks a graceful vttablet shutdown.
    pub fn is_shut_down(&self) -> bool {
        self.tablet.tablet_shutdown_time.is_some()
    }

    /// A poll was started at some earlier time and is still running at `now`
    /// (Go writes `last_attempted_check` when a poll takes over a second).
    pub fn record_poll_in_progress(&mut self, now: Instant) {
        self.poll.last_attempted_check = Some(now);
    }

    /// A poll finished successfully at `now` with `observation`.
    pub fn record_poll_success(&mut self, now: Instant, observation: Observation) {
        self.disk_stalled = observation.disk_stalled;
        self.observation = Some(Arc::new(observation));
        self.poll.last_checked = Some(now);
        self.poll.last_seen = Some(now);
        self.poll.last_attempted_check = Some(now);
        self.poll.partial_success = true;
        self.server_down_since = None;
        if !matches!(self.reachability, Reachability::Reachable { .. }) {
            self.reachability = Reachability::Reachable { since: now };
        }
    }

    /// A poll failed at `now`. `partial_success`: a FullStatus was obtained
    /// before the failure; `disk_stalled`: the failure is a stalled disk.
    /// The previous observation is kept (it is what VTOrc last knew).
    pub fn record_poll_failure(
        &mut self,
        now: Instant,
        reason: String,
        partial_success: bool,
        disk_stalled: bool,
    ) {
        self.poll.last_checked = Some(now);
        self.poll.partial_success = partial_success;
        self.disk_stalled = disk_stalled;
        let since = match &self.reachability {
            Reachability::Unreachable { since, .. } => *since,
            _ => now,
        };
        self.reachability = Reachability::Unreachable { since, reason };
    }

    /// A liveness check (a `Ping` of the primary, or its health stream
    /// breaking) failed at `now`: like a failed poll for "last check valid"
    /// and reachability, without touching what the last poll learnt (disk,
    /// partial success). `refused`: nothing listens on the tablet's port.
    pub fn record_check_failure(&mut self, now: Instant, reason: String, refused: bool) {
        self.poll.last_checked = Some(now);
        self.note_refused(now, refused);
        let since = match &self.reachability {
            Reachability::Unreachable { since, .. } => *since,
            _ => now,
        };
        self.reachability = Reachability::Unreachable { since, reason };
    }

    /// Keeps [`TabletState::server_down_since`] current after a failure.
    pub fn note_refused(&mut self, now: Instant, refused: bool) {
        if refused {
            self.server_down_since.get_or_insert(now);
        } else {
            self.server_down_since = None;
        }
    }

    /// Since when vtorc has been unable to reach the tablet (its latest
    /// check failed); `None` = reachable or never checked.
    pub fn unreachable_since(&self) -> Option<Instant> {
        match &self.reachability {
            Reachability::Unreachable { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// The observation, mutable (copy-on-write if shared). `None` if never reached.
    pub fn observation_mut(&mut self) -> Option<&mut Observation> {
        self.observation.as_mut().map(Arc::make_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(5);

    fn tablet() -> TabletState {
        TabletState::new(Tablet {
            alias: Some(TabletAlias::new("zone1", 100)),
            ..Default::default()
        })
    }

    #[test]
    fn never_polled_is_not_valid_and_unknown() {
        let t = tablet();
        assert!(!t.poll.last_check_valid(POLL));
        assert!(!t.poll.last_poll_succeeded());
        assert_eq!(t.reachability, Reachability::Unknown);
    }

    #[test]
    fn success_then_failure_invalidates_the_last_check() {
        let t0 = crate::clock::now();
        let mut t = tablet();
        t.record_poll_success(t0, Observation::default());
        assert!(t.poll.last_check_valid(POLL));
        assert_eq!(t.reachability, Reachability::Reachable { since: t0 });
        t.record_poll_failure(t0 + POLL, "timeout".into(), false, false);
        assert!(!t.poll.last_check_valid(POLL));
        assert!(!t.poll.last_poll_succeeded());
        t.record_poll_failure(t0 + POLL * 2, "refused".into(), false, false);
        assert_eq!(
            t.reachability,
            Reachability::Unreachable {
                since: t0 + POLL,
                reason: "refused".into()
            }
        );
        assert!(t.observation.is_some(), "the last observation is kept");
    }

    #[test]
    fn a_hung_poll_invalidates_the_last_check_after_the_poll_time() {
        let t0 = crate::clock::now();
        let mut t = tablet();
        t.record_poll_success(t0, Observation::default());
        t.record_poll_in_progress(t0 + POLL);
        assert!(t.poll.last_check_valid(POLL), "exactly poll time is still valid");
        t.record_poll_in_progress(t0 + POLL + Duration::from_millis(1));
        assert!(!t.poll.last_check_valid(POLL));
        assert!(
            t.poll.last_poll_succeeded(),
            "replica validity ignores hung polls"
        );
    }
}
