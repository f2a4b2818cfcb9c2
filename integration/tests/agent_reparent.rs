//! Reparent RPCs of the tablet agent against real MariaDB: demotion,
//! promotion, type changes, resets and the errant-GTID guard.

mod agent_support;

use std::time::Duration;

use agent_support::{World, eventually, type_of, with_timeout};
use mysql_async::prelude::Queryable;
use tonic::Code;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::TabletType;

#[tokio::test]
async fn demote_primary_makes_it_read_only_and_returns_its_final_position() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 2).await;
    let mut primary = world.client(0).await;
    let status = primary
        .demote_primary(tm::DemotePrimaryRequest { force: false })
        .await
        .expect("DemotePrimary")
        .into_inner()
        .primary_status
        .expect("primary status");
    let executed: String = world.query_one(0, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(status.position, format!("MariaDB/{executed}"), "final position");
    assert!(
        status.file_position.starts_with("FilePos/mysql-bin."),
        "{}",
        status.file_position
    );
    assert_eq!(world.global(0, "read_only").await, 1, "read-only after demotion");
    assert_eq!(
        world.global(0, "rpl_semi_sync_master_enabled").await,
        0,
        "primary semi-sync off after demotion"
    );
    // The type stays PRIMARY, but the query service stops serving.
    assert_eq!(type_of(&world.tablet_record(0).await), TabletType::Primary);
    eventually(Duration::from_secs(2), "demoted primary not serving", || async {
        !world.agent(0).health().serving
    })
    .await;
    // Demoting again is harmless and returns the same position.
    let again = primary
        .demote_primary(tm::DemotePrimaryRequest { force: true })
        .await
        .expect("second DemotePrimary")
        .into_inner()
        .primary_status
        .expect("status");
    assert_eq!(again.position, status.position);

    // UndoDemotePrimary: writable and serving again, semi-sync primary side back.
    primary
        .undo_demote_primary(tm::UndoDemotePrimaryRequest { semi_sync: true })
        .await
        .expect("UndoDemotePrimary");
    assert_eq!(world.global(0, "read_only").await, 0);
    assert_eq!(world.global(0, "rpl_semi_sync_master_enabled").await, 1);
    eventually(Duration::from_secs(2), "primary serving again", || async {
        world.agent(0).health().serving
    })
    .await;
}

