//! `FixReplica` end to end: each replica fault induced behind the agent's
//! back (SQL as root, as an operator or a bug would), detected by vtorc
//! and repaired with `SetReadOnly` + `SetReplicationSource(primary,
//! forceStart)`; the audit names the analysis, the tablet and the steps.

mod recovery_support;

use std::time::Duration;

use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::recovery::{RecoveryOutcome, RecoveryRecord};

const KS: &str = "commerce";

/// Waits for the FixReplica of `uid` and checks its audit record.
async fn fixed(vtorc: &Vtorc, uid: u32, code: AnalysisCode) -> RecoveryRecord {
    let record = vtorc.succeeded_on(RecoveryKind::FixReplica, &alias(uid)).await;
    assert_eq!(record.analysis, code, "{}", vtorc.audit_dump());
    assert_eq!(record.outcome, RecoveryOutcome::Succeeded);
    assert_eq!(record.tablets, [alias(uid), alias(100)]);
    let steps: Vec<&str> = step_names(&record);
    assert_eq!(steps, ["SetReadOnly", "SetReplicationSource"]);
    assert_eq!(record.analysis_entry.analyzed_instance_alias, alias(uid));
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_stopped_is_restarted() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster.stop_replication(&alias(101)).await.expect("STOP SLAVE");
    fixed(&vtorc, 101, AnalysisCode::ReplicationStopped).await;
    wait_replicating_from(&cluster, &alias(101), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_replication_is_connected_to_the_primary() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    sql(&cluster, &alias(102), "STOP SLAVE").await;
    sql(&cluster, &alias(102), "RESET SLAVE ALL").await;
    fixed(&vtorc, 102, AnalysisCode::NotConnectedToPrimary).await;
    wait_replicating_from(&cluster, &alias(102), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_the_wrong_primary_is_repointed() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .point_replica_at(&alias(102), &alias(101))
        .await
        .expect("point 102 at 101");
    fixed(&vtorc, 102, AnalysisCode::ConnectedToWrongPrimary).await;
    wait_replicating_from(&cluster, &alias(102), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_replica_is_made_read_only() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster.set_writable(&alias(101)).await.expect("read_only=OFF");
    fixed(&vtorc, 101, AnalysisCode::ReplicaIsWritable).await;
    assert!(read_only(&cluster, &alias(101)).await.expect("read_only"));
    wait_replicating_from(&cluster, &alias(101), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_heartbeat_is_set_to_half_the_net_timeout() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .set_replication_timeouts(&alias(101), 60, 5.0)
        .await
        .expect("misconfigure");
    fixed(&vtorc, 101, AnalysisCode::ReplicaMisconfigured).await;
    wait_full_status(
        &cluster,
        &alias(101),
        "heartbeat 30 s",
        Duration::from_secs(10),
        |s| {
            s.replication_configuration
                .as_ref()
                .is_some_and(|c| c.heartbeat_interval == 30.0 && c.replica_net_timeout == 60)
        },
    )
    .await;
    wait_replicating_from(&cluster, &alias(101), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}
