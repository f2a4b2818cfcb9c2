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

/// Under `durability`, turns `side`'s semi-sync on tablet `uid` to the
/// wrong setting `wrong`, then waits for vtorc to diagnose `analysis`, fix
/// it with a successful `kind` recovery and the setting to be `!wrong`
/// again; a fixed replica must replicate from the primary (100) again.
async fn semi_sync_is_put_back(
    durability: &str,
    uid: u32,
    side: SemiSyncSide,
    wrong: bool,
    kind: RecoveryKind,
    analysis: AnalysisCode,
) {
    let (cluster, vtorc) = healthy_world(KS, durability, &[]).await;
    cluster
        .set_semi_sync(&alias(uid), side, wrong)
        .await
        .unwrap_or_else(|e| panic!("{side:?} side of {uid} set to {wrong}: {e:#}"));
    vtorc.fixed(kind, &alias(uid), analysis).await;
    wait_semi_sync(&cluster, &alias(uid), side, !wrong).await;
    if side == SemiSyncSide::Replica {
        wait_replicating_from(&cluster, &alias(uid), &alias(100), Duration::from_secs(10)).await;
    }
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_semi_sync_must_be_set_under_semi_sync() {
    semi_sync_is_put_back(
        "semi_sync",
        100,
        SemiSyncSide::Primary,
        false,
        RecoveryKind::FixPrimary,
        AnalysisCode::PrimarySemiSyncMustBeSet,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_semi_sync_must_be_set_under_semi_sync() {
    semi_sync_is_put_back(
        "semi_sync",
        101,
        SemiSyncSide::Replica,
        false,
        RecoveryKind::FixReplica,
        AnalysisCode::ReplicaSemiSyncMustBeSet,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_semi_sync_must_not_be_set_without_a_semi_sync_policy() {
    semi_sync_is_put_back(
        "none",
        100,
        SemiSyncSide::Primary,
        true,
        RecoveryKind::FixPrimary,
        AnalysisCode::PrimarySemiSyncMustNotBeSet,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_semi_sync_must_not_be_set_without_a_semi_sync_policy() {
    semi_sync_is_put_back(
        "none",
        102,
        SemiSyncSide::Replica,
        true,
        RecoveryKind::FixReplica,
        AnalysisCode::ReplicaSemiSyncMustNotBeSet,
    )
    .await;
}
