//! Discovery against scripted tablets and the in-memory topology, in paused
//! time: readiness, the slow-poll rule, errant GTIDs, the primary health
//! window, disk stalls, refreshes and notifications. (Real gRPC and etcd
//! are exercised by `integration/tests/discovery_*.rs`.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;

use super::*;
use crate::{
    model::Reachability,
    proto::{
        replicationdata::{FullStatus, PrimaryStatus, Status},
        tabletmanagerdata::FullStatusResponse,
        topodata::{Keyspace, Shard, Tablet, TabletType},
    },
    tablet::{HealthSource, HealthStream, TabletError, TabletManager, TmRequest, TmResponse},
    testkit::{MYSQL_PORT, mysql_host, server_uuid, tablet_record},
    topo::Topo,
};

/// How a scripted tablet answers `FullStatus`.
#[derive(Clone)]
enum Script {
    /// After `delay`, this status.
    Answer(Duration, Box<FullStatus>),
    /// Never answers (the caller's deadline ends the call).
    Hang,
    /// Refuses at once.
    Refuse,
}

/// Scripted TabletManager: per-alias behaviour; counts FullStatus calls.
#[derive(Default)]
struct Fleet {
    /// Behaviour by uid.
    scripts: Mutex<HashMap<u32, Script>>,
    /// FullStatus calls by uid.
    calls: Mutex<HashMap<u32, u32>>,
}

impl Fleet {
    fn set(&self, uid: u32, script: Script) {
        self.scripts.lock().expect("test mutex").insert(uid, script);
    }

