//! ERS step logic against a scripted fleet and the in-memory topo.

use std::time::Duration;

use super::super::testutil::{FakeTablet, ers, tablet, world};
use super::super::{EmergencyReparentOptions, EventLog, ReparentError};
use crate::proto::topodata::{TabletAlias, TabletType};
use crate::tablet::TmRequest;

fn a(cell: &str, uid: u32) -> TabletAlias {
    TabletAlias::new(cell, uid)
}

const P: &str = "zone1-0000000100";
const R1: &str = "zone1-0000000101";
const R2: &str = "zone1-0000000102";
const R3: &str = "zone1-0000000103";

/// Primary 100 (dead) and replicas 101, 102 in zone1.
async fn three_tablets(
    policy: &str,
) -> (
    crate::topo::Topo,
    std::sync::Arc<super::super::testutil::FakeFleet>,
    super::super::Reparenter,
) {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
    ];
    world(&["zone1"], policy, Some(a("zone1", 100)), &tablets).await
}

#[tokio::test]
async fn ers_promotes_the_most_advanced_replica_after_the_primary_dies() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    let log = EventLog::default();
    let out = rp
        .emergency_reparent_shard("ks", "0", &EmergencyReparentOptions::default(), None, &log)
        .await
        .expect("ers succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 102)));
    rp.wait_for_background_calls().await;
    // Both replicas applied their relay logs before anything was promoted.
    let methods = fleet.methods();
    let promote = methods
        .iter()
        .position(|m| m == &format!("{R2}:PromoteReplica"))
        .expect("promoted");
    for waited in [R1, R2] {
        let w = methods
            .iter()
            .position(|m| m == &format!("{waited}:WaitForPosition"))
            .expect("relay log wait");
        assert!(w < promote, "{methods:?}");
    }
    assert!(!fleet.called(R1, "PromoteReplica"));
    // Journal written with the lock action; the other replica repointed with
    // semi-sync (semi_sync policy) and a forced start (it was replicating).
    let journal = fleet.calls_of("PopulateReparentJournal");
    let TmRequest::PopulateReparentJournal(j) = &journal[0].1 else {
        panic!("journal request")
    };
    assert_eq!(j.action_name, "EmergencyReparentShard");
    assert_eq!(j.primary_alias, Some(a("zone1", 102)));
    let repoint = fleet
        .calls_of("SetReplicationSource")
        .into_iter()
        .find(|(t, _)| t == R1)
        .expect("R1 repointed");
    let TmRequest::SetReplicationSource(r) = repoint.1 else {
        panic!("repoint request")
    };
    assert_eq!(r.parent, Some(a("zone1", 102)));
    assert!(r.semi_sync && r.force_start_replication);
    // The step log names each phase in order.
    let phases: Vec<&str> = log.events().iter().filter_map(|e| e.phase).collect();
    let order = [
        "lock_shard",
        "read_shard",
        "stop_replication",
        "find_candidates",
        "wait_for_relay_logs",
        "filter_errant_gtids",
        "elect_intermediate_source",
        "promote",
    ];
    let mut last = 0;
    for p in order {
        let i = phases
            .iter()
            .position(|x| *x == p)
            .unwrap_or_else(|| panic!("phase {p} missing"));
        assert!(i >= last, "{p} out of order: {phases:?}");
        last = i;
    }
}

