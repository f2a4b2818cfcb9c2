//! Twenty consecutive primary kills under the workload writer, with vtorc
//! (discovery + recovery engine) doing every failover: each `kill -9` of
//! the primary's MariaDB is failed over by ERS. Under `semi_sync`
//! (AFTER_SYNC) not one acknowledged write may be lost, and every failover
//! must complete.
//!
//! Between rounds the killed server is brought back the way an operator
//! brings back a crashed primary: restored from a consistent copy of the new
//! primary (a primary killed under writes may have binlogged transactions no
//! replica acknowledged; they are errant and must not survive) and
//! replicating from it. vtorc meanwhile reconciles its stale PRIMARY record
//! and repoints it.

mod recovery_support;

use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::workload::{AckedWrite, Workload, WorkloadConfig, check_acknowledged};
use mysql_async::prelude::Queryable;
use recovery_support::*;
use vtorc::analysis::RecoveryKind;
use vtorc::proto::topodata::TabletAlias;
use vtorc::recovery::RecoveryOutcome;

const KS: &str = "commerce";
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_primary_kills_under_writes_lose_no_acknowledged_write() {
    // Each round kills the primary the previous round promoted, seconds
    // later, on purpose: the ERS cooldown (--recovery-period-block-duration)
    // that spaces emergency reparents of a flapping shard is off here.
    let (mut cluster, vtorc) = healthy_world(KS, "semi_sync", &["--recovery-period-block-duration=0"]).await;
    let config = WorkloadConfig {
        writers: 2,
        ..WorkloadConfig::new(KS, "0")
    };
    let workload = Workload::start(cluster.topo().clone(), config.clone())
        .await
        .expect("workload starts");
    let mut primary = alias(100);
    let mut failovers = Vec::new();
    // (round, killed primary, when it was killed on the workload's clock).
    let mut kills: Vec<(usize, TabletAlias, Duration)> = Vec::new();
    for round in 1..=KILLS {
        workload
            .wait_for_acks_on(&primary, 20, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}; {}", vtorc.audit_dump()));
        let killed_at = Instant::now();
        cluster.kill_mysql(&primary).expect("kill -9 the primary");
        let found = integration::cluster::poll_until(Duration::from_secs(30), "a new primary", || async {
            Ok(cluster.primary_alias(KS, "0").await?.filter(|p| *p != primary))
        })
        .await;
        let new_primary = match found {
            Ok(p) => p,
            Err(e) => panic!(
                "round {round}: {e:#}\n{}\n{}\n{}",
                vtorc.audit_dump(),
                cluster.diagnostics(),
                replication_report(&cluster).await
            ),
        };
        failovers.push(killed_at.elapsed());
        kills.push((round, primary.clone(), workload.elapsed() - killed_at.elapsed()));
        // Every write acknowledged so far is on the new primary: a loss is
        // caught in the round that made it, not at the end.
        let acked = workload.acked_so_far();
        let what = format!("round {round}: the new primary {new_primary} lacks acknowledged writes");
        assert_has_writes(&cluster, &vtorc, &new_primary, &acked, &config, &kills, &what).await;
        integration::cluster::poll_until(Duration::from_secs(10), "the ERS is audited", || async {
            Ok((vtorc.finished(RecoveryKind::RecoverDeadPrimary).len() >= round).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e:#}; {}", vtorc.audit_dump()));
        // The killed server comes back restored; vtorc reconciles its record.
        let acked_before_restore = workload.acked_so_far();
        rejoin_as_replica(&mut cluster, &primary, &new_primary).await;
        if let Err(e) =
            try_wait_replicating_from(&cluster, &primary, &new_primary, Duration::from_secs(30)).await
        {
            panic!(
                "round {round}: {primary} did not rejoin: {e}\n{}\n{}",
                vtorc.audit_dump(),
                replication_report(&cluster).await
            );
        }
        // Once caught up, every server holds every write acknowledged before
        // the restore: a restore or a repair that drops rows is caught here.
        let aliases: Vec<TabletAlias> = cluster.tablets().iter().map(|t| t.alias().clone()).collect();
        for t in aliases {
            let what = format!("round {round}: {t} lacks acknowledged writes after the rejoin");
            let acked = &acked_before_restore;
            assert_has_writes(&cluster, &vtorc, &t, acked, &config, &kills, &what).await;
        }
        // Shown only when the test fails (or with --nocapture).
        eprintln!(
            "round {round}: {primary} -> {new_primary}\n{}",
            replication_report(&cluster).await
        );
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
    // Shown only with --nocapture: every recovery vtorc ran.
    eprintln!("{}", vtorc.audit_dump());
    vtorc.stop().await;
}

/// The ids of `acked` that `tablet` lacks once it has applied its current
/// source's position (waits up to 20 s for that), or `None` if it has them
/// all. A replica that cannot catch up in time is reported by its lag.
async fn missing_writes(
    cluster: &Cluster,
    tablet: &TabletAlias,
    acked: &[AckedWrite],
    config: &WorkloadConfig,
) -> Option<Vec<u64>> {
    let primary = cluster.primary_alias(KS, "0").await.ok().flatten()?;
    let target: Option<String> = {
        let mut conn = cluster.mysql_conn(&primary).await.ok()?;
        conn.query_first("SELECT @@global.gtid_binlog_pos").await.ok()?
    };
    let mut conn = cluster
        .mysql_conn(tablet)
        .await
        .unwrap_or_else(|e| panic!("connect to {tablet}: {e:#}"));
    if *tablet != primary {
        let target = target.unwrap_or_default();
        let waited: Option<i64> = conn
            .exec_first("SELECT MASTER_GTID_WAIT(?, 20)", (target.clone(),))
            .await
            .unwrap_or_else(|e| panic!("MASTER_GTID_WAIT on {tablet}: {e}"));
        assert_eq!(
            waited,
            Some(0),
            "{tablet} did not reach {primary}'s position {target} in 20 s"
        );
    }
    let ids: Vec<u64> = conn
        .query(format!("SELECT id FROM {}", config.qualified_table()))
        .await
        .unwrap_or_else(|e| panic!("read the workload table on {tablet}: {e}"));
    let present: std::collections::BTreeSet<u64> = ids.into_iter().collect();
    let missing: Vec<u64> = acked
        .iter()
        .map(|w| w.id)
        .filter(|id| !present.contains(id))
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// Fails the test, saying `what`, when `tablet` lacks any of the `acked`
/// writes of the workload run with `config` (see [`missing_writes`]): the
/// missing ids with their acks against the `kills` so far, the audit and
/// the replication state.
async fn assert_has_writes(
    cluster: &Cluster,
    vtorc: &Vtorc,
    tablet: &TabletAlias,
    acked: &[AckedWrite],
    config: &WorkloadConfig,
    kills: &[(usize, TabletAlias, Duration)],
    what: &str,
) {
    if let Some(missing) = missing_writes(cluster, tablet, acked, config).await {
        panic!(
            "{what}: {}\n{}\n{}",
            describe_missing(&missing, acked, kills),
            vtorc.audit_dump(),
            replication_report(cluster).await
        );
    }
}

/// Each missing id with the primary that acknowledged it and when, against
/// the kills so far.
fn describe_missing(
    missing: &[u64],
    acked: &[AckedWrite],
    kills: &[(usize, TabletAlias, Duration)],
) -> String {
    let mut out = String::new();
    for id in missing {
        match acked.iter().find(|w| w.id == *id) {
            Some(w) => out.push_str(&format!(
                "\n  id {id}: acknowledged by {} at {:?}",
                w.primary, w.at
            )),
            None => out.push_str(&format!("\n  id {id}: (no ack record)")),
        }
    }
    out.push_str("\n  kills (round, primary, at):");
    for (round, p, at) in kills {
        out.push_str(&format!(" ({round}, {p}, {at:?})"));
    }
    out
}

/// Each server's GTID state, replication threads and last reparent
/// journal rows: what explains a failover that did not complete.
async fn replication_report(cluster: &Cluster) -> String {
    let mut out = String::from("replication report:");
    for t in cluster.tablets() {
        out.push_str(&format!("\n--- {}: ", t.alias()));
        let mut conn = match t.mysql_conn().await {
            Ok(c) => c,
            Err(e) => {
                out.push_str(&format!("cannot connect: {e:#}"));
                continue;
            }
        };
        let gtids: Result<Option<(String, String, String, String)>, _> = conn
            .query_first(
                "SELECT @@global.gtid_binlog_pos, @@global.gtid_slave_pos, \
                 @@global.gtid_current_pos, @@global.gtid_binlog_state",
            )
            .await;
        out.push_str(&format!("gtid binlog/slave/current/binlog_state = {gtids:?}"));
        match conn.query_iter("SHOW ALL SLAVES STATUS").await {
            Ok(mut result) => {
                let rows: Vec<mysql_async::Row> = result.collect().await.unwrap_or_default();
                for row in rows {
                    for col in [
                        "Master_Port",
                        "Slave_IO_Running",
                        "Slave_SQL_Running",
                        "Gtid_IO_Pos",
                        "Last_IO_Error",
                        "Last_SQL_Error",
                        "Exec_Master_Log_Pos",
                        "Read_Master_Log_Pos",
                    ] {
                        let value: Option<String> = row.get_opt(col).and_then(Result::ok);
                        out.push_str(&format!("\n  {col}: {}", value.unwrap_or_default()));
                    }
                }
            }
            Err(e) => out.push_str(&format!("\n  SHOW ALL SLAVES STATUS: {e}")),
        }
        let journal: Result<Vec<(u64, String, String, String)>, _> = conn
            .query(
                "SELECT time_created_ns, CAST(action_name AS CHAR), CAST(primary_alias AS CHAR), \
                 CAST(replication_position AS CHAR) FROM _vt.reparent_journal \
                 ORDER BY time_created_ns DESC LIMIT 4",
            )
            .await;
        out.push_str(&format!("\n  journal (newest first): {journal:?}"));
        conn.disconnect().await.ok();
    }
    out
}
