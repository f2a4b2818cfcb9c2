//! Discovery end to end over real loopback gRPC: simulated tablets
//! (`integration::sim`), the in-memory topology and the tonic tablet client.
//! The same flows against real etcd are in `discovery_etcd.rs`, and against
//! the real tablet agent over MariaDB in `discovery_agent.rs`.

use std::{sync::Arc, time::Duration};

use integration::sim::{SimConfig, SimFault, SimFleet, SimMode, SimTablet};
use integration::testkit::SnapshotWatch;
use tokio::time::Instant;
use vtorc::{
    config::WatchedCluster,
    discovery::{ChangeCause, Discovery, DiscoveryConfig, DiscoveryHandle, DiscoveryTask, WatchFilter},
    model::{ClusterSnapshot, Reachability, StreamHealth, TabletState},
    proto::topodata::{TabletAlias, TabletType},
    tablet::{GrpcTabletManager, HealthStreamConfig, TabletClientConfig},
    topo::Topo,
};

/// A running discovery over a simulated fleet.
struct World {
    fleet: SimFleet,
    topo: Topo,
    tmc: GrpcTabletManager,
    handle: DiscoveryHandle,
    _task: DiscoveryTask,
}

fn config(poll: Duration, timeout: Duration) -> DiscoveryConfig {
    DiscoveryConfig {
        publish_interval: Duration::from_millis(10),
        streams: HealthStreamConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            jitter: 0.2,
        },
        ..integration::testkit::discovery_config(poll, timeout, 50)
    }
}

impl World {
    async fn start(shards: &[&str], per_shard: usize, config: DiscoveryConfig) -> World {
        let fleet = SimFleet::start(SimConfig::default(), "ks", shards, per_shard)
            .await
            .expect("simulator starts");
        let (topo, _store) = Topo::in_memory(&["zone1"]);
        fleet.register(&topo, "semi_sync").await;
        Self::run(fleet, topo, config).await
    }

    async fn run(fleet: SimFleet, topo: Topo, config: DiscoveryConfig) -> World {
        let tmc = GrpcTabletManager::new(TabletClientConfig {
            remote_operation_timeout: config.poll_timeout,
            connect_timeout: Duration::from_secs(1),
            ..TabletClientConfig::default()
        });
        let (discovery, handle) =
            Discovery::new(config, topo.clone(), Arc::new(tmc.clone()), Arc::new(tmc.clone()));
        let task = discovery.spawn();
        World {
            fleet,
            topo,
            tmc,
            handle,
            _task: task,
        }
    }

    async fn ready(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.handle.wait_ready())
            .await
            .expect("discovery ready within 10 s")
            .expect("discovery running");
    }

    fn tablet(&self, alias: &TabletAlias) -> Option<Arc<TabletState>> {
        find(&self.handle.snapshot(), alias)
    }

    /// Starts one more simulated tablet of `tablet_type` in ks/0,
    /// replicating from the first tablet (not in the topology yet).
    async fn start_tablet(&mut self, tablet_type: TabletType) -> SimTablet {
        let primary = self.fleet.tablets()[0].clone();
        self.fleet
            .add_tablet("ks", "0", tablet_type, Some(&primary))
            .await
            .expect("start tablet")
    }

    /// Waits (up to `within`) until discovery has polled `alias`, failing
    /// the test naming `what`; returns how long it took.
    async fn until_polled(&self, alias: &TabletAlias, within: Duration, what: &str) -> Duration {
        self.until(within, what, |s| {
            find(s, alias).is_some_and(|t| t.poll.last_seen.is_some())
        })
        .await
    }

    /// Starts one more tablet of `tablet_type` ([`World::start_tablet`]),
    /// creates its record and waits (up to a second) until discovery polls
    /// it; returns the tablet and how long that took.
    async fn add_tablet(&mut self, tablet_type: TabletType) -> (SimTablet, Duration) {
        let added = self.start_tablet(tablet_type).await;
        self.topo
            .create_tablet(&added.record())
            .await
            .expect("create tablet");
        let took = self
            .until_polled(added.alias(), Duration::from_secs(1), "new tablet polled")
            .await;
        (added, took)
    }

    /// Deletes `alias`'s record and waits (up to a second) until it is gone
    /// from the published snapshot; returns how long that took.
    async fn delete_tablet(&self, alias: &TabletAlias) -> Duration {
        self.topo.delete_tablet(alias).await.expect("delete tablet");
        self.until(Duration::from_secs(1), "deleted tablet gone", |s| {
            find(s, alias).is_none()
        })
        .await
    }
}