#[tokio::test]
async fn ers_refuses_when_too_few_tablets_are_reached_to_revoke_and_restarts_replication() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::dead());
    let log = EventLog::default();
    let err = rp
        .emergency_reparent_shard("ks", "0", &EmergencyReparentOptions::default(), None, &log)
        .await
        .expect_err("cannot prove the dead primary lost its acker");
    assert!(
        matches!(
            err,
            ReparentError::NotEnoughTabletsReached {
                reached: 1,
                total: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("could not reach sufficient tablets to guarantee safety")
    );
    assert!(!fleet.called(R1, "PromoteReplica"));
    // The replica ERS stopped gets its replication back.
    assert!(fleet.called(R1, "StartReplication"), "{:?}", fleet.methods());
}

#[tokio::test]
async fn with_durability_none_every_unreached_promotable_tablet_blocks_the_reparent() {
    let (_topo, fleet, rp) = three_tablets("none").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::dead());
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("two tablets unreached");
    assert!(
        matches!(err, ReparentError::NotEnoughTabletsReached { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn ers_refuses_split_brain_positions() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    // Each replica holds a transaction the other lacks.
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12,1-103-1"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-102-13"));
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("divergent histories");
    assert!(matches!(err, ReparentError::SplitBrain(_)), "{err:?}");
    assert!(
        err.to_string().contains(R1) && err.to_string().contains(R2),
        "{err}"
    );
    assert!(fleet.calls_of("PromoteReplica").is_empty());
    assert!(fleet.called(R1, "StartReplication") && fleet.called(R2, "StartReplication"));
}

#[tokio::test]
async fn two_primaries_writing_the_same_sequence_is_a_split_brain() {
    let (_topo, fleet, rp) = three_tablets("none").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    // 102 followed another primary (server 102) that also wrote 12.
    fleet.set(R2, FakeTablet::replica("MariaDB/0-102-12"));
    fleet.update(R2, |t| t.source_server_id = 102);
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("0-101-12 and 0-102-12 are two histories");
    assert!(matches!(err, ReparentError::SplitBrain(_)), "{err:?}");
}

#[tokio::test]
async fn a_local_write_at_the_same_sequence_is_errant_not_a_split_brain() {
    let (_topo, fleet, rp) = three_tablets("none").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    // 102 follows 101 but wrote its own transaction 12.
    fleet.set(R2, FakeTablet::replica("MariaDB/0-102-12"));
    let out = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect("the errant leader is dropped, the other survives");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 101)));
}

async fn four_tablets_with_an_errant_replica() -> (
    crate::topo::Topo,
    std::sync::Arc<super::super::testutil::FakeFleet>,
    super::super::Reparenter,
) {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
        tablet("zone1", 103, TabletType::Replica, 0),
    ];
    let w = world(&["zone1"], "semi_sync", Some(a("zone1", 100)), &tablets).await;
    w.1.set(P, FakeTablet::dead());
    // 101 (server id 201) wrote transaction 13 itself; its source is the
    // primary (server id 101), which the others follow up to 12.
    w.1.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    w.1.update(R1, |t| {
        t.relay = "MariaDB/0-201-13".into();
        t.position = "MariaDB/0-201-13".into();
    });
    w.1.set(R2, FakeTablet::replica("MariaDB/0-101-12"));
    w.1.set(R3, FakeTablet::replica("MariaDB/0-101-12"));
    w
}

#[tokio::test]
async fn ers_drops_a_candidate_with_errant_gtids() {
    let (_topo, fleet, rp) = four_tablets_with_an_errant_replica().await;
    let log = EventLog::default();
    let out = rp
        .emergency_reparent_shard("ks", "0", &EmergencyReparentOptions::default(), None, &log)
        .await
        .expect("the clean replicas can be promoted");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 102)));
    assert!(
        log.messages()
            .iter()
            .any(|m| m.contains("skipping zone1-0000000101 because we detected errant GTIDs")),
        "{:?}",
        log.messages()
    );
    assert!(!fleet.called(R1, "PromoteReplica"));
}

