//! Discovery against the real world: etcd, one MariaDB per tablet and the
//! tablet agent (the vttablet stand-in), started by the cluster harness.
//!
//! - `kill -9` of the primary's MariaDB: its tablet is unreachable within
//!   1 s, long before the next scheduled poll (the health stream reports it).
//! - `SIGSTOP` of the primary's agent (no TCP reset): unreachable within
//!   `instance-poll-time + remote-operation-timeout`.
//! - A frozen agent does not stall the polling of the others.
//! - A tablet record deleted disappears within 1 s; a re-registered tablet
//!   is polled within 1 s.

use std::{sync::Arc, time::Duration};

use integration::cluster::Cluster;
use integration::testkit::{SnapshotWatch, semi_sync_commerce};
use tokio::time::Instant;
use vtorc::{
    discovery::{Discovery, DiscoveryConfig, DiscoveryHandle, DiscoveryTask},
    model::{ClusterSnapshot, Reachability, StreamHealth, TabletState},
    proto::topodata::TabletAlias,
    tablet::{GrpcTabletManager, TabletClientConfig},
};

/// Discovery over a running cluster.
struct Watcher {
    handle: DiscoveryHandle,
    _task: DiscoveryTask,
}

fn config(poll: Duration, timeout: Duration) -> DiscoveryConfig {
    integration::testkit::discovery_config(poll, timeout, 10)
}

impl Watcher {
    async fn start(cluster: &Cluster, config: DiscoveryConfig) -> Watcher {
        let tmc = GrpcTabletManager::new(TabletClientConfig {
            remote_operation_timeout: config.poll_timeout,
            connect_timeout: Duration::from_secs(1),
            ..TabletClientConfig::default()
        });
        let (discovery, handle) = Discovery::new(
            config,
            cluster.topo().clone(),
            Arc::new(tmc.clone()),
            Arc::new(tmc),
        );
        let task = discovery.spawn();
        tokio::time::timeout(Duration::from_secs(15), handle.wait_ready())
            .await
            .expect("discovery ready within 15 s")
            .expect("discovery running");
        Watcher { handle, _task: task }
    }

    /// Waits until every tablet of the cluster is reachable with a healthy stream.
    async fn all_healthy(&self, cluster: &Cluster) {
        let aliases: Vec<TabletAlias> = cluster.tablets().iter().map(|t| t.alias().clone()).collect();
        self.until(
            Duration::from_secs(5),
            "every tablet reachable and streaming",
            |s| {
                aliases.iter().all(|a| {
                    find(s, a).is_some_and(|t| {
                        matches!(t.reachability, Reachability::Reachable { .. })
                            && matches!(t.stream_health, StreamHealth::Healthy { .. })
                    })
                })
            },
        )
        .await;
    }
}

impl SnapshotWatch for Watcher {
    fn discovery(&self) -> &DiscoveryHandle {
        &self.handle
    }

    /// The state of tablet 100 (the first primary), where most waits look.
    fn describe(&self, snapshot: &ClusterSnapshot) -> String {
        let state = find(snapshot, &TabletAlias::new("zone1", 100));
        format!("; tablet 100: {state:#?}")
    }
}

fn find(snapshot: &ClusterSnapshot, alias: &TabletAlias) -> Option<Arc<TabletState>> {
    snapshot.shards.values().find_map(|s| s.tablet(alias).cloned())
}

fn unreachable(t: &TabletState) -> bool {
    matches!(t.reachability, Reachability::Unreachable { .. })
}

/// The semi-sync `commerce/0` world with each tablet agent run as a
/// process of this package's `tablet-agent` binary, so it can be paused
/// (SIGSTOP) without freezing the test.
async fn agent_processes() -> Cluster {
    integration::testkit::semi_sync_commerce_in_processes(env!("CARGO_BIN_EXE_tablet-agent").into()).await
}

