//! Repairs of the primary itself, end to end: a read-only primary
//! (`FixPrimary` → `UndoDemotePrimary`), a primary replicating from
//! another server (`ResetReplicationParameters`), and a stale topo PRIMARY
//! (`ReconcileStaleTopoPrimary`: best-effort demote, topo type REPLICA).

mod recovery_support;

use std::time::Duration;

use integration::faults::SemiSyncSide;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::proto::topodata::TabletType;
use vtorc::proto::vttime;

const KS: &str = "commerce";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_primary_is_made_writable_again() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster.set_read_only(&alias(100)).await.expect("read_only=ON");
    let record = vtorc
        .fixed(
            RecoveryKind::FixPrimary,
            &alias(100),
            AnalysisCode::PrimaryIsReadOnly,
        )
        .await;
    let steps: Vec<&str> = step_names(&record);
    assert_eq!(steps, ["UndoDemotePrimary"]);
    assert!(!read_only(&cluster, &alias(100)).await.expect("read_only"));
    wait_semi_sync(&cluster, &alias(100), SemiSyncSide::Primary, true).await;
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_replicating_from_another_server_has_its_replication_reset() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .point_replica_at(&alias(100), &alias(101))
        .await
        .expect("point the primary at 101");
    let code = AnalysisCode::PrimaryHasPrimary;
    let record = vtorc
        .fixed(RecoveryKind::RecoverPrimaryHasPrimary, &alias(100), code)
        .await;
    let steps: Vec<&str> = step_names(&record);
    assert_eq!(steps, ["ResetReplicationParameters"]);
    let source = replication_source(&cluster, &alias(100)).await.expect("status");
    assert_eq!(source, None, "the primary no longer replicates");
    for replica in [alias(101), alias(102)] {
        wait_replicating_from(&cluster, &replica, &alias(100), Duration::from_secs(10)).await;
    }
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_topo_primary_is_made_replica_in_the_topo() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    // 102's record claims an older primary term (as after a failover that
    // happened while it was away).
    let shard = cluster.topo().get_shard(KS, "0").await.expect("shard").value;
    let term = shard
        .primary_term_start_time
        .expect("the shard has a primary term");
    cluster
        .topo()
        .update_tablet_fields(&alias(102), |t| {
            t.r#type = TabletType::Primary as i32;
            t.primary_term_start_time = Some(vttime::Time {
                seconds: term.seconds - 3600,
                nanoseconds: 0,
            });
            Ok(())
        })
        .await
        .expect("edit the tablet record");
    let code = AnalysisCode::StaleTopoPrimary;
    let record = vtorc
        .fixed(RecoveryKind::ReconcileStaleTopoPrimary, &alias(102), code)
        .await;
    assert_eq!(record.tablets, [alias(102), alias(100)]);
    let steps: Vec<&str> = step_names(&record);
    assert!(steps.contains(&"ChangeTabletType"), "{steps:?}");
    assert!(steps.contains(&"DemotePrimary"), "{steps:?}");
    let tablet = cluster.tablet_record(&alias(102)).await.expect("tablet");
    assert_eq!(tablet.r#type(), TabletType::Replica);
    assert_eq!(tablet.primary_term_start_time, None);
    wait_replicating_from(&cluster, &alias(102), &alias(100), Duration::from_secs(10)).await;
    assert_shard_primary(&cluster, KS, &alias(100)).await;
    vtorc.stop().await;
}
