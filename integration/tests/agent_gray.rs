//! Gray failures at the agent level (issue #13), on real MariaDB + etcd:
//! the world's Vitess-like settings, vttablet's replication heartbeat as
//! StreamHealth lag (pulled with RunHealthCheck), and the fencing of a
//! frozen primary that resumes after a failover with a stale RPC (or a
//! stale term) waiting: a commit that was waiting for a semi-sync ACK must
//! never be acknowledged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::cluster::{APP_PASSWORD, APP_USER, Cluster, ClusterBuilder, poll_until};
use integration::testkit::semi_sync_commerce;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tonic::transport::Channel;
use vtorc::proto::query::{StreamHealthRequest, StreamHealthResponse};
use vtorc::proto::queryservice::query_client::QueryClient;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient;
use vtorc::proto::topodata::{TabletAlias, TabletType};

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

async fn channel(cluster: &Cluster, uid: u32) -> Channel {
    let addr = cluster.tablet(&alias(uid)).expect("tablet").grpc_addr();
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect to the agent")
}

async fn root(cluster: &Cluster, uid: u32) -> Conn {
    cluster.mysql_conn(&alias(uid)).await.expect("root connection")
}

async fn app_conn(cluster: &Cluster, uid: u32) -> Conn {
    let port = cluster.tablet(&alias(uid)).expect("tablet").mysql_port();
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false);
    Conn::new(opts).await.expect("app connection")
}

async fn global_u64(conn: &mut Conn, var: &str) -> u64 {
    let value: Option<u64> = conn
        .query_first(format!("SELECT @@GLOBAL.{var}"))
        .await
        .expect("read variable");
    value.unwrap_or_else(|| panic!("{var} is NULL"))
}

/// Reads stream messages until one satisfies `check` (bounded).
async fn next_matching(
    stream: &mut tonic::Streaming<StreamHealthResponse>,
    within: Duration,
    what: &str,
    check: impl Fn(&StreamHealthResponse) -> bool,
) -> StreamHealthResponse {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no StreamHealth message {what} within {within:?}"))
            .expect("stream ok")
            .expect("stream open");
        if check(&message) {
            return message;
        }
    }
}

/// Lets the heartbeat reader (every 250 ms) read at least twice, then asks
/// the agent for a health check at once (its own interval is 5 s).
async fn health_check_after_a_read(tmc: &mut TabletManagerClient<Channel>) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    tmc.run_health_check(tm::RunHealthCheckRequest {})
        .await
        .expect("RunHealthCheck");
}

fn lag(m: &StreamHealthResponse) -> u32 {
    m.realtime_stats.as_ref().map_or(0, |s| s.replication_lag_seconds)
}

