//! The problem catalogue as tests: for each analysis code, a shard where it
//! is detected and a close one where it is not; then the ordering,
//! suppression, post-processing, structure-warning and keyspace rules.
//!
//! Every case starts from a healthy fixture shard (`ks/0`, primary
//! `zone1-100`, replicas `zone1-101` and `zone1-102`) and breaks one thing.
//! The rules (ordering, suppression, post-processing, warnings, keyspaces)
//! are in `analysis_rules.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use vtorc::analysis::{AnalysisCode as C, AnalysisConfig, Durability, StructureWarning as W};
use vtorc::model::{PeerHealthReport, PeerPing, TopoTime};
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::testkit::{MYSQL_PORT, ShardBuilder, TabletFixture, gtids, mysql_host};

mod analysis_support;

use analysis_support::*;

// ---------------------------------------------------------------- healthy

#[test]
fn healthy_shard_reports_nothing_for_every_policy() {
    let now = t0();
    for policy in Durability::ALL.map(Durability::name) {
        let b = ShardBuilder::new("ks", "0", policy, now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone2", 102)
            .rdonly("zone2", 103);
        let out = run(b, now);
        assert!(out.problems.is_empty(), "{policy}:{}", out.describe());
        assert!(out.notes.is_empty());
    }
}

// ---------------------------------------------------------------- 1, 2: never reached

#[test]
fn invalid_primary_when_the_shard_primary_was_never_reached() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 100, |t| t.never_reached()),
        now,
    );
    out.reports(C::InvalidPrimary, "zone1-0000000100");
    assert_eq!(
        out.matched("zone1-0000000100"),
        [C::InvalidPrimary, C::InvalidReplica]
    );
}

#[test]
fn no_invalid_primary_when_only_a_replica_was_never_reached() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 101, |t| t.never_reached()),
        now,
    );
    out.lacks(C::InvalidPrimary);
}

#[test]
fn invalid_replica_when_a_replica_was_never_reached() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 101, |t| t.never_reached()),
        now,
    );
    out.reports(C::InvalidReplica, "zone1-0000000101");
    assert_eq!(
        out.matched("zone1-0000000101"),
        [C::InvalidReplica],
        "only Invalid* match without data"
    );
}

#[test]
fn no_invalid_replica_when_a_replica_was_reached_before_and_is_unreachable_now() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 101, |t| t.unreachable(now)),
        now,
    );
    out.lacks(C::InvalidReplica);
}

// ---------------------------------------------------------------- 3-9: dead primary family

fn disk_stalled_cfg() -> AnalysisConfig {
    AnalysisConfig {
        enable_primary_disk_stalled_recovery: true,
        ..Default::default()
    }
}

#[test]
fn primary_disk_stalled_when_primary_unreachable_with_stalled_disk_and_flag_on() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.record_poll_failure(now, "disk stalled".into(), true, true)
    });
    run_with(b, &disk_stalled_cfg(), now).reports(C::PrimaryDiskStalled, "zone1-0000000100");
}

#[test]
fn no_primary_disk_stalled_when_the_flag_is_off() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.record_poll_failure(now, "disk stalled".into(), true, true)
    });
    run(b, now).lacks(C::PrimaryDiskStalled);
}

#[test]
fn no_primary_disk_stalled_when_the_primary_is_reachable() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| t.disk_stalled = true);
    run_with(b, &disk_stalled_cfg(), now).lacks(C::PrimaryDiskStalled);
}

#[test]
fn dead_primary_without_replicas_when_a_lone_primary_is_unreachable() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "none", now)
        .primary("zone1", 100)
        .edit("zone1", 100, |t| t.unreachable(now));
    let out = run(b, now);
    out.reports(C::DeadPrimaryWithoutReplicas, "zone1-0000000100");
    assert!(!out.problems[0].actionable);
}

