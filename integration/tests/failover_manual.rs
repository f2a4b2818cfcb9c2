//! The key test of issue 4: a full emergency failover done by hand through
//! the tablet agents' RPCs only, after `kill -9` of the primary's MariaDB,
//! with the workload writer running; under semi-sync not one acknowledged
//! write may be lost.
//!
//! The steps follow Vitess's EmergencyReparentShard:
//! 1. `StopReplicationAndGetStatus(IOTHREADONLY)` on every replica;
//! 2. pick the replica whose relay-log position contains the others';
//! 3. `WaitForPosition` on it, so its relay log is applied;
//! 4. `PromoteReplica(semi_sync)` on it;
//! 5. concurrently `PopulateReparentJournal` on it and
//!    `SetReplicationSource(new primary, journal time, force start,
//!    semi_sync)` on the other replica (the journal insert waits for that
//!    replica's semi-sync ACK);
//! 6. wait until the new primary's shard sync names it in the shard record.
//!
//! The writer follows the shard record, so writes resume on the new
//! primary by themselves.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, ClusterBuilder, now_ns};
use integration::testkit::semi_sync_commerce;
use integration::workload::{Workload, WorkloadConfig, WorkloadReport, check_acknowledged};
use mysql_async::prelude::Queryable;
use vtorc::mysql::Position;
use vtorc::proto::replicationdata::StopReplicationMode;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::{Tablet, TabletAlias};
use vtorc::tablet::{TabletManager, TabletManagerExt};

/// Writes acknowledged by the old primary before it is killed, and by the
/// new one before the workload stops.
const WRITES_PER_PRIMARY: u64 = 300;

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// What one failover run measured.
struct Outcome {
    report: WorkloadReport,
    winner: TabletAlias,
    /// kill -9 → shard record names the new primary.
    failover: Duration,
    /// Last acknowledgement on the old primary → first on the new one.
    write_outage: Duration,
}

/// The relay-log position of a stopped replica (falls back to the executed one).
fn relay_position(status: &vtorc::proto::replicationdata::Status) -> Position {
    let text = if status.relay_log_position.is_empty() {
        &status.position
    } else {
        &status.relay_log_position
    };
    Position::parse(text).unwrap_or_else(|e| panic!("bad position {text:?}: {e}"))
}

