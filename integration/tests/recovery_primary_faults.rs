//! Faults of a primary that is still alive, end to end: real MariaDB, real
//! etcd, tablet agents, vtorc's discovery and recovery engine in the test
//! process. Each test induces the fault for real and checks the repaired
//! shard and the audit record (code, recovery kind, outcome, steps).
//!
//! | code | fault | recovery |
//! |---|---|---|
//! | `PrimaryDiskStalled` | the primary's disk-health write blocks in the kernel (a FIFO) | ERS (needs `--enable-primary-disk-stalled-recovery`) |
//! | `PrimarySemiSyncBlocked` | commits wait for ACKs that the replicas, still replicating, never send | ERS |
//! | `PrimaryCurrentTypeMismatch` | InitPrimary fails after writing the PRIMARY record; the tablet runs as REPLICA | `FixPrimary` (UndoDemotePrimary) |
//!
//! Not here: `PrimaryTabletUnreachableByQuorum` (Vitess 25) needs the
//! replicas' shard-peer health reports, which the Vitess 24 protocol our
//! tablets speak does not carry.

mod recovery_support;

use std::time::Duration;

use integration::cluster::{Cluster, ClusterBuilder, poll_until};
use integration::workload::{Workload, WorkloadConfig, check_acknowledged};
use mysql_async::prelude::Queryable;
use recovery_support::*;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::recovery::RecoveryRecord;
use vtorc::tablet::{TabletManager, TabletManagerExt};

const KS: &str = "commerce";

/// Checks an ERS away from 100 for `code` and returns the successor.
async fn assert_ers_away_from_100(
    cluster: &Cluster,
    vtorc: &Vtorc,
    code: AnalysisCode,
) -> (RecoveryRecord, TabletAlias) {
    let record = vtorc
        .wait_for_success(RecoveryKind::RecoverDeadPrimary, Duration::from_secs(40))
        .await;
    assert_eq!(record.analysis, code, "{}", vtorc.audit_dump());
    assert_eq!(record.tablet_alias, alias(100));
    let successor = record.successor_alias.clone().expect("a successor is recorded");
    assert!(
        successor == alias(101) || successor == alias(102),
        "a replica is promoted, not {successor}"
    );
    assert_clean_promotion(&record, &successor);
    assert_eq!(
        vtorc.finished(RecoveryKind::RecoverDeadPrimary).len(),
        1,
        "exactly one ERS: {}",
        vtorc.audit_dump()
    );
    assert_took_over_from_100(cluster, KS, &successor).await;
    (record, successor)
}

/// The primary's disk stalls (a FIFO in place of the disk-health check
/// file: the monitor's open-for-write blocks in the kernel). FullStatus
/// then answers only `disk_stalled=true`; vtorc records a failed poll
/// marked disk-stalled, detects `PrimaryDiskStalled` and runs ERS, which
/// promotes a replica (the old primary's MySQL still answers, so ERS
/// demotes it and repoints it). Releasing the FIFO ends the blocked write
/// thread; the old primary then reports normally, as a replica of the new
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_disk_stalls_is_failed_over_by_ers() {
    let cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .disk_health_check(Duration::from_millis(200), Duration::from_secs(1))
        .started()
        .await;
    let vtorc = Vtorc::start_healthy(&cluster, KS, &["--enable-primary-disk-stalled-recovery=true"]).await;
    let monitor = cluster
        .tablet(&alias(100))
        .expect("tablet")
        .agent_handle()
        .and_then(|h| h.disk_health())
        .expect("the primary runs a disk-health monitor");
    assert!(monitor.completed_writes() > 0, "the monitor writes");
    let before = cluster.full_status(&alias(100)).await.expect("FullStatus");
    assert!(!before.disk_stalled && before.server_id == 100, "{before:?}");

    let stall = StalledDisk::induce(&cluster, &alias(100));
    let started = tokio::time::Instant::now();
    // vttablet's answer for a stalled disk: that flag and nothing else.
    wait_full_status(
        &cluster,
        &alias(100),
        "FullStatus reporting only a stalled disk",
        Duration::from_secs(10),
        |s| {
            *s == vtorc::proto::replicationdata::FullStatus {
                disk_stalled: true,
                ..Default::default()
            }
        },
    )
    .await;
    let (record, successor) =
        assert_ers_away_from_100(&cluster, &vtorc, AnalysisCode::PrimaryDiskStalled).await;
    let failover = started.elapsed();
    let entry = &record.analysis_entry;
    assert!(entry.is_disk_stalled, "{entry:?}");
    assert!(!entry.last_check_valid, "the stalled poll counts as failed");
    assert!(entry.last_check_partial_success, "a FullStatus was obtained");
    // The old primary's MySQL answered ERS: it was demoted (read-only).
    assert!(
        read_only(&cluster, &alias(100)).await.expect("read_only"),
        "the old primary is read-only"
    );

    stall.release(&cluster, &alias(100)).await;
    wait_full_status(
        &cluster,
        &alias(100),
        "FullStatus back to normal",
        Duration::from_secs(10),
        |s| !s.disk_stalled && s.server_id == 100,
    )
    .await;
    wait_replicating_from(&cluster, &alias(100), &successor, Duration::from_secs(20)).await;
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(30))
        .await;
    eprintln!("disk stalled -> ERS done in {failover:?}");
    vtorc.stop().await;
}