#[tokio::test]
async fn promote_replica_makes_the_tablet_writable_and_the_old_primary_follows() {
    let world = World::start(3, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 4).await;
    let old_term = world
        .tablet_record(0)
        .await
        .primary_term_start_time
        .expect("term");

    // A manual PRS: demote, wait, promote, repoint, journal.
    let demoted = world
        .client(0)
        .await
        .demote_primary(tm::DemotePrimaryRequest::default())
        .await
        .expect("demote")
        .into_inner()
        .primary_status
        .expect("status");
    let mut candidate = world.client(1).await;
    world
        .wait_applied(1, &demoted.position, "candidate catches up")
        .await;
    let position = candidate
        .promote_replica(tm::PromoteReplicaRequest { semi_sync: true })
        .await
        .expect("PromoteReplica")
        .into_inner()
        .position;
    assert_eq!(position, demoted.position, "nothing was written in between");
    let executed: String = world.query_one(1, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(position, format!("MariaDB/{executed}"));
    assert_eq!(
        world.global(1, "read_only").await,
        0,
        "promoted tablet is writable"
    );
    assert_eq!(world.global(1, "rpl_semi_sync_master_enabled").await, 1);
    let record = world.tablet_record(1).await;
    assert_eq!(type_of(&record), TabletType::Primary);
    let new_term = record.primary_term_start_time.expect("new term");
    assert!((new_term.seconds, new_term.nanoseconds) > (old_term.seconds, old_term.nanoseconds));
    let err = candidate
        .replication_status(tm::ReplicationStatusRequest {})
        .await
        .expect_err("no replication after promotion");
    assert!(err.message().contains("no replication status"), "{err:?}");

    // As PRS does: repoint the others and write the journal concurrently.
    let mut repoints = Vec::new();
    for i in [0, 2] {
        let mut client = world.client(i).await;
        let parent = world.alias(1);
        repoints.push(tokio::spawn(async move {
            client
                .set_replication_source(with_timeout(
                    tm::SetReplicationSourceRequest {
                        parent: Some(parent),
                        time_created_ns: 777,
                        force_start_replication: false,
                        semi_sync: true,
                        ..Default::default()
                    },
                    Duration::from_secs(15),
                ))
                .await
        }));
    }
    candidate
        .populate_reparent_journal(tm::PopulateReparentJournalRequest {
            time_created_ns: 777,
            action_name: "PlannedReparentShard".to_string(),
            primary_alias: Some(world.alias(1)),
            replication_position: position.clone(),
        })
        .await
        .expect("PopulateReparentJournal on the new primary");
    for repoint in repoints {
        repoint
            .await
            .expect("join")
            .expect("SetReplicationSource to the new primary");
    }
    // The old primary became REPLICA in the topo; the shard sync moved the shard to the new primary.
    assert_eq!(type_of(&world.tablet_record(0).await), TabletType::Replica);
    eventually(
        Duration::from_secs(5),
        "shard record names the new primary",
        || async { world.shard_record().await.primary_alias == Some(world.alias(1)) },
    )
    .await;

    // Rows written on the new primary reach both.
    world.write_rows(1, 3).await;
    let p = world.position(1).await;
    assert!(p.contains("0-101-"), "new primary writes with its server id: {p}");
    for i in [0, 2] {
        world.wait_applied(i, &p, "rows flow from the new primary").await;
        assert_eq!(world.row_count(i).await, 7);
    }
}

#[tokio::test]
async fn set_replication_source_waits_for_the_reparent_journal_row() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    let mut replica = world.client(1).await;
    let waiter = tokio::spawn(async move {
        replica
            .set_replication_source(with_timeout(
                tm::SetReplicationSourceRequest {
                    parent: Some(agent_support::World::alias_of(0)),
                    time_created_ns: 1234,
                    force_start_replication: true,
                    ..Default::default()
                },
                Duration::from_secs(10),
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "returns only once the journal row arrives");
    world
        .client(0)
        .await
        .populate_reparent_journal(tm::PopulateReparentJournalRequest {
            time_created_ns: 1234,
            action_name: "PlannedReparentShard".to_string(),
            primary_alias: Some(world.alias(0)),
            replication_position: world.position(0).await,
        })
        .await
        .expect("journal");
    waiter
        .await
        .expect("join")
        .expect("SetReplicationSource returns after the journal row");

    // Without the row, it fails at the caller's deadline.
    let err = world
        .client(1)
        .await
        .set_replication_source(with_timeout(
            tm::SetReplicationSourceRequest {
                parent: Some(world.alias(0)),
                time_created_ns: 999,
                force_start_replication: true,
                ..Default::default()
            },
            Duration::from_millis(700),
        ))
        .await
        .expect_err("no journal row");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
}

#[tokio::test]
async fn errant_gtids_on_a_replica_are_refused_by_set_replication_source() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    world.write_rows(0, 1).await;
    world.wait_applied(1, &world.position(0).await, "caught up").await;
    // A local write on the replica: an errant GTID 0-101-N.
    let mut conn = world.sql(1).await;
    conn.query_drop("STOP SLAVE").await.expect("stop");
    conn.query_drop("INSERT INTO demo.t (v) VALUES ('errant')")
        .await
        .expect("errant write");
    let err = world
        .client(1)
        .await
        .set_replication_source(tm::SetReplicationSourceRequest {
            parent: Some(world.alias(0)),
            force_start_replication: true,
            ..Default::default()
        })
        .await
        .expect_err("errant GTID");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().starts_with("Errant GTID detected - 0-101-"),
        "{err:?}"
    );
}

#[tokio::test]
async fn change_type_and_resets_do_what_vttablet_does() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    let mut replica = world.client(1).await;

    // ChangeType writes the record; RDONLY does not ACK, so semi-sync off restarts replication.
    replica
        .change_type(tm::ChangeTypeRequest {
            tablet_type: TabletType::Rdonly as i32,
            semi_sync: false,
        })
        .await
        .expect("ChangeType RDONLY");
    assert_eq!(type_of(&world.tablet_record(1).await), TabletType::Rdonly);
    assert_eq!(world.global(1, "rpl_semi_sync_slave_enabled").await, 0);
    replica
        .change_type(tm::ChangeTypeRequest {
            tablet_type: TabletType::Drained as i32,
            semi_sync: false,
        })
        .await
        .expect("ChangeType DRAINED");
    let err = replica
        .change_type(tm::ChangeTypeRequest {
            tablet_type: TabletType::Drained as i32,
            semi_sync: false,
        })
        .await
        .expect_err("draining twice");
    assert_eq!(err.message(), "Tablet: zone1-0000000101, is already drained");
    replica
        .change_type(tm::ChangeTypeRequest {
            tablet_type: TabletType::Replica as i32,
            semi_sync: true,
        })
        .await
        .expect("ChangeType REPLICA");
    assert_eq!(
        world.agent(1).health().target.expect("target").tablet_type,
        TabletType::Replica as i32
    );

    // SetReadWrite / SetReadOnly toggle read_only only.
    replica
        .set_read_write(tm::SetReadWriteRequest {})
        .await
        .expect("SetReadWrite");
    assert_eq!(world.global(1, "read_only").await, 0);
    replica
        .set_read_only(tm::SetReadOnlyRequest {})
        .await
        .expect("SetReadOnly");
    assert_eq!(world.global(1, "read_only").await, 1);

    // ResetReplicationParameters forgets the source but keeps GTIDs.
    let before: String = world.query_one(1, "SELECT @@gtid_binlog_pos").await;
    assert!(!before.is_empty());
    replica
        .reset_replication_parameters(tm::ResetReplicationParametersRequest {})
        .await
        .expect("ResetReplicationParameters");
    let err = replica
        .replication_status(tm::ReplicationStatusRequest {})
        .await
        .expect_err("not a replica any more");
    assert!(err.message().contains("no replication status"), "{err:?}");
    assert_eq!(
        world.query_one::<String>(1, "SELECT @@gtid_binlog_pos").await,
        before
    );

    // ResetReplication wipes the GTID history too.
    replica
        .reset_replication(tm::ResetReplicationRequest {})
        .await
        .expect("ResetReplication");
    assert_eq!(world.query_one::<String>(1, "SELECT @@gtid_binlog_pos").await, "");
    assert_eq!(world.query_one::<String>(1, "SELECT @@gtid_slave_pos").await, "");
    assert_eq!(world.position(1).await, "MariaDB/");

    // ReplicaWasPromoted / ReplicaWasRestarted change only the type.
    replica
        .replica_was_promoted(tm::ReplicaWasPromotedRequest {})
        .await
        .expect("ReplicaWasPromoted");
    assert_eq!(type_of(&world.tablet_record(1).await), TabletType::Primary);
    assert_eq!(world.global(1, "read_only").await, 1, "MySQL untouched");
    replica
        .replica_was_restarted(tm::ReplicaWasRestartedRequest { parent: None })
        .await
        .expect("ReplicaWasRestarted");
    let record = world.tablet_record(1).await;
    assert_eq!(type_of(&record), TabletType::Replica);
    assert!(
        record.primary_term_start_time.is_none(),
        "term cleared on a non-primary type"
    );
}