#[tokio::test]
async fn ers_refuses_a_requested_primary_with_errant_gtids() {
    let (_topo, fleet, rp) = four_tablets_with_an_errant_replica().await;
    let opts = EmergencyReparentOptions {
        new_primary: Some(a("zone1", 101)),
        ..Default::default()
    };
    let err = ers(&rp, &opts).await.expect_err("errant-only candidate");
    assert!(matches!(err, ReparentError::ErrantGtids(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("requested primary elect zone1-0000000101 has errant GTIDs")
    );
    assert!(fleet.calls_of("PromoteReplica").is_empty());
}

#[tokio::test]
async fn expected_primary_mismatch_fails_before_any_tablet_is_touched() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    let opts = EmergencyReparentOptions {
        expected_primary: Some(a("zone1", 101)),
        ..Default::default()
    };
    let err = ers(&rp, &opts).await.expect_err("mismatch");
    assert!(
        matches!(err, ReparentError::ExpectedPrimaryMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    assert!(fleet.methods().is_empty(), "{:?}", fleet.methods());
}

#[tokio::test]
async fn prevent_cross_cell_promotes_in_the_old_cell_after_catching_up() {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone2", 200, TabletType::Replica, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1", "zone2"], "semi_sync", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set("zone2-0000000200", FakeTablet::replica("MariaDB/0-101-15"));
    let opts = EmergencyReparentOptions {
        prevent_cross_cell_promotion: true,
        ..Default::default()
    };
    let out = ers(&rp, &opts).await.expect("ers succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 101)));
    rp.wait_for_background_calls().await;
    let methods = fleet.methods();
    // 101 first replicates from the more advanced 200 and catches up to it.
    let first_repoint = methods
        .iter()
        .position(|m| m == &format!("{R1}:SetReplicationSource"))
        .expect("repointed to the intermediate source");
    let catch_up = methods
        .iter()
        .rposition(|m| m == "zone2-0000000200:PrimaryPosition")
        .expect("intermediate position read");
    let promote = methods
        .iter()
        .position(|m| m == &format!("{R1}:PromoteReplica"))
        .expect("promoted");
    assert!(first_repoint < catch_up && catch_up < promote, "{methods:?}");
    assert!(!fleet.called("zone2-0000000200", "PromoteReplica"));
}

#[tokio::test]
async fn without_the_cross_cell_restriction_the_most_advanced_wins() {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone2", 200, TabletType::Replica, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1", "zone2"], "semi_sync", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set("zone2-0000000200", FakeTablet::replica("MariaDB/0-101-15"));
    let out = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect("ers succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone2", 200)));
}

#[tokio::test]
async fn a_must_not_tablet_is_only_an_intermediate_source() {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Rdonly, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1"], "none", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    let out = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect("ers succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 101)));
    assert!(
        fleet.called(R2, "PrimaryPosition"),
        "catch-up reads the rdonly's position"
    );
    assert!(!fleet.called(R2, "PromoteReplica"));
    // Requesting the rdonly is refused.
    let (_topo, fleet, rp) = world(&["zone1"], "none", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    let opts = EmergencyReparentOptions {
        new_primary: Some(a("zone1", 102)),
        ..Default::default()
    };
    let err = ers(&rp, &opts).await.expect_err("must_not");
    assert!(matches!(err, ReparentError::Aborted(_)), "{err:?}");
    assert!(err.to_string().contains("must not promotion rule"), "{err}");
}

#[tokio::test]
async fn a_candidate_without_enough_ackers_is_not_promoted() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    // Neither replica was replicating before ERS: they are repointed but
    // not started, so neither would ack for the other.
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.update(R1, |t| t.running = false);
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.update(R2, |t| t.running = false);
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("no tablet would get a semi-sync ack");
    assert!(matches!(err, ReparentError::NoValidCandidates { .. }), "{err:?}");
    assert!(fleet.calls_of("PromoteReplica").is_empty());
}

#[tokio::test]
async fn a_failed_relay_log_wait_fails_the_reparent() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    fleet.update(R2, |t| t.wait_fails = true);
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("unapplied relay log");
    assert!(
        err.to_string().contains("could not apply all relay logs"),
        "{err}"
    );
    assert!(fleet.calls_of("PromoteReplica").is_empty());
    assert!(fleet.called(R1, "StartReplication") && fleet.called(R2, "StartReplication"));
}

#[tokio::test]
async fn losing_the_lock_aborts_the_rpc_in_flight_at_once() {
    let (topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    fleet.update(R2, |t| t.wait_hangs = true);
    let lock = topo
        .lock_shard("ks", "0", "VTOrc Recovery for DeadPrimary on zone1-0000000100")
        .await
        .expect("lock");
    let lease = lock.lease_id();
    let store = topo.global_store();
    let started = crate::clock::now();
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.lease_revoke(lease).await.expect("revoke");
    };
    let opts = EmergencyReparentOptions::default();
    let log = EventLog::default();
    let ers = rp.emergency_reparent_shard("ks", "0", &opts, Some(&lock), &log);
    let (result, ()) = tokio::join!(ers, revoke);
    let err = result.expect_err("lock lost");
    assert!(matches!(err, ReparentError::LockLost(_)), "{err:?}");
    // The wait bound is 3 s; the abort came with the lease loss.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(fleet.calls_of("PromoteReplica").is_empty());
    // No clean-up under a lock someone else may hold now.
    assert!(!fleet.called(R1, "StartReplication"));
}