impl SnapshotWatch for World {
    fn discovery(&self) -> &DiscoveryHandle {
        &self.handle
    }
}

fn find(snapshot: &ClusterSnapshot, alias: &TabletAlias) -> Option<Arc<TabletState>> {
    snapshot.shards.values().find_map(|s| s.tablet(alias).cloned())
}

fn unreachable(t: &TabletState) -> bool {
    matches!(t.reachability, Reachability::Unreachable { .. })
}

#[tokio::test]
async fn discovery_is_ready_after_the_topology_load_and_one_polling_round() {
    let w = World::start(
        &["-80", "80-"],
        3,
        config(Duration::from_secs(1), Duration::from_secs(1)),
    )
    .await;
    w.ready().await;
    let snap = w.handle.snapshot();
    assert_eq!(snap.tablet_count(), 6);
    assert_eq!(snap.shards.len(), 2);
    assert_eq!(
        snap.keyspaces.get("ks").map(|k| k.durability_policy.as_str()),
        Some("semi_sync")
    );
    for shard in snap.shards.values() {
        let primary = w
            .fleet
            .tablets()
            .iter()
            .find(|t| t.record().shard == shard.shard && t.record().r#type == TabletType::Primary as i32);
        assert_eq!(shard.primary_alias.as_ref(), primary.map(SimTablet::alias));
        for t in &shard.tablets {
            assert!(
                matches!(t.reachability, Reachability::Reachable { .. }),
                "{}: {:?}",
                t.alias(),
                t.reachability
            );
            let obs = t.observation.as_ref().expect("observed");
            assert_eq!(obs.tablet_type, t.tablet_type());
            assert!(obs.errant_gtids.is_empty(), "{}", obs.errant_gtids);
        }
    }
    let m = w.handle.metrics();
    assert!(m.rounds.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(m.tablets_watched.load(std::sync::atomic::Ordering::Relaxed), 6);
}

#[tokio::test]
async fn a_tablet_added_to_the_topology_is_polled_within_a_second_and_a_deleted_one_disappears() {
    let mut w = World::start(&["0"], 2, config(Duration::from_secs(5), Duration::from_secs(1))).await;
    w.ready().await;
    let (added, took) = w.add_tablet(TabletType::Replica).await;
    assert!(added.full_status_calls() >= 1);
    assert_eq!(w.tmc.cached_channels(), 3);
    eprintln!("added tablet polled after {took:?}");

    let took = w.delete_tablet(added.alias()).await;
    eprintln!("deleted tablet gone after {took:?}");
    assert_eq!(w.tmc.cached_channels(), 2, "its channel was dropped");
    // No more polls reach it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = added.full_status_calls();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(added.full_status_calls(), calls);
}

#[tokio::test]
async fn a_killed_tablet_is_marked_unreachable_at_once_through_its_health_stream() {
    // Polls every 30 s: only the health stream can explain a fast detection.
    let w = World::start(&["0"], 3, config(Duration::from_secs(30), Duration::from_secs(1))).await;
    w.ready().await;
    let primary = w.fleet.tablets()[0].clone();
    let alias = primary.alias().clone();
    w.until(Duration::from_secs(2), "health stream up", |s| {
        find(s, &alias)
            .is_some_and(|t| matches!(t.stream_health, StreamHealth::Healthy { serving: true, .. }))
    })
    .await;
    let mut changes = w.handle.subscribe_changes();
    primary.set_mode(SimMode::Down);
    let took = w
        .until(Duration::from_secs(1), "killed primary unreachable", |s| {
            find(s, &alias)
                .is_some_and(|t| unreachable(&t) && !t.poll.last_check_valid(Duration::from_secs(30)))
        })
        .await;
    eprintln!("killed primary unreachable after {took:?}");
    let t = w.tablet(&alias).expect("still watched");
    assert!(
        matches!(t.stream_health, StreamHealth::Unreachable { .. }),
        "{:?}",
        t.stream_health
    );
    let change = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("a shard change")
        .expect("channel open");
    assert_eq!(change.shard.shard, "0");
    assert_eq!(change.cause, ChangeCause::Health);

    // It comes back: the reconnecting stream triggers a poll at once.
    primary.set_mode(SimMode::Serving);
    let took = w
        .until(Duration::from_secs(2), "primary reachable again", |s| {
            find(s, &alias).is_some_and(|t| matches!(t.reachability, Reachability::Reachable { .. }))
        })
        .await;
    eprintln!("primary reachable again after {took:?}");
    assert!(w.handle.metrics().stream_reconnects() >= 1);
}

#[tokio::test]
async fn a_frozen_tablet_is_marked_unreachable_within_poll_time_plus_timeout() {
    let poll = Duration::from_millis(500);
    let timeout = Duration::from_millis(500);
    let w = World::start(&["0"], 2, config(poll, timeout)).await;
    w.ready().await;
    let primary = w.fleet.tablets()[0].clone();
    let alias = primary.alias().clone();
    primary.set_mode(SimMode::Hang);
    let took = w
        .until(
            poll + timeout + Duration::from_millis(300),
            "frozen primary unreachable",
            |s| find(s, &alias).is_some_and(|t| unreachable(&t)),
        )
        .await;
    eprintln!(
        "frozen primary unreachable after {took:?} (bound {:?})",
        poll + timeout
    );
    let t = w.tablet(&alias).expect("watched");
    assert!(!t.poll.last_check_valid(poll));
    let Reachability::Unreachable { reason, .. } = &t.reachability else {
        unreachable!()
    };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn hung_and_corrupt_tablets_never_stall_the_polling_of_the_others() {
    let mut cfg = config(Duration::from_millis(300), Duration::from_secs(3));
    cfg.schedule.workers = 2;
    let w = World::start(&["0"], 12, cfg).await;
    w.ready().await;
    let tablets = w.fleet.tablets().to_vec();
    for t in &tablets[..5] {
        t.set_mode(SimMode::Hang);
    }
    tablets[5].set_fault(Some(SimFault::EmptyStatus));
    tablets[6].set_fault(Some(SimFault::Error(tonic::Code::Internal, "boom".into())));
    // Let the hung polls pile up, then count the healthy tablets' polls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = tablets[7..].iter().map(SimTablet::full_status_calls).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (t, b) in tablets[7..].iter().zip(before) {
        let polls = t.full_status_calls() - b;
        // Every 300 ms (jittered early) for 2 s: 6 or more.
        assert!(polls >= 5, "{} polled only {polls} times in 2 s", t.alias());
    }
    let snap = w.handle.snapshot();
    for t in &tablets[7..] {
        let s = find(&snap, t.alias()).expect("watched");
        assert!(
            s.poll.last_check_valid(Duration::from_millis(300)),
            "{}",
            t.alias()
        );
    }
    let corrupt = find(&snap, tablets[5].alias()).expect("watched");
    assert!(unreachable(&corrupt), "{:?}", corrupt.reachability);
    let m = w.handle.metrics();
    assert!(m.poll_failures(vtorc::tablet::TabletErrorKind::InvalidResponse) >= 1);
    assert!(m.poll_failures(vtorc::tablet::TabletErrorKind::Rejected) >= 1);
    assert!(m.polls_slow.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn a_health_error_triggers_a_poll_and_a_shard_change_at_once() {
    let w = World::start(&["0"], 2, config(Duration::from_secs(30), Duration::from_secs(1))).await;
    w.ready().await;
    let replica = w.fleet.tablets()[1].clone();
    let alias = replica.alias().clone();
    w.until(Duration::from_secs(2), "health stream up", |s| {
        find(s, &alias).is_some_and(|t| matches!(t.stream_health, StreamHealth::Healthy { .. }))
    })
    .await;
    let mut changes = w.handle.subscribe_changes();
    let polls = replica.full_status_calls();
    replica.set_health(false, "replication is not running");
    let took = w
        .until(Duration::from_secs(1), "health error recorded", |s| {
            find(s, &alias).is_some_and(|t| matches!(&t.stream_health, StreamHealth::Unhealthy { reason, .. } if reason == "replication is not running"))
        })
        .await;
    eprintln!("health error recorded after {took:?}");
    let change = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("a shard change")
        .expect("channel open");
    assert_eq!(change.cause, ChangeCause::Health);
    let deadline = Instant::now() + Duration::from_secs(1);
    while replica.full_status_calls() == polls {
        assert!(
            Instant::now() < deadline,
            "no poll triggered by the health change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn refresh_returns_a_state_from_a_poll_started_after_the_request() {
    let w = World::start(&["0"], 2, config(Duration::from_secs(30), Duration::from_secs(1))).await;
    w.ready().await;
    let replica = w.fleet.tablets()[1].clone();
    replica.update(|s| s.position = "MySQL56/00000000-0000-0000-0000-000000000100:1-250".into());
    let state = w.handle.refresh_tablet(replica.alias()).await.expect("refreshed");
    let obs = state.observation.as_ref().expect("observed");
    assert_eq!(
        obs.executed_position.to_string(),
        "MySQL56/00000000-0000-0000-0000-000000000100:1-250"
    );
    let shard = w
        .handle
        .refresh_shard(&vtorc::ids::KeyspaceShard::new("ks", "0"))
        .await
        .expect("shard refreshed");
    assert_eq!(shard.tablets.len(), 2);
    let unknown = w.handle.refresh_tablet(&TabletAlias::new("zone1", 999)).await;
    assert!(unknown.is_err());
}

#[tokio::test]
async fn clusters_to_watch_limits_discovery_to_the_selected_shards() {
    let fleet = SimFleet::start(SimConfig::default(), "ks", &["-80", "80-"], 2)
        .await
        .expect("simulator starts");
    let (topo, _store) = Topo::in_memory(&["zone1"]);
    fleet.register(&topo, "semi_sync").await;
    let mut cfg = config(Duration::from_secs(1), Duration::from_secs(1));
    cfg.filter = WatchFilter::new(vec!["ks/-80".parse::<WatchedCluster>().expect("valid")]);
    let w = World::run(fleet, topo, cfg).await;
    w.ready().await;
    let snap = w.handle.snapshot();
    assert_eq!(
        snap.shards.keys().map(|k| k.shard.as_str()).collect::<Vec<_>>(),
        ["-80"]
    );
    assert_eq!(snap.tablet_count(), 2);
    for t in &w.fleet.tablets()[2..] {
        assert_eq!(t.full_status_calls(), 0, "{} is not watched", t.alias());
    }
}

#[tokio::test]
async fn shard_record_changes_are_reflected_within_a_second() {
    let w = World::start(&["0"], 2, config(Duration::from_secs(5), Duration::from_secs(1))).await;
    w.ready().await;
    let new_primary = w.fleet.tablets()[1].alias().clone();
    let mut changes = w.handle.subscribe_changes();
    let target = new_primary.clone();
    w.topo
        .update_shard_fields("ks", "0", move |s| {
            s.primary_alias = Some(target.clone());
            Ok(())
        })
        .await
        .expect("update shard");
    let key = vtorc::ids::KeyspaceShard::new("ks", "0");
    w.until(Duration::from_secs(1), "shard primary updated", |s| {
        s.shard(&key)
            .is_some_and(|sh| sh.primary_alias.as_ref() == Some(&new_primary))
    })
    .await;
    let change = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("a shard change")
        .expect("channel open");
    assert_eq!(change.cause, ChangeCause::Topology);
}

// ---- the same flows with the topology in real etcd ----

mod etcd {
    use integration::etcd::EtcdServer;
    use integration::testkit::etcd_topo;

    use super::*;

    async fn world(etcd: &EtcdServer, cfg: DiscoveryConfig) -> World {
        let fleet = SimFleet::start(SimConfig::default(), "ks", &["0"], 3)
            .await
            .expect("simulator starts");
        let topo = etcd_topo(etcd).await;
        fleet.register(&topo, "semi_sync").await;
        World::run(fleet, topo, cfg).await
    }

    #[tokio::test]
    async fn with_etcd_a_new_tablet_is_polled_and_a_deleted_one_forgotten_within_a_second() {
        let etcd = EtcdServer::start().await.expect("etcd starts");
        let mut w = world(&etcd, config(Duration::from_secs(5), Duration::from_secs(1))).await;
        w.ready().await;
        assert_eq!(w.handle.snapshot().tablet_count(), 3);
        let (added, took) = w.add_tablet(TabletType::Rdonly).await;
        eprintln!("etcd: added tablet polled after {took:?}");
        let took = w.delete_tablet(added.alias()).await;
        eprintln!("etcd: deleted tablet gone after {took:?}");
    }

    #[tokio::test]
    async fn polling_goes_on_while_etcd_is_down_and_the_watch_resyncs_after_it_returns() {
        let mut etcd = EtcdServer::start().await.expect("etcd starts");
        let poll = Duration::from_millis(200);
        let mut w = world(&etcd, config(poll, Duration::from_secs(1))).await;
        w.ready().await;
        etcd.kill().expect("kill etcd");
        let calls: Vec<u64> = w
            .fleet
            .tablets()
            .iter()
            .map(SimTablet::full_status_calls)
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (t, before) in w.fleet.tablets().iter().zip(calls) {
            assert!(
                t.full_status_calls() >= before + 3,
                "{} not polled while etcd was down",
                t.alias()
            );
        }
        assert_eq!(
            w.handle.snapshot().tablet_count(),
            3,
            "an etcd outage forgets nothing"
        );

        etcd.restart().await.expect("etcd restarts");
        let added = w.start_tablet(TabletType::Replica).await;
        let alias = added.alias().clone();
        // The topo client reconnects on its own; retry the write until it does.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = w.topo.create_tablet(&added.record()).await {
            assert!(Instant::now() < deadline, "etcd not writable after restart: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = w
            .until_polled(&alias, Duration::from_secs(10), "tablet added after etcd restart")
            .await;
        eprintln!("etcd: tablet added after the restart polled after {took:?}");
        assert_eq!(w.handle.snapshot().tablet_count(), 4);
    }

    #[tokio::test]
    async fn the_safety_net_relist_reloads_the_topology_without_disturbing_known_tablets() {
        let etcd = EtcdServer::start().await.expect("etcd starts");
        let mut cfg = config(Duration::from_secs(5), Duration::from_secs(1));
        cfg.topo_refresh_interval = Duration::from_millis(300);
        let w = world(&etcd, cfg).await;
        w.ready().await;
        let m = w.handle.metrics();
        let resyncs = m.topo_resyncs.load(std::sync::atomic::Ordering::Relaxed);
        let subscriptions = m.streams.subscriptions.load(std::sync::atomic::Ordering::Relaxed);
        let polls = m.polls_started.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1600)).await;
        // Each re-list is a global and a cell snapshot: 4+ re-lists in 1.6 s.
        let new_resyncs = m.topo_resyncs.load(std::sync::atomic::Ordering::Relaxed) - resyncs;
        assert!(new_resyncs >= 8, "only {new_resyncs} resyncs");
        assert_eq!(
            m.streams.subscriptions.load(std::sync::atomic::Ordering::Relaxed),
            subscriptions,
            "known tablets keep their health streams"
        );
        // Polls every 5 s (first one spread over it): no extra polls for known tablets.
        assert!(m.polls_started.load(std::sync::atomic::Ordering::Relaxed) - polls <= 3);
        assert_eq!(w.handle.snapshot().tablet_count(), 3);
    }
}
