//! Health inputs that need history: the primary health window
//! (`IncapacitatedPrimary`, reference §4.5) and the shard-peer ping reports
//! behind `PrimaryTabletUnreachableByQuorum` (§4.6).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::proto::topodata::{TabletAlias, TabletType};

/// Failures needed (and more failures than successes) before a primary is unhealthy.
const MIN_FAILURES: usize = 2;

/// Sliding window of a primary's poll outcomes.
///
/// Becomes unhealthy when the window holds at least 2 failures and more
/// failures than successes; becomes healthy again only when it holds no
/// failure and at least one success. A zero window disables tracking.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrimaryHealthWindow {
    /// Poll outcomes (time, success), oldest first, pruned to the window on each record.
    events: VecDeque<(Instant, bool)>,
    /// The verdict after the last update (sticky until the healthy condition holds).
    unhealthy: bool,
}

impl PrimaryHealthWindow {
    fn counts(&self, now: Instant, window: Duration) -> (usize, usize) {
        let mut ok = 0;
        let mut failed = 0;
        for (at, success) in &self.events {
            if now.saturating_duration_since(*at) <= window {
                if *success {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
        }
        (ok, failed)
    }

    fn verdict(&self, now: Instant, window: Duration) -> bool {
        let (ok, failed) = self.counts(now, window);
        if self.unhealthy {
            !(failed == 0 && ok > 0)
        } else {
            failed >= MIN_FAILURES && failed > ok
        }
    }

    /// Records one poll outcome of the primary at `now`.
    pub fn record(&mut self, now: Instant, success: bool, window: Duration) {
        if window.is_zero() {
            *self = PrimaryHealthWindow::default();
            return;
        }
        self.events.push_back((now, success));
        while let Some((at, _)) = self.events.front() {
            if now.saturating_duration_since(*at) > window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.unhealthy = self.verdict(now, window);
    }

    /// Whether the primary counts as unhealthy at `now` (events older than the
    /// window no longer count). Pure: does not prune.
    pub fn is_unhealthy(&self, now: Instant, window: Duration) -> bool {
        !window.is_zero() && self.verdict(now, window)
    }

    /// Outcomes currently held, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &(Instant, bool)> {
        self.events.iter()
    }
}

/// One observer's view of one peer, from a shard-peer health report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPing {
    /// Consecutive failed pings of the peer.
    pub consecutive_failures: i64,
    /// Age of the observer's last ping attempt when the report was ingested;
    /// `None` = never pinged or unknown (a negative age from the tablet is stored as `None`).
    pub ping_age: Option<Duration>,
}

/// The latest shard-peer health report of one observer tablet (v25; see reference §4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHealthReport {
    /// When VTOrc ingested the report.
    pub recorded_at: Instant,
    /// The observer's topo type when the report was ingested (only REPLICA/RDONLY vote).
    pub observer_type: TabletType,
    /// Pinged peers.
    pub peers: BTreeMap<TabletAlias, PeerPing>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    #[test]
    fn two_failures_outnumbering_successes_make_a_primary_unhealthy() {
        let t0 = crate::clock::now();
        let mut w = PrimaryHealthWindow::default();
        w.record(t0, false, W);
        assert!(!w.is_unhealthy(t0, W), "one failure is not enough");
        w.record(t0 + Duration::from_secs(1), true, W);
        w.record(t0 + Duration::from_secs(2), false, W);
        assert!(
            w.is_unhealthy(t0 + Duration::from_secs(2), W),
            "2 failures > 1 success"
        );
    }

    #[test]
    fn failures_not_outnumbering_successes_stay_healthy() {
        let t0 = crate::clock::now();
        let mut w = PrimaryHealthWindow::default();
        for (i, ok) in [true, false, true, false].into_iter().enumerate() {
            w.record(t0 + Duration::from_secs(i as u64), ok, W);
        }
        assert!(!w.is_unhealthy(t0 + Duration::from_secs(3), W));
    }

    #[test]
    fn window_verdicts_follow_the_rules() {
        let t0 = crate::clock::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = PrimaryHealthWindow::default();
        w.record(s(0), false, W);
        w.record(s(1), false, W);
        assert!(w.is_unhealthy(s(1), W));
        // A success while failures remain in the window does not heal.
        w.record(s(2), true, W);
        assert!(w.is_unhealthy(s(2), W));
        // Once the failures age out and a success is held, healthy again.
        assert!(!w.is_unhealthy(s(31) + Duration::from_millis(500), W));
        w.record(s(40), true, W);
        assert!(!w.is_unhealthy(s(40), W));
    }

    #[test]
    fn zero_window_disables_tracking() {
        let t0 = crate::clock::now();
        let mut w = PrimaryHealthWindow::default();
        w.record(t0, false, Duration::ZERO);
        w.record(t0, false, Duration::ZERO);
        assert!(!w.is_unhealthy(t0, Duration::ZERO));
        assert_eq!(w.events().count(), 0);
    }
}