#[tokio::test]
async fn a_held_lock_is_reused_and_left_held() {
    let (topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    let lock = topo
        .try_lock_shard("ks", "0", "VTOrc Recovery")
        .await
        .expect("lock");
    rp.emergency_reparent_shard(
        "ks",
        "0",
        &EmergencyReparentOptions::default(),
        Some(&lock),
        &EventLog::default(),
    )
    .await
    .expect("ers under the caller's lock");
    lock.check().await.expect("still held by the caller");
    // A lock for another shard is refused.
    let other = rp
        .emergency_reparent_shard(
            "ks",
            "-80",
            &EmergencyReparentOptions::default(),
            Some(&lock),
            &EventLog::default(),
        )
        .await
        .expect_err("wrong shard");
    assert!(matches!(other, ReparentError::InvalidArgument(_)), "{other:?}");
    lock.unlock().await.expect("unlock");
}

#[tokio::test]
async fn a_shard_that_never_had_a_primary_gets_init_primary() {
    let tablets = [
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1"], "none", None, &tablets).await;
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-12"));
    let out = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect("ers succeeds");
    let alias = out
        .new_primary
        .and_then(|t| t.alias)
        .expect("promoted")
        .to_string();
    assert!(fleet.called(&alias, "InitPrimary"));
    assert!(fleet.calls_of("PromoteReplica").is_empty());
}

#[tokio::test]
async fn the_required_position_must_have_been_received() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-14"));
    let opts = EmergencyReparentOptions {
        required_position: Some("MariaDB/0-101-15".into()),
        ..Default::default()
    };
    let err = ers(&rp, &opts).await.expect_err("nobody received 15");
    assert!(err.to_string().contains("required position"), "{err}");
    let opts = EmergencyReparentOptions {
        required_position: Some("MariaDB/0-101-14".into()),
        ..Default::default()
    };
    ers(&rp, &opts).await.expect("102 received 14");
}

#[tokio::test]
async fn a_live_old_primary_is_demoted_and_counts_as_a_candidate() {
    let (_topo, fleet, rp) = three_tablets("semi_sync").await;
    // The primary's MySQL answers "not a replica": ERS demotes it.
    fleet.set(P, FakeTablet::primary("MariaDB/0-101-14"));
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-14"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-13"));
    let out = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect("ers succeeds");
    let demote = fleet.calls_of("DemotePrimary");
    assert_eq!(demote.len(), 1);
    let TmRequest::DemotePrimary(d) = &demote[0].1 else {
        panic!("demote request")
    };
    assert!(d.force);
    assert_eq!(demote[0].0, P);
    // Same position received: the replica that also applied it ranks first.
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 101)));
}

#[tokio::test]
async fn a_mariadb_replicas_own_writes_are_read_from_its_binlog() {
    let (_topo, fleet, rp) = four_tablets_with_an_errant_replica().await;
    // As the agent reports it: the slave and relay positions show only what
    // was replicated; the local write is in the binlog position alone.
    fleet.update(R1, |t| {
        t.position = "MariaDB/0-101-12".into();
        t.relay = "MariaDB/0-101-12".into();
        t.binlog = "MariaDB/0-201-13".into();
    });
    let opts = EmergencyReparentOptions {
        new_primary: Some(a("zone1", 101)),
        ..Default::default()
    };
    let err = ers(&rp, &opts)
        .await
        .expect_err("the binlog shows the errant write");
    assert!(matches!(err, ReparentError::ErrantGtids(_)), "{err:?}");
    assert!(fleet.called(R1, "PrimaryPosition"));
}

#[tokio::test]
async fn ers_refuses_when_the_only_promotable_candidate_has_errant_gtids() {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Rdonly, 0),
        tablet("zone1", 103, TabletType::Rdonly, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1"], "semi_sync", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::dead());
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.update(R1, |t| t.binlog = "MariaDB/0-201-13".into());
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-12"));
    fleet.set(R3, FakeTablet::replica("MariaDB/0-101-12"));
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("the only REPLICA has an errant GTID, the rest are RDONLY");
    assert!(matches!(err, ReparentError::ErrantGtids(_)), "{err:?}");
    assert!(
        err.to_string().contains("zone1-0000000101: MariaDB/0-201-13"),
        "{err}"
    );
    assert!(fleet.calls_of("PromoteReplica").is_empty());
    for r in [R1, R2, R3] {
        assert!(fleet.called(r, "StartReplication"), "{r} restarted");
    }
}
