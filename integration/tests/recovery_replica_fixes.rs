//! `FixReplica` end to end: each replica fault induced behind the agent's
//! back (SQL as root, as an operator or a bug would), detected by vtorc
//! and repaired with `SetReadOnly` + `SetReplicationSource(primary,
//! forceStart)`; the audit names the analysis, the tablet and the steps.

mod recovery_support;

use std::time::Duration;

use integration::cluster::Cluster;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::recovery::RecoveryRecord;

const KS: &str = "commerce";

/// Waits for the FixReplica of `uid` and checks its audit record.
async fn fixed(vtorc: &Vtorc, uid: u32, code: AnalysisCode) -> RecoveryRecord {
    let record = vtorc.fixed(RecoveryKind::FixReplica, &alias(uid), code).await;
    assert_eq!(record.tablets, [alias(uid), alias(100)]);
    let steps: Vec<&str> = step_names(&record);
    assert_eq!(steps, ["SetReadOnly", "SetReplicationSource"]);
    assert_eq!(record.analysis_entry.analyzed_instance_alias, alias(uid));
    record
}

/// Starts the semi-sync world, breaks replica `uid` with `fault` (behind
/// the agent's back), waits for its FixReplica diagnosed as `code`, runs
/// `check` on the repaired cluster, and waits until the replica replicates
/// from the primary (100) again.
async fn fix_replica(
    uid: u32,
    code: AnalysisCode,
    fault: impl AsyncFnOnce(&Cluster),
    check: impl AsyncFnOnce(&Cluster),
) {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    fault(&cluster).await;
    fixed(&vtorc, uid, code).await;
    check(&cluster).await;
    wait_replicating_from(&cluster, &alias(uid), &alias(100), Duration::from_secs(10)).await;
    vtorc.stop().await;
}

/// A `check` with nothing to check beyond the fix and the replication.
async fn nothing_more(_: &Cluster) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_stopped_is_restarted() {
    let stop = async |c: &Cluster| c.stop_replication(&alias(101)).await.expect("STOP SLAVE");
    fix_replica(101, AnalysisCode::ReplicationStopped, stop, nothing_more).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_replication_is_connected_to_the_primary() {
    let forget_the_source = async |c: &Cluster| {
        sql(c, &alias(102), "STOP SLAVE").await;
        sql(c, &alias(102), "RESET SLAVE ALL").await;
    };
    fix_replica(
        102,
        AnalysisCode::NotConnectedToPrimary,
        forget_the_source,
        nothing_more,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_the_wrong_primary_is_repointed() {
    let repoint = async |c: &Cluster| {
        c.point_replica_at(&alias(102), &alias(101))
            .await
            .expect("point 102 at 101");
    };
    fix_replica(102, AnalysisCode::ConnectedToWrongPrimary, repoint, nothing_more).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_replica_is_made_read_only() {
    let writable = async |c: &Cluster| c.set_writable(&alias(101)).await.expect("read_only=OFF");
    let read_only_again = async |c: &Cluster| assert!(read_only(c, &alias(101)).await.expect("read_only"));
    fix_replica(101, AnalysisCode::ReplicaIsWritable, writable, read_only_again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_heartbeat_is_set_to_half_the_net_timeout() {
    let misconfigure = async |c: &Cluster| {
        c.set_replication_timeouts(&alias(101), 60, 5.0)
            .await
            .expect("misconfigure");
    };
    let heartbeat_fixed = async |c: &Cluster| {
        wait_full_status(c, &alias(101), "heartbeat 30 s", Duration::from_secs(10), |s| {
            s.replication_configuration
                .as_ref()
                .is_some_and(|c| c.heartbeat_interval == 30.0 && c.replica_net_timeout == 60)
        })
        .await;
    };
    fix_replica(
        101,
        AnalysisCode::ReplicaMisconfigured,
        misconfigure,
        heartbeat_fixed,
    )
    .await;
}
