//! A primary VTOrc cannot poll while its MariaDB still serves the
//! replicas, end to end:
//!
//! - agent gone, replicas still replicating (`UnreachablePrimary`): one
//!   direct replica's replication is restarted (it proves the primary's
//!   MariaDB still answers) and there is no failover;
//! - the same with one replica's replication stopped
//!   (`UnreachablePrimaryWithBrokenReplicas`): every direct replica is
//!   restarted, which also repairs the stopped one;
//! - MariaDB frozen (SIGSTOP), agent alive (`IncapacitatedPrimary`): the
//!   primary answers Ping, PRS cannot demote it, ERS takes over.
//!
//! The first two run with the primary health window off
//! (`--primary-healthcheck-timeout-window=0`), so `IncapacitatedPrimary`
//! (which would Ping the dead agent and stand down) does not pre-empt them.

mod recovery_support;

use std::time::Duration;

use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::recovery::RecoveryOutcome;

const KS: &str = "commerce";
const NO_HEALTH_WINDOW: &str = "--primary-healthcheck-timeout-window=0s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_primary_gets_one_direct_replica_restarted_and_no_failover() {
    let (mut cluster, vtorc) = healthy_world(KS, "semi_sync", &[NO_HEALTH_WINDOW]).await;
    cluster.kill_agent(&alias(100)).expect("agent kill");
    let record = vtorc
        .wait_for_success(
            RecoveryKind::RestartArbitraryDirectReplica,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(record.analysis, AnalysisCode::UnreachablePrimary);
    assert_eq!(record.tablet_alias, alias(100));
    let restarted: Vec<&str> = record
        .steps
        .iter()
        .filter(|s| s.step == "RestartReplication")
        .map(|s| s.message.as_str())
        .collect();
    assert_eq!(restarted.len(), 1, "exactly one replica: {restarted:?}");
    assert_eq!(record.tablets.len(), 2, "the primary and the restarted replica");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(vtorc.finished(RecoveryKind::RecoverDeadPrimary).is_empty());
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    for replica in [alias(101), alias(102)] {
        wait_replicating_from(&cluster, &replica, &alias(100), Duration::from_secs(10)).await;
    }
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_primary_with_a_broken_replica_gets_all_direct_replicas_restarted() {
    let (mut cluster, vtorc) = healthy_world(KS, "semi_sync", &[NO_HEALTH_WINDOW]).await;
    // Stop 102 first and let vtorc see it before the primary goes away…
    vtorc.handle.disable_global_recoveries();
    cluster.stop_replication(&alias(102)).await.expect("STOP SLAVE");
    vtorc
        .detected(&alias(102), AnalysisCode::ReplicationStopped)
        .await;
    cluster.kill_agent(&alias(100)).expect("agent kill");
    vtorc
        .detected(&alias(100), AnalysisCode::UnreachablePrimaryWithBrokenReplicas)
        .await;
    vtorc.handle.enable_global_recoveries();
    let record = vtorc
        .wait_for_success(RecoveryKind::RestartAllDirectReplicas, Duration::from_secs(20))
        .await;
    assert_eq!(
        record.analysis,
        AnalysisCode::UnreachablePrimaryWithBrokenReplicas
    );
    assert_eq!(
        record.tablets.len(),
        3,
        "the primary and both replicas: {:?}",
        record.tablets
    );
    assert_eq!(
        record
            .steps
            .iter()
            .filter(|s| s.step == "RestartReplication")
            .count(),
        2,
        "{:?}",
        record.steps
    );
    // Restarting 102 repaired its replication from the live MariaDB.
    wait_replicating_from(&cluster, &alias(102), &alias(100), Duration::from_secs(10)).await;
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incapacitated_primary_that_prs_cannot_demote_is_replaced_by_ers() {
    // Without vttablet heartbeats and with MariaDB's default 60 s
    // slave_net_timeout: with heartbeats the replicas' lag shows they stopped
    // hearing the frozen MariaDB, and with Vitess's 8 s their IO threads soon
    // give up; either way vtorc goes straight to DeadPrimary (ERS), as
    // `gray_failures.rs` shows. Here the replicas give no such evidence for a
    // minute, so Go VTOrc's IncapacitatedPrimary path runs.
    let (cluster, vtorc) = healthy_world_of(
        integration::cluster::ClusterBuilder::three_tablets(KS, "semi_sync")
            .heartbeat(None)
            .slave_net_timeout(Duration::from_secs(60)),
        KS,
        &["--primary-healthcheck-timeout-window=5s"],
    )
    .await;
    cluster
        .pause_mysql(&alias(100))
        .expect("SIGSTOP the primary's MariaDB");
    let record = vtorc
        .wait_for_recovery(RecoveryKind::RecoverIncapacitatedPrimary, Duration::from_secs(60))
        .await;
    cluster.resume_mysql(&alias(100)).expect("SIGCONT");
    assert_eq!(
        record.outcome,
        RecoveryOutcome::Succeeded,
        "{}",
        vtorc.audit_dump()
    );
    assert_eq!(record.analysis, AnalysisCode::IncapacitatedPrimary);
    let steps: Vec<&str> = step_names(&record);
    assert!(
        steps.iter().any(|s| s.starts_with("prs:")),
        "PRS first: {steps:?}"
    );
    assert!(steps.contains(&"fallback"), "then the fallback: {steps:?}");
    assert!(steps.iter().any(|s| s.starts_with("ers:")), "ERS: {steps:?}");
    let successor = record.successor_alias.clone().expect("a successor");
    assert_ne!(successor, alias(100));
    let new_primary = wait_for_new_primary(&cluster, KS, "0", &alias(100), Duration::from_secs(15)).await;
    assert_eq!(new_primary, successor);
    vtorc.stop().await;
}
