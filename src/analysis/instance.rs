//! Go VTOrc's instance problems (`/api/problems`, `GetProblems`): what is
//! wrong with one tablet on its own, apart from the shard-level analysis.
//! Pure, like the rest of analysis: `now` is a parameter.

use tokio::time::Instant;

use super::AnalysisConfig;
use crate::model::{TabletState, ThreadState};

/// Go VTOrc's instance problems of one tablet:
///
/// - `last_check_invalid`: the latest poll did not succeed (or none did yet);
/// - `not_recently_checked`: no poll finished within 5 × `--instance-poll-time`;
/// - `not_replicating`: a replication thread is stopped or connecting;
/// - `replication_lag`: lag minus SQL delay beyond `--reasonable-replication-lag`;
/// - `errant_gtid`: the tablet has errant GTIDs.
pub fn instance_problems(t: &TabletState, config: &AnalysisConfig, now: Instant) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if !t.poll.last_poll_succeeded() {
        problems.push("last_check_invalid");
    }
    let recent = config.instance_poll_time * 5;
    if t.poll
        .last_checked
        .is_none_or(|c| now.saturating_duration_since(c) > recent)
    {
        problems.push("not_recently_checked");
    }
    if let Some(obs) = &t.observation {
        if let Some(r) = &obs.replication {
            let bad = |s: ThreadState| !matches!(s, ThreadState::Running | ThreadState::NoThread);
            if bad(r.io_thread) || bad(r.sql_thread) {
                problems.push("not_replicating");
            }
            if let Some(lag) = r.lag_seconds {
                let excess = i64::from(lag) - i64::from(r.sql_delay);
                if excess.unsigned_abs() > config.reasonable_replication_lag.as_secs() {
                    problems.push("replication_lag");
                }
            }
        }
        if !obs.errant_gtids.is_empty() {
            problems.push("errant_gtid");
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ids::KeyspaceShard;
    use crate::testkit::{ShardBuilder, TabletFixture};

    #[test]
    fn instance_problems_follow_go_vtorcs_list() {
        let now = crate::clock::now();
        let cfg = AnalysisConfig::default();
        let snapshot = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone1", 102)
            .replica("zone1", 103)
            .edit("zone1", 101, |t| t.stop_replication())
            .edit("zone1", 102, |t| {
                if let Some(r) = t.obs().replication.as_mut() {
                    r.lag_seconds = Some(60);
                }
            })
            .edit("zone1", 103, |t| t.unreachable(now + Duration::from_millis(1)))
            .build();
        let shard = snapshot.shard(&KeyspaceShard::new("ks", "0")).expect("built");
        let problems = |uid| {
            instance_problems(
                shard
                    .tablet(&crate::proto::topodata::TabletAlias::new("zone1", uid))
                    .expect("tablet"),
                &cfg,
                now,
            )
        };
        assert!(problems(100).is_empty(), "{:?}", problems(100));
        assert_eq!(problems(101), vec!["not_replicating"]);
        assert_eq!(problems(102), vec!["replication_lag"]);
        assert!(
            problems(103).contains(&"last_check_invalid"),
            "{:?}",
            problems(103)
        );
        let later = now + cfg.instance_poll_time * 6;
        let stale = instance_problems(
            shard
                .tablet(&crate::proto::topodata::TabletAlias::new("zone1", 100))
                .expect("tablet"),
            &cfg,
            later,
        );
        assert_eq!(stale, vec!["not_recently_checked"]);
    }
}