/// Kills the primary's MariaDB under load and fails over by hand. With
/// `lagging`, that replica's IO thread is stopped while writes go on, so
/// the replicas' positions differ and only the other one acknowledges.
async fn fail_over_under_load(cluster: &mut Cluster, lagging: Option<TabletAlias>) -> Outcome {
    let config = WorkloadConfig {
        writers: 4,
        ..WorkloadConfig::new("commerce", "0")
    };
    let workload = Workload::start_acked(cluster, &config, &alias(100), WRITES_PER_PRIMARY)
        .await
        .expect("the workload starts and writes flow on the first primary");
    if let Some(lagging) = &lagging {
        cluster
            .stop_replication_io_thread(lagging)
            .await
            .expect("stop the lagging replica's IO thread");
        let more = workload.acked_count_on(&alias(100)) + WRITES_PER_PRIMARY / 3;
        workload
            .wait_for_acks_on(&alias(100), more, Duration::from_secs(60))
            .await
            .expect("writes go on with one semi-sync replica");
    }
    // Every commit so far waited for a replica's ACK: none fell back to async.
    let tmc = cluster.tmc().clone();
    let vars = tmc
        .get_global_status_vars(
            &cluster.tablet(&alias(100)).expect("p").rpc_tablet(),
            &[
                "Rpl_semi_sync_master_no_tx".to_string(),
                "Rpl_semi_sync_master_yes_tx".to_string(),
            ],
        )
        .await
        .expect("status vars");
    eprintln!("primary semi-sync counters before the kill: {vars:?}");
    assert_eq!(
        vars.get("Rpl_semi_sync_master_no_tx").map(String::as_str),
        Some("0")
    );

    let killed = cluster
        .kill_mysql(&alias(100))
        .expect("kill -9 the primary's MariaDB");
    let t0 = Instant::now();
    eprintln!("killed MariaDB of zone1-0000000100 (pid {killed})");

    let replicas: Vec<Tablet> = [101, 102]
        .iter()
        .map(|uid| cluster.tablet(&alias(*uid)).expect("replica").rpc_tablet())
        .collect();
    let rpc = tmc.with_timeout(Duration::from_secs(20));

    // 1. Stop the IO threads and read every replica's relay-log position.
    let stops = futures::future::join_all(
        replicas
            .iter()
            .map(|r| rpc.stop_replication_and_get_status(r, StopReplicationMode::Iothreadonly)),
    )
    .await;
    let mut candidates = Vec::new();
    for (replica, stop) in replicas.iter().zip(stops) {
        let status = stop.expect("StopReplicationAndGetStatus");
        let after = status.after.or(status.before).expect("a replication status");
        candidates.push((replica.clone(), relay_position(&after)));
    }
    // 2. The most advanced: its relay log contains every other's.
    let mut best = 0;
    for i in 1..candidates.len() {
        let ord = candidates[i]
            .1
            .compare(&candidates[best].1)
            .expect("MariaDB positions compare");
        if ord == Some(Ordering::Greater) {
            best = i;
        }
    }
    for (tablet, pos) in &candidates {
        let covered = candidates[best].1.contains(pos).expect("compare");
        assert!(
            covered,
            "winner's {:?} lacks {:?} of {:?}",
            candidates[best].1, pos, tablet.alias
        );
    }
    if let Some(lagging) = &lagging {
        let lagging_pos = &candidates
            .iter()
            .find(|(t, _)| t.alias.as_ref() == Some(lagging))
            .expect("lagging")
            .1;
        assert_eq!(
            candidates[best].1.compare(lagging_pos).expect("compare"),
            Some(Ordering::Greater),
            "the lagging replica must be strictly behind"
        );
    }
    let (winner, winner_pos) = candidates[best].clone();
    let winner_alias = winner.alias.clone().expect("alias");
    eprintln!(
        "candidates: {:?}",
        candidates
            .iter()
            .map(|(t, p)| (t.alias.clone(), p.clone()))
            .collect::<Vec<_>>()
    );

    // 3. Apply the relay log.
    let encoded = winner_pos.to_string();
    assert!(encoded.starts_with("MariaDB/"), "{encoded}");
    rpc.wait_for_position(&winner, &encoded)
        .await
        .expect("WaitForPosition");
    // 4. Promote.
    let position = rpc.promote_replica(&winner, true).await.expect("PromoteReplica");
    // 5. Journal on the new primary, repoint the other replica, concurrently.
    let time_created_ns = now_ns();
    let journal = rpc.populate_reparent_journal(
        &winner,
        tm::PopulateReparentJournalRequest {
            time_created_ns,
            action_name: "EmergencyReparentShard".to_string(),
            primary_alias: Some(winner_alias.clone()),
            replication_position: position.clone(),
        },
    );
    let others: Vec<&Tablet> = replicas.iter().filter(|r| r.alias != winner.alias).collect();
    let repoints = futures::future::join_all(others.iter().map(|r| {
        rpc.set_replication_source(
            r,
            tm::SetReplicationSourceRequest {
                parent: Some(winner_alias.clone()),
                time_created_ns,
                force_start_replication: true,
                wait_position: String::new(),
                semi_sync: true,
                heartbeat_interval: 0.0,
            },
        )
    }));
    let (journal, repoints) = tokio::join!(journal, repoints);
    journal.expect("PopulateReparentJournal");
    for r in repoints {
        r.expect("SetReplicationSource");
    }
    // 6. The new primary claims the shard record.
    cluster
        .wait_for_primary("commerce", "0", &winner_alias, Duration::from_secs(15))
        .await
        .expect("shard record names the new primary");
    let failover = t0.elapsed();

    workload
        .wait_for_acks_on(&winner_alias, WRITES_PER_PRIMARY, Duration::from_secs(60))
        .await
        .expect("writes flow on the new primary");
    let report = workload.stop().await.expect("stop the workload");
    let last_old = report
        .acked
        .iter()
        .filter(|w| w.primary == alias(100))
        .map(|w| w.at)
        .max()
        .expect("acks on the old primary");
    let first_new = report
        .acked
        .iter()
        .filter(|w| w.primary == winner_alias)
        .map(|w| w.at)
        .min()
        .expect("acks on the new primary");
    Outcome {
        report,
        winner: winner_alias,
        failover,
        write_outage: first_new.saturating_sub(last_old),
    }
}

