//! Has a replica stopped hearing its primary? The replicas' side of a gray
//! failure, decided from Vitess v24 wire signals only.
//!
//! Go VTOrc counts a replica as "replicating" while MySQL says both its
//! threads run. When a primary host freezes or its packets are dropped,
//! nothing resets the replicas' connections: their IO threads keep saying
//! "running" until `replica_net_timeout` (8 s in Vitess's MySQL 8 config)
//! passes without a byte, and only then does `DeadPrimary` match. vtorc-rs
//! adds two pieces of evidence, used only while vtorc itself cannot reach
//! the primary (its last check failed):
//!
//! 1. **Heartbeat silence.** With vttablet's `--heartbeat-enable`, the
//!    primary writes a heartbeat row every `--heartbeat-interval` (at most
//!    1 s) and each replica's health stream reports the time since it last
//!    applied one as its replication lag. vtorc asks the replicas for a fresh
//!    report (`RunHealthCheck`) as soon as it loses the primary. A replica
//!    counts as having stopped hearing the primary when a report received
//!    *after* vtorc lost the primary says lag ≥ `--heartbeat-silence-threshold`,
//!    and the silence began no earlier than [`SILENCE_LEAD`] (plus the
//!    threshold) before vtorc lost the primary: heartbeats that stopped long
//!    before (on-demand heartbeats on an idle shard, a replica that was
//!    already lagging) prove nothing about this failure. Without heartbeats
//!    (vttablet's poller mode) the lag is `Seconds_Behind_Source`, 0 while the
//!    replica is idle, so no evidence is ever made up: detection then waits
//!    for the IO threads as Go VTOrc does.
//! 2. **Tablet server down.** When every failed check since the primary was
//!    lost was a refused connection (the host answers, no vttablet listens)
//!    for at least `--primary-tablet-down-grace`, the shard cannot take
//!    writes (applications reach MySQL only through vttablet) even though its
//!    MySQL still feeds the replicas: the replicas count as not replicating
//!    from a live primary. Within the grace, heartbeat silence is expected
//!    (the heartbeat writer died with vttablet) and is not used.
//!
//! The converse is what keeps vtorc from failing over when only vtorc is cut
//! off: replicas whose fresh reports show small lag still hear the primary,
//! so `DeadPrimary` (which needs *every* replica to have stopped) cannot
//! match; the shard shows `UnreachablePrimary`/`IncapacitatedPrimary` instead.

use std::time::Duration;

use tokio::time::Instant;

use super::AnalysisConfig;
use crate::model::TabletState;

/// How long before vtorc lost the primary the replicas' heartbeat silence may
/// have begun (on top of the threshold) and still count: vtorc notices a
/// frozen primary within a ping interval and a ping deadline (2 s at the
/// default 1 s), so real silences start well within this.
pub const SILENCE_LEAD: Duration = Duration::from_secs(5);

/// Why a replica counts as no longer hearing its (unreachable) primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Its heartbeat lag reached the threshold after vtorc lost the primary.
    Heartbeat {
        /// The reported lag, seconds.
        lag_seconds: u32,
    },
    /// The primary's tablet server has refused connections for the grace.
    TabletServerDown {
        /// How long it has been down.
        down_for: Duration,
    },
}

/// Whether `replica` has stopped hearing `primary`, which vtorc cannot reach;
/// `None` when `primary` answered its last check or nothing proves it.
pub fn replica_silence(
    primary: &TabletState,
    replica: &TabletState,
    cfg: &AnalysisConfig,
    now: Instant,
) -> Option<Silence> {
    let lost_at = primary.unreachable_since()?;
    if let Some(down) = primary.server_down_since {
        let down_for = now.saturating_duration_since(down);
        if !cfg.primary_tablet_down_grace.is_zero() && down_for >= cfg.primary_tablet_down_grace {
            return Some(Silence::TabletServerDown { down_for });
        }
        return None;
    }
    let threshold = cfg.heartbeat_silence_threshold;
    if threshold.is_zero() {
        return None;
    }
    let report = replica.heartbeat?;
    if report.at < lost_at {
        return None;
    }
    let lag = Duration::from_secs(u64::from(report.lag_seconds));
    if lag < threshold {
        return None;
    }
    // The silence began at about report.at - lag (the lag is truncated, so
    // up to a second earlier): it must not predate vtorc's loss by much.
    let began = report.at.checked_sub(lag)?;
    (began + threshold + SILENCE_LEAD >= lost_at).then_some(Silence::Heartbeat {
        lag_seconds: report.lag_seconds,
    })
}

