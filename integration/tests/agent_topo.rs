//! The tablet agent's topology behaviour: shard sync ending a stale
//! primary's term, replication set-up at start-up, and the `tablet-agent`
//! binary registering and deregistering itself.

mod agent_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::{World, eventually, type_of};
use integration::process::ChildGuard;
use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use tonic::transport::Channel;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient;
use vtorc::proto::topodata::{TabletAlias, TabletType};

#[tokio::test]
async fn a_stale_primary_ends_its_term_and_follows_the_newer_primary() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    world.write_rows(0, 2).await;
    let p = world.position(0).await;
    let mut newer = world.client(1).await;
    world.wait_applied(1, &p, "caught up").await;
    // An ERS that could not reach tablet 0: only tablet 1 is told.
    newer
        .promote_replica(tm::PromoteReplicaRequest { semi_sync: false })
        .await
        .expect("PromoteReplica");
    eventually(Duration::from_secs(5), "shard record names tablet 1", || async {
        world.shard_record().await.primary_alias == Some(world.alias(1))
    })
    .await;
    // Tablet 0's shard sync sees the newer term: demote (read-only), replicate from tablet 1.
    eventually(Duration::from_secs(5), "old primary becomes REPLICA", || async {
        type_of(&world.tablet_record(0).await) == TabletType::Replica
    })
    .await;
    assert_eq!(world.global(0, "read_only").await, 1);
    world.write_rows(1, 3).await;
    world
        .wait_applied(
            0,
            &world.position(1).await,
            "old primary replicates from the new one",
        )
        .await;
    assert_eq!(world.row_count(0).await, 5);
}

#[tokio::test]
async fn a_restarted_replica_agent_points_mariadb_at_the_shard_primary() {
    let mut world = World::start(2, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.stop_agent(1).await;
    let mut conn = world.sql(1).await;
    conn.query_drop("STOP SLAVE").await.expect("stop");
    conn.query_drop("RESET SLAVE ALL")
        .await
        .expect("forget the source");
    conn.query_drop("SET GLOBAL rpl_semi_sync_slave_enabled = 0")
        .await
        .expect("semi-sync off");
    drop(conn);

    let agent = integration::agent::Agent::start(world.config(1))
        .await
        .expect("restart agent 1");
    world.agents[1] = Some(agent);
    let replica = world.client(1).await;
    eventually(Duration::from_secs(10), "replication set up at start-up", || {
        let mut replica = replica.clone();
        async move {
            match replica.replication_status(tm::ReplicationStatusRequest {}).await {
                Ok(r) => r
                    .into_inner()
                    .status
                    .is_some_and(|s| s.sql_state == 3 && s.io_state == 3),
                Err(_) => false,
            }
        }
    })
    .await;
    // Semi-sync ACKs flow again, so these commits do not wait for the timeout.
    let started = std::time::Instant::now();
    world.write_rows(0, 2).await;
    assert!(started.elapsed() < Duration::from_secs(5), "commits were acked");
    world
        .wait_applied(1, &world.position(0).await, "catches up")
        .await;
    assert_eq!(world.row_count(1).await, 2);
    assert_eq!(
        world.global(1, "rpl_semi_sync_slave_enabled").await,
        1,
        "semi_sync policy: a REPLICA acks"
    );
}

#[tokio::test]
async fn the_binary_registers_serves_and_stamps_its_shutdown() {
    let world = World::start(1, "none").await;
    // Free the uid: the binary runs tablet 200 against the same MariaDB.
    let port = integration::process::free_port().expect("free port");
    let log = world.dir.path().join("tablet-agent.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("dup");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tablet-agent"));
    command
        .arg(format!("--topo-global-server-address={}", world.etcd.address()))
        .arg("--topo-global-root=/vitess/global")
        .arg("--cell=zone1")
        .arg("--uid=200")
        .arg("--keyspace=commerce")
        .arg("--shard=0")
        .arg("--tablet-type=RDONLY")
        .arg(format!("--grpc-port={port}"))
        .arg(format!("--mysql-port={}", world.dbs[0].port()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = ChildGuard::spawn("tablet-agent", &mut command, Some(log.clone())).expect("spawn");
    let alias = TabletAlias::new("zone1", 200);
    eventually(Duration::from_secs(10), "the binary's tablet record", || async {
        world.topo.get_tablet(&alias).await.is_ok()
    })
    .await;
    let record = world.topo.get_tablet(&alias).await.expect("record").value;
    assert_eq!(type_of(&record), TabletType::Rdonly);
    assert_eq!(record.port_map.get("grpc").copied(), Some(i32::from(port)));
    assert_eq!(record.mysql_port, i32::from(world.dbs[0].port()));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to the binary: {e}; log:\n{}", child.log_tail(30)));
    let pong = TabletManagerClient::new(channel)
        .ping(tm::PingRequest {
            payload: "p".to_string(),
        })
        .await
        .expect("Ping");
    assert_eq!(pong.into_inner().payload, "p");

    child.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "exit {status}; log:\n{}", child.log_tail(30));
    let record = world.topo.get_tablet(&alias).await.expect("record").value;
    assert!(
        record.tablet_shutdown_time.is_some(),
        "graceful shutdown stamps the record"
    );
}

#[tokio::test]
async fn an_agent_whose_tablet_record_was_deleted_shuts_itself_down() {
    let mut world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    world
        .topo
        .delete_tablet(&world.alias(1))
        .await
        .expect("delete the tablet record");
    let err = world
        .client(1)
        .await
        .change_type(tm::ChangeTypeRequest {
            tablet_type: TabletType::Rdonly as i32,
            semi_sync: false,
        })
        .await
        .expect_err("publishing a deleted record");
    assert!(err.message().contains("was deleted from the topo"), "{err:?}");
    assert!(world.agent(1).is_stopped());
    assert!(
        world.topo.get_tablet(&world.alias(1)).await.is_err(),
        "the record stays deleted"
    );
    let addr = world.agent(1).grpc_url();
    eventually(Duration::from_secs(5), "the gRPC server stops", || {
        let addr = addr.clone();
        async move { Channel::from_shared(addr).expect("url").connect().await.is_err() }
    })
    .await;
    world.stop_agent(1).await;
}
