//! The replica quorum behind `PrimaryTabletUnreachableByQuorum` (reference §4.6).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::model::ShardState;
use crate::proto::topodata::{TabletAlias, TabletType};

/// Reports older than this are forgotten (they no longer count as eligible observers).
pub const REPORT_TTL: Duration = Duration::from_secs(60);

/// Quorum options (`--emergency-reparent-on-primary-tablet-unreachable` and
/// `--shard-tablet-health-*` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct QuorumConfig {
    /// `--emergency-reparent-on-primary-tablet-unreachable`: the code is matched at all.
    pub enabled: bool,
    /// `--shard-tablet-health-failure-threshold`: consecutive failures for a down vote.
    pub failure_threshold: u32,
    /// `--shard-tablet-health-freshness`: maximum report (and ping) age for a vote.
    pub freshness: Duration,
    /// `--shard-tablet-health-quorum-fraction`: share of fresh observers that must vote down.
    pub fraction: f64,
    /// `--shard-tablet-health-quorum-min-observers`: minimum fresh observers.
    pub min_observers: u32,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            enabled: false,
            failure_threshold: 3,
            freshness: Duration::from_secs(15),
            fraction: 1.0,
            min_observers: 1,
        }
    }
}

impl QuorumConfig {
    /// Invalid options never produce a down verdict (fail closed).
    pub fn is_valid(&self) -> bool {
        self.failure_threshold >= 1
            && !self.freshness.is_zero()
            && self.fraction > 0.0
            && self.fraction <= 1.0
            && self.min_observers >= 1
    }
}

/// One observer's vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vote {
    /// Fresh report, enough consecutive failures.
    Down,
    /// Fresh report, the primary answers.
    Up,
    /// The report or its ping is too old to count.
    Stale,
}

/// One observer of the primary.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObserverVote {
    /// Observer alias, `cell-uid`.
    pub alias: String,
    /// `REPLICA` or `RDONLY`.
    pub tablet_type: String,
    /// Whether the vote counts.
    pub fresh: bool,
    /// Consecutive failed pings of the primary.
    pub consecutive_failures: i64,
    /// The vote.
    pub vote: Vote,
}

/// The quorum verdict with its tally.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QuorumResult {
    /// The primary judged.
    pub primary_alias: String,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// The verdict: the primary vttablet is down.
    pub down: bool,
    /// Down votes among fresh observers.
    pub down_votes: u32,
    /// Fresh observers.
    pub total_observers: u32,
    /// Observers that pinged the primary, fresh or stale.
    pub eligible_observers: u32,
    /// REPLICA/RDONLY tablets of the shard in the topo.
    pub expected_observers: u32,
    /// Required share of down votes.
    pub fraction: f64,
    /// Required fresh observers.
    pub min_observers: u32,
    /// Every observer, sorted by alias.
    pub observers: Vec<ObserverVote>,
}

impl QuorumResult {
    /// One-line tally for descriptions and logs.
    pub fn summary(&self) -> String {
        let votes: Vec<String> = self
            .observers
            .iter()
            .map(|o| match o.vote {
                Vote::Stale => format!("{}=stale", o.alias),
                Vote::Down => format!("{}=down({})", o.alias, o.consecutive_failures),
                Vote::Up => format!("{}=up({})", o.alias, o.consecutive_failures),
            })
            .collect();
        format!(
            "quorum {}/{} primary {}: {}; {}/{} fresh observers down, {} eligible, {} expected, fraction {}, min {} [{}]",
            self.keyspace,
            self.shard,
            self.primary_alias,
            if self.down { "DOWN" } else { "not down" },
            self.down_votes,
            self.total_observers,
            self.eligible_observers,
            self.expected_observers,
            self.fraction,
            self.min_observers,
            votes.join(" ")
        )
    }
}

fn is_observer_type(t: TabletType) -> bool {
    matches!(t, TabletType::Replica | TabletType::Rdonly)
}