#[tokio::test]
async fn blocked_semi_sync_is_reported_and_only_a_forced_demotion_unblocks_it() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 1).await;
    // No replica ACKs any more: the next commit waits (MariaDB timeout 10 s).
    world
        .client(1)
        .await
        .stop_replication(tm::StopReplicationRequest {})
        .await
        .expect("StopReplication");
    let mut writer = world.sql(0).await;
    let stuck =
        tokio::spawn(async move { writer.query_drop("INSERT INTO demo.t (v) VALUES ('stuck')").await });
    let mut primary = world.client(0).await;
    eventually(
        Duration::from_secs(5),
        "FullStatus reports semi_sync_blocked",
        || {
            let mut primary = primary.clone();
            async move {
                let status = primary
                    .full_status(tm::FullStatusRequest {})
                    .await
                    .expect("FullStatus");
                status.into_inner().status.expect("status").semi_sync_blocked
            }
        },
    )
    .await;
    assert!(!stuck.is_finished(), "the commit waits for an ACK");

    // A non-forced demotion waits for the block to clear, up to its deadline.
    let err = primary
        .demote_primary(with_timeout(
            tm::DemotePrimaryRequest { force: false },
            Duration::from_millis(800),
        ))
        .await
        .expect_err("blocked semi-sync");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(world.global(0, "read_only").await, 0, "reverted: still writable");

    // A forced demotion turns the primary side off, so the stuck commit completes.
    let started = std::time::Instant::now();
    let status = primary
        .demote_primary(with_timeout(
            tm::DemotePrimaryRequest { force: true },
            Duration::from_secs(5),
        ))
        .await
        .expect("forced DemotePrimary")
        .into_inner()
        .primary_status
        .expect("status");
    stuck.await.expect("join").expect("the stuck commit completes");
    assert!(started.elapsed() < Duration::from_secs(5));
    let executed: String = world.query_one(0, "SELECT @@gtid_binlog_pos").await;
    assert_eq!(
        status.position,
        format!("MariaDB/{executed}"),
        "final position includes the stuck write"
    );
    assert_eq!(world.global(0, "read_only").await, 1);
    assert_eq!(world.global(0, "rpl_semi_sync_master_enabled").await, 0);
}

