//! `DeadPrimaryAndSomeReplicas`, end to end: the primary is dead, some of
//! its replicas are unreachable too, at least one is reachable, and no
//! reachable replica replicates. vtorc runs EmergencyReparentShard and
//! promotes a live replica.
//!
//! Durability: `semi_sync`, with the unreachable replica an RDONLY. ERS
//! may only proceed without a tablet if the tablets it reached prove that
//! no tablet it did not reach can still take writes (`haveRevoked`).
//! Under `semi_sync` an unreachable REPLICA could still send the dead
//! primary the ACK its commits need, so losing a REPLICA as well as the
//! primary makes ERS refuse; an RDONLY never acks (nor may it be promoted),
//! so with both REPLICAs reached the old primary is provably cut off.
//! Under `none` ERS refuses whenever more than the primary is
//! unreachable: with no ACKs required, every promotable tablet it cannot
//! reach could still be writable.

mod recovery_support;

use std::time::Duration;

use integration::cluster::{ClusterBuilder, KeyspaceSpec, ShardSpec, poll_until};
use integration::workload::{Workload, WorkloadConfig};
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::model::Reachability;
use vtorc::proto::topodata::TabletType;
use vtorc::recovery::RecoveryOutcome;

const KS: &str = "commerce";

/// Primary 100 and the RDONLY 103 are lost (103 first: its agent and its
/// MariaDB, like a lost host; then 100's MariaDB, `kill -9`). The
/// REPLICAs 101 and 102 answer but no longer replicate, so the analysis
/// is `DeadPrimaryAndSomeReplicas`; ERS promotes 101 or 102, the other
/// replicates from it, and no write the old primary acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_primary_with_an_unreachable_replica_is_failed_over_to_a_live_replica() {
    let mut cluster = ClusterBuilder::new()
        .cell("zone1")
        .keyspace(
            KeyspaceSpec::new(KS, "semi_sync").shard(
                ShardSpec::new("0")
                    .replicas("zone1", [100, 101, 102])
                    .rdonly("zone1", 103),
            ),
        )
        .started()
        .await;
    let vtorc = Vtorc::start_healthy(&cluster, KS, &[]).await;
    assert_eq!(
        topo_type(&cluster, &alias(103)).await.expect("type"),
        TabletType::Rdonly
    );

    let wl_config = WorkloadConfig::new(KS, "0");
    let workload = Workload::start_acked(&cluster, &wl_config, &alias(100), 30)
        .await
        .expect("the workload starts and the primary acknowledges writes");

    // The RDONLY's host goes away first, and vtorc notices.
    cluster.kill_agent(&alias(103)).expect("kill the agent");
    cluster.kill_mysql(&alias(103)).expect("kill -9 MariaDB");
    poll_until(
        Duration::from_secs(20),
        "vtorc seeing 103 unreachable",
        || async {
            let snapshot = vtorc.discovery.snapshot();
            let unreachable = snapshot
                .shard(&shard0(KS))
                .and_then(|s| s.tablet(&alias(103)))
                .is_some_and(|t| {
                    !t.poll.last_poll_succeeded()
                        && matches!(t.reachability, Reachability::Unreachable { .. })
                });
            Ok(unreachable.then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Writes go on: the REPLICAs ack.
    let acked_before = workload.acked_count_on(&alias(100));
    workload
        .wait_for_acks_on(&alias(100), acked_before + 20, Duration::from_secs(10))
        .await
        .expect("writes go on without the RDONLY");

    let killed_at = tokio::time::Instant::now();
    cluster
        .kill_mysql(&alias(100))
        .expect("kill -9 the primary's MariaDB");
    let record = vtorc
        .wait_for_recovery(RecoveryKind::RecoverDeadPrimary, Duration::from_secs(40))
        .await;
    let failover = killed_at.elapsed();
    assert_eq!(
        record.outcome,
        RecoveryOutcome::Succeeded,
        "{}",
        vtorc.audit_dump()
    );
    assert_eq!(
        record.analysis,
        AnalysisCode::DeadPrimaryAndSomeReplicas,
        "{}",
        vtorc.audit_dump()
    );
    assert_eq!(record.tablet_alias, alias(100));
    let entry = &record.analysis_entry;
    assert!(!entry.last_check_valid, "{entry:?}");
    assert_eq!(entry.count_replicas, 3, "{entry:?}");
    assert_eq!(entry.count_valid_replicas, 2, "{entry:?}");
    assert_eq!(entry.count_valid_replicating_replicas, 0, "{entry:?}");
    let successor = record.successor_alias.clone().expect("a successor is recorded");
    assert!(
        successor == alias(101) || successor == alias(102),
        "a live REPLICA is promoted, not {successor}"
    );
    assert!(
        record.steps.iter().any(|s| s.step.starts_with("ers:")
            && s.message
                .contains("could not be reached, but the 2 reached ones revoke every possible writer")),
        "ERS proceeds without 100 and 103 because the reached REPLICAs revoke them:\n{}",
        steps_text(&record)
    );
    assert_clean_promotion(&record, &successor);
    let detection = vtorc.detection_of(&record);
    assert_eq!(detection.analysis, AnalysisCode::DeadPrimaryAndSomeReplicas);
    assert_eq!(detection.recovery_ids, [record.recovery_id]);

    assert_took_over_from_100(&cluster, KS, &successor).await;

    // The writer follows the failover; nothing it was told is committed is lost.
    let (_, check) = workload
        .finish_on(&cluster, &successor, 20, Duration::from_secs(20))
        .await;
    assert!(
        check.is_lossless(),
        "acknowledged writes lost: {:?} (of {})",
        check.missing,
        check.checked
    );
    assert!(check.checked >= 70, "{check:?}");
    assert_eq!(
        vtorc.finished(RecoveryKind::RecoverDeadPrimary).len(),
        1,
        "exactly one ERS: {}",
        vtorc.audit_dump()
    );
    eprintln!(
        "DeadPrimaryAndSomeReplicas: kill -9 to recorded ERS in {failover:?}, {} acknowledged writes checked",
        check.checked
    );
    vtorc.stop().await;
}
