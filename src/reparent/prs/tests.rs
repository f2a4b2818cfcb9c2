//! PRS step logic against a scripted fleet and the in-memory topo.

use std::sync::Arc;
use std::time::Duration;

use super::super::testutil::{FakeFleet, FakeTablet, prs, tablet, world};
use super::super::{EventLog, PlannedReparentOptions, ReparentError, Reparenter};
use crate::proto::topodata::{TabletAlias, TabletType};
use crate::tablet::TmRequest;
use crate::topo::Topo;

fn a(cell: &str, uid: u32) -> TabletAlias {
    TabletAlias::new(cell, uid)
}

const P: &str = "zone1-0000000100";
const R1: &str = "zone1-0000000101";
const R2: &str = "zone1-0000000102";
const Z2: &str = "zone2-0000000200";

/// Live primary 100, replicas 101 and 102 in zone1, 200 in zone2.
async fn shard(policy: &str) -> (Topo, Arc<FakeFleet>, Reparenter) {
    let tablets = [
        tablet("zone1", 100, TabletType::Primary, 10),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
        tablet("zone2", 200, TabletType::Replica, 0),
    ];
    let w = world(&["zone1", "zone2"], policy, Some(a("zone1", 100)), &tablets).await;
    w.1.set(P, FakeTablet::primary("MariaDB/0-100-20"));
    w.1.set(R1, FakeTablet::replica("MariaDB/0-100-18"));
    w.1.set(R2, FakeTablet::replica("MariaDB/0-100-19"));
    w.1.set(Z2, FakeTablet::replica("MariaDB/0-100-20"));
    w
}

fn position_of(methods: &[String], call: &str) -> usize {
    methods
        .iter()
        .position(|m| m == call)
        .unwrap_or_else(|| panic!("{call} not called: {methods:?}"))
}

#[tokio::test]
async fn graceful_prs_demotes_waits_then_promotes_and_repoints_everyone() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    let opts = PlannedReparentOptions::promote(a("zone1", 101));
    let log = EventLog::default();
    let out = rp
        .planned_reparent_shard("ks", "0", &opts, None, &log)
        .await
        .expect("prs succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 101)));
    let m = fleet.methods();
    let snapshot = position_of(&m, &format!("{P}:PrimaryPosition"));
    let check = position_of(&m, &format!("{R1}:SetReplicationSource"));
    let demote = position_of(&m, &format!("{P}:DemotePrimary"));
    let wait = position_of(&m, &format!("{R1}:WaitForPosition"));
    let promote = position_of(&m, &format!("{R1}:PromoteReplica"));
    assert!(
        snapshot < check && check < demote && demote < wait && wait < promote,
        "{m:?}"
    );
    // The pre-check waits for the snapshot and forces replication on.
    let TmRequest::SetReplicationSource(pre) = &fleet.calls_of("SetReplicationSource")[0].1 else {
        panic!("repoint")
    };
    assert_eq!(pre.wait_position, "MariaDB/0-100-20");
    assert!(pre.force_start_replication && pre.semi_sync);
    // PRS demotes without force.
    let TmRequest::DemotePrimary(d) = &fleet.calls_of("DemotePrimary")[0].1 else {
        panic!("demote")
    };
    assert!(!d.force);
    // Every other tablet, the old primary included, follows the new one and
    // waits for the journal row.
    for other in [P, R2, Z2] {
        let (_, req) = fleet
            .calls_of("SetReplicationSource")
            .into_iter()
            .rfind(|(t, _)| t == other)
            .unwrap_or_else(|| panic!("{other} repointed"));
        let TmRequest::SetReplicationSource(r) = req else {
            panic!("repoint")
        };
        assert_eq!(r.parent, Some(a("zone1", 101)));
        assert!(r.time_created_ns > 0 && !r.force_start_replication);
    }
    let TmRequest::PopulateReparentJournal(j) = &fleet.calls_of("PopulateReparentJournal")[0].1 else {
        panic!("journal")
    };
    assert_eq!(j.action_name, "PlannedReparentShard");
    assert!(!fleet.called(P, "UndoDemotePrimary"));
}

#[tokio::test]
async fn a_primary_elect_that_does_not_catch_up_rolls_the_demotion_back() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    fleet.update(R1, |t| t.wait_fails = true);
    let opts = PlannedReparentOptions::promote(a("zone1", 101));
    let err = prs(&rp, &opts).await.expect_err("elect did not catch up");
    assert!(err.to_string().contains("failed to catch up"), "{err}");
    assert!(fleet.called(P, "UndoDemotePrimary"), "{:?}", fleet.methods());
    assert!(fleet.calls_of("PromoteReplica").is_empty());
}

#[tokio::test]
async fn without_a_new_primary_the_most_advanced_replica_of_the_primary_cell_is_elected() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    let out = prs(&rp, &PlannedReparentOptions::default())
        .await
        .expect("prs succeeds");
    // 200 is further ahead but in another cell.
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone1", 102)));
    assert!(!fleet.called(Z2, "PromoteReplica"));
    // With cross-cell promotion allowed, 200 wins.
    let (_topo, _fleet, rp) = shard("semi_sync").await;
    let opts = PlannedReparentOptions {
        allow_cross_cell_promotion: true,
        ..Default::default()
    };
    let out = prs(&rp, &opts).await.expect("prs succeeds");
    assert_eq!(out.new_primary.and_then(|t| t.alias), Some(a("zone2", 200)));
}