/// Whether the application account (`app`) is locked on server `i`.
async fn app_locked(world: &World, i: usize) -> bool {
    let locked: Option<String> = world
        .query_one(
            i,
            "SELECT JSON_VALUE(priv, '$.account_locked') FROM mysql.global_priv WHERE user = 'app'",
        )
        .await;
    // MariaDB's JSON_VALUE renders the JSON `true` as "1".
    matches!(locked.as_deref(), Some("1" | "true"))
}

#[tokio::test]
async fn the_application_account_follows_the_serving_state() {
    let world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    let mut root = world.sql(0).await;
    for sql in [
        "SET SESSION sql_log_bin = 0",
        "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'apppw'",
        "GRANT SELECT, INSERT ON *.* TO 'app'@'127.0.0.1'",
    ] {
        root.query_drop(sql).await.expect(sql);
    }

    // Locked behind the agent's back on a serving primary (a transition
    // that failed half-way): the health checker unlocks it.
    root.query_drop("ALTER USER 'app'@'127.0.0.1' ACCOUNT LOCK")
        .await
        .expect("lock");
    let locked: Option<String> = root
        .query_first("SELECT JSON_VALUE(priv, '$.account_locked') FROM mysql.global_priv WHERE user = 'app'")
        .await
        .expect("read the lock");
    // (The agent checks once a second; it may already have undone it.)
    assert!(locked.is_some(), "the account exists");
    eventually(Duration::from_secs(5), "the account unlocked again", || async {
        !app_locked(&world, 0).await
    })
    .await;

    // A forced demotion shuts the application out: its session running a
    // statement is ended, no new session is accepted, and the account stays
    // locked while the primary is demoted.
    let port = world.dbs[0].port();
    let app_opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("apppw"))
        .prefer_socket(false);
    let mut app = mysql_async::Conn::new(app_opts.clone())
        .await
        .expect("the application connects while serving");
    let busy = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = app.query_first("SELECT SLEEP(30)").await;
        r
    });
    eventually(Duration::from_secs(5), "the application statement running", || async {
        world
            .query_one::<i64>(
                0,
                "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app' AND command = 'Query'",
            )
            .await
            == 1
    })
    .await;
    let mut primary = world.client(0).await;
    primary
        .demote_primary(tm::DemotePrimaryRequest { force: true })
        .await
        .expect("DemotePrimary");
    let ended = tokio::time::timeout(Duration::from_secs(5), busy)
        .await
        .expect("the statement ends at once")
        .expect("the statement task");
    assert!(
        !matches!(ended, Ok(Some(0))),
        "the running statement was ended without its result: {ended:?}"
    );
    assert!(
        mysql_async::Conn::new(app_opts.clone()).await.is_err(),
        "no new application session while not serving"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app_locked(&world, 0).await, "still locked while demoted");

    // Serving again opens it.
    primary
        .undo_demote_primary(tm::UndoDemotePrimaryRequest { semi_sync: true })
        .await
        .expect("UndoDemotePrimary");
    assert!(!app_locked(&world, 0).await);
    mysql_async::Conn::new(app_opts)
        .await
        .expect("the application connects again")
        .disconnect()
        .await
        .ok();
}
