//! The tablet agent's TabletManager RPCs against real MariaDB, over real
//! tonic channels: each test checks one vttablet behaviour.

mod agent_support;

use std::time::Duration;

use agent_support::{World, eventually, type_of, with_timeout};
use mysql_async::prelude::Queryable;
use tonic::Code;
use tonic::transport::Channel;
use vtorc::proto::replicationdata::StopReplicationMode;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient;
use vtorc::proto::topodata::TabletType;

#[tokio::test]
async fn init_primary_and_set_replication_source_make_rows_flow() {
    let world = World::start(3, "semi_sync").await;
    world.wait_ready().await;
    assert_eq!(
        world.position(0).await,
        "MariaDB/",
        "a fresh server has an empty position"
    );

    let position = world.bootstrap(0, true).await;
    assert!(
        position.starts_with("MariaDB/0-100-"),
        "InitPrimary writes one event: {position}"
    );
    // InitPrimary: writable, PRIMARY in topo with a term, and the shard sync claims the shard.
    assert_eq!(world.global(0, "read_only").await, 0);
    let record = world.tablet_record(0).await;
    assert_eq!(type_of(&record), TabletType::Primary);
    assert!(record.primary_term_start_time.is_some());
    eventually(
        Duration::from_secs(5),
        "shard record names the primary",
        || async {
            let shard = world.shard_record().await;
            shard.primary_alias == Some(world.alias(0))
                && shard.primary_term_start_time == record.primary_term_start_time
        },
    )
    .await;
    assert_eq!(
        world
            .query_one::<String>(0, "SELECT @@rpl_semi_sync_master_enabled")
            .await,
        "1"
    );

    world.write_rows(0, 5).await;
    let primary_position = world.position(0).await;
    for i in 1..3 {
        let mut client = world.client(i).await;
        world
            .wait_applied(i, &primary_position, "replica reaches the primary's position")
            .await;
        assert_eq!(world.row_count(i).await, 5, "rows flow to replica {i}");
        let status = client
            .replication_status(tm::ReplicationStatusRequest {})
            .await
            .expect("ReplicationStatus")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(status.source_port, i32::from(world.dbs[0].port()));
        assert_eq!(status.source_host, "127.0.0.1");
        assert_eq!(status.source_server_id, 100);
        assert_eq!(
            (status.io_state, status.sql_state),
            (3, 3),
            "both threads running"
        );
        assert_eq!(status.position, primary_position);
        assert!(status.using_gtid);
        assert_eq!(status.source_user, "repl");
        assert!(!status.replication_lag_unknown);
        assert_eq!(world.query_one::<String>(i, "SELECT @@read_only").await, "1");
    }
    // Semi-sync: both replicas ACK.
    eventually(Duration::from_secs(5), "two semi-sync clients", || async {
        let mut conn = world.sql(0).await;
        let row: Option<(String, String)> = conn
            .query_first("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
            .await
            .expect("status");
        row.is_some_and(|(_, v)| v == "2")
    })
    .await;

    // The journal row is replicated.
    let mut primary = world.client(0).await;
    primary
        .populate_reparent_journal(tm::PopulateReparentJournalRequest {
            time_created_ns: 42,
            action_name: "InitShardPrimary".to_string(),
            primary_alias: Some(world.alias(0)),
            replication_position: position.clone(),
        })
        .await
        .expect("PopulateReparentJournal");
    let mut replica = world.client(1).await;
    world
        .wait_applied(1, &world.position(0).await, "journal replicates")
        .await;
    let length = replica
        .read_reparent_journal_info(tm::ReadReparentJournalInfoRequest {})
        .await
        .expect("ReadReparentJournalInfo")
        .into_inner()
        .length;
    assert_eq!(length, 1);
    let row: (String, String, String) = world
        .sql(1)
        .await
        .query_first("SELECT action_name, primary_alias, replication_position FROM _vt.reparent_journal")
        .await
        .expect("query")
        .expect("row");
    assert_eq!(
        row,
        (
            "InitShardPrimary".to_string(),
            "zone1-0000000100".to_string(),
            position
        )
    );
}

#[tokio::test]
async fn stop_replication_and_get_status_returns_before_and_after() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    world.write_rows(0, 3).await;
    let p1 = world.position(0).await;
    let mut replica = world.client(1).await;
    world.wait_applied(1, &p1, "caught up").await;

    // IO thread only: before shows both running, after shows IO stopped, SQL running.
    let status = world
        .stop_replication_and_get_status(
            1,
            StopReplicationMode::Iothreadonly,
            "StopReplicationAndGetStatus",
        )
        .await;
    let (before, after) = (status.before.expect("before"), status.after.expect("after"));
    assert_eq!((before.io_state, before.sql_state), (3, 3));
    assert_eq!((after.io_state, after.sql_state), (1, 3));
    assert_eq!(before.position, p1);
    assert_eq!(after.position, p1);
    assert_eq!(after.relay_log_position, p1, "relay log holds what was received");
    assert!(
        !before.semi_sync_replica_enabled,
        "semiSync=false turned the replica side off"
    );

    // Rows written now do not arrive.
    world.write_rows(0, 2).await;
    let p2 = world.position(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.row_count(1).await, 3);

    // Both threads: IO is not healthy any more, so nothing is stopped and after == before.
    let status = world
        .stop_replication_and_get_status(1, StopReplicationMode::Iothreadonly, "second call")
        .await;
    assert_eq!(status.before, status.after);

    // Start again: the replica catches up to p2; then a full stop.
    replica
        .start_replication(tm::StartReplicationRequest { semi_sync: false })
        .await
        .expect("StartReplication");
    world.wait_applied(1, &p2, "caught up after start").await;
    let status = world
        .stop_replication_and_get_status(1, StopReplicationMode::Ioandsqlthread, "full stop")
        .await;
    let after = status.after.expect("after");
    assert_eq!((after.io_state, after.sql_state), (1, 1));
    assert_eq!(after.position, p2);

    // On the primary (not a replica) the call fails.
    let err = world
        .client(0)
        .await
        .stop_replication_and_get_status(tm::StopReplicationAndGetStatusRequest::default())
        .await
        .expect_err("a primary has no replication status");
    assert!(err.message().starts_with("before status failed"), "{err:?}");
    assert!(err.message().contains("no replication status"), "{err:?}");
}

