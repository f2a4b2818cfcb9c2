//! Every fault-injection helper against a real cluster, each shown by what
//! the tablet agent reports (FullStatus, Ping) or by SQL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, poll_until};
use integration::faults::SemiSyncSide;
use integration::testkit::{semi_sync_commerce, wait_caught_up};
use mysql_async::prelude::Queryable;
use vtorc::proto::replicationdata::FullStatus;
use vtorc::proto::topodata::{Tablet, TabletAlias};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletError, TabletManager, TabletManagerExt};
use vtorc::topo::TopoError;

/// Vitess's replication thread states.
const STOPPED: i32 = 1;
const RUNNING: i32 = 3;

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// Polls FullStatus of `uid` until `check` holds.
async fn wait_status(
    cluster: &Cluster,
    uid: u32,
    what: &str,
    check: impl Fn(&FullStatus) -> bool,
) -> FullStatus {
    poll_until(Duration::from_secs(15), what, || async {
        let status = cluster.full_status(&alias(uid)).await?;
        Ok(check(&status).then_some(status))
    })
    .await
    .expect(what)
}

/// Inserts a row on the primary and waits until `uid` has applied it.
/// Pings `target` through the harness's own tablet client (whose
/// connections stay open across agent kills), bounded by `timeout`.
async fn harness_ping(cluster: &Cluster, target: &Tablet, timeout: Duration) -> Result<(), TabletError> {
    cluster.tmc().with_timeout(timeout).ping(target).await
}

