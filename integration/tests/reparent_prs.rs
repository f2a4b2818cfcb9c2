//! PlannedReparentShard on the real world (etcd + MariaDB + tablet agents)
//! with the workload writer running: the new primary serves, the old one
//! replicates from it, the shard record follows, and no acknowledged
//! write is lost.

mod reparent_support;

use std::time::Duration;

use integration::testkit::semi_sync_commerce;
use integration::workload::{Workload, WorkloadConfig};
use reparent_support::{alias, prs, reparenter, topo_type, wait_replicating_from, writable};
use tokio::time::Instant;
use vtorc::proto::topodata::TabletType;
use vtorc::reparent::{EventLog, PlannedReparentOptions, ReparentError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prs_under_write_load_moves_the_primary_without_losing_an_acknowledged_write() {
    let cluster = semi_sync_commerce().await;
    let (old, new) = (alias("zone1", 100), alias("zone1", 101));
    assert_eq!(
        cluster.primary_alias("commerce", "0").await.expect("shard"),
        Some(old.clone())
    );
    let config = WorkloadConfig {
        writers: 4,
        ..WorkloadConfig::new("commerce", "0")
    };
    let workload = Workload::start_acked(&cluster, &config, &old, 200)
        .await
        .expect("the workload starts and writes flow on the old primary");

    let rp = reparenter(&cluster, Duration::from_secs(15));
    let log = EventLog::default();
    let started = Instant::now();
    let outcome = rp
        .planned_reparent_shard(
            "commerce",
            "0",
            &PlannedReparentOptions::promote(new.clone()),
            None,
            &log,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PRS failed: {e}\n{:#?}\n{}",
                log.messages(),
                cluster.diagnostics()
            )
        });
    let prs_time = started.elapsed();
    assert_eq!(outcome.new_primary.and_then(|t| t.alias), Some(new.clone()));

    // The agent of the new primary updates the shard record itself.
    cluster
        .wait_for_primary("commerce", "0", &new, Duration::from_secs(15))
        .await
        .expect("shard record names the new primary");
    let record_time = started.elapsed();
    assert_eq!(topo_type(&cluster, &new).await, TabletType::Primary);
    assert_eq!(topo_type(&cluster, &old).await, TabletType::Replica);
    assert!(writable(&cluster, &new).await, "new primary is writable");
    assert!(!writable(&cluster, &old).await, "old primary is read-only");
    wait_replicating_from(&cluster, &old, &new).await;
    wait_replicating_from(&cluster, &alias("zone1", 102), &new).await;

    // Writes resume on the new primary.
    let (report, check) = workload
        .finish_on(&cluster, &new, 200, Duration::from_secs(60))
        .await;
    eprintln!(
        "PRS {old} -> {new}: reparent {prs_time:?}, shard record updated after {record_time:?}; \
         {} acknowledged ({} on the old primary, {} on the new), {} rejected, {} unknown; check {check:?}",
        report.acked.len(),
        report.acked_on(&old),
        report.acked_on(&new),
        report.rejected.len(),
        report.unknown.len()
    );
    assert!(check.is_lossless(), "lost writes: {check:?}");
    assert!(check.checked >= 400, "{check:?}");
    // Every phase is in the step log.
    let phases: Vec<&str> = log.events().iter().filter_map(|e| e.phase).collect();
    for p in [
        "lock_shard",
        "read_shard",
        "elect_primary",
        "promote",
        "repoint_replicas",
    ] {
        assert!(phases.contains(&p), "phase {p} missing: {phases:?}");
    }
    assert!(
        log.messages()
            .iter()
            .any(|m| m.contains("finished PlannedReparentShard")),
        "{:?}",
        log.messages()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prs_refusals_leave_the_shard_untouched() {
    let cluster = semi_sync_commerce().await;
    let rp = reparenter(&cluster, Duration::from_secs(10));
    let primary = alias("zone1", 100);
    let err = prs(
        &rp,
        &PlannedReparentOptions {
            new_primary: Some(alias("zone1", 101)),
            expected_primary: Some(alias("zone1", 102)),
            ..Default::default()
        },
    )
    .await
    .expect_err("expected primary does not match");
    assert!(
        matches!(err, ReparentError::ExpectedPrimaryMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "primary zone1-0000000100 is not equal to expected alias zone1-0000000102"
    );
    // Without a new primary, PRS elects a replica of the primary's cell and
    // moves away from the current primary; then the same request is a no-op.
    let out = prs(
        &rp,
        &PlannedReparentOptions {
            avoid_primary: Some(primary.clone()),
            expected_primary: Some(primary.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("PRS away from the primary");
    let elected = out.new_primary.and_then(|t| t.alias).expect("elected");
    assert_ne!(elected, primary);
    cluster
        .wait_for_primary("commerce", "0", &elected, Duration::from_secs(15))
        .await
        .expect("shard record follows");
    let again = prs(
        &rp,
        &PlannedReparentOptions {
            avoid_primary: Some(primary.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("no-op");
    assert_eq!(
        again.new_primary, None,
        "the primary already is not the avoided tablet"
    );
    assert_eq!(topo_type(&cluster, &elected).await, TabletType::Primary);
    wait_replicating_from(&cluster, &primary, &elected).await;
}
