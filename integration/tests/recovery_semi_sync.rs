//! Semi-sync settings out of line with the durability policy, end to end:
//! `semi_sync` needs the primary to wait for an ACK and REPLICAs to send
//! them; `none` needs both off. vtorc repairs each side (`FixPrimary` with
//! `UndoDemotePrimary(semiSync)`, `FixReplica` with
//! `SetReplicationSource(semiSync)`).

mod recovery_support;

use std::time::Duration;

use integration::faults::SemiSyncSide;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};

const KS: &str = "commerce";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_semi_sync_must_be_set_under_semi_sync() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .set_semi_sync(&alias(100), SemiSyncSide::Primary, false)
        .await
        .expect("primary side off");
    let record = vtorc.succeeded_on(RecoveryKind::FixPrimary, &alias(100)).await;
    assert_eq!(record.analysis, AnalysisCode::PrimarySemiSyncMustBeSet);
    wait_semi_sync(&cluster, &alias(100), SemiSyncSide::Primary, true).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_semi_sync_must_be_set_under_semi_sync() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .set_semi_sync(&alias(101), SemiSyncSide::Replica, false)
        .await
        .expect("replica side off");
    let record = vtorc.succeeded_on(RecoveryKind::FixReplica, &alias(101)).await;
    assert_eq!(record.analysis, AnalysisCode::ReplicaSemiSyncMustBeSet);
    wait_semi_sync(&cluster, &alias(101), SemiSyncSide::Replica, true).await;
    wait_replicating_from(&cluster, &alias(101), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_semi_sync_must_not_be_set_without_a_semi_sync_policy() {
    let (cluster, vtorc) = healthy_world(KS, "none", &[]).await;
    cluster
        .set_semi_sync(&alias(100), SemiSyncSide::Primary, true)
        .await
        .expect("primary side on");
    let record = vtorc.succeeded_on(RecoveryKind::FixPrimary, &alias(100)).await;
    assert_eq!(record.analysis, AnalysisCode::PrimarySemiSyncMustNotBeSet);
    wait_semi_sync(&cluster, &alias(100), SemiSyncSide::Primary, false).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_semi_sync_must_not_be_set_without_a_semi_sync_policy() {
    let (cluster, vtorc) = healthy_world(KS, "none", &[]).await;
    cluster
        .set_semi_sync(&alias(102), SemiSyncSide::Replica, true)
        .await
        .expect("replica side on");
    let record = vtorc.succeeded_on(RecoveryKind::FixReplica, &alias(102)).await;
    assert_eq!(record.analysis, AnalysisCode::ReplicaSemiSyncMustNotBeSet);
    wait_semi_sync(&cluster, &alias(102), SemiSyncSide::Replica, false).await;
    wait_replicating_from(&cluster, &alias(102), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}