#[test]
fn no_dead_primary_without_replicas_when_the_primary_has_replicas() {
    let now = t0();
    run(base("none", now).edit("zone1", 100, |t| t.unreachable(now)), now)
        .lacks(C::DeadPrimaryWithoutReplicas);
}

#[test]
fn dead_primary_when_primary_unreachable_and_no_replica_replicates() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication());
    let out = run(b, now);
    out.reports(C::DeadPrimary, "zone1-0000000100");
    assert_eq!(
        out.problems.len(),
        1,
        "replica problems are suppressed:{}",
        out.describe()
    );
    assert!(
        out.problems[0]
            .reason
            .contains("2 replicas, 2 reachable, 0 replicating")
    );
}

#[test]
fn no_dead_primary_when_a_replica_still_replicates() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication());
    run(b, now).lacks(C::DeadPrimary);
}

#[test]
fn dead_primary_and_replicas_when_primary_and_all_replicas_unreachable() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.unreachable(now))
        .edit("zone1", 102, |t| t.unreachable(now));
    let out = run(b, now);
    out.reports(C::DeadPrimaryAndReplicas, "zone1-0000000100");
    assert!(!out.problems[0].actionable, "generic no-op recovery");
}

#[test]
fn no_dead_primary_and_replicas_when_one_replica_is_reachable() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.unreachable(now));
    run(b, now).lacks(C::DeadPrimaryAndReplicas);
}

#[test]
fn dead_primary_and_some_replicas_when_reachable_replicas_do_not_replicate() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.unreachable(now))
        .edit("zone1", 102, |t| t.stop_replication());
    run(b, now).reports(C::DeadPrimaryAndSomeReplicas, "zone1-0000000100");
}

#[test]
fn no_dead_primary_and_some_replicas_when_the_reachable_replica_replicates() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.unreachable(now));
    let out = run(b, now);
    out.lacks(C::DeadPrimaryAndSomeReplicas);
    out.reports(C::UnreachablePrimary, "zone1-0000000100");
}

fn quorum_cfg() -> AnalysisConfig {
    let mut cfg = AnalysisConfig::default();
    cfg.quorum.enabled = true;
    cfg
}

fn peer_report(now: Instant, failures: i64, age: Duration) -> Arc<PeerHealthReport> {
    Arc::new(PeerHealthReport {
        recorded_at: now - age,
        observer_type: TabletType::Replica,
        peers: BTreeMap::from([(
            TabletAlias::new("zone1", 100),
            PeerPing {
                consecutive_failures: failures,
                ping_age: Some(Duration::from_secs(1)),
            },
        )]),
    })
}

#[test]
fn primary_tablet_unreachable_by_quorum_when_fresh_replicas_cannot_ping_it() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| {
            t.peer_health = Some(peer_report(now, 5, Duration::from_secs(2)))
        })
        .edit("zone1", 102, |t| {
            t.peer_health = Some(peer_report(now, 4, Duration::from_secs(2)))
        });
    let out = run_with(b, &quorum_cfg(), now);
    out.reports(C::PrimaryTabletUnreachableByQuorum, "zone1-0000000100");
    let p = &out.problems[0];
    let q = p
        .quorum_detail
        .as_ref()
        .expect("tally kept when the quorum code wins");
    assert_eq!((q.down_votes, q.total_observers, q.expected_observers), (2, 2, 2));
    assert!(
        p.description.contains("2/2 fresh observers down"),
        "{}",
        p.description
    );
}

#[test]
fn no_primary_tablet_unreachable_by_quorum_when_disabled_or_when_the_fresh_replicas_are_a_minority() {
    let now = t0();
    let b = || {
        base("semi_sync", now)
            .edit("zone1", 100, |t| t.unreachable(now))
            .edit("zone1", 101, |t| {
                t.peer_health = Some(peer_report(now, 5, Duration::from_secs(2)))
            })
    };
    run(b(), now).lacks(C::PrimaryTabletUnreachableByQuorum);
    // One fresh observer of two expected is not a strict majority.
    let out = run_with(
        b().edit("zone1", 102, |t| {
            t.peer_health = Some(peer_report(now, 5, Duration::from_secs(30)))
        }),
        &quorum_cfg(),
        now,
    );
    out.lacks(C::PrimaryTabletUnreachableByQuorum);
    assert!(out.problems.iter().all(|p| p.quorum_detail.is_none()));
}

