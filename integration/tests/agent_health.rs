//! StreamHealth, error handling, the action lock and shutdown of the tablet
//! agent against real MariaDB and etcd.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::{World, type_of, with_timeout};
use tonic::Code;
use vtorc::proto::query::{StreamHealthRequest, StreamHealthResponse};
use vtorc::proto::queryservice::query_client::QueryClient;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::{TabletAlias, TabletType};

/// Opens a StreamHealth stream on tablet `i`.
async fn health_stream(world: &World, i: usize) -> tonic::Streaming<StreamHealthResponse> {
    QueryClient::new(world.channel(i).await)
        .stream_health(StreamHealthRequest {})
        .await
        .expect("StreamHealth")
        .into_inner()
}

/// Runs `call` (connecting included), an RPC that needs MySQL while MySQL
/// is gone: it must fail UNAVAILABLE within `bound`. Returns its error.
async fn unavailable_within<T: std::fmt::Debug>(
    bound: Duration,
    call: impl AsyncFnOnce() -> Result<tonic::Response<T>, tonic::Status>,
) -> tonic::Status {
    let started = Instant::now();
    let err = call().await.expect_err("MySQL is gone");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    err
}

/// Reads the stream until `want` holds; returns the message and how long it took.
async fn until(
    stream: &mut tonic::Streaming<StreamHealthResponse>,
    timeout: Duration,
    want: impl Fn(&StreamHealthResponse) -> bool,
) -> (StreamHealthResponse, Duration) {
    let started = Instant::now();
    loop {
        let left = timeout
            .checked_sub(started.elapsed())
            .expect("condition not reached in time");
        let message = tokio::time::timeout(left, stream.message())
            .await
            .expect("condition not reached in time")
            .expect("stream ok")
            .expect("stream open");
        if want(&message) {
            return (message, started.elapsed());
        }
    }
}

fn health_error(m: &StreamHealthResponse) -> &str {
    m.realtime_stats.as_ref().map_or("", |s| s.health_error.as_str())
}

#[tokio::test]
async fn stream_health_reports_a_killed_mariadb_within_one_second() {
    let mut world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    let mut replica = health_stream(&world, 1).await;
    let mut primary = health_stream(&world, 0).await;
    let (healthy, _) = until(&mut replica, Duration::from_secs(5), |m| m.serving).await;
    let target = healthy.target.clone().expect("target");
    assert_eq!(
        (
            target.keyspace.as_str(),
            target.shard.as_str(),
            target.cell.as_str()
        ),
        ("commerce", "0", "zone1")
    );
    assert_eq!(target.tablet_type, TabletType::Replica as i32);
    assert_eq!(healthy.tablet_alias, Some(world.alias(1)));
    assert_eq!(healthy.primary_term_start_timestamp, 0);
    assert_eq!(health_error(&healthy), "");
    let (p, _) = until(&mut primary, Duration::from_secs(5), |m| m.serving).await;
    let term = world
        .tablet_record(0)
        .await
        .primary_term_start_time
        .expect("term");
    assert_eq!(p.primary_term_start_timestamp, term.seconds);
    assert_eq!(p.target.expect("target").tablet_type, TabletType::Primary as i32);

    // Messages keep coming without changes (interval 500 ms in the test config).
    let started = Instant::now();
    replica.message().await.expect("ok").expect("open");
    replica.message().await.expect("ok").expect("open");
    assert!(started.elapsed() < Duration::from_secs(2));

    world.dbs[1].kill().expect("kill -9 the replica's MariaDB");
    let (down, took) = until(&mut replica, Duration::from_secs(3), |m| !m.serving).await;
    assert!(took < Duration::from_secs(1), "noticed after {took:?}");
    assert!(
        health_error(&down).contains("mysql"),
        "health error names the failure: {down:?}"
    );

    world.dbs[0].kill().expect("kill -9 the primary's MariaDB");
    let (down, took) = until(&mut primary, Duration::from_secs(3), |m| !m.serving).await;
    assert!(took < Duration::from_secs(1), "primary noticed after {took:?}");
    assert_eq!(
        health_error(&down),
        "",
        "a primary's health_error stays empty (vttablet)"
    );

    // RPCs that need MySQL fail quickly with a clear error.
    let err = unavailable_within(Duration::from_secs(2), async || {
        let mut client = world.client(1).await;
        client.full_status(tm::FullStatusRequest {}).await
    })
    .await;
    assert!(err.message().contains("cannot connect to mysql"), "{err:?}");

    // Back up: serving again.
    world.dbs[1].restart().await.expect("restart MariaDB");
    until(&mut replica, Duration::from_secs(5), |m| m.serving).await;
    world.stop_agent(0).await;
}