async fn write_and_wait_replicated(cluster: &Cluster, uid: u32) {
    let mut primary = cluster.mysql_conn(&alias(100)).await.expect("primary");
    primary
        .query_drop("CREATE TABLE IF NOT EXISTS _vt.fault_probe (id INT AUTO_INCREMENT PRIMARY KEY)")
        .await
        .expect("create");
    primary
        .query_drop("INSERT INTO _vt.fault_probe VALUES ()")
        .await
        .expect("insert");
    wait_caught_up(cluster, &alias(100), &alias(uid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_mariadb_is_unreachable_until_restarted_then_replicates_again() {
    let mut cluster = semi_sync_commerce().await;
    let pid = cluster.kill_mysql(&alias(101)).expect("kill -9");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} reaped"
    );
    assert_eq!(cluster.tablet(&alias(101)).expect("t").mysql_pid(), None);
    let started = Instant::now();
    let err = cluster
        .full_status(&alias(101))
        .await
        .expect_err("MariaDB is dead");
    eprintln!(
        "FullStatus of a dead MariaDB failed in {:?}: {err:#}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the agent answers quickly"
    );

    cluster.restart_mysql(&alias(101)).await.expect("restart");
    let primary_port = cluster.tablet(&alias(100)).expect("p").mysql_port();
    wait_status(&cluster, 101, "101 replicating again", |s| {
        s.replication_status.as_ref().is_some_and(|r| {
            r.io_state == RUNNING && r.sql_state == RUNNING && r.source_port == i32::from(primary_port)
        })
    })
    .await;
    write_and_wait_replicated(&cluster, 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_mariadb_hangs_until_resumed() {
    let cluster = semi_sync_commerce().await;
    cluster.pause_mysql(&alias(102)).expect("SIGSTOP");
    let tablet = cluster.tablet(&alias(102)).expect("t");
    let hung = tokio::time::timeout(Duration::from_millis(500), tablet.mysql_conn()).await;
    assert!(hung.is_err(), "a paused server accepts but never answers");
    let started = Instant::now();
    let status = cluster.full_status(&alias(102)).await;
    assert!(
        status.is_err(),
        "FullStatus cannot succeed against a frozen server: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(11),
        "bounded: {:?}",
        started.elapsed()
    );

    cluster.resume_mysql(&alias(102)).expect("SIGCONT");
    wait_status(&cluster, 102, "102 answers after SIGCONT", |s| s.read_only).await;
    write_and_wait_replicated(&cluster, 102).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_in_process_agent_stops_answering_even_on_open_connections_and_restarts() {
    let mut cluster = semi_sync_commerce().await;
    let target = cluster.tablet(&alias(101)).expect("t").rpc_tablet();
    let fast = Duration::from_secs(1);
    // The harness's client has an open HTTP/2 connection to the agent by now.
    harness_ping(&cluster, &target, fast).await.expect("ping before");
    let before = cluster.tablet_record(&alias(101)).await.expect("record");

    cluster.kill_agent(&alias(101)).expect("kill agent");
    assert!(!cluster.tablet(&alias(101)).expect("t").agent_running());
    let fresh = GrpcTabletManager::new(TabletClientConfig::default());
    poll_until(
        Duration::from_secs(5),
        "the killed agent to stop answering",
        || async {
            let cached = harness_ping(&cluster, &target, fast).await;
            let new = fresh.with_timeout(fast).ping(&target).await;
            Ok((cached.is_err() && new.is_err()).then_some(()))
        },
    )
    .await
    .expect("a killed agent answers nobody");
    // Killing leaves the topo alone, like kill -9 of vttablet.
    let after_kill = cluster.tablet_record(&alias(101)).await.expect("record");
    assert_eq!(after_kill.tablet_shutdown_time, None);
    assert_eq!(after_kill.hostname, before.hostname);

    cluster.restart_agent(&alias(101)).await.expect("restart agent");
    harness_ping(&cluster, &target, fast)
        .await
        .expect("ping after restart");
    let after = cluster.tablet_record(&alias(101)).await.expect("record");
    assert_eq!(
        after.port_map.get("grpc"),
        before.port_map.get("grpc"),
        "same gRPC port"
    );
    assert_ne!(after.tablet_start_time, before.tablet_start_time, "re-registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_agent_can_be_paused_resumed_killed_and_restarted() {
    let mut cluster = integration::testkit::semi_sync_commerce_in_processes(PathBuf::from(env!(
        "CARGO_BIN_EXE_tablet-agent"
    )))
    .await;
    let target = cluster.tablet(&alias(102)).expect("t").rpc_tablet();
    let client = cluster.tmc().clone();
    let tmc = client.with_timeout(Duration::from_millis(500));

    cluster.pause_agent(&alias(102)).expect("SIGSTOP");
    let paused = tmc.ping(&target).await;
    assert!(paused.is_err(), "a stopped agent does not answer: {paused:?}");
    cluster.resume_agent(&alias(102)).expect("SIGCONT");
    poll_until(Duration::from_secs(5), "ping after SIGCONT", || async {
        Ok(tmc.ping(&target).await.is_ok().then_some(()))
    })
    .await
    .expect("answers after SIGCONT");

    let pid = cluster
        .tablet(&alias(102))
        .expect("t")
        .agent_pid()
        .expect("child pid");
    cluster.kill_agent(&alias(102)).expect("kill -9");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "agent {pid} reaped"
    );
    assert!(tmc.ping(&target).await.is_err(), "a dead agent does not answer");

    cluster.restart_agent(&alias(102)).await.expect("restart");
    let new_pid = cluster
        .tablet(&alias(102))
        .expect("t")
        .agent_pid()
        .expect("new pid");
    assert_ne!(new_pid, pid);
    tmc.ping(&target).await.expect("answers after restart");
    // In-process agents refuse to be paused instead of pretending.
    let in_process = semi_sync_commerce().await;
    assert!(in_process.pause_agent(&alias(100)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replication_an_errant_gtid_and_a_read_only_primary_show_in_full_status() {
    let cluster = semi_sync_commerce().await;

    cluster.stop_replication(&alias(101)).await.expect("STOP SLAVE");
    let s = cluster.full_status(&alias(101)).await.expect("status");
    let r = s.replication_status.expect("still configured");
    assert_eq!((r.io_state, r.sql_state), (STOPPED, STOPPED), "{r:?}");

    let gtid = cluster
        .write_errant_transaction(&alias(102))
        .await
        .expect("errant write");
    assert!(
        gtid.starts_with("0-102-"),
        "the GTID carries the replica's server_id: {gtid}"
    );
    let s = cluster.full_status(&alias(102)).await.expect("status");
    assert!(!s.read_only, "the replica was made writable");
    let executed = s.primary_status.expect("executed position").position;
    assert!(
        executed.contains(&gtid),
        "{gtid} not in executed position {executed}"
    );
    let primary = cluster.full_status(&alias(100)).await.expect("primary");
    let primary_pos = primary.primary_status.expect("primary position").position;
    assert!(
        !primary_pos.contains("0-102-"),
        "the primary never had it: {primary_pos}"
    );

    assert!(!primary.read_only);
    cluster.set_read_only(&alias(100)).await.expect("read_only=ON");
    assert!(cluster.full_status(&alias(100)).await.expect("status").read_only);
    cluster.set_writable(&alias(100)).await.expect("read_only=OFF");
    assert!(!cluster.full_status(&alias(100)).await.expect("status").read_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_sync_misconfigurations_show_in_full_status() {
    let cluster = semi_sync_commerce().await;
    // Replica side off on one replica: the primary loses one acker.
    cluster
        .set_semi_sync(&alias(102), SemiSyncSide::Replica, false)
        .await
        .expect("replica side off");
    let s = cluster.full_status(&alias(102)).await.expect("status");
    assert!(!s.semi_sync_replica_enabled);
    wait_status(&cluster, 100, "the primary to count one semi-sync client", |s| {
        s.semi_sync_primary_clients == 1
    })
    .await;
    // Primary side on a replica (waits for ACKs it will never get).
    cluster
        .set_semi_sync(&alias(101), SemiSyncSide::Primary, true)
        .await
        .expect("primary side on a replica");
    assert!(
        cluster
            .full_status(&alias(101))
            .await
            .expect("status")
            .semi_sync_primary_enabled
    );
    // Primary side off on the primary.
    cluster
        .set_semi_sync(&alias(100), SemiSyncSide::Primary, false)
        .await
        .expect("primary side off");
    let p = cluster.full_status(&alias(100)).await.expect("status");
    assert!(
        !p.semi_sync_primary_enabled && !p.semi_sync_primary_status,
        "{p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tablet_record_is_gone_from_the_topo_while_the_agent_runs() {
    let cluster = semi_sync_commerce().await;
    cluster.delete_tablet_record(&alias(102)).await.expect("delete");
    let got = cluster.topo().get_tablet(&alias(102)).await;
    assert!(matches!(got, Err(TopoError::NoNode(_))), "{got:?}");
    let nodes = cluster
        .topo()
        .get_shard_replication("zone1", "commerce", "0")
        .await
        .expect("ShardReplication")
        .value
        .nodes;
    let aliases: Vec<_> = nodes.iter().filter_map(|n| n.tablet_alias.clone()).collect();
    assert!(!aliases.contains(&alias(102)), "{aliases:?}");
    assert!(aliases.contains(&alias(101)), "{aliases:?}");
    let target = cluster.tablet(&alias(102)).expect("t").rpc_tablet();
    cluster.tmc().ping(&target).await.expect("the agent still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_timeouts_and_a_wrong_source_show_in_full_status() {
    let cluster = semi_sync_commerce().await;
    cluster
        .set_replication_timeouts(&alias(101), 8, 1.0)
        .await
        .expect("set timeouts");
    let s = wait_status(&cluster, 101, "101 replicating with new timeouts", |s| {
        s.replication_status
            .as_ref()
            .is_some_and(|r| r.io_state == RUNNING)
    })
    .await;
    let c = s.replication_configuration.expect("configuration");
    assert_eq!(c.replica_net_timeout, 8);
    assert!((c.heartbeat_interval - 1.0).abs() < 1e-9, "{c:?}");
    assert_ne!(
        (c.heartbeat_interval * 2.0).round() as i32,
        c.replica_net_timeout,
        "misconfigured"
    );

    let wrong = cluster.tablet(&alias(101)).expect("t").mysql_port();
    cluster
        .point_replica_at(&alias(102), &alias(101))
        .await
        .expect("repoint");
    let s = wait_status(&cluster, 102, "102 replicating from 101", |s| {
        s.replication_status
            .as_ref()
            .is_some_and(|r| r.io_state == RUNNING && r.source_port == i32::from(wrong))
    })
    .await;
    assert_eq!(s.replication_status.expect("status").source_server_id, 101);
    // Rows still flow (through 101).
    write_and_wait_replicated(&cluster, 102).await;
}