#[test]
fn no_primary_tablet_unreachable_by_quorum_when_the_primary_was_shut_down_gracefully() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| {
            t.unreachable(now);
            t.tablet.tablet_shutdown_time = Some(TopoTime { seconds: 5, nanos: 0 }.to_proto());
        })
        .edit("zone1", 101, |t| {
            t.peer_health = Some(peer_report(now, 5, Duration::from_secs(2)))
        })
        .edit("zone1", 102, |t| {
            t.peer_health = Some(peer_report(now, 5, Duration::from_secs(2)))
        });
    run_with(b, &quorum_cfg(), now).lacks(C::PrimaryTabletUnreachableByQuorum);
}

fn unhealthy_window(t: &mut vtorc::model::TabletState, now: Instant) {
    let w = Duration::from_secs(30);
    t.primary_health.record(now - Duration::from_secs(3), false, w);
    t.primary_health.record(now - Duration::from_secs(2), false, w);
}

#[test]
fn incapacitated_primary_when_unreachable_and_its_health_window_is_unhealthy() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        unhealthy_window(t, now);
        t.unreachable(now);
    });
    let out = run(b, now);
    out.reports(C::IncapacitatedPrimary, "zone1-0000000100");
    assert!(out.problems[0].primary_health_unhealthy);
}

#[test]
fn no_incapacitated_primary_when_the_last_check_is_valid_or_the_window_is_off() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| unhealthy_window(t, now)),
        now,
    )
    .lacks(C::IncapacitatedPrimary);
    let cfg = AnalysisConfig {
        primary_healthcheck_timeout_window: Duration::ZERO,
        ..Default::default()
    };
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        unhealthy_window(t, now);
        t.unreachable(now);
    });
    run_with(b, &cfg, now).lacks(C::IncapacitatedPrimary);
}

// ---------------------------------------------------------------- 10-12: primary/replica shape

#[test]
fn primary_has_primary_when_the_primary_replicates_from_someone() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.replicate_from(&mysql_host("zone1", 101), MYSQL_PORT)
    });
    let out = run(b, now);
    out.reports(C::PrimaryHasPrimary, "zone1-0000000100");
    assert!(out.problems[0].reason.contains("zone1-0000000101"));
}

#[test]
fn no_primary_has_primary_for_a_primary_without_source() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::PrimaryHasPrimary);
}

#[test]
fn primary_is_read_only_when_the_primary_mysql_is_read_only() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().read_only = true),
        now,
    );
    out.reports(C::PrimaryIsReadOnly, "zone1-0000000100");
    assert!(
        out.problems[0]
            .structure_analysis
            .contains(&W::NoWriteablePrimary)
    );
}

#[test]
fn no_primary_is_read_only_for_read_only_replicas() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::PrimaryIsReadOnly);
}

#[test]
fn replica_is_writable_when_a_replica_mysql_is_not_read_only() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.obs().read_only = false),
        now,
    )
    .reports(C::ReplicaIsWritable, "zone1-0000000101");
}

#[test]
fn no_replica_is_writable_for_a_writable_primary_or_a_writable_drained_tablet() {
    let now = t0();
    let b = base("semi_sync", now)
        .tablet("zone1", 103, TabletType::Drained)
        .edit("zone1", 103, |t| t.obs().read_only = false);
    run(b, now).lacks(C::ReplicaIsWritable);
}

// ---------------------------------------------------------------- 13-17: semi-sync