/// Evaluates whether `primary` is down according to the shard's replicas.
///
/// Only REPLICA/RDONLY observers of this shard whose latest report includes
/// the primary count. A report is fresh if it was ingested at most
/// `freshness` ago and its ping age plus that delay is within `freshness`.
/// Down iff the options are valid, fresh observers ≥ `min_observers` (and
/// > 0), 2 × fresh > max(expected, eligible), and down / fresh ≥ `fraction`.
pub fn evaluate_primary_quorum(
    shard: &ShardState,
    primary: &TabletAlias,
    cfg: &QuorumConfig,
    now: Instant,
) -> QuorumResult {
    let expected = shard
        .tablets
        .iter()
        .filter(|t| is_observer_type(t.tablet_type()))
        .count() as u32;
    let mut result = QuorumResult {
        primary_alias: primary.to_string(),
        keyspace: shard.keyspace.clone(),
        shard: shard.shard.clone(),
        down: false,
        down_votes: 0,
        total_observers: 0,
        eligible_observers: 0,
        expected_observers: expected,
        fraction: cfg.fraction,
        min_observers: cfg.min_observers,
        observers: Vec::new(),
    };
    for t in &shard.tablets {
        let Some(report) = t.peer_health.as_ref() else {
            continue;
        };
        if !is_observer_type(report.observer_type) {
            continue;
        }
        let Some(ping) = report.peers.get(primary) else {
            continue;
        };
        let record_age = now.saturating_duration_since(report.recorded_at);
        if record_age > REPORT_TTL {
            continue;
        }
        let fresh =
            record_age <= cfg.freshness && ping.ping_age.is_some_and(|age| age + record_age <= cfg.freshness);
        let vote = match (
            fresh,
            ping.consecutive_failures >= i64::from(cfg.failure_threshold),
        ) {
            (false, _) => Vote::Stale,
            (true, true) => Vote::Down,
            (true, false) => Vote::Up,
        };
        if fresh {
            result.total_observers += 1;
            if vote == Vote::Down {
                result.down_votes += 1;
            }
        }
        result.observers.push(ObserverVote {
            alias: t.alias().to_string(),
            tablet_type: report.observer_type.as_str_name().to_string(),
            fresh,
            consecutive_failures: ping.consecutive_failures,
            vote,
        });
    }
    result.eligible_observers = result.observers.len() as u32;
    let base = expected.max(result.eligible_observers);
    if cfg.is_valid()
        && result.total_observers >= cfg.min_observers
        && result.total_observers > 0
        && 2 * result.total_observers > base
    {
        result.down = f64::from(result.down_votes) / f64::from(result.total_observers) >= cfg.fraction;
    }
    result
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::model::{PeerHealthReport, PeerPing};
    use crate::testkit::ShardBuilder;

    fn report(
        now: Instant,
        age: Duration,
        ping_age: Option<Duration>,
        failures: i64,
        ty: TabletType,
    ) -> Arc<PeerHealthReport> {
        Arc::new(PeerHealthReport {
            recorded_at: now - age,
            observer_type: ty,
            peers: BTreeMap::from([(
                TabletAlias::new("zone1", 100),
                PeerPing {
                    consecutive_failures: failures,
                    ping_age,
                },
            )]),
        })
    }

    fn shard(now: Instant, reports: [Option<Arc<PeerHealthReport>>; 3]) -> ShardState {
        let [a, b, c] = reports;
        ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone1", 102)
            .rdonly("zone1", 103)
            .edit("zone1", 101, |t| t.peer_health = a)
            .edit("zone1", 102, |t| t.peer_health = b)
            .edit("zone1", 103, |t| t.peer_health = c)
            .build_shard()
            .1
    }

    const S: Duration = Duration::from_secs(1);

    fn primary() -> TabletAlias {
        TabletAlias::new("zone1", 100)
    }

    #[test]
    fn a_fresh_majority_voting_down_is_down() {
        let now = crate::clock::now();
        let down = |f| Some(report(now, S, Some(S), f, TabletType::Replica));
        let r = evaluate_primary_quorum(
            &shard(now, [down(3), down(9), None]),
            &primary(),
            &QuorumConfig::default(),
            now,
        );
        assert!(r.down, "{}", r.summary());
        assert_eq!(
            (
                r.down_votes,
                r.total_observers,
                r.eligible_observers,
                r.expected_observers
            ),
            (2, 2, 2, 3)
        );
    }

    #[test]
    fn stale_reports_are_shown_but_do_not_vote() {
        let now = crate::clock::now();
        let old = Some(report(
            now,
            Duration::from_secs(20),
            Some(S),
            9,
            TabletType::Replica,
        ));
        let old_ping = Some(report(
            now,
            S,
            Some(Duration::from_secs(15)),
            9,
            TabletType::Replica,
        ));
        let fresh = Some(report(now, S, Some(S), 9, TabletType::Replica));
        let r = evaluate_primary_quorum(
            &shard(now, [old, old_ping, fresh]),
            &primary(),
            &QuorumConfig::default(),
            now,
        );
        assert!(!r.down, "1 fresh of 3 is no majority: {}", r.summary());
        assert_eq!(r.observers.iter().filter(|o| o.vote == Vote::Stale).count(), 2);
    }

    #[test]
    fn an_up_vote_below_the_fraction_keeps_the_primary_up() {
        let now = crate::clock::now();
        let r = |f| Some(report(now, S, Some(S), f, TabletType::Replica));
        let q = evaluate_primary_quorum(
            &shard(now, [r(3), r(3), r(1)]),
            &primary(),
            &QuorumConfig::default(),
            now,
        );
        assert!(!q.down);
        let half = QuorumConfig {
            fraction: 0.6,
            ..QuorumConfig::default()
        };
        assert!(evaluate_primary_quorum(&shard(now, [r(3), r(3), r(1)]), &primary(), &half, now).down);
    }

    #[test]
    fn invalid_options_never_say_down() {
        let now = crate::clock::now();
        let r = |f| Some(report(now, S, Some(S), f, TabletType::Replica));
        for bad in [
            QuorumConfig {
                fraction: 0.0,
                ..QuorumConfig::default()
            },
            QuorumConfig {
                failure_threshold: 0,
                ..QuorumConfig::default()
            },
            QuorumConfig {
                min_observers: 4,
                ..QuorumConfig::default()
            },
        ] {
            assert!(!evaluate_primary_quorum(&shard(now, [r(9), r(9), r(9)]), &primary(), &bad, now).down);
        }
    }

    #[test]
    fn non_observer_types_missing_pings_and_expired_reports_do_not_count() {
        let now = crate::clock::now();
        let spare = Some(report(now, S, Some(S), 9, TabletType::Spare));
        let no_ping = Some(report(now, S, None, 9, TabletType::Replica));
        let expired = Some(report(
            now,
            Duration::from_secs(61),
            Some(S),
            9,
            TabletType::Rdonly,
        ));
        let r = evaluate_primary_quorum(
            &shard(now, [spare, no_ping, expired]),
            &primary(),
            &QuorumConfig::default(),
            now,
        );
        assert!(!r.down);
        assert_eq!(r.eligible_observers, 1, "{}", r.summary());
        assert_eq!(r.total_observers, 0);
    }
}
