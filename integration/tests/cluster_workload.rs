//! The workload writer and its loss checker against a real cluster: rows
//! it acknowledges exist, the checker notices rows that vanish, and writes
//! a read-only primary refuses are counted as refused, not acknowledged.

use std::time::Duration;

use integration::cluster::Cluster;
use integration::testkit::{semi_sync_commerce, wait_caught_up};
use integration::workload::{Workload, WorkloadConfig, check_acknowledged, check_acknowledged_on};
use mysql_async::prelude::Queryable;
use vtorc::proto::topodata::TabletAlias;

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// The semi-sync world with a workload on `commerce/0` that primary 100
/// has acknowledged `acked` writes of.
async fn writing(acked: u64) -> (Cluster, WorkloadConfig, Workload) {
    let cluster = semi_sync_commerce().await;
    let config = WorkloadConfig::new("commerce", "0");
    let workload = Workload::start_acked(&cluster, &config, &alias(100), acked)
        .await
        .expect("the workload starts and writes flow");
    (cluster, config, workload)
}

/// Waits until `uid` has applied everything the primary has written.
async fn caught_up(cluster: &Cluster, uid: u32) {
    wait_caught_up(cluster, &alias(100), &alias(uid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_on_the_primary_and_on_both_replicas() {
    let (cluster, config, workload) = writing(300).await;
    let report = workload.stop().await.expect("stop");
    eprintln!(
        "{} acknowledged writes in {:?} ({} errors)",
        report.acked.len(),
        report.duration,
        report.errors
    );
    assert!(report.acked.len() >= 300);
    assert_eq!(report.primaries, vec![alias(100)]);
    assert_eq!(report.errors, 0, "{:?}", report.sample_errors);
    let ids = report.acked_ids();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique");

    for uid in [100, 101, 102] {
        if uid != 100 {
            caught_up(&cluster, uid).await;
        }
        let check = check_acknowledged_on(&cluster, &alias(uid), &config, &report)
            .await
            .expect("check");
        assert!(check.is_lossless(), "zone1-{uid}: {check:?}");
        assert_eq!(check.checked, report.acked.len());
        assert_eq!(check.rows, report.acked.len(), "no unacknowledged rows either");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_acknowledged_rows_that_vanished() {
    let (cluster, config, workload) = writing(50).await;
    let report = workload.stop().await.expect("stop");
    let victims: Vec<u64> = report.acked_ids().into_iter().step_by(10).take(3).collect();
    let mut conn = cluster.mysql_conn(&alias(100)).await.expect("connect");
    for id in &victims {
        conn.query_drop(format!("DELETE FROM vt_commerce.workload WHERE id = {id}"))
            .await
            .expect("delete");
    }
    let check = check_acknowledged(&mut conn, &config, &report)
        .await
        .expect("check");
    assert!(!check.is_lossless());
    assert_eq!(check.missing, victims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_read_only_primary_refuses_are_rejected_not_acknowledged() {
    let (cluster, config, workload) = writing(20).await;
    cluster.set_read_only(&alias(100)).await.expect("read_only=ON");
    workload
        .wait_for_rejections(10, Duration::from_secs(30))
        .await
        .expect("the writer is refused");
    let acked_while_read_only = workload.acked_count();
    cluster.set_writable(&alias(100)).await.expect("read_only=OFF");
    workload
        .wait_for_acks_on(&alias(100), acked_while_read_only + 20, Duration::from_secs(30))
        .await
        .expect("writes resume");
    let report = workload.stop().await.expect("stop");
    assert!(report.rejected.len() >= 10);
    assert!(
        report
            .sample_errors
            .iter()
            .any(|e| e.contains("read-only") || e.contains("read_only")),
        "{:?}",
        report.sample_errors
    );
    let check = check_acknowledged_on(&cluster, &alias(100), &config, &report)
        .await
        .expect("check");
    assert!(check.is_lossless(), "{check:?}");
    assert!(check.rejected_present.is_empty());
}