#[test]
fn primary_semi_sync_must_be_set_when_policy_needs_acks_and_enough_ackers_replicate() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().semi_sync.primary_enabled = false),
        now,
    );
    out.reports(C::PrimarySemiSyncMustBeSet, "zone1-0000000100");
}

#[test]
fn no_primary_semi_sync_must_be_set_while_no_replica_acks_yet() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.obs().semi_sync.primary_enabled = false)
        .edit("zone1", 101, |t| t.obs().semi_sync.replica_enabled = false)
        .edit("zone1", 102, |t| t.obs().semi_sync.replica_enabled = false);
    let out = run(b, now);
    out.lacks(C::PrimarySemiSyncMustBeSet);
    out.reports(C::ReplicaSemiSyncMustBeSet, "zone1-0000000101");
}

#[test]
fn primary_semi_sync_must_not_be_set_when_policy_needs_no_acks() {
    let now = t0();
    run(
        base("none", now).edit("zone1", 100, |t| t.obs().semi_sync.primary_enabled = true),
        now,
    )
    .reports(C::PrimarySemiSyncMustNotBeSet, "zone1-0000000100");
}

#[test]
fn no_primary_semi_sync_must_not_be_set_under_a_semi_sync_policy() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::PrimarySemiSyncMustNotBeSet);
}

#[test]
fn replica_semi_sync_must_be_set_when_the_policy_says_it_acks() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.obs().semi_sync.replica_enabled = false),
        now,
    )
    .reports(C::ReplicaSemiSyncMustBeSet, "zone1-0000000101");
}

#[test]
fn no_replica_semi_sync_must_be_set_for_a_same_cell_replica_under_cross_cell() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "cross_cell", now)
        .primary("zone1", 100)
        .replica("zone1", 101)
        .replica("zone2", 102);
    let out = run(b, now);
    out.lacks(C::ReplicaSemiSyncMustBeSet);
    assert!(out.problems.is_empty(), "{}", out.describe());
}

#[test]
fn replica_semi_sync_must_not_be_set_when_the_policy_says_it_does_not_ack() {
    let now = t0();
    run(
        base("none", now).edit("zone1", 101, |t| t.obs().semi_sync.replica_enabled = true),
        now,
    )
    .reports(C::ReplicaSemiSyncMustNotBeSet, "zone1-0000000101");
    let b = ShardBuilder::new("ks", "0", "semi_sync", now)
        .primary("zone1", 100)
        .replica("zone1", 101)
        .rdonly("zone1", 103)
        .edit("zone1", 103, |t| t.obs().semi_sync.replica_enabled = true);
    run(b, now).reports(C::ReplicaSemiSyncMustNotBeSet, "zone1-0000000103");
}

#[test]
fn no_replica_semi_sync_must_not_be_set_for_an_rdonly_under_semi_sync_with_rdonly_ack() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "semi_sync_with_rdonly_ack", now)
        .primary("zone1", 100)
        .rdonly("zone1", 103);
    let out = run(b, now);
    out.lacks(C::ReplicaSemiSyncMustNotBeSet);
    assert!(out.problems.is_empty(), "{}", out.describe());
}

#[test]
fn primary_semi_sync_blocked_when_writes_block_although_enough_replicas_ack() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().semi_sync.blocked = true),
        now,
    );
    out.reports(C::PrimarySemiSyncBlocked, "zone1-0000000100");
    assert!(out.problems[0].shard_wide_recovery);
}

#[test]
fn no_primary_semi_sync_blocked_when_fewer_replicas_ack_than_it_waits_for() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.obs().semi_sync.blocked = true;
        t.obs().semi_sync.wait_for_replica_count = 3;
    });
    run(b, now).lacks(C::PrimarySemiSyncBlocked);
}

// ---------------------------------------------------------------- 18-20: type, stale primary, errant

#[test]
fn primary_current_type_mismatch_when_the_primary_vttablet_runs_as_replica() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().tablet_type = TabletType::Replica),
        now,
    )
    .reports(C::PrimaryCurrentTypeMismatch, "zone1-0000000100");
}