async fn primary(cluster: &Cluster) -> TabletAlias {
    cluster
        .primary_alias("commerce", "0")
        .await
        .expect("shard record")
        .expect("the shard has a primary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primarys_mariadb_marks_it_unreachable_within_a_second() {
    let mut cluster = semi_sync_commerce().await;
    // Go VTOrc's default poll interval: a detection within 1 s cannot come from it.
    let poll = Duration::from_secs(5);
    let w = Watcher::start(&cluster, config(poll, Duration::from_secs(2))).await;
    w.all_healthy(&cluster).await;
    let alias = primary(&cluster).await;
    let killed_at = Instant::now();
    cluster.kill_mysql(&alias).expect("kill MariaDB");
    let took = w
        .until(
            Duration::from_secs(1),
            "primary unreachable after its MariaDB was killed",
            |s| find(s, &alias).is_some_and(|t| unreachable(&t) && !t.poll.last_check_valid(poll)),
        )
        .await;
    eprintln!("primary unreachable {took:?} after kill -9 of its MariaDB");
    // The agent's health stream says so too (its MySQL probe runs every 200 ms);
    // a scheduled poll may have noticed first.
    let took = w
        .until(
            Duration::from_secs(1).saturating_sub(killed_at.elapsed()),
            "health stream reports the primary not serving",
            |s| {
                find(s, &alias)
                    .is_some_and(|t| !matches!(t.stream_health, StreamHealth::Healthy { serving: true, .. }))
            },
        )
        .await;
    eprintln!("health stream not serving {took:?} later");
    assert!(
        killed_at.elapsed() < poll,
        "detected before the next scheduled poll"
    );
    // The replicas are still reachable: only the primary is down.
    for r in cluster.tablets().iter().filter(|t| t.alias() != &alias) {
        let state = find(&w.handle.snapshot(), r.alias()).expect("watched");
        assert!(
            matches!(state.reachability, Reachability::Reachable { .. }),
            "{}",
            r.alias()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_agent_is_unreachable_within_poll_time_plus_timeout() {
    let cluster = agent_processes().await;
    let poll = Duration::from_secs(1);
    let timeout = Duration::from_secs(1);
    let w = Watcher::start(&cluster, config(poll, timeout)).await;
    w.all_healthy(&cluster).await;
    let alias = primary(&cluster).await;
    cluster.pause_agent(&alias).expect("SIGSTOP the agent");
    // The bound, plus discovery's own slack: dispatch batching (10 ms),
    // publishing (20 ms) and scheduling on a shared 2-core machine.
    let bound = poll + timeout + Duration::from_millis(200);
    let took = w
        .until(bound, "stopped agent unreachable", |s| {
            find(s, &alias).is_some_and(|t| unreachable(&t))
        })
        .await;
    eprintln!(
        "SIGSTOPped primary agent unreachable after {took:?} (bound {:?})",
        poll + timeout
    );
    let t = find(&w.handle.snapshot(), &alias).expect("watched");
    let Reachability::Unreachable { reason, .. } = &t.reachability else {
        unreachable!()
    };
    assert!(reason.contains("timed out"), "{reason}");
    cluster.resume_agent(&alias).expect("SIGCONT the agent");
    let took = w
        .until(Duration::from_secs(3), "resumed agent reachable", |s| {
            find(s, &alias).is_some_and(|t| matches!(t.reachability, Reachability::Reachable { .. }))
        })
        .await;
    eprintln!("resumed agent reachable again after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_never_stalls_the_polling_of_the_others() {
    let cluster = agent_processes().await;
    let poll = Duration::from_millis(300);
    let mut cfg = config(poll, Duration::from_secs(10));
    // One worker: without the slow-poll release a hung poll would block all.
    cfg.schedule.workers = 1;
    let w = Watcher::start(&cluster, cfg).await;
    w.all_healthy(&cluster).await;
    let frozen = primary(&cluster).await;
    cluster.pause_agent(&frozen).expect("SIGSTOP the agent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let others: Vec<TabletAlias> = cluster
        .tablets()
        .iter()
        .map(|t| t.alias().clone())
        .filter(|a| *a != frozen)
        .collect();
    let seen_before: Vec<_> = others
        .iter()
        .map(|a| find(&w.handle.snapshot(), a).and_then(|t| t.poll.last_seen))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = w.handle.snapshot();
    for (a, before) in others.iter().zip(seen_before) {
        let t = find(&snap, a).expect("watched");
        assert!(
            t.poll.last_seen > before,
            "{a} was not polled while {frozen} was frozen"
        );
        assert!(t.poll.last_check_valid(poll), "{a}: {:?}", t.poll);
    }
    let f = find(&snap, &frozen).expect("watched");
    assert!(
        !f.poll.last_check_valid(poll),
        "the frozen tablet's check is not valid: {:?} {:?} (now {:?})",
        f.poll,
        f.reachability,
        Instant::now()
    );
    cluster.resume_agent(&frozen).expect("SIGCONT the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tablet_disappears_and_a_reregistered_one_is_polled_within_a_second() {
    let mut cluster = semi_sync_commerce().await;
    let w = Watcher::start(&cluster, config(Duration::from_secs(5), Duration::from_secs(2))).await;
    w.all_healthy(&cluster).await;
    let alias = cluster.tablets()[2].alias().clone();
    cluster.kill_agent(&alias).expect("kill the agent");
    cluster
        .delete_tablet_record(&alias)
        .await
        .expect("delete the record");
    let took = w
        .until(Duration::from_secs(1), "deleted tablet gone", |s| {
            find(s, &alias).is_none()
        })
        .await;
    eprintln!("deleted tablet gone after {took:?}");

    // The agent comes back and registers its record again (as vttablet does).
    cluster.restart_agent(&alias).await.expect("restart the agent");
    let took = w
        .until(Duration::from_secs(1), "re-registered tablet polled", |s| {
            find(s, &alias).is_some_and(|t| t.poll.last_seen.is_some())
        })
        .await;
    eprintln!("re-registered tablet polled {took:?} after its agent answered");
}
