//! Errant GTIDs, end to end: a replica commits a local transaction. With
//! `--change-tablets-with-errant-gtid-to-drained` vtorc changes it to
//! DRAINED; without, the problem is detected and audited but skipped
//! (`NoRecoveryAction`) and the tablet stays as it is.
//!
//! The world runs without vttablet heartbeats (poller mode) here: with
//! MariaDB's strict GTID mode, the primary's next write after the replica's
//! local one stops the replica's replication (out-of-order sequence number),
//! and continuous heartbeats make that immediate; the errant set is then a
//! diverged replica, a case of its own.

mod recovery_support;

use std::time::Duration;

use integration::cluster::poll_until;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::proto::topodata::TabletType;
use vtorc::recovery::SkipReason;

const KS: &str = "commerce";

/// Writes an errant transaction on replica 102 and waits (up to 20 s) for
/// vtorc's detection `code` on it.
async fn errant_write_on_102(
    cluster: &integration::cluster::Cluster,
    vtorc: &Vtorc,
    code: AnalysisCode,
) -> vtorc::recovery::DetectionRecord {
    cluster
        .write_errant_transaction(&alias(102))
        .await
        .expect("errant write");
    vtorc.detected(&alias(102), code).await
}

/// The 3-tablet `semi_sync` shard without heartbeats.
fn poller_mode() -> integration::cluster::ClusterBuilder {
    integration::cluster::ClusterBuilder::three_tablets(KS, "semi_sync").heartbeat(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errant_gtids_drain_the_replica_when_enabled() {
    let (cluster, vtorc) = healthy_world_of(
        poller_mode(),
        KS,
        &["--change-tablets-with-errant-gtid-to-drained"],
    )
    .await;
    let gtid = cluster
        .write_errant_transaction(&alias(102))
        .await
        .expect("errant write");
    let code = AnalysisCode::ErrantGtidDetected;
    let record = vtorc
        .fixed(RecoveryKind::RecoverErrantGtidDetected, &alias(102), code)
        .await;
    assert!(
        record
            .analysis_entry
            .errant_gtid
            .contains(gtid.split('-').nth(1).unwrap_or("")),
        "{} vs {gtid}",
        record.analysis_entry.errant_gtid
    );
    let steps: Vec<&str> = step_names(&record);
    assert_eq!(steps, ["ChangeType"]);
    poll_until(Duration::from_secs(10), "102 DRAINED in the topo", || async {
        Ok((topo_type(&cluster, &alias(102)).await? == TabletType::Drained).then_some(()))
    })
    .await
    .expect("drained");
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errant_gtids_are_only_reported_when_draining_is_off() {
    let (cluster, vtorc) = healthy_world_of(poller_mode(), KS, &[]).await;
    let detection = errant_write_on_102(&cluster, &vtorc, AnalysisCode::ErrantGtidDetected).await;
    assert_eq!(detection.recovery_type, RecoveryKind::RecoverErrantGtidDetected);
    poll_until(Duration::from_secs(10), "the skip is recorded", || async {
        Ok(vtorc
            .handle
            .audit()
            .active_detection(&alias(102), AnalysisCode::ErrantGtidDetected)
            .filter(|d| d.skip_reason == Some(SkipReason::NoRecoveryAction)))
    })
    .await
    .expect("skipped with NoRecoveryAction");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(vtorc.finished(RecoveryKind::RecoverErrantGtidDetected).is_empty());
    assert_eq!(
        topo_type(&cluster, &alias(102)).await.expect("type"),
        TabletType::Replica
    );
    assert!(
        vtorc.handle.metrics().skipped_count(
            RecoveryKind::RecoverErrantGtidDetected,
            &shard0(KS),
            SkipReason::NoRecoveryAction
        ) >= 1
    );
    vtorc.stop().await;
}

/// With vttablet heartbeats (the default world), the replica's local write
/// stops its replication at the primary's next heartbeat (MariaDB 1950 under
/// gtid_strict_mode). vtorc names the cure instead of looping FixReplica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_by_its_own_write_is_diverged_and_never_repaired_in_a_loop() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    let detection = errant_write_on_102(&cluster, &vtorc, AnalysisCode::ReplicaDivergedFromPrimary).await;
    assert!(
        detection.reason.contains("restore this tablet from a backup"),
        "{}",
        detection.reason
    );
    // A few seconds of passes: no replication repair runs on 102.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let repairs: Vec<_> = vtorc
        .finished(RecoveryKind::FixReplica)
        .into_iter()
        .filter(|r| r.tablet_alias == alias(102))
        .collect();
    assert!(
        repairs.is_empty(),
        "FixReplica ran on 102: {repairs:?}; audit: {}",
        vtorc.audit_dump()
    );
    let explained = vtorc.handle.explain(&shard0(KS));
    let e = explained
        .iter()
        .find(|e| e.analysis.analyzed_instance_alias == alias(102))
        .unwrap_or_else(|| panic!("102 no longer reported: {explained:?}"));
    assert_eq!(
        (e.analysis.analysis, &e.decision),
        (
            AnalysisCode::ReplicaDivergedFromPrimary,
            &vtorc::recovery::Decision::Skip(SkipReason::NoRecoveryAction)
        ),
        "{}; audit: {}",
        e.analysis.reason,
        vtorc.audit_dump()
    );
    vtorc.stop().await;
}