fn health_error(m: &StreamHealthResponse) -> String {
    m.realtime_stats
        .as_ref()
        .map(|s| s.health_error.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_world_runs_vitess_replication_settings_and_heartbeats() {
    let cluster = semi_sync_commerce().await;
    for uid in [100, 101, 102] {
        let mut conn = root(&cluster, uid).await;
        assert_eq!(global_u64(&mut conn, "slave_net_timeout").await, 8, "zone1-{uid}");
        assert_eq!(
            global_u64(&mut conn, "rpl_semi_sync_master_timeout").await,
            1_000_000_000_000_000_000,
            "zone1-{uid}: Vitess's semi-sync timeout is accepted as is"
        );
        assert_eq!(
            global_u64(&mut conn, "rpl_semi_sync_master_wait_no_slave").await,
            1,
            "zone1-{uid}: no fallback to async without replicas"
        );
        let config = cluster.tablet(&alias(uid)).expect("tablet").agent_config();
        assert!(config.heartbeat_enable);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(config.health_check_interval, Duration::from_secs(5));
    }
    // The primary's heartbeat reaches every replica.
    for uid in [101, 102] {
        let row: (u64, u32) = poll_until(Duration::from_secs(10), "a heartbeat row", || async {
            let mut conn = root(&cluster, uid).await;
            let row: Option<(u64, u32)> = conn
                .query_first("SELECT ts, tabletUid FROM _vt.heartbeat WHERE keyspaceShard = 'commerce:0'")
                .await?;
            Ok(row)
        })
        .await
        .expect("heartbeat replicated");
        assert_eq!(row.1, 100, "written by the primary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_lag_is_pulled_with_run_health_check_and_reader_errors_become_health_errors() {
    let cluster = semi_sync_commerce().await;
    let ch = channel(&cluster, 101).await;
    let mut tmc = TabletManagerClient::new(ch.clone());
    let mut stream = QueryClient::new(ch)
        .stream_health(StreamHealthRequest {})
        .await
        .expect("stream")
        .into_inner();
    // Healthy: lag below a second, no error.
    health_check_after_a_read(&mut tmc).await;
    let m = next_matching(&mut stream, Duration::from_secs(2), "healthy", |m| {
        health_error(m).is_empty() && m.serving
    })
    .await;
    assert_eq!(lag(&m), 0, "{m:?}");

    // The replica stops hearing the primary: lag grows; RunHealthCheck
    // pulls it at once (the health-check interval is 5 s).
    cluster
        .stop_replication_io_thread(&alias(101))
        .await
        .expect("stop IO");
    // 3.2 s of silence for a lag of at least 2 s: the lag is the reader's
    // last read (every 250 ms, late on a loaded machine) minus the last
    // heartbeat's timestamp, in whole seconds (2.2 s once read as 1).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let asked = Instant::now();
    tmc.run_health_check(tm::RunHealthCheckRequest {})
        .await
        .expect("RunHealthCheck");
    let m = next_matching(&mut stream, Duration::from_millis(500), "with lag", |m| {
        lag(m) >= 1
    })
    .await;
    let took = asked.elapsed();
    eprintln!("RunHealthCheck → StreamHealth lag {} s in {took:?}", lag(&m));
    assert!(lag(&m) >= 2, "lag grows with the silence: {m:?}");
    assert!(health_error(&m).is_empty(), "reads still succeed: {m:?}");

    // A failing read is the health error (and the replica stops serving).
    let mut conn = root(&cluster, 101).await;
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .expect("binlog off");
    conn.query_drop("RENAME TABLE _vt.heartbeat TO _vt.heartbeat_moved")
        .await
        .expect("rename");
    health_check_after_a_read(&mut tmc).await;
    let m = next_matching(&mut stream, Duration::from_millis(500), "with an error", |m| {
        !health_error(m).is_empty()
    })
    .await;
    assert!(
        health_error(&m).starts_with("failed to read most recent heartbeat"),
        "{m:?}"
    );
    assert!(!m.serving, "{m:?}");
    assert_eq!(lag(&m), 0, "an error reports lag 0, as vttablet: {m:?}");
    conn.query_drop("RENAME TABLE _vt.heartbeat_moved TO _vt.heartbeat")
        .await
        .expect("rename back");
    health_check_after_a_read(&mut tmc).await;
    next_matching(&mut stream, Duration::from_millis(500), "error cleared", |m| {
        health_error(m).is_empty()
    })
    .await;
}

/// How the frozen primary is told it is no longer primary.
#[derive(Clone, Copy, Debug)]
enum Stale {
    /// A SetReplicationSource that waited in its socket.
    SetReplicationSource,
    /// A ChangeType(REPLICA) that waited in its socket.
    ChangeType,
    /// No RPC: another tablet was promoted meanwhile, and the shard sync
    /// ends the stale term.
    ShardSync,
}

/// The gray failure of issue #13: a semi-sync primary with a commit waiting
/// for an ACK freezes (MariaDB and agent SIGSTOPped), is replaced, and
/// resumes with `stale` waiting. The commit must fail; the application's
/// account is locked and the heartbeat writer stopped before `read_only`,
/// which is on before semi-sync's primary side goes off.
async fn a_resumed_primary_never_acknowledges_a_waiting_commit(stale: Stale) {
    let cluster = integration::testkit::semi_sync_commerce_in_processes(PathBuf::from(env!(
        "CARGO_BIN_EXE_tablet-agent"
    )))
    .await;
    let mut primary = root(&cluster, 100).await;
    primary
        .query_drop("CREATE DATABASE IF NOT EXISTS gray")
        .await
        .expect("db");
    primary
        .query_drop("CREATE TABLE IF NOT EXISTS gray.t (id INT PRIMARY KEY)")
        .await
        .expect("table");
    primary
        .query_drop("INSERT INTO gray.t VALUES (1)")
        .await
        .expect("an acknowledged write");
    for uid in [100, 101, 102] {
        let mut conn = root(&cluster, uid).await;
        for sql in ["SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = ON"] {
            conn.query_drop(sql).await.expect("general log on");
        }
    }
    for uid in [101, 102] {
        cluster
            .stop_replication_io_thread(&alias(uid))
            .await
            .expect("stop IO");
    }
    // The application's commit waits for an ACK that cannot come.
    let mut app = app_conn(&cluster, 100).await;
    let commit = tokio::spawn(async move { app.query_drop("INSERT INTO gray.t VALUES (2)").await });
    poll_until(Duration::from_secs(10), "the commit waits for an ACK", || async {
        let mut conn = root(&cluster, 100).await;
        let row: Option<(String, u64)> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'")
            .await?;
        Ok(row.filter(|(_, n)| *n >= 1))
    })
    .await
    .expect("semi-sync blocked");
    assert!(!commit.is_finished(), "the commit is waiting");

    // Freeze the host; the failover happens meanwhile.
    let old_primary_channel = channel(&cluster, 100).await;
    cluster.pause_mysql(&alias(100)).expect("SIGSTOP MariaDB");
    cluster.pause_agent(&alias(100)).expect("SIGSTOP agent");
    let rpc = match stale {
        Stale::SetReplicationSource => {
            let mut tmc = TabletManagerClient::new(old_primary_channel);
            Some(tokio::spawn(async move {
                let mut req = tonic::Request::new(tm::SetReplicationSourceRequest {
                    parent: Some(alias(101)),
                    force_start_replication: true,
                    semi_sync: true,
                    ..Default::default()
                });
                req.set_timeout(Duration::from_secs(60));
                tmc.set_replication_source(req).await.map(|_| ())
            }))
        }
        Stale::ChangeType => {
            let mut tmc = TabletManagerClient::new(old_primary_channel);
            Some(tokio::spawn(async move {
                let mut req = tonic::Request::new(tm::ChangeTypeRequest {
                    tablet_type: TabletType::Replica as i32,
                    semi_sync: true,
                });
                req.set_timeout(Duration::from_secs(60));
                tmc.change_type(req).await.map(|_| ())
            }))
        }
        Stale::ShardSync => {
            let mut tmc = TabletManagerClient::new(channel(&cluster, 101).await);
            tmc.stop_replication(tm::StopReplicationRequest {})
                .await
                .expect("stop replication on the new primary");
            tmc.promote_replica(tm::PromoteReplicaRequest { semi_sync: false })
                .await
                .expect("promote zone1-0000000101");
            poll_until(
                Duration::from_secs(10),
                "the shard names the new primary",
                || async {
                    Ok((cluster.primary_alias("commerce", "0").await? == Some(alias(101))).then_some(()))
                },
            )
            .await
            .expect("new primary in the shard record");
            None
        }
    };
    // Let the RPC reach the frozen agent's socket.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.resume_mysql(&alias(100)).expect("SIGCONT MariaDB");
    cluster.resume_agent(&alias(100)).expect("SIGCONT agent");

    let outcome = tokio::time::timeout(Duration::from_secs(30), commit)
        .await
        .expect("the waiting commit ends")
        .expect("task");
    eprintln!("{stale:?}: the waiting commit ended with {outcome:?}");
    if outcome.is_ok() {
        // What the old primary ran, in order, to explain how it got there.
        let mut conn = root(&cluster, 100).await;
        let log: Vec<(String, String)> = conn
            .query(
                "SELECT CAST(event_time AS CHAR), CAST(argument AS CHAR) FROM mysql.general_log \
                 WHERE command_type IN ('Query', 'Execute') ORDER BY event_time DESC LIMIT 80",
            )
            .await
            .unwrap_or_default();
        let status: Vec<(String, String)> = conn
            .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
            .await
            .unwrap_or_default();
        // What the replicas were told about replication, oldest first.
        let mut replicas = String::new();
        for uid in [101, 102] {
            let mut conn = root(&cluster, uid).await;
            let log: Vec<(String, String)> = conn
                .query(
                    "SELECT CAST(event_time AS CHAR), CAST(argument AS CHAR) FROM mysql.general_log \
                     WHERE command_type IN ('Query', 'Execute') AND (argument LIKE '%SLAVE%' \
                     OR argument LIKE '%MASTER%' OR argument LIKE '%semi_sync%') ORDER BY event_time",
                )
                .await
                .unwrap_or_default();
            replicas.push_str(&format!("\n{uid}: {log:#?}"));
        }
        panic!(
            "{stale:?}: a commit that waited for a semi-sync ACK was acknowledged after the resume\n\
             semi-sync status: {status:?}\ngeneral log, newest first: {log:#?}\n\
             replication statements on the replicas: {replicas}\n{}",
            cluster.replication_report().await
        );
    }
    if let Some(rpc) = rpc {
        let result = tokio::time::timeout(Duration::from_secs(60), rpc)
            .await
            .expect("the stale RPC ends")
            .expect("task");
        eprintln!("{stale:?}: the stale RPC returned {result:?}");
    }

    // read_only on, the type no longer PRIMARY.
    let mut conn = root(&cluster, 100).await;
    poll_until(Duration::from_secs(15), "the old primary is REPLICA", || async {
        let t = cluster.topo().get_tablet(&alias(100)).await?.value;
        Ok((t.r#type != TabletType::Primary as i32).then_some(()))
    })
    .await
    .expect("type changed");
    assert_eq!(
        global_u64(&mut conn, "read_only").await,
        1,
        "{stale:?}: read_only"
    );
    // The order of the fence, from the general log (insertion order).
    conn.query_drop("SET GLOBAL general_log = OFF")
        .await
        .expect("log off");
    let statements: Vec<String> = conn
        .query("SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log WHERE command_type = 'Query'")
        .await
        .expect("general log");
    let first = |needle: &str| {
        statements
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("{stale:?}: no {needle:?} in the general log"))
    };
    let lock = first(&format!("'{APP_USER}'@'127.0.0.1' ACCOUNT LOCK"));
    let kill = first("KILL CONNECTION");
    let read_only = first("SET GLOBAL read_only = ON");
    let semi_sync_off = first("rpl_semi_sync_master_enabled = 0");
    eprintln!("{stale:?}: lock {lock}, kill {kill}, read_only {read_only}, semi-sync off {semi_sync_off}");
    assert!(lock < kill && kill < read_only, "{stale:?}: {statements:#?}");
    assert!(read_only < semi_sync_off, "{stale:?}: {statements:#?}");
    // No heartbeat after read_only went on.
    assert!(
        !statements[read_only..]
            .iter()
            .any(|s| s.starts_with("INSERT INTO _vt.heartbeat")),
        "{stale:?}: a heartbeat write after read_only: {statements:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_set_replication_source_never_acknowledges_a_waiting_commit() {
    a_resumed_primary_never_acknowledges_a_waiting_commit(Stale::SetReplicationSource).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_change_type_never_acknowledges_a_waiting_commit() {
    a_resumed_primary_never_acknowledges_a_waiting_commit(Stale::ChangeType).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_term_ended_by_the_shard_sync_never_acknowledges_a_waiting_commit() {
    a_resumed_primary_never_acknowledges_a_waiting_commit(Stale::ShardSync).await;
}

/// Rows a replica received and acknowledged (semi-sync) but had not applied
/// yet outlive a SetReplicationSource that restarts its replication, even
/// when the source cannot send them again. MySQL 8 keeps the relay log across
/// the restart; MariaDB discards it and fetches again from what it applied,
/// so the agent lets the SQL thread apply the received events first.
async fn received_events_survive_a_replication_restart(heartbeat_interval: f64) {
    let cluster = ClusterBuilder::three_tablets("commerce", "semi_sync")
        .started()
        .await;
    let mut primary = root(&cluster, 100).await;
    for sql in [
        "CREATE DATABASE IF NOT EXISTS relay",
        "CREATE TABLE IF NOT EXISTS relay.t (id INT PRIMARY KEY, v INT NOT NULL)",
        "INSERT INTO relay.t VALUES (1, 0)",
    ] {
        primary.query_drop(sql).await.expect(sql);
    }
    let position: Option<String> = primary
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .expect("primary position");
    let mut replica = root(&cluster, 101).await;
    let caught_up: Option<i64> = replica
        .exec_first("SELECT MASTER_GTID_WAIT(?, 20)", (position.unwrap_or_default(),))
        .await
        .expect("wait for the replica");
    assert_eq!(caught_up, Some(0), "101 caught up");
    // Only 101 acknowledges from now on, and its SQL thread is held on row 1.
    cluster
        .stop_replication_io_thread(&alias(102))
        .await
        .expect("stop 102's IO thread");
    let mut blocker = root(&cluster, 101).await;
    blocker.query_drop("BEGIN").await.expect("begin");
    blocker
        .query_drop("SELECT * FROM relay.t WHERE id = 1 FOR UPDATE")
        .await
        .expect("lock row 1 on the replica");
    primary
        .query_drop("UPDATE relay.t SET v = 1 WHERE id = 1")
        .await
        .expect("acknowledged update");
    for id in 2..=4 {
        primary
            .query_drop(format!("INSERT INTO relay.t VALUES ({id}, 0)"))
            .await
            .expect("acknowledged insert");
    }
    // The source can no longer send them again: new replication connections
    // are refused (not binlogged, so no replica sees the change).
    primary
        .query_drop("SET SESSION sql_log_bin = 0")
        .await
        .expect("binlog off");
    primary
        .query_drop(format!(
            "REVOKE REPLICATION SLAVE ON *.* FROM '{}'@'127.0.0.1'",
            integration::mariadb::REPL_USER
        ))
        .await
        .expect("revoke replication");
    let mut tmc = TabletManagerClient::new(channel(&cluster, 101).await);
    let rpc = tokio::spawn(async move {
        let mut req = tonic::Request::new(tm::SetReplicationSourceRequest {
            parent: Some(alias(100)),
            force_start_replication: true,
            semi_sync: true,
            heartbeat_interval,
            ..Default::default()
        });
        req.set_timeout(Duration::from_secs(30));
        tmc.set_replication_source(req).await.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    blocker.query_drop("COMMIT").await.expect("release row 1");
    rpc.await
        .expect("rpc task")
        .expect("SetReplicationSource succeeds");
    let rows = poll_until(
        Duration::from_secs(10),
        "every acknowledged row on 101",
        || async {
            let mut conn = root(&cluster, 101).await;
            let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM relay.t").await?;
            Ok(n.filter(|n| *n == 4))
        },
    )
    .await;
    let mut conn = root(&cluster, 101).await;
    let ids: Vec<u32> = conn
        .query("SELECT id FROM relay.t ORDER BY id")
        .await
        .expect("rows");
    assert!(
        rows.is_ok(),
        "heartbeat {heartbeat_interval}: acknowledged rows lost by the restart, 101 holds {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repoint_with_change_master_keeps_received_unapplied_events() {
    received_events_survive_a_replication_restart(4.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_to_apply_semi_sync_keeps_received_unapplied_events() {
    received_events_survive_a_replication_restart(0.0).await;
}