/// Describes the evidence for an analysis text.
pub fn describe(s: Silence) -> String {
    match s {
        Silence::Heartbeat { lag_seconds } => {
            format!("its replicas have not applied a heartbeat for {lag_seconds}s")
        }
        Silence::TabletServerDown { down_for } => format!(
            "its tablet server has refused connections for {}s while MySQL still feeds the replicas",
            down_for.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HeartbeatReport;
    use crate::proto::topodata::{Tablet, TabletAlias};

    fn tablet(uid: u32) -> TabletState {
        TabletState::new(Tablet {
            alias: Some(TabletAlias {
                cell: "zone1".into(),
                uid,
            }),
            ..Tablet::default()
        })
    }

    fn cfg() -> AnalysisConfig {
        AnalysisConfig {
            heartbeat_silence_threshold: Duration::from_secs(1),
            primary_tablet_down_grace: Duration::from_secs(10),
            ..AnalysisConfig::default()
        }
    }

    fn s(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_reachable_primary_is_never_silent() {
        let t0 = crate::clock::now();
        let p = tablet(100);
        let mut r = tablet(101);
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 30,
            at: s(t0, 10_000),
        });
        assert_eq!(replica_silence(&p, &r, &cfg(), s(t0, 10_000)), None);
    }

    #[test]
    fn fresh_lag_past_the_threshold_after_the_loss_is_silence() {
        let t0 = crate::clock::now();
        let mut p = tablet(100);
        p.record_check_failure(s(t0, 10_000), "timeout".into(), false);
        let mut r = tablet(101);
        // A report from before the loss proves nothing.
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 1,
            at: s(t0, 9_900),
        });
        assert_eq!(replica_silence(&p, &r, &cfg(), s(t0, 10_100)), None);
        // Fresh but under the threshold: it still hears the primary.
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 0,
            at: s(t0, 10_200),
        });
        assert_eq!(replica_silence(&p, &r, &cfg(), s(t0, 10_200)), None);
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 1,
            at: s(t0, 10_500),
        });
        assert_eq!(
            replica_silence(&p, &r, &cfg(), s(t0, 10_500)),
            Some(Silence::Heartbeat { lag_seconds: 1 })
        );
    }

    #[test]
    fn a_silence_that_began_long_before_the_loss_is_not_evidence() {
        // On-demand heartbeats on an idle shard: lag was already large.
        let t0 = crate::clock::now();
        let mut p = tablet(100);
        p.record_check_failure(s(t0, 60_000), "timeout".into(), false);
        let mut r = tablet(101);
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 40,
            at: s(t0, 60_300),
        });
        assert_eq!(replica_silence(&p, &r, &cfg(), s(t0, 60_300)), None);
    }

    #[test]
    fn a_refused_tablet_server_waits_for_the_grace_whatever_the_heartbeats() {
        let t0 = crate::clock::now();
        let mut p = tablet(100);
        p.record_check_failure(s(t0, 1_000), "refused".into(), true);
        let mut r = tablet(101);
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 5,
            at: s(t0, 6_000),
        });
        assert_eq!(replica_silence(&p, &r, &cfg(), s(t0, 6_000)), None);
        assert_eq!(
            replica_silence(&p, &r, &cfg(), s(t0, 11_000)),
            Some(Silence::TabletServerDown {
                down_for: Duration::from_secs(10)
            })
        );
        // A timeout in between restarts the clock: the host is not answering.
        p.record_check_failure(s(t0, 11_500), "timeout".into(), false);
        assert_eq!(p.server_down_since, None);
        let zero_grace = AnalysisConfig {
            primary_tablet_down_grace: Duration::ZERO,
            ..cfg()
        };
        p.record_check_failure(s(t0, 12_000), "refused".into(), true);
        assert_eq!(replica_silence(&p, &r, &zero_grace, s(t0, 60_000)), None);
    }

    #[test]
    fn a_zero_threshold_disables_heartbeat_evidence() {
        let t0 = crate::clock::now();
        let mut p = tablet(100);
        p.record_check_failure(s(t0, 1_000), "timeout".into(), false);
        let mut r = tablet(101);
        r.heartbeat = Some(HeartbeatReport {
            lag_seconds: 3,
            at: s(t0, 3_000),
        });
        let off = AnalysisConfig {
            heartbeat_silence_threshold: Duration::ZERO,
            ..cfg()
        };
        assert_eq!(replica_silence(&p, &r, &off, s(t0, 3_000)), None);
    }
}
