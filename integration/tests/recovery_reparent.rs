//! Recoveries that elect a primary, end to end: `ClusterHasNoPrimary` on a
//! fresh shard (PlannedReparentShard electing a first primary) and
//! `PrimaryTabletDeleted` (EmergencyReparentShard waiting for every tablet).

mod recovery_support;

use std::time::Duration;

use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};

const KS: &str = "commerce";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_shard_without_primary_gets_one_elected_by_prs() {
    let cluster = integration::testkit::semi_sync_commerce_without_primary().await;
    assert_eq!(cluster.primary_alias(KS, "0").await.expect("shard"), None);
    let vtorc = Vtorc::start(&cluster, &[]).await;
    let record = vtorc
        .wait_for_success(RecoveryKind::ElectNewPrimary, Duration::from_secs(30))
        .await;
    assert_eq!(record.analysis, AnalysisCode::ClusterHasNoPrimary);
    assert!(
        record.steps.iter().any(|s| s.step.starts_with("prs:")),
        "PRS steps are audited"
    );
    let primary = record.successor_alias.clone().expect("a primary was elected");
    cluster
        .wait_for_primary(KS, "0", &primary, Duration::from_secs(15))
        .await
        .expect("the shard record names it");
    assert!(!read_only(&cluster, &primary).await.expect("read_only"));
    for uid in [100, 101, 102] {
        if alias(uid) != primary {
            wait_replicating_from(&cluster, &alias(uid), &primary, Duration::from_secs(15)).await;
        }
    }
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(20))
        .await;
    assert_eq!(
        vtorc.finished(RecoveryKind::ElectNewPrimary).len(),
        1,
        "elected once"
    );
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_primary_tablet_is_replaced_by_ers() {
    let (cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    cluster
        .delete_tablet_record(&alias(100))
        .await
        .expect("delete the primary's tablet record");
    let record = vtorc
        .wait_for_success(RecoveryKind::RecoverPrimaryTabletDeleted, Duration::from_secs(30))
        .await;
    assert_eq!(record.analysis, AnalysisCode::PrimaryTabletDeleted);
    assert!(record.steps.iter().any(|s| s.step.starts_with("ers:")));
    let successor = record.successor_alias.clone().expect("a successor");
    assert!(successor == alias(101) || successor == alias(102), "{successor}");
    let new_primary = wait_for_new_primary(&cluster, KS, "0", &alias(100), Duration::from_secs(15)).await;
    assert_eq!(new_primary, successor);
    let other = if successor == alias(101) {
        alias(102)
    } else {
        alias(101)
    };
    wait_replicating_from(&cluster, &other, &successor, Duration::from_secs(15)).await;
    assert!(!read_only(&cluster, &successor).await.expect("read_only"));
    vtorc.stop().await;
}