    fn calls(&self, uid: u32) -> u32 {
        self.calls
            .lock()
            .expect("test mutex")
            .get(&uid)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl TabletManager for Fleet {
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError> {
        let alias = tablet.alias.clone().unwrap_or_default();
        assert!(
            matches!(request, TmRequest::FullStatus(_)),
            "discovery only polls"
        );
        *self
            .calls
            .lock()
            .expect("test mutex")
            .entry(alias.uid)
            .or_default() += 1;
        let script = self.scripts.lock().expect("test mutex").get(&alias.uid).cloned();
        let timeout = timeout.unwrap_or(Duration::from_secs(15));
        let timed_out = TabletError::Timeout {
            alias: alias.clone(),
            method: "FullStatus",
            after: timeout,
        };
        match script {
            Some(Script::Answer(delay, status)) => {
                if delay >= timeout {
                    tokio::time::sleep(timeout).await;
                    return Err(timed_out);
                }
                tokio::time::sleep(delay).await;
                Ok(TmResponse::FullStatus(FullStatusResponse {
                    status: Some(*status),
                }))
            }
            Some(Script::Hang) => {
                tokio::time::sleep(timeout).await;
                Err(timed_out)
            }
            Some(Script::Refuse) | None => Err(TabletError::Unreachable {
                alias,
                method: "FullStatus",
                code: tonic::Code::Unavailable,
                message: "connection refused".into(),
            }),
        }
    }
}

/// Health streams that open and stay silent.
struct Silent;

#[async_trait]
impl HealthSource for Silent {
    async fn stream_health(&self, _tablet: &Tablet) -> Result<HealthStream, TabletError> {
        Ok(futures::stream::pending().boxed())
    }
}

fn position(uids: &[(u32, u64)]) -> String {
    let parts: Vec<String> = uids
        .iter()
        .map(|(uid, n)| format!("{}:1-{n}", server_uuid(*uid)))
        .collect();
    format!("MySQL56/{}", parts.join(","))
}

fn primary_status(uid: u32, executed: &str) -> FullStatus {
    FullStatus {
        server_id: uid,
        server_uuid: server_uuid(uid),
        primary_status: Some(PrimaryStatus {
            position: executed.into(),
            file_position: "FilePos/binlog.000001:4".into(),
            server_uuid: server_uuid(uid),
        }),
        tablet_type: TabletType::Primary as i32,
        gtid_mode: "ON".into(),
        log_bin_enabled: true,
        ..Default::default()
    }
}

fn replica_status(uid: u32, source_uid: u32, executed: &str) -> FullStatus {
    FullStatus {
        replication_status: Some(Status {
            position: executed.into(),
            relay_log_position: executed.into(),
            source_host: mysql_host("zone1", source_uid),
            source_port: MYSQL_PORT,
            source_uuid: server_uuid(source_uid),
            source_server_id: source_uid,
            io_state: 3,
            sql_state: 3,
            ..Default::default()
        }),
        read_only: true,
        tablet_type: TabletType::Replica as i32,
        ..primary_status(uid, executed)
    }
}

fn answer(delay_ms: u64, status: FullStatus) -> Script {
    Script::Answer(Duration::from_millis(delay_ms), Box::new(status))
}

fn config() -> DiscoveryConfig {
    DiscoveryConfig {
        schedule: ScheduleConfig {
            poll_interval: Duration::from_secs(1),
            workers: 10,
            slow_after: Duration::from_secs(1),
            jitter: 0.0,
            ..ScheduleConfig::default()
        },
        poll_timeout: Duration::from_secs(15),
        topo_refresh_interval: Duration::ZERO,
        primary_health_window: Duration::from_secs(30),
        publish_interval: Duration::from_millis(10),
        ..DiscoveryConfig::default()
    }
}

/// A shard `ks/0` with primary 100 and replicas 101, 102 in the topology.
async fn topo_with_shard() -> Topo {
    let (topo, _store) = Topo::in_memory(&["zone1"]);
    topo.create_keyspace("ks", &Keyspace::with_durability("none"))
        .await
        .expect("keyspace");
    topo.create_shard(
        "ks",
        "0",
        &Shard::with_primary(Some(TabletAlias::new("zone1", 100))),
    )
    .await
    .expect("shard");
    for (uid, t) in [
        (100, TabletType::Primary),
        (101, TabletType::Replica),
        (102, TabletType::Replica),
    ] {
        topo.create_tablet(&tablet_record("ks", "0", "zone1", uid, t))
            .await
            .expect("tablet");
    }
    topo
}

fn healthy_fleet() -> Arc<Fleet> {
    let fleet = Arc::new(Fleet::default());
    let pos = position(&[(100, 50)]);
    fleet.set(100, answer(5, primary_status(100, &pos)));
    fleet.set(101, answer(5, replica_status(101, 100, &pos)));
    fleet.set(102, answer(5, replica_status(102, 100, &pos)));
    fleet
}

fn start(topo: Topo, fleet: Arc<Fleet>, config: DiscoveryConfig) -> (DiscoveryHandle, DiscoveryTask) {
    let (discovery, handle) = Discovery::new(config, topo, fleet, Arc::new(Silent));
    (handle, discovery.spawn())
}

fn tablet(handle: &DiscoveryHandle, uid: u32) -> Arc<crate::model::TabletState> {
    let alias = TabletAlias::new("zone1", uid);
    handle
        .snapshot()
        .shards
        .values()
        .find_map(|s| s.tablet(&alias).cloned())
        .expect("tablet watched")
}

/// Starts discovery of [`topo_with_shard`] over `fleet` and waits until it
/// is ready; returns how long that took too.
async fn start_until_ready(fleet: Arc<Fleet>) -> (DiscoveryHandle, DiscoveryTask, Duration) {
    let started = crate::clock::now();
    let (handle, task) = start(topo_with_shard().await, fleet, config());
    handle.wait_ready().await.expect("ready");
    (handle, task, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_for_every_tablet_to_be_polled_once() {
    let fleet = healthy_fleet();
    let pos = position(&[(100, 50)]);
    fleet.set(102, answer(800, replica_status(102, 100, &pos)));
    let (handle, _task, took) = start_until_ready(fleet).await;
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(900),
        "{took:?}"
    );
    let snap = handle.snapshot();
    assert_eq!(snap.tablet_count(), 3);
    assert!(
        snap.shards
            .values()
            .flat_map(|s| &s.tablets)
            .all(|t| t.observation.is_some())
    );
    assert_eq!(
        handle.metrics().rounds.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_tablet_delays_readiness_only_until_its_poll_is_marked_slow() {
    let fleet = healthy_fleet();
    fleet.set(101, Script::Hang);
    let (handle, _task, took) = start_until_ready(fleet).await;
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "ready after {took:?}, not after the 15 s poll deadline"
    );
    let hung = tablet(&handle, 101);
    assert!(
        hung.poll.last_attempted_check.is_some(),
        "the hung attempt is recorded"
    );
    assert_eq!(hung.reachability, Reachability::Unknown);
}

#[tokio::test(start_paused = true)]
async fn an_empty_topology_is_ready_after_the_load() {
    let (topo, _store) = Topo::in_memory(&["zone1", "zone2"]);
    let (handle, _task) = start(topo, Arc::new(Fleet::default()), config());
    tokio::time::timeout(Duration::from_secs(1), handle.wait_ready())
        .await
        .expect("ready at once")
        .expect("running");
    assert_eq!(handle.snapshot().tablet_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn errant_gtids_are_computed_on_each_poll() {
    let fleet = healthy_fleet();
    let (handle, _task) = start(topo_with_shard().await, Arc::clone(&fleet), config());
    handle.wait_ready().await.expect("ready");
    assert!(
        tablet(&handle, 101)
            .observation
            .as_ref()
            .expect("observed")
            .errant_gtids
            .is_empty()
    );
    // Replica 101 gets a local transaction the primary never had.
    let errant = position(&[(100, 50), (101, 3)]);
    fleet.set(101, answer(5, replica_status(101, 100, &errant)));
    let state = handle
        .refresh_tablet(&TabletAlias::new("zone1", 101))
        .await
        .expect("refreshed");
    let obs = state.observation.as_ref().expect("observed");
    assert_eq!(obs.errant_gtids.to_string(), position(&[(101, 3)]));
    // The shard primary never has errant GTIDs.
    assert!(
        tablet(&handle, 100)
            .observation
            .as_ref()
            .expect("observed")
            .errant_gtids
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn failed_primary_polls_fill_the_primary_health_window_and_mark_it_unreachable() {
    let fleet = healthy_fleet();
    let (handle, _task) = start(topo_with_shard().await, Arc::clone(&fleet), config());
    handle.wait_ready().await.expect("ready");
    let mut changes = handle.subscribe_changes();
    fleet.set(100, Script::Refuse);
    let alias = TabletAlias::new("zone1", 100);
    handle.refresh_tablet(&alias).await.expect("refreshed");
    let change = changes.recv().await.expect("a shard change");
    assert_eq!(change.cause, ChangeCause::Poll);
    // Three failures: besides the first poll, one more scheduled poll may
    // have succeeded (the first scheduled poll after discovery starts falls
    // anywhere in the first interval, possibly before the script changed).
    handle.refresh_tablet(&alias).await.expect("refreshed");
    let state = handle.refresh_tablet(&alias).await.expect("refreshed");
    assert!(matches!(state.reachability, Reachability::Unreachable { .. }));
    assert!(state.observation.is_some(), "the last observation is kept");
    let (failures, successes) =
        state.primary_health.events().fold(
            (0, 0),
            |(f, s), &(_, ok)| if ok { (f, s + 1) } else { (f + 1, s) },
        );
    assert!(
        state
            .primary_health
            .is_unhealthy(crate::clock::now(), Duration::from_secs(30)),
        "at least two failures and more failures than successes: {failures} failures, \
         {successes} successes"
    );
    // Replicas are not tracked in the window.
    assert_eq!(tablet(&handle, 101).primary_health.events().count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_disk_is_a_failed_poll_only_when_enabled() {
    for enabled in [false, true] {
        let fleet = healthy_fleet();
        let mut stalled = primary_status(100, &position(&[(100, 50)]));
        stalled.disk_stalled = true;
        fleet.set(100, answer(5, stalled));
        let mut cfg = config();
        cfg.disk_stalled_is_failure = enabled;
        let (handle, _task) = start(topo_with_shard().await, fleet, cfg);
        handle.wait_ready().await.expect("ready");
        let t = tablet(&handle, 100);
        assert!(t.disk_stalled);
        assert_eq!(
            matches!(t.reachability, Reachability::Unreachable { .. }),
            enabled,
            "{:?}",
            t.reachability
        );
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_tablets_back_off_but_are_polled_at_once_on_refresh() {
    let fleet = healthy_fleet();
    fleet.set(102, Script::Refuse);
    let (handle, _task) = start(topo_with_shard().await, Arc::clone(&fleet), config());
    handle.wait_ready().await.expect("ready");
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Polled at 0, then after 1, 2, 4, 4 s: 5 polls in 10 s, against 10+ for a healthy one.
    let failing = fleet.calls(102);
    let healthy = fleet.calls(101);
    assert!(
        (4..=6).contains(&failing),
        "{failing} polls of the unreachable tablet"
    );
    assert!(healthy >= 10, "{healthy} polls of a healthy tablet");
    let before = fleet.calls(102);
    handle
        .refresh_tablet(&TabletAlias::new("zone1", 102))
        .await
        .expect("refreshed");
    assert_eq!(fleet.calls(102), before + 1);
}

#[tokio::test(start_paused = true)]
async fn clusters_to_watch_filters_tablets_and_keyspaces() {
    let topo = topo_with_shard().await;
    topo.create_keyspace("other", &Keyspace::default())
        .await
        .expect("keyspace");
    topo.create_tablet(&tablet_record("other", "0", "zone1", 200, TabletType::Replica))
        .await
        .expect("tablet");
    let fleet = healthy_fleet();
    let mut cfg = config();
    cfg.filter = WatchFilter::new(vec!["ks".parse().expect("valid")]);
    let (handle, _task) = start(topo, Arc::clone(&fleet), cfg);
    handle.wait_ready().await.expect("ready");
    let snap = handle.snapshot();
    assert_eq!(snap.keyspaces.keys().collect::<Vec<_>>(), ["ks"]);
    assert_eq!(snap.tablet_count(), 3);
    assert_eq!(fleet.calls(200), 0);
}

/// Waits (in paused time) until `uid` has been called once more than
/// `before`; returns when that call started.
async fn next_call(fleet: &Fleet, uid: u32, before: u32) -> tokio::time::Instant {
    while fleet.calls(uid) == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    crate::clock::now()
}

/// Waits until the published snapshot satisfies `done` for tablet `uid`;
/// returns when it was published.
async fn published(
    handle: &DiscoveryHandle,
    uid: u32,
    done: impl Fn(&crate::model::TabletState) -> bool,
) -> tokio::time::Instant {
    let mut rx = handle.watch_snapshots();
    let alias = TabletAlias::new("zone1", uid);
    loop {
        let shown = rx
            .borrow_and_update()
            .shards
            .values()
            .find_map(|s| s.tablet(&alias).cloned())
            .is_some_and(|t| done(&t));
        if shown {
            return crate::clock::now();
        }
        rx.changed().await.expect("discovery running");
    }
}

#[tokio::test(start_paused = true)]
async fn routine_updates_wait_for_the_routine_interval_but_shard_changes_do_not() {
    let fleet = healthy_fleet();
    let old = position(&[(100, 50)]);
    fleet.set(102, answer(100, replica_status(102, 100, &old)));
    let mut cfg = config();
    cfg.liveness.ping_interval = Duration::ZERO; // the scripted fleet answers polls only
    let routine = cfg.routine_publish_interval;
    assert_eq!(routine, DiscoveryConfig::default().routine_publish_interval);
    let (handle, _task) = start(topo_with_shard().await, Arc::clone(&fleet), cfg);
    handle.wait_ready().await.expect("ready");
    // When 102's poll starts, a refresh of 101 (answered in 5 ms) publishes a
    // snapshot, so 102's answer 100 ms later comes right after a publication.
    let peer = TabletAlias::new("zone1", 101);

    // A new position is a routine update: its shard did not change for analysis.
    let new = position(&[(100, 60)]);
    fleet.set(102, answer(100, replica_status(102, 100, &new)));
    let started = next_call(&fleet, 102, fleet.calls(102)).await;
    handle.refresh_tablet(&peer).await.expect("refreshed");
    let seen = published(&handle, 102, |t| {
        t.observation
            .as_ref()
            .is_some_and(|o| o.executed_position.gtid_count() == 60)
    })
    .await;
    let after = seen - started;
    let window = Duration::from_millis(3) + routine..Duration::from_millis(10) + routine;
    assert!(
        window.contains(&after),
        "a routine update answered after 100 ms was shown after {after:?}, not {routine:?} \
         after the refresh's publication"
    );

    // A stopped IO thread changes the shard for analysis: published at once.
    let mut stopped = replica_status(102, 100, &new);
    if let Some(r) = stopped.replication_status.as_mut() {
        r.io_state = 1;
    }
    fleet.set(102, answer(100, stopped));
    let started = next_call(&fleet, 102, fleet.calls(102)).await;
    handle.refresh_tablet(&peer).await.expect("refreshed");
    let seen = published(&handle, 102, |t| {
        t.observation
            .as_ref()
            .and_then(|o| o.replication.as_ref())
            .is_some_and(|r| r.io_thread != crate::model::ThreadState::Running)
    })
    .await;
    let after = seen - started;
    assert!(
        (Duration::from_millis(98)..Duration::from_millis(105)).contains(&after),
        "a shard change answered after 100 ms was shown after {after:?}"
    );
}