#[test]
fn no_primary_current_type_mismatch_when_the_type_is_not_reported() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().tablet_type = TabletType::Unknown),
        now,
    )
    .lacks(C::PrimaryCurrentTypeMismatch);
}

#[test]
fn stale_topo_primary_when_an_older_primary_term_is_still_primary_in_the_topo() {
    let now = t0();
    let out = run(with_stale_primary(now), now);
    out.reports(C::StaleTopoPrimary, "zone1-0000000099");
    assert!(
        out.problems.iter().all(|p| p.analyzed_instance_alias.uid != 100),
        "{}",
        out.describe()
    );
}

#[test]
fn no_stale_topo_primary_for_the_newest_primary() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::StaleTopoPrimary);
    let out = run(with_stale_primary(now), now);
    assert_eq!(out.chosen("zone1-0000000100"), None);
}

#[test]
fn errant_gtid_detected_when_a_replica_has_errant_gtids() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 101, |t| t.obs().errant_gtids = gtids(101, 2)),
        now,
    );
    out.reports(C::ErrantGtidDetected, "zone1-0000000101");
    let p = out
        .problems
        .iter()
        .find(|p| p.analysis == C::ErrantGtidDetected)
        .expect("reported");
    assert_eq!(p.errant_gtid, "00000065-0000-0000-0000-000000000065:1-2");
    // The primary row carries the structure warning only.
    assert_eq!(out.chosen("zone1-0000000100"), Some(C::NoProblem));
}

#[test]
fn no_errant_gtid_detected_on_a_primary_type_tablet() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().errant_gtids = gtids(100, 2)),
        now,
    )
    .lacks(C::ErrantGtidDetected);
}

// ---------------------------------------------------------------- 21-22: no primary

#[test]
fn cluster_has_no_primary_when_no_tablet_is_primary_and_the_shard_never_had_one() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "semi_sync", now)
        .replica("zone1", 101)
        .replica("zone1", 102);
    let out = run(b, now);
    out.reports(C::ClusterHasNoPrimary, "zone1-0000000101");
    assert_eq!(
        out.problems.len(),
        1,
        "one shard-wide action per shard:{}",
        out.describe()
    );
}

#[test]
fn no_cluster_has_no_primary_when_a_primary_exists() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::ClusterHasNoPrimary);
}

#[test]
fn primary_tablet_deleted_when_no_tablet_is_primary_but_the_shard_had_one() {
    let now = t0();
    let out = run(base("semi_sync", now).remove("zone1", 100), now);
    out.reports(C::PrimaryTabletDeleted, "zone1-0000000101");
    out.lacks(C::ClusterHasNoPrimary);
    assert!(
        out.problems[0].reason.contains("zone1-0000000100"),
        "{}",
        out.problems[0].reason
    );
}

#[test]
fn no_primary_tablet_deleted_when_the_shard_never_had_a_primary() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "semi_sync", now).replica("zone1", 101);
    run(b, now).lacks(C::PrimaryTabletDeleted);
}

// ---------------------------------------------------------------- 23-26: replica replication

#[test]
fn replication_stopped_when_a_replica_threads_are_stopped() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.stop_replication()),
        now,
    )
    .reports(C::ReplicationStopped, "zone1-0000000101");
}

#[test]
fn replication_stopped_when_the_io_thread_is_still_connecting() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 101, |t| {
        if let Some(r) = t.obs().replication.as_mut() {
            r.io_thread = vtorc::model::ThreadState::Connecting;
        }
    });
    run(b, now).reports(C::ReplicationStopped, "zone1-0000000101");
}

#[test]
fn no_replication_stopped_when_no_source_is_configured() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.no_replication()),
        now,
    )
    .lacks(C::ReplicationStopped);
}