#[tokio::test]
async fn stream_health_reports_a_frozen_mariadb_and_rpcs_fail_quickly() {
    let world = World::start(1, "none").await;
    world.bootstrap(0, false).await;
    let mut stream = health_stream(&world, 0).await;
    until(&mut stream, Duration::from_secs(5), |m| m.serving).await;
    world.dbs[0].pause().expect("SIGSTOP");
    let (_, took) = until(&mut stream, Duration::from_secs(3), |m| !m.serving).await;
    assert!(
        took < Duration::from_secs(1),
        "a frozen server was noticed after {took:?}"
    );
    unavailable_within(Duration::from_secs(3), async || {
        let mut client = world.client(0).await;
        client.primary_position(tm::PrimaryPositionRequest {}).await
    })
    .await;
    world.dbs[0].resume().expect("SIGCONT");
    until(&mut stream, Duration::from_secs(5), |m| m.serving).await;
}

#[tokio::test]
async fn bad_parents_are_refused_with_clear_errors() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    let mut replica = world.client(1).await;
    let cases = [
        (None, Code::FailedPrecondition, "Shard primaryAlias is nil"),
        (
            Some(TabletAlias::new("zone1", 999)),
            Code::NotFound,
            "node doesn't exist",
        ),
        (
            Some(TabletAlias::new("nocell", 1)),
            Code::NotFound,
            "node doesn't exist",
        ),
        (
            Some(world.alias(1)),
            Code::FailedPrecondition,
            "cannot replicate from itself",
        ),
    ];
    for (parent, code, text) in cases {
        let started = Instant::now();
        let err = replica
            .set_replication_source(tm::SetReplicationSourceRequest {
                parent: parent.clone(),
                ..Default::default()
            })
            .await
            .expect_err("bad parent");
        assert_eq!(err.code(), code, "{parent:?}: {err:?}");
        assert!(err.message().contains(text), "{parent:?}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Ping needs nothing; GetGlobalStatusVars answers by name.
    let pong = replica
        .ping(tm::PingRequest {
            payload: "hello".to_string(),
        })
        .await
        .expect("Ping")
        .into_inner();
    assert_eq!(pong.payload, "hello");
    let vars = replica
        .get_global_status_vars(tm::GetGlobalStatusVarsRequest {
            variables: vec!["Uptime".to_string(), "Rpl_semi_sync_slave_status".to_string()],
        })
        .await
        .expect("GetGlobalStatusVars")
        .into_inner()
        .status_values;
    assert_eq!(vars.len(), 2, "{vars:?}");
    assert!(vars["Uptime"].parse::<u64>().is_ok());
}

#[tokio::test]
async fn the_action_lock_makes_a_second_mutation_wait_for_its_deadline() {
    let world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    // Holds the lock while it waits for a journal row that never comes.
    let mut holder = world.client(1).await;
    let parent = world.alias(0);
    let held = tokio::spawn(async move {
        holder
            .set_replication_source(with_timeout(
                tm::SetReplicationSourceRequest {
                    parent: Some(parent),
                    time_created_ns: 5,
                    force_start_replication: true,
                    ..Default::default()
                },
                Duration::from_secs(3),
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = world.client(1).await;
    let started = Instant::now();
    let err = client
        .stop_replication(with_timeout(
            tm::StopReplicationRequest {},
            Duration::from_millis(500),
        ))
        .await
        .expect_err("lock is held");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("context deadline exceeded"), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Read-only RPCs do not take the lock.
    client
        .full_status(with_timeout(tm::FullStatusRequest {}, Duration::from_secs(2)))
        .await
        .expect("FullStatus is not locked");
    let _ = held.await;
    // Once the holder gave up, the lock is free again.
    client
        .stop_replication(with_timeout(
            tm::StopReplicationRequest {},
            Duration::from_secs(2),
        ))
        .await
        .expect("lock free");
}

#[tokio::test]
async fn graceful_shutdown_stamps_the_tablet_record_and_restart_rejoins() {
    let mut world = World::start(2, "none").await;
    world.bootstrap(0, false).await;
    let before = world.tablet_record(1).await;
    assert!(before.tablet_start_time.is_some());
    assert_eq!(
        before.port_map.get("grpc").copied(),
        Some(i32::from(world.agent(1).grpc_addr().port()))
    );
    assert_eq!(before.mysql_port, i32::from(world.dbs[1].port()));
    let replication = world
        .topo
        .get_shard_replication("zone1", "commerce", "0")
        .await
        .expect("ShardReplication");
    assert_eq!(replication.value.nodes.len(), 2);

    world.stop_agent(1).await;
    let after = world.tablet_record(1).await;
    assert!(after.tablet_shutdown_time.is_some());
    assert!(after.hostname.is_empty() && after.port_map.is_empty() && after.mysql_hostname.is_empty());
    assert_eq!(type_of(&after), TabletType::Replica, "type kept");

    // The primary's record survives a restart as PRIMARY (shard names it).
    world.stop_agent(0).await;
    let agent = integration::agent::Agent::start(world.config(0))
        .await
        .expect("restart agent 0");
    let record = world.tablet_record(0).await;
    assert_eq!(
        type_of(&record),
        TabletType::Primary,
        "primaryship comes from the shard record"
    );
    assert!(record.tablet_shutdown_time.is_none());
    world.agents[0] = Some(agent);
}