/// Makes `replica` stop sending semi-sync ACKs while it keeps replicating
/// and keeps `rpl_semi_sync_slave_enabled=ON`: its IO thread reconnects
/// with the replica side off, then the variable is turned back on, which
/// only takes effect at the IO thread's next connect. VTOrc reads the
/// variable (`semi_sync_replica_enabled`), so it sees a semi-sync replica
/// that replicates, and nothing to fix on it.
async fn replica_stops_acking(cluster: &Cluster, replica: &TabletAlias) {
    let mut conn = cluster.mysql_conn(replica).await.expect("connect");
    for q in [
        "SET GLOBAL rpl_semi_sync_slave_enabled = OFF",
        "STOP SLAVE IO_THREAD",
        "START SLAVE IO_THREAD",
    ] {
        conn.query_drop(q)
            .await
            .unwrap_or_else(|e| panic!("{replica}: {q}: {e}"));
    }
    // The replica side is read when the IO thread registers with the
    // primary: wait until it streams before turning the variable back on.
    poll_until(
        Duration::from_secs(10),
        "the IO thread streaming from the primary",
        || async {
            let mut c = cluster.mysql_conn(replica).await?;
            let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await?;
            c.disconnect().await.ok();
            let state = row.and_then(|r| r.get::<Option<String>, _>("Slave_IO_State").flatten());
            Ok(state
                .filter(|s| s.starts_with("Waiting for master to send event"))
                .map(|_| ()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{replica}: {e:#}"));
    conn.query_drop("SET GLOBAL rpl_semi_sync_slave_enabled = ON")
        .await
        .expect("replica side back on");
    let status: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'")
        .await
        .expect("read the semi-sync status");
    assert_eq!(
        status.map(|(_, v)| v).as_deref(),
        Some("OFF"),
        "{replica} replicates without acking"
    );
    conn.disconnect().await.ok();
}

/// The primary's commits wait for semi-sync ACKs that never come: both
/// replicas keep replicating (they receive every transaction) and keep
/// `rpl_semi_sync_slave_enabled=ON`, but their IO threads connected as
/// plain async replicas, so the primary has no semi-sync client and, with
/// its long semi-sync timeout, never falls back to async. The agent's
/// semi-sync monitor reports `semi_sync_blocked` after 2 s of waiting
/// commits; vtorc detects `PrimarySemiSyncBlocked` and runs ERS, which
/// promotes a replica, while the writer keeps writing: its stuck commits
/// end without an answer when the old primary stops serving, it follows
/// the shard record to the new primary, and no acknowledged write is lost.
///
/// Why not the obvious fault: stopping the replicas' IO threads does not
/// lead to this recovery. vtorc first repairs `ReplicationStopped` (it
/// runs before `PrimarySemiSyncBlocked`, as in Go VTOrc since
/// vitessio/vitess#19925), the restarted IO threads ACK and the block
/// clears. If they cannot reconnect (e.g. the replication account is
/// locked), the waiting transactions exist on the primary only, so after
/// ERS's forced demotion commits them the old primary is the most advanced
/// candidate and ERS re-elects it (as Vitess's ERS would). Both were tried.
/// Recoveries are off while the fault is set up, so vtorc acts on the
/// finished fault only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_blocked_on_semi_sync_acks_is_failed_over_by_ers() {
    let cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .semi_sync_blocked_after(Duration::from_secs(2))
        .started()
        .await;
    let vtorc = Vtorc::start_healthy(&cluster, KS, &[]).await;
    // One writer that waits as long as it takes: its stuck commit is then
    // the only one in flight, already in the binlog the replicas receive,
    // and it ends when the old primary stops serving. With more writers,
    // or one that gives up and retries on a new session, further commits
    // queue behind it in MariaDB's group commit and reach the old primary's
    // binlog only once the forced demotion turns semi-sync off: after ERS
    // stopped the replicas' IO threads (the old primary is then the most
    // advanced candidate and ERS legitimately re-elects it, as Vitess's
    // would), or even after it read the old primary's position (which then
    // holds an errant transaction and cannot rejoin).
    let mut wl_config = WorkloadConfig {
        writers: 1,
        ..WorkloadConfig::new(KS, "0")
    };
    wl_config.statement_timeout = Duration::from_secs(60);
    let workload = Workload::start_acked(&cluster, &wl_config, &alias(100), 50)
        .await
        .expect("the workload starts and the primary acknowledges writes");

    assert!(!vtorc.handle.disable_global_recoveries());
    for r in [101, 102] {
        replica_stops_acking(&cluster, &alias(r)).await;
    }
    // MariaDB answers FullStatus while AFTER_SYNC commits wait for ACKs.
    wait_full_status(
        &cluster,
        &alias(100),
        "the primary reporting semi-sync blocked",
        Duration::from_secs(20),
        |s| s.semi_sync_blocked,
    )
    .await;
    let acked_before = workload.acked_count_on(&alias(100));
    for r in [101, 102] {
        let status = cluster.full_status(&alias(r)).await.expect("FullStatus");
        assert!(status.semi_sync_replica_enabled, "{r}: {status:?}");
        let replication = status.replication_status.expect("a replica");
        assert_eq!(
            (replication.io_state, replication.sql_state),
            (3, 3),
            "{r} replicates"
        );
    }

    let started = tokio::time::Instant::now();
    assert!(vtorc.handle.enable_global_recoveries());
    let (record, successor) =
        assert_ers_away_from_100(&cluster, &vtorc, AnalysisCode::PrimarySemiSyncBlocked).await;
    let failover = started.elapsed();
    let entry = &record.analysis_entry;
    assert!(entry.semi_sync_blocked, "{entry:?}");
    assert!(entry.last_check_valid, "the primary answers: {entry:?}");
    assert_eq!(entry.count_semi_sync_replicas_enabled, 2, "{entry:?}");
    // The old primary was reached, demoted, and repointed by ERS. It
    // replicates from the successor unless its stuck commit finished after
    // ERS read its position (the forced demotion turned semi-sync off):
    // then that unacknowledged transaction is errant on it, as in Vitess,
    // and MariaDB refuses to stream to a diverged replica.
    let successor_port = cluster.tablet(&successor).expect("successor").mysql_port();
    let rejoined = poll_until(
        Duration::from_secs(20),
        "the old primary following the successor (or diverged)",
        || async {
            let status = cluster.full_status(&alias(100)).await?;
            Ok(status.replication_status.and_then(|r| {
                let pointed = r.source_port == i32::from(successor_port);
                let streaming = r.io_state == 3 && r.sql_state == 3;
                let diverged = r.last_io_error.contains("diverged");
                (pointed && (streaming || diverged)).then_some(streaming)
            }))
        },
    )
    .await
    .expect("ERS repointed the old primary");
    eprintln!(
        "old primary after ERS: {}",
        if rejoined {
            "replicating"
        } else {
            "diverged (its stuck commit is errant)"
        }
    );

    // The writer follows the shard record to the new primary (the other
    // replica acks again: ERS restarted its IO thread with semi-sync on).
    workload
        .wait_for_acks_on(&successor, 20, Duration::from_secs(20))
        .await
        .expect("the new primary acknowledges writes");
    let report = workload.stop().await.expect("the workload stops");
    // The stuck insert ended without an answer when the old primary stopped
    // serving, and nothing was acknowledged there after it reported blocked
    // (ERS may abandon its DemotePrimary call once the replicas answered;
    // the agent finishes the demotion anyway).
    assert!(
        !report.unknown.is_empty(),
        "inserts were waiting for an ACK when the old primary stopped serving: {:?}",
        report.sample_errors
    );
    assert_eq!(
        report.acked_on(&alias(100)) as u64,
        acked_before,
        "nothing was acknowledged on the blocked primary once it reported blocked"
    );
    let mut conn = cluster.mysql_conn(&successor).await.expect("connect");
    let check = check_acknowledged(&mut conn, &wl_config, &report)
        .await
        .expect("read the table");
    conn.disconnect().await.ok();
    assert!(
        check.is_lossless(),
        "acknowledged writes lost: {:?}\n{}",
        check.missing,
        vtorc.audit_dump()
    );
    assert!(check.checked >= 70, "{check:?}");
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(30))
        .await;
    eprintln!(
        "semi-sync blocked -> ERS done {failover:?} after recoveries were enabled; {} acknowledged writes checked, {} unknown",
        check.checked,
        report.unknown.len()
    );
    vtorc.stop().await;
}

/// Makes `InitPrimary` on `tablet` fail right after the tablet wrote its
/// PRIMARY record, before it took the type: vttablet's type change writes
/// the topo first and only then makes MySQL writable and adopts the type
/// in memory, so a failure of that step leaves the record PRIMARY and the
/// tablet REPLICA (Vitess issue #17710 reached it through a topo write
/// that timed out after it had succeeded). Here the step's new MariaDB
/// connection is refused, for real: a session holds `FLUSH TABLES WITH
/// READ LOCK`, so InitPrimary's first write (`CREATE DATABASE _vt`) waits;
/// meanwhile `max_connections` is lowered and filled; the lock is released
/// and InitPrimary writes the topo, then gets `Too many connections`.
/// `max_connections` is restored before returning. Returns InitPrimary's
/// error.
async fn init_primary_failing_after_its_topo_write(cluster: &Cluster, tablet: &TabletAlias) -> String {
    let target = cluster.tablet(tablet).expect("tablet").rpc_tablet();
    // The agent has finished its start-up (sidecar schema, grants): under
    // the global read lock taken below, that start-up would wait instead of
    // InitPrimary. FullStatus waits for it.
    cluster.full_status(tablet).await.expect("the agent is up");
    let mut admin = cluster.mysql_conn(tablet).await.expect("connect");
    let max_connections: Option<u64> = admin
        .query_first("SELECT @@global.max_connections")
        .await
        .expect("read max_connections");
    admin
        .query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .expect("take the global read lock");
    let tmc = cluster.tmc().clone();
    let init = tokio::spawn(async move {
        tmc.with_timeout(Duration::from_secs(30))
            .init_primary(&target, true)
            .await
    });
    // Watched through the lock holder's own session: no connection comes
    // and goes while the slots are counted below.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<mysql_async::Row> = admin.query("SHOW PROCESSLIST").await.expect("processlist");
        let waiting = rows.iter().any(|r| {
            let info = r.get::<Option<String>, _>("Info").flatten();
            let state = r.get::<Option<String>, _>("State").flatten();
            // InitPrimary's first statement that needs the lock (its
            // `CREATE DATABASE _vt`, or the `read_only` change before it).
            info.is_some_and(|i| i.contains("CREATE DATABASE") || i.contains("read_only"))
                && state.is_some_and(|s| s.contains("lock"))
        });
        if waiting {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "InitPrimary never waited for the global read lock; processlist: {:?}",
            rows.iter()
                .map(|r| (
                    r.get::<Option<String>, _>("Info").flatten(),
                    r.get::<Option<String>, _>("State").flatten()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The lowest limit MariaDB takes (a SUPER user may use one more). Fill
    // every slot: open connections until MariaDB refuses new ones three
    // times in a row, 50 ms apart, so a connection that was still closing
    // cannot free a slot afterwards.
    admin
        .query_drop("SET GLOBAL max_connections = 10")
        .await
        .expect("lower max_connections");
    let mut fillers = Vec::new();
    let mut refused = 0;
    while refused < 3 {
        match cluster.mysql_conn(tablet).await {
            Ok(conn) => {
                refused = 0;
                fillers.push(conn);
                assert!(fillers.len() <= 20, "MariaDB keeps accepting connections");
            }
            Err(e) if format!("{e:#}").contains("Too many connections") => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("fill a connection slot: {e:#}"),
        }
    }
    admin
        .query_drop("UNLOCK TABLES")
        .await
        .expect("release the global read lock");
    let result = init.await.expect("the InitPrimary task");
    admin
        .query_drop(format!(
            "SET GLOBAL max_connections = {}",
            max_connections.unwrap_or(200)
        ))
        .await
        .expect("restore max_connections");
    for conn in fillers {
        conn.disconnect().await.ok();
    }
    admin.disconnect().await.ok();
    match result {
        Ok(position) => panic!("InitPrimary succeeded (position {position})"),
        Err(e) => e.to_string(),
    }
}

/// The topo says PRIMARY but the tablet runs as REPLICA. A new shard's
/// first PRS calls InitPrimary on the primary-elect; it fails after its
/// PRIMARY record is written (see
/// [`init_primary_failing_after_its_topo_write`]). The tablet is then made
/// writable without taking the type, as vttablet's UndoDemotePrimary did
/// before vitessio/vitess#17870 (the fix VTOrc ran for the read-only
/// primary it saw) and as `vtctldclient SetWritable` does: the SetReadWrite
/// RPC. vtorc, started afterwards, finds a writable cluster primary whose
/// FullStatus `tablet_type` is REPLICA: `PrimaryCurrentTypeMismatch`. Its
/// `FixPrimary` (UndoDemotePrimary with semi-sync per the policy) makes the
/// tablet adopt PRIMARY with the term its record holds; the tablet claims
/// the shard record and serves as primary, and the replicas (not yet
/// replicating: `NotConnectedToPrimary`) are pointed at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_record_whose_tablet_runs_as_replica_is_fixed_by_undo_demote_primary() {
    let cluster = integration::testkit::semi_sync_commerce_without_primary().await;
    let error = init_primary_failing_after_its_topo_write(&cluster, &alias(100)).await;
    assert!(error.contains("Too many connections"), "{error}");
    let record = cluster.tablet_record(&alias(100)).await.expect("tablet record");
    assert_eq!(record.r#type(), TabletType::Primary, "the record was written");
    let term = record.primary_term_start_time.expect("with a term");
    let status = cluster.full_status(&alias(100)).await.expect("FullStatus");
    assert_eq!(
        status.tablet_type,
        TabletType::Replica as i32,
        "the tablet runs as REPLICA"
    );
    assert_eq!(cluster.primary_alias(KS, "0").await.expect("shard"), None);
    cluster
        .tmc()
        .set_read_write(&cluster.tablet(&alias(100)).expect("tablet").rpc_tablet())
        .await
        .expect("SetReadWrite");
    assert!(!read_only(&cluster, &alias(100)).await.expect("read_only"));

    let vtorc = Vtorc::start(&cluster, &[]).await;
    let code = AnalysisCode::PrimaryCurrentTypeMismatch;
    let fixed = vtorc.fixed(RecoveryKind::FixPrimary, &alias(100), code).await;
    let steps: Vec<&str> = step_names(&fixed);
    assert_eq!(steps, ["UndoDemotePrimary"], "{}", steps_text(&fixed));
    assert_eq!(fixed.tablets, [alias(100)]);
    assert_eq!(fixed.analysis_entry.tablet_type, TabletType::Primary);
    assert_eq!(fixed.analysis_entry.current_tablet_type, TabletType::Replica);
    assert!(!fixed.analysis_entry.is_read_only);

    // A consistent, serving primary: type adopted with the record's term,
    // shard record claimed, serving, semi-sync on, replicas attached.
    wait_full_status(
        &cluster,
        &alias(100),
        "the tablet running as PRIMARY",
        Duration::from_secs(5),
        |s| s.tablet_type == TabletType::Primary as i32 && !s.read_only && s.semi_sync_primary_enabled,
    )
    .await;
    let record = cluster.tablet_record(&alias(100)).await.expect("tablet record");
    assert_eq!(record.r#type(), TabletType::Primary);
    assert_eq!(
        record.primary_term_start_time,
        Some(term),
        "the record's term is adopted"
    );
    cluster
        .wait_for_primary(KS, "0", &alias(100), Duration::from_secs(10))
        .await
        .expect("the tablet claims the shard record");
    let health = cluster
        .tablet(&alias(100))
        .expect("tablet")
        .agent_handle()
        .expect("in-process agent")
        .health();
    assert!(health.serving, "{health:?}");
    assert_eq!(
        health.target.as_ref().map(|t| t.tablet_type),
        Some(TabletType::Primary as i32)
    );
    for replica in [alias(101), alias(102)] {
        wait_replicating_from(&cluster, &replica, &alias(100), Duration::from_secs(15)).await;
    }
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(20))
        .await;
    let wl_config = WorkloadConfig::new(KS, "0");
    let workload = Workload::start_acked(&cluster, &wl_config, &alias(100), 20)
        .await
        .expect("the workload starts and the primary acknowledges writes");
    let report = workload.stop().await.expect("the workload stops");
    poll_until(
        Duration::from_secs(10),
        "the acknowledged writes on replica 101",
        || async {
            let mut conn = cluster.mysql_conn(&alias(101)).await?;
            let check = check_acknowledged(&mut conn, &wl_config, &report).await?;
            conn.disconnect().await.ok();
            Ok(check.is_lossless().then_some(()))
        },
    )
    .await
    .expect("the acknowledged writes replicate");
    assert_eq!(
        vtorc.finished(RecoveryKind::FixPrimary).len(),
        1,
        "one FixPrimary: {}",
        vtorc.audit_dump()
    );
    vtorc.stop().await;
}