#[test]
fn not_connected_to_primary_when_a_replica_has_no_source() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.no_replication()),
        now,
    )
    .reports(C::NotConnectedToPrimary, "zone1-0000000101");
}

#[test]
fn no_not_connected_to_primary_when_the_replica_replicates() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::NotConnectedToPrimary);
}

#[test]
fn replica_misconfigured_when_net_timeout_is_not_twice_the_heartbeat() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 101, |t| t.obs().replica_net_timeout = 60),
        now,
    )
    .reports(C::ReplicaMisconfigured, "zone1-0000000101");
}

#[test]
fn no_replica_misconfigured_when_twice_the_heartbeat_rounds_to_the_net_timeout() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 101, |t| {
        t.obs().heartbeat_interval = 1.25;
        t.obs().replica_net_timeout = 3;
    });
    run(b, now).lacks(C::ReplicaMisconfigured);
}

#[test]
fn connected_to_wrong_primary_when_a_replica_replicates_from_another_replica() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 102, |t| {
            t.replicate_from(&mysql_host("zone1", 101), MYSQL_PORT)
        }),
        now,
    );
    out.reports(C::ConnectedToWrongPrimary, "zone1-0000000102");
    assert!(
        out.problems
            .iter()
            .any(|p| p.reason.contains("the shard primary is zone1-0000000100"))
    );
}

#[test]
fn connected_to_wrong_primary_when_the_source_is_not_a_tablet_of_the_shard() {
    let now = t0();
    // Policy `none`: under a semi-sync policy the unresolved source also makes
    // ReplicaSemiSyncMustNotBeSet match, and it sorts first (as in Go).
    run(
        base("none", now).edit("zone1", 102, |t| t.replicate_from("elsewhere", 3306)),
        now,
    )
    .reports(C::ConnectedToWrongPrimary, "zone1-0000000102");
    run(
        base("semi_sync", now).edit("zone1", 102, |t| t.replicate_from("elsewhere", 3306)),
        now,
    )
    .reports(C::ReplicaSemiSyncMustNotBeSet, "zone1-0000000102");
}

#[test]
fn no_connected_to_wrong_primary_when_replicas_follow_the_shard_primary() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::ConnectedToWrongPrimary);
}

// ---------------------------------------------------------------- 27-29: unreachable primary

fn lagging(t: &mut vtorc::model::TabletState) {
    if let Some(r) = t.obs().replication.as_mut() {
        r.lag_seconds = Some(60);
    }
}

#[test]
fn unreachable_primary_with_lagging_replicas_when_every_replica_lags() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, lagging)
        .edit("zone1", 102, lagging);
    let out = run(b, now);
    out.reports(C::UnreachablePrimaryWithLaggingReplicas, "zone1-0000000100");
    assert_eq!(
        out.matched("zone1-0000000100"),
        [C::UnreachablePrimaryWithLaggingReplicas, C::UnreachablePrimary],
        "same priority: catalogue order decides"
    );
}

#[test]
fn no_unreachable_primary_with_lagging_replicas_when_one_replica_keeps_up() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, lagging);
    run(b, now).lacks(C::UnreachablePrimaryWithLaggingReplicas);
}

#[test]
fn unreachable_primary_when_vtorc_cannot_reach_it_but_all_replicas_replicate() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| t.unreachable(now)),
        now,
    )
    .reports(C::UnreachablePrimary, "zone1-0000000100");
}

#[test]
fn dead_primary_when_a_poll_of_the_primary_hangs_longer_than_the_poll_time() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| {
            t.record_poll_in_progress(now + Duration::from_secs(10))
        })
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication());
    let out = run(b, now);
    out.reports(C::DeadPrimary, "zone1-0000000100");
    // The last finished poll succeeded, so the partial-success flag is still
    // set and the UnreachablePrimary family does not match (as in Go).
    assert!(out.problems[0].last_check_partial_success);
}