#[tokio::test]
async fn wait_for_position_returns_when_reached_and_times_out_otherwise() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    world.write_rows(0, 1).await;
    let reached = world.position(0).await;
    let mut replica = world.client(1).await;
    world.wait_applied(1, &reached, "reached").await;
    // On the primary its own position is contained at once.
    world
        .client(0)
        .await
        .wait_for_position(with_timeout(
            tm::WaitForPositionRequest { position: reached },
            Duration::from_secs(1),
        ))
        .await
        .expect("a primary contains its own position");

    let started = std::time::Instant::now();
    let err = replica
        .wait_for_position(with_timeout(
            tm::WaitForPositionRequest {
                position: "MariaDB/0-100-999".to_string(),
            },
            Duration::from_millis(800),
        ))
        .await
        .expect_err("an unreached position times out");
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("timed out waiting for position"),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // A position written later is waited for, not refused.
    let waiter = tokio::spawn({
        let mut replica = world.client(1).await;
        async move {
            replica
                .wait_for_position(with_timeout(
                    tm::WaitForPositionRequest {
                        position: "MariaDB/0-100-5".to_string(),
                    },
                    Duration::from_secs(10),
                ))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.write_rows(0, 3).await;
    waiter
        .await
        .expect("join")
        .expect("position reached while waiting");

    let err = replica
        .wait_for_position(tm::WaitForPositionRequest {
            position: "MySQL56/3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".to_string(),
        })
        .await
        .expect_err("a MySQL position");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn full_status_fields_match_what_mariadb_reports() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 2).await;
    let p = world.position(0).await;
    let mut replica = world.client(1).await;
    world.wait_applied(1, &p, "caught up").await;
    let mut primary = world.client(0).await;
    let ps = primary
        .full_status(tm::FullStatusRequest {})
        .await
        .expect("FullStatus primary")
        .into_inner()
        .status
        .expect("status");
    let rs = replica
        .full_status(tm::FullStatusRequest {})
        .await
        .expect("FullStatus replica")
        .into_inner()
        .status
        .expect("status");

    let (version, comment): (String, String) = world
        .sql(0)
        .await
        .query_first("SELECT @@version, @@version_comment")
        .await
        .expect("query")
        .expect("row");
    assert!(
        version.starts_with(&ps.version) && ps.version.split('.').count() == 3,
        "{} vs {version}",
        ps.version
    );
    assert_eq!(ps.version_comment, comment);
    assert_eq!((ps.server_id, rs.server_id), (100, 101));
    assert_eq!(ps.server_uuid, "");
    assert_eq!(ps.tablet_type, TabletType::Primary as i32);
    assert_eq!(rs.tablet_type, TabletType::Replica as i32);
    assert!(!ps.read_only && !ps.super_read_only);
    assert!(rs.read_only && rs.super_read_only);
    assert_eq!(
        (ps.binlog_format.as_str(), ps.binlog_row_image.as_str()),
        ("ROW", "FULL")
    );
    assert!(ps.log_bin_enabled && ps.log_replica_updates);
    assert!(ps.replication_status.is_none(), "the primary is not a replica");
    let primary_status = ps.primary_status.expect("primary status");
    assert_eq!(primary_status.position, p);
    let (file, pos): (String, u64) = world
        .sql(0)
        .await
        .query_first("SHOW MASTER STATUS")
        .await
        .expect("query")
        .map(|row: mysql_async::Row| {
            (
                row.get_opt::<String, _>("File").expect("File").expect("text"),
                row.get_opt::<u64, _>("Position")
                    .expect("Position")
                    .expect("number"),
            )
        })
        .expect("row");
    assert_eq!(primary_status.file_position, format!("FilePos/{file}:{pos}"));
    // Semi-sync, from MariaDB's built-in plugin.
    assert!(ps.semi_sync_primary_enabled && ps.semi_sync_primary_status);
    assert_eq!(ps.semi_sync_primary_clients, 1);
    assert_eq!(ps.semi_sync_primary_timeout, 1_000_000_000_000_000_000);
    assert_eq!(ps.semi_sync_wait_for_replica_count, 1);
    assert!(!ps.semi_sync_blocked);
    assert!(rs.semi_sync_replica_enabled && rs.semi_sync_replica_status && !rs.semi_sync_primary_enabled);
    // The replica's replication status and configuration.
    let status = rs.replication_status.expect("replica status");
    assert_eq!(status.position, p);
    assert_eq!(status.relay_log_position, p);
    assert_eq!(status.source_uuid, "00000000-0000-0000-0000-000000000000");
    assert!(status.file_position.starts_with("FilePos/mysql-bin."));
    assert!(status.relay_log_file_position.starts_with("FilePos/"));
    let config = rs.replication_configuration.expect("configuration");
    let net_timeout: i32 = world.query_one(1, "SELECT @@slave_net_timeout").await;
    assert_eq!(config.replica_net_timeout, net_timeout);
    assert_eq!(net_timeout, 8, "the world's slave_net_timeout");
    assert_eq!(
        config.heartbeat_interval,
        f64::from(net_timeout) / 2.0,
        "MariaDB's default heartbeat"
    );

    // A heartbeat interval in SetReplicationSource is applied.
    replica
        .set_replication_source(tm::SetReplicationSourceRequest {
            parent: Some(world.alias(0)),
            heartbeat_interval: 2.5,
            semi_sync: true,
            ..Default::default()
        })
        .await
        .expect("SetReplicationSource with heartbeat");
    let rs = replica
        .full_status(tm::FullStatusRequest {})
        .await
        .expect("FullStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(
        rs.replication_configuration
            .expect("configuration")
            .heartbeat_interval,
        2.5
    );
    // Replication restarted.
    wait_threads(&replica, "still replicating after the change", |io, sql| {
        (io, sql) == (3, 3)
    })
    .await;
}

#[tokio::test]
async fn stop_replication_minimum_and_restart_replication() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 3).await;
    let p = world.position(0).await;
    let mut replica = world.client(1).await;
    let stopped_at = replica
        .stop_replication_minimum(tm::StopReplicationMinimumRequest {
            position: p.clone(),
            wait_timeout: 5_000_000_000,
        })
        .await
        .expect("StopReplicationMinimum")
        .into_inner()
        .position;
    assert_eq!(stopped_at, p, "stopped at (at least) the requested position");
    let status = replica
        .replication_status(tm::ReplicationStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!((status.io_state, status.sql_state), (1, 1));
    // A position that never comes: fails after wait_timeout.
    let err = replica
        .stop_replication_minimum(tm::StopReplicationMinimumRequest {
            position: "MariaDB/0-100-500".to_string(),
            wait_timeout: 300_000_000,
        })
        .await
        .expect_err("unreachable position");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    replica
        .restart_replication(tm::RestartReplicationRequest { semi_sync: true })
        .await
        .expect("RestartReplication");
    wait_threads(
        &replica,
        "the IO thread connecting or running, the SQL thread running",
        |io, sql| sql == 3 && (io == 2 || io == 3),
    )
    .await;
    replica
        .stop_replication(tm::StopReplicationRequest {})
        .await
        .expect("StopReplication");
    replica
        .start_replication(tm::StartReplicationRequest { semi_sync: true })
        .await
        .expect("StartReplication");
    world.write_rows(0, 1).await;
    world
        .wait_applied(1, &world.position(0).await, "replicating again")
        .await;
}

/// Waits until the replica's (IO, SQL) thread states satisfy `ok`. MariaDB
/// shows a starting IO thread as "Preparing" (UNKNOWN, as vttablet parses
/// it) for a moment after `START SLAVE`, so one read right after a restart
/// is not enough.
async fn wait_threads(replica: &TabletManagerClient<Channel>, what: &str, ok: impl Fn(i32, i32) -> bool) {
    eventually(Duration::from_secs(5), what, || {
        let mut replica = replica.clone();
        let ok = &ok;
        async move {
            let status = replica
                .replication_status(tm::ReplicationStatusRequest {})
                .await
                .expect("ReplicationStatus")
                .into_inner()
                .status
                .expect("a replica");
            ok(status.io_state, status.sql_state)
        }
    })
    .await;
}
