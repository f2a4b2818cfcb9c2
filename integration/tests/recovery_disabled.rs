//! With recoveries disabled (flag or runtime toggle), problems are still
//! detected, audited and counted as skipped, and nothing acts; enabling
//! them again lets vtorc repair.

mod recovery_support;

use std::time::Duration;

use integration::cluster::poll_until;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::recovery::{AuditFilter, Decision, RecoveryOutcome, SkipReason};

const KS: &str = "commerce";

/// Waits until the incident of `code` on `uid` records `reason`.
async fn wait_skipped(vtorc: &Vtorc, uid: u32, code: AnalysisCode, reason: SkipReason) {
    vtorc.detected(&alias(uid), code).await;
    poll_until(Duration::from_secs(10), "the skip reason is recorded", || async {
        Ok(vtorc
            .handle
            .audit()
            .active_detection(&alias(uid), code)
            .filter(|d| d.skip_reason == Some(reason)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}; {}", vtorc.audit_dump()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_recovery_false_detects_and_reports_but_does_not_act() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &["--allow-recovery=false"]).await;
    assert!(!vtorc.handle.global_recoveries_enabled());
    cluster.stop_replication(&alias(101)).await.expect("STOP SLAVE");
    wait_skipped(
        &vtorc,
        101,
        AnalysisCode::ReplicationStopped,
        SkipReason::GlobalRecoveriesDisabled,
    )
    .await;
    let explained = vtorc.handle.explain(&shard0(KS));
    assert!(
        explained
            .iter()
            .any(|e| e.decision == Decision::Skip(SkipReason::GlobalRecoveriesDisabled)),
        "{explained:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        vtorc.handle.recoveries(&AuditFilter::all()).is_empty(),
        "{}",
        vtorc.audit_dump()
    );
    let source = replication_source(&cluster, &alias(101)).await.expect("status");
    assert!(matches!(source, Some((_, false))), "still stopped: {source:?}");
    assert!(
        vtorc.handle.metrics().skipped_count(
            RecoveryKind::FixReplica,
            &shard0(KS),
            SkipReason::GlobalRecoveriesDisabled
        ) >= 2
    );
    assert!(vtorc.handle.enable_global_recoveries());
    let record = vtorc.succeeded_on(RecoveryKind::FixReplica, &alias(101)).await;
    assert_eq!(record.outcome, RecoveryOutcome::Succeeded);
    wait_replicating_from(&cluster, &alias(101), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_toggle_holds_a_failover_until_recoveries_are_enabled() {
    let (mut cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    assert!(!vtorc.handle.disable_global_recoveries());
    cluster.kill_mysql(&alias(100)).expect("kill -9");
    wait_skipped(
        &vtorc,
        100,
        AnalysisCode::DeadPrimary,
        SkipReason::GlobalRecoveriesDisabled,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        vtorc.handle.recoveries(&AuditFilter::all()).is_empty(),
        "{}",
        vtorc.audit_dump()
    );
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    assert!(vtorc.handle.enable_global_recoveries());
    vtorc
        .wait_for_success(RecoveryKind::RecoverDeadPrimary, Duration::from_secs(30))
        .await;
    wait_for_new_primary(&cluster, KS, "0", &alias(100), Duration::from_secs(15)).await;
    vtorc.stop().await;
}