#[tokio::test]
async fn avoiding_a_tablet_that_is_not_the_primary_is_a_no_op() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    let opts = PlannedReparentOptions {
        avoid_primary: Some(a("zone1", 102)),
        ..Default::default()
    };
    let out = prs(&rp, &opts).await.expect("nothing to do");
    assert_eq!(out.new_primary, None);
    assert!(fleet.methods().is_empty(), "{:?}", fleet.methods());
}

#[tokio::test]
async fn refusals_happen_before_any_tablet_is_touched() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    let mismatch = PlannedReparentOptions {
        new_primary: Some(a("zone1", 101)),
        expected_primary: Some(a("zone1", 102)),
        ..Default::default()
    };
    let err = prs(&rp, &mismatch).await.expect_err("expected primary mismatch");
    assert!(
        matches!(err, ReparentError::ExpectedPrimaryMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    // Refusals of the requested primary itself: (request, what it says).
    let refused = [
        (
            PlannedReparentOptions {
                new_primary: Some(a("zone1", 101)),
                avoid_primary: Some(a("zone1", 101)),
                ..Default::default()
            },
            "is the same as the tablet to avoid",
        ),
        (
            PlannedReparentOptions::promote(a("zone1", 999)),
            "is not in the shard",
        ),
    ];
    for (opts, says) in refused {
        let err = prs(&rp, &opts).await.expect_err(says);
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(fleet.methods().is_empty(), "{:?}", fleet.methods());
}

#[tokio::test]
async fn lagging_replicas_are_not_elected() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    fleet.update(R1, |t| t.lag_seconds = 30);
    fleet.update(R2, |t| t.lag_seconds = 30);
    let opts = PlannedReparentOptions {
        tolerable_replication_lag: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let err = prs(&rp, &opts).await.expect_err("every candidate lags");
    assert!(matches!(err, ReparentError::NoValidCandidates { .. }), "{err:?}");
    assert!(
        err.to_string().contains("more than the tolerable amount"),
        "{err}"
    );
    assert!(fleet.calls_of("DemotePrimary").is_empty());
}

#[tokio::test]
async fn a_shard_without_any_primary_is_initialized() {
    let tablets = [
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1"], "none", None, &tablets).await;
    fleet.set(R1, FakeTablet::replica("MariaDB/0-101-3"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-101-3"));
    let out = prs(&rp, &PlannedReparentOptions::default())
        .await
        .expect("prs initializes the shard");
    let alias = out
        .new_primary
        .and_then(|t| t.alias)
        .expect("elected")
        .to_string();
    assert!(fleet.called(&alias, "InitPrimary"));
    assert!(fleet.called(&alias, "RefreshState"));
    assert!(fleet.calls_of("DemotePrimary").is_empty());
}

#[tokio::test]
async fn re_running_on_the_current_primary_fixes_the_replicas() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    let opts = PlannedReparentOptions::promote(a("zone1", 100));
    prs(&rp, &opts).await.expect("partial promotion recovery");
    assert!(fleet.called(P, "SetReadWrite"));
    assert!(fleet.calls_of("DemotePrimary").is_empty());
    for r in [R1, R2, Z2] {
        assert!(fleet.called(r, "SetReplicationSource"));
    }
}

#[tokio::test]
async fn without_a_clear_primary_every_tablet_is_demoted_and_the_elect_must_be_ahead() {
    let tablets = [
        tablet("zone1", 100, TabletType::Replica, 0),
        tablet("zone1", 101, TabletType::Replica, 0),
        tablet("zone1", 102, TabletType::Replica, 0),
    ];
    let (_topo, fleet, rp) = world(&["zone1"], "none", Some(a("zone1", 100)), &tablets).await;
    fleet.set(P, FakeTablet::replica("MariaDB/0-100-20"));
    fleet.set(R1, FakeTablet::replica("MariaDB/0-100-18"));
    fleet.set(R2, FakeTablet::replica("MariaDB/0-100-19"));
    let opts = PlannedReparentOptions::promote(a("zone1", 101));
    let err = prs(&rp, &opts).await.expect_err("101 is behind 100");
    assert!(
        err.to_string()
            .contains("contains transactions not found in primary-elect"),
        "{err}"
    );
    assert_eq!(fleet.calls_of("DemotePrimary").len(), 3);
    assert!(fleet.calls_of("PromoteReplica").is_empty());
}

#[tokio::test]
async fn a_failed_journal_write_abandons_the_replicas_waiting_for_it() {
    let (_topo, fleet, rp) = shard("semi_sync").await;
    fleet.update(R1, |t| t.journal_fails = true);
    for r in [P, R2, Z2] {
        fleet.update(r, |t| t.repoint_hangs = true);
    }
    let opts = PlannedReparentOptions::promote(a("zone1", 101));
    let started = crate::clock::now();
    let err = prs(&rp, &opts).await.expect_err("journal failed");
    assert!(
        err.to_string().contains("failed PopulateReparentJournal"),
        "{err}"
    );
    // The replicas would have waited the whole 3 s bound for the row.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
