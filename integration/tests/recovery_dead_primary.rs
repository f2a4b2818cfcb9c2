//! Dead primary, end to end: a 3-tablet `semi_sync` shard over MariaDB,
//! vtorc (discovery + recovery engine) in the test process, the primary
//! killed; vtorc runs EmergencyReparentShard, the new primary takes writes,
//! the survivor replicates from it, the dead one is made REPLICA in the
//! topo (`StaleTopoPrimary`), and the audit tells the story.
//!
//! "Killed" three ways:
//! - MariaDB `kill -9`, agent alive (FullStatus fails, replicas lose their source);
//! - the whole host (agent `kill -9`, then MariaDB `kill -9`);
//! - the agent alone, MariaDB alive, with `--primary-tablet-down-grace=0`
//!   (never fail over for a dead tablet server alone): replicas still
//!   replicate, so this is `UnreachablePrimary`, then `IncapacitatedPrimary`
//!   whose recovery finds the primary's Ping unanswered and (as in Go VTOrc)
//!   does not act. With a grace, `gray_failures.rs` shows the failover.

mod recovery_support;

use std::time::Duration;

use integration::cluster::{AgentMode, Cluster, ClusterBuilder};
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::recovery::AuditFilter;

const KS: &str = "commerce";

async fn cluster(mode: AgentMode) -> Cluster {
    ClusterBuilder::three_tablets(KS, "semi_sync")
        .agent_mode(mode)
        .started()
        .await
}

/// Checks the outcome of a dead-primary failover away from 100.
async fn assert_failed_over(cluster: &Cluster, vtorc: &Vtorc) -> TabletAlias {
    let record = vtorc
        .wait_for_success(RecoveryKind::RecoverDeadPrimary, Duration::from_secs(30))
        .await;
    assert!(
        matches!(
            record.analysis,
            AnalysisCode::DeadPrimary | AnalysisCode::DeadPrimaryAndSomeReplicas
        ),
        "{:?}",
        record.analysis
    );
    assert_eq!(record.tablet_alias, alias(100));
    let successor = record.successor_alias.clone().expect("a successor is recorded");
    assert!(successor == alias(101) || successor == alias(102), "{successor}");
    assert!(record.started_at >= record.detected_at);
    assert!(record.ended_at.expect("ended") >= record.started_at);
    assert_clean_promotion(&record, &successor);
    assert_took_over_from_100(cluster, KS, &successor).await;
    // The old primary's record still says PRIMARY with an older term:
    // StaleTopoPrimary makes it REPLICA in the topo.
    vtorc
        .succeeded_on(RecoveryKind::ReconcileStaleTopoPrimary, &alias(100))
        .await;
    assert_eq!(
        topo_type(cluster, &alias(100)).await.expect("type"),
        TabletType::Replica
    );
    // Exactly one ERS.
    let ers = vtorc.finished(RecoveryKind::RecoverDeadPrimary);
    assert_eq!(ers.len(), 1, "{}", vtorc.audit_dump());
    let detection = vtorc.detection_of(&record);
    assert_eq!(detection.resolution.as_deref(), Some("recovered"));
    assert_eq!(detection.recovery_ids, [record.recovery_id]);
    let (count, ok, failed) = vtorc
        .handle
        .metrics()
        .recovery_counts(RecoveryKind::RecoverDeadPrimary, &shard0(KS));
    assert_eq!((count, ok, failed), (1, 1, 0));
    successor
}

/// Starts the in-process world and vtorc, kills the primary with `kill`,
/// and checks the ERS that follows ([`assert_failed_over`]).
async fn failed_over_after(kill: impl FnOnce(&mut Cluster)) {
    let mut cluster = cluster(AgentMode::InProcess).await;
    let vtorc = Vtorc::start_healthy(&cluster, KS, &[]).await;
    kill(&mut cluster);
    assert_failed_over(&cluster, &vtorc).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_primary_after_mariadb_kill_is_failed_over_by_ers() {
    failed_over_after(|c| {
        c.kill_mysql(&alias(100)).expect("kill -9");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_primary_after_host_loss_agent_then_mariadb_is_failed_over_by_ers() {
    failed_over_after(|c| {
        c.kill_agent(&alias(100)).expect("agent kill");
        c.kill_mysql(&alias(100)).expect("kill -9");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_alone_is_not_failed_over_without_a_grace_because_the_primary_does_not_answer_ping() {
    let mut cluster = cluster(AgentMode::InProcess).await;
    let vtorc = Vtorc::start_healthy(&cluster, KS, &["--primary-tablet-down-grace=0"]).await;
    cluster.kill_agent(&alias(100)).expect("agent kill");
    // First the polls fail (UnreachablePrimary: the replicas still
    // replicate), then the primary health window turns unhealthy
    // (IncapacitatedPrimary); its recovery Pings the primary first, gets
    // no answer and does not act: likely a partition, not a dead MySQL.
    let detection = vtorc
        .detected(&alias(100), AnalysisCode::IncapacitatedPrimary)
        .await;
    assert_eq!(detection.recovery_type, RecoveryKind::RecoverIncapacitatedPrimary);
    let what = "IncapacitatedPrimary not attempted because Ping failed";
    integration::cluster::poll_until(Duration::from_secs(10), what, || async {
        Ok(vtorc
            .handle
            .audit()
            .active_detection(&alias(100), AnalysisCode::IncapacitatedPrimary)
            .and_then(|d| d.note)
            .filter(|n| n.contains("does not answer Ping")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}; {}", vtorc.audit_dump()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // At most a replica restart (UnreachablePrimary) acted; no reparent.
    assert!(
        vtorc
            .handle
            .recoveries(&AuditFilter::all())
            .iter()
            .all(|r| r.recovery_type == RecoveryKind::RestartArbitraryDirectReplica),
        "{}",
        vtorc.audit_dump()
    );
    assert_eq!(
        cluster.primary_alias(KS, "0").await.expect("shard"),
        Some(alias(100)),
        "no failover"
    );
    for replica in [alias(101), alias(102)] {
        wait_replicating_from(&cluster, &replica, &alias(100), Duration::from_secs(10)).await;
    }
    vtorc.stop().await;
}