#[test]
fn no_unreachable_primary_after_a_partially_successful_poll() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.record_poll_failure(now, "late".into(), true, false)
    });
    run(b, now).lacks(C::UnreachablePrimary);
}

#[test]
fn unreachable_primary_with_broken_replicas_when_only_some_replicas_replicate() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication());
    run(b, now).reports(C::UnreachablePrimaryWithBrokenReplicas, "zone1-0000000100");
}

#[test]
fn no_unreachable_primary_with_broken_replicas_when_all_replicate() {
    let now = t0();
    run(
        base("semi_sync", now).edit("zone1", 100, |t| t.unreachable(now)),
        now,
    )
    .lacks(C::UnreachablePrimaryWithBrokenReplicas);
}

// ---------------------------------------------------------------- 30-34: reachable primary, replica health

#[test]
fn locked_semi_sync_primary_hypothesis_when_fewer_clients_than_the_wait_count() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 100, |t| t.obs().semi_sync.wait_for_replica_count = 3),
        now,
    );
    out.reports(C::LockedSemiSyncPrimaryHypothesis, "zone1-0000000100");
    assert!(!out.problems[0].actionable);
}

#[test]
fn no_locked_semi_sync_primary_hypothesis_when_enough_clients_are_connected() {
    let now = t0();
    run(base("semi_sync", now), now).lacks(C::LockedSemiSyncPrimaryHypothesis);
}

fn single_replica(now: Instant) -> ShardBuilder {
    ShardBuilder::new("ks", "0", "none", now)
        .primary("zone1", 100)
        .replica("zone1", 101)
}

#[test]
fn primary_single_replica_not_replicating_when_its_only_replica_stopped() {
    let now = t0();
    let out = run(
        single_replica(now).edit("zone1", 101, |t| t.stop_replication()),
        now,
    );
    out.reports(C::PrimarySingleReplicaNotReplicating, "zone1-0000000100");
    out.reports(C::ReplicationStopped, "zone1-0000000101");
}

#[test]
fn no_primary_single_replica_not_replicating_with_two_stopped_replicas() {
    let now = t0();
    let b = base("none", now)
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication());
    run(b, now).lacks(C::PrimarySingleReplicaNotReplicating);
}

#[test]
fn primary_single_replica_dead_when_its_only_replica_is_unreachable() {
    let now = t0();
    run(
        single_replica(now).edit("zone1", 101, |t| t.unreachable(now)),
        now,
    )
    .reports(C::PrimarySingleReplicaDead, "zone1-0000000100");
}

#[test]
fn no_primary_single_replica_dead_when_the_replica_is_reachable() {
    let now = t0();
    run(single_replica(now), now).lacks(C::PrimarySingleReplicaDead);
}

#[test]
fn all_primary_replicas_not_replicating_when_every_replica_stopped() {
    let now = t0();
    let b = base("none", now)
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication());
    run(b, now).reports(C::AllPrimaryReplicasNotReplicating, "zone1-0000000100");
}

#[test]
fn no_all_primary_replicas_not_replicating_when_one_replicates() {
    let now = t0();
    run(
        base("none", now).edit("zone1", 101, |t| t.stop_replication()),
        now,
    )
    .lacks(C::AllPrimaryReplicasNotReplicating);
}

#[test]
fn all_primary_replicas_not_replicating_or_dead_when_some_are_unreachable_and_none_replicate() {
    let now = t0();
    let b = base("none", now)
        .edit("zone1", 101, |t| t.unreachable(now))
        .edit("zone1", 102, |t| t.stop_replication());
    run(b, now).reports(C::AllPrimaryReplicasNotReplicatingOrDead, "zone1-0000000100");
}

#[test]
fn no_all_primary_replicas_not_replicating_or_dead_when_all_are_reachable() {
    let now = t0();
    let b = base("none", now)
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication());
    run(b, now).lacks(C::AllPrimaryReplicasNotReplicatingOrDead);
}