/// Runs the scenario and checks the invariants.
async fn manual_ers_loses_no_acknowledged_write(after_sync: bool, lagging: Option<TabletAlias>) {
    let mut cluster = ClusterBuilder::three_tablets("commerce", "semi_sync")
        .after_sync(after_sync)
        .started()
        .await;
    let outcome = fail_over_under_load(&mut cluster, lagging.clone()).await;
    if let Some(lagging) = &lagging {
        assert_ne!(&outcome.winner, lagging, "the most advanced replica wins");
    }
    let report = &outcome.report;
    eprintln!(
        "wait point {}, lagging replica {:?}: failover (kill -9 → shard record) {:?}, write outage {:?}; acknowledged {} \
         (old primary {}, {} {}), refused {}, unknown outcome {}, errors {}: {:?}",
        if after_sync { "AFTER_SYNC" } else { "AFTER_COMMIT" },
        lagging.as_ref().map(ToString::to_string),
        outcome.failover,
        outcome.write_outage,
        report.acked.len(),
        report.acked_on(&alias(100)),
        outcome.winner,
        report.acked_on(&outcome.winner),
        report.rejected.len(),
        report.unknown.len(),
        report.errors,
        report.sample_errors.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(report.primaries, vec![alias(100), outcome.winner.clone()]);

    // Zero acknowledged writes lost: on the new primary...
    let config = WorkloadConfig::new("commerce", "0");
    let mut conn = cluster.mysql_conn(&outcome.winner).await.expect("new primary");
    let check = check_acknowledged(&mut conn, &config, report)
        .await
        .expect("check");
    eprintln!("new primary: {check:?}");
    assert!(
        check.is_lossless(),
        "acknowledged writes lost: {:?}",
        check.missing
    );
    assert_eq!(check.checked, report.acked.len());

    // ...and on the repointed replica once it has caught up.
    let pos: String = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("pos")
        .expect("row");
    let other = if outcome.winner == alias(101) {
        alias(102)
    } else {
        alias(101)
    };
    let mut replica = cluster.mysql_conn(&other).await.expect("other replica");
    let reached: Option<i64> = replica
        .exec_first("SELECT MASTER_GTID_WAIT(?, 20)", (pos.clone(),))
        .await
        .expect("wait");
    assert_eq!(reached, Some(0), "{other} did not reach {pos}");
    let check = check_acknowledged(&mut replica, &config, report)
        .await
        .expect("check");
    assert!(
        check.is_lossless(),
        "{other} lacks acknowledged writes: {:?}",
        check.missing
    );

    // The journal of the failover replicated to the repointed replica.
    let journal: Vec<(String, String)> = replica
        .query("SELECT action_name, primary_alias FROM _vt.reparent_journal ORDER BY time_created_ns")
        .await
        .expect("journal");
    assert_eq!(
        journal.last().cloned(),
        Some(("EmergencyReparentShard".to_string(), outcome.winner.to_string()))
    );
    // The new primary is writable, semi-sync, and acknowledged by the other replica.
    let status = cluster.full_status(&outcome.winner).await.expect("FullStatus");
    assert!(!status.read_only && status.semi_sync_primary_enabled && status.semi_sync_primary_status);
    assert_eq!(status.semi_sync_primary_clients, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_emergency_failover_after_kill_9_loses_no_acknowledged_write_with_after_sync() {
    manual_ers_loses_no_acknowledged_write(true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_emergency_failover_promotes_the_most_advanced_replica_when_one_lags() {
    manual_ers_loses_no_acknowledged_write(true, Some(alias(102))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_emergency_failover_after_kill_9_loses_no_acknowledged_write_with_after_commit() {
    manual_ers_loses_no_acknowledged_write(false, None).await;
}

/// The negative control: promote the replica that stopped receiving
/// (instead of the most advanced one) and the loss check must fail, naming
/// exactly the writes only the other replica had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_the_lagging_replica_instead_loses_acknowledged_writes_and_the_check_says_so() {
    let mut cluster = semi_sync_commerce().await;
    let config = WorkloadConfig::new("commerce", "0");
    let workload = Workload::start_acked(&cluster, &config, &alias(100), 50)
        .await
        .expect("the workload starts and writes flow");
    cluster
        .stop_replication_io_thread(&alias(102))
        .await
        .expect("stop IO thread");
    let more = workload.acked_count_on(&alias(100)) + 50;
    workload
        .wait_for_acks_on(&alias(100), more, Duration::from_secs(60))
        .await
        .expect("writes go on, acknowledged by 101 only");
    cluster.kill_mysql(&alias(100)).expect("kill -9");
    let report = workload.stop().await.expect("stop");

    let lagging = cluster.tablet(&alias(102)).expect("t").rpc_tablet();
    let rpc = cluster.tmc().with_timeout(Duration::from_secs(20));
    rpc.stop_replication(&lagging).await.expect("StopReplication");
    rpc.promote_replica(&lagging, false)
        .await
        .expect("PromoteReplica");
    let mut conn = cluster.mysql_conn(&alias(102)).await.expect("connect");
    let check = check_acknowledged(&mut conn, &config, &report)
        .await
        .expect("check");
    eprintln!(
        "lagging replica promoted: {} acknowledged writes missing",
        check.missing.len()
    );
    assert!(!check.is_lossless(), "the wrong promotion must be caught");
    assert!(check.missing.len() >= 50, "{check:?}");
    let acked_late: Vec<u64> = report.acked_ids().into_iter().rev().take(10).collect();
    assert!(
        acked_late.iter().all(|id| check.missing.contains(id)),
        "the last acknowledged writes are the missing ones"
    );
}
