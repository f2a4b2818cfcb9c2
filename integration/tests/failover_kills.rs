//! Twenty consecutive primary kills under the workload writer, with vtorc
//! (discovery + recovery engine) doing every failover: each `kill -9` of
//! the primary's MariaDB is failed over by ERS. Under `semi_sync`
//! (AFTER_SYNC) not one acknowledged write may be lost, and every failover
//! must complete.
//!
//! Between rounds the killed server is brought back the way an operator
//! restores a crashed primary (`InitReplica` at the position the new
//! primary had replicated from it, as after a restore): a primary killed
//! under writes has binlogged transactions no replica acknowledged, which
//! are errant GTIDs that can never replicate from the new primary as is.
//! vtorc meanwhile reconciles its stale PRIMARY record.

mod recovery_support;

use std::time::{Duration, Instant};

use integration::workload::{Workload, WorkloadConfig, check_acknowledged};
use recovery_support::*;
use vtorc::analysis::RecoveryKind;
use vtorc::recovery::RecoveryOutcome;

const KS: &str = "commerce";
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_primary_kills_under_writes_lose_no_acknowledged_write() {
    let (mut cluster, vtorc) = healthy_world(KS, "semi_sync", &[]).await;
    let config = WorkloadConfig {
        writers: 2,
        ..WorkloadConfig::new(KS, "0")
    };
    let workload = Workload::start(cluster.topo().clone(), config.clone())
        .await
        .expect("workload starts");
    let mut primary = alias(100);
    let mut failovers = Vec::new();
    for round in 1..=KILLS {
        workload
            .wait_for_acks_on(&primary, 20, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}; {}", vtorc.audit_dump()));
        let killed_at = Instant::now();
        cluster.kill_mysql(&primary).expect("kill -9 the primary");
        let new_primary =
            integration::cluster::poll_until(Duration::from_secs(30), "a new primary", || async {
                Ok(cluster.primary_alias(KS, "0").await?.filter(|p| *p != primary))
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: {e:#}\n{}\n{}",
                    vtorc.audit_dump(),
                    cluster.diagnostics()
                )
            });
        failovers.push(killed_at.elapsed());
        let ers = vtorc.finished(RecoveryKind::RecoverDeadPrimary);
        integration::cluster::poll_until(Duration::from_secs(10), "the ERS is audited", || async {
            Ok((vtorc.finished(RecoveryKind::RecoverDeadPrimary).len() >= round).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e:#}; {}", vtorc.audit_dump()));
        let _ = ers;
        // The killed server comes back; vtorc makes it a replica of the new primary.
        rejoin_as_replica(&mut cluster, &primary, &new_primary).await;
        if let Err(e) =
            try_wait_replicating_from(&cluster, &primary, &new_primary, Duration::from_secs(30)).await
        {
            panic!(
                "round {round}: {primary} did not rejoin: {e}\n{}",
                vtorc.audit_dump()
            );
        }
        primary = new_primary;
    }
    workload
        .wait_for_acks_on(&primary, 20, Duration::from_secs(30))
        .await
        .expect("writes flow on the last primary");
    let report = workload.stop().await.expect("workload stops");
    let ers = vtorc.finished(RecoveryKind::RecoverDeadPrimary);
    assert_eq!(ers.len(), KILLS, "one ERS per kill: {}", vtorc.audit_dump());
    assert!(ers.iter().all(|r| r.outcome == RecoveryOutcome::Succeeded));
    let mut conn = cluster
        .mysql_conn(&primary)
        .await
        .expect("connect to the last primary");
    let check = check_acknowledged(&mut conn, &config, &report)
        .await
        .expect("read the table");
    assert!(
        check.is_lossless(),
        "lost acknowledged writes: {:?}; rejected present: {:?}",
        check.missing,
        check.rejected_present
    );
    assert!(
        check.checked > KILLS * 20,
        "{} acknowledged writes checked",
        check.checked
    );
    failovers.sort();
    eprintln!(
        "{KILLS} failovers (kill -9 → shard record names the new primary): median {:?}, max {:?}; {} acked, {} unknown",
        failovers[KILLS / 2],
        failovers[KILLS - 1],
        report.acked.len(),
        report.unknown.len()
    );
    vtorc.stop().await;
}
