//! Discovery: the task that owns the cluster model and keeps it true.
//!
//! # What it does
//!
//! - **Topology**: follows the topo watch ([`crate::topo::TopoWatcher`]);
//!   the watched set is `--clusters-to-watch` across all cells. A tablet that
//!   appears is polled at once and its health stream opened; a deleted one is
//!   forgotten (schedule, stream and cached channel dropped). Keyspace and
//!   shard records are kept current. Every
//!   `--topo-information-refresh-duration` the watch is restarted, which
//!   re-lists everything and swaps it in (the safety net for a silently
//!   stuck watch).
//! - **Polling**: `FullStatus` of each tablet every `--instance-poll-time`,
//!   at most `--discovery-workers` polls active, jittered, with back-off
//!   for unreachable tablets (see [`schedule`]). Each result updates the
//!   tablet's observation, poll times, reachability, primary health window
//!   and errant GTIDs.
//! - **Health streams**: one `StreamHealth` per tablet. A broken stream, a
//!   reconnect, a serving-state change or a health error triggers an
//!   immediate poll of that tablet and a [`ShardChange`] for its shard.
//! - **Publishing**: an immutable [`ClusterSnapshot`] (shards and tablets
//!   behind `Arc`, so unchanged parts are shared) through a `watch` channel,
//!   then one [`ShardChange`] per shard that changed in a way analysis cares
//!   about. A change analysis cares about (or an answered refresh) is
//!   published within `publish_interval`; routine updates (poll times,
//!   positions, lag of a tablet whose shard did not change) wait for
//!   `routine_publish_interval`. Publishing copies the shard map, a cost
//!   proportional to the fleet (at 10,000 tablets, a fifth of discovery's
//!   CPU at the default poll when every poll result was published within
//!   20 ms); the routine interval bounds how stale a read of a quiet
//!   tablet's details can be, not how late a failure is seen.
//! - **Readiness**: [`DiscoveryHandle::wait_ready`] returns once the
//!   topology was fully loaded and every tablet then known was polled once
//!   (a poll hung past the slow threshold counts as done).
//!
//! # Ownership
//!
//! [`Discovery`] is the single writer (`&mut self`); everything else holds a
//! [`DiscoveryHandle`] (snapshots, change notifications, refresh commands).
//! Its polls and streams are tasks it owns; [`DiscoveryTask`] stops it all
//! when dropped.

pub mod liveness;
mod owner;
pub mod schedule;
pub mod watched;

pub mod metrics;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

pub use liveness::LivenessConfig;
pub use metrics::{DiscoveryMetrics, LatencyHistogram};
pub use owner::Discovery;
pub use schedule::{PollSchedule, ScheduleConfig};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
pub use watched::WatchFilter;

use crate::{
    config::Config,
    ids::KeyspaceShard,
    model::{ClusterSnapshot, ShardState, TabletState},
    proto::topodata::TabletAlias,
    tablet::HealthStreamConfig,
};

/// Discovery's settings.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Which tablets and shards to watch (`--clusters-to-watch`).
    pub filter: WatchFilter,
    /// Poll schedule: interval (`--instance-poll-time`), workers
    /// (`--discovery-workers`), slow threshold, back-off, jitter.
    pub schedule: ScheduleConfig,
    /// Deadline of one `FullStatus` poll (`--remote-operation-timeout`).
    pub poll_timeout: Duration,
    /// Interval of the safety-net full topology re-list
    /// (`--topo-information-refresh-duration`); zero disables it.
    pub topo_refresh_interval: Duration,
    /// Window of the primary health tracker
    /// (`--primary-healthcheck-timeout-window`; zero disables it).
    pub primary_health_window: Duration,
    /// A FullStatus reporting a stalled disk counts as a failed poll
    /// (`--enable-primary-disk-stalled-recovery`).
    pub disk_stalled_is_failure: bool,
    /// Least time between two published snapshots when a shard changed in
    /// a way analysis cares about or a refresh waits (changes in between are
    /// batched into the next one).
    pub publish_interval: Duration,
    /// Least time between two published snapshots that carry only routine
    /// updates (poll times, positions, lag; no shard change, no refresh
    /// waiting).
    pub routine_publish_interval: Duration,
    /// Timer-driven poll starts are batched to at most one per tick (polls
    /// may start up to this much after they fall due; fewer wake-ups).
    pub dispatch_tick: Duration,
    /// Health stream reconnection back-off.
    pub streams: HealthStreamConfig,
    /// Primary pings and replica probes.
    pub liveness: LivenessConfig,
    /// With `--sharing`: the assignments narrowing what is watched
    /// (`None` = everything `filter` selects).
    pub sharing: Option<watch::Receiver<Arc<crate::sharing::Assignment>>>,
}

impl DiscoveryConfig {
    /// Settings from vtorc's configuration.
    pub fn from_config(config: &Config) -> Self {
        DiscoveryConfig {
            filter: WatchFilter::new(config.clusters_to_watch.clone()),
            schedule: ScheduleConfig {
                poll_interval: config.instance_poll_time,
                workers: config.discovery_workers.max(1),
                ..ScheduleConfig::default()
            },
            poll_timeout: config.remote_operation_timeout,
            topo_refresh_interval: config.topo_information_refresh_duration,
            primary_health_window: config.primary_healthcheck_timeout_window,
            disk_stalled_is_failure: config.enable_primary_disk_stalled_recovery,
            liveness: LivenessConfig {
                ping_interval: config.primary_ping_interval,
                ..LivenessConfig::default()
            },
            ..DiscoveryConfig::default()
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            filter: WatchFilter::default(),
            schedule: ScheduleConfig::default(),
            poll_timeout: Duration::from_secs(15),
            topo_refresh_interval: Duration::from_secs(15),
            primary_health_window: Duration::from_secs(30),
            disk_stalled_is_failure: false,
            publish_interval: Duration::from_millis(20),
            routine_publish_interval: Duration::from_millis(250),
            dispatch_tick: Duration::from_millis(10),
            streams: HealthStreamConfig::default(),
            liveness: LivenessConfig::default(),
            sharing: None,
        }
    }
}

/// Why a shard was reported changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeCause {
    /// A topology record (keyspace, shard or tablet) changed.
    Topology,
    /// A poll result changed what analysis looks at (reachability, type,
    /// replication threads or source, read-only, errant GTIDs, ...).
    Poll,
    /// A health stream broke, reconnected, or changed serving state or error.
    Health,
}

/// "Shard S changed": analyse it now. Sent after the snapshot that holds
/// the change was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardChange {
    /// The shard.
    pub shard: KeyspaceShard,
    /// The first cause seen since the previous notification for it.
    pub cause: ChangeCause,
}

/// Errors of [`DiscoveryHandle`] requests.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// Discovery has stopped (shutdown).
    #[error("discovery has stopped")]
    Stopped,
    /// The tablet is not (or no longer) watched.
    #[error("tablet {0} is not watched")]
    UnknownTablet(TabletAlias),
    /// The shard is not watched or has no tablets.
    #[error("shard {0} is not watched")]
    UnknownShard(KeyspaceShard),
}

impl DiscoveryError {
    /// The gRPC code for API callers.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            DiscoveryError::Stopped => tonic::Code::Unavailable,
            DiscoveryError::UnknownTablet(_) | DiscoveryError::UnknownShard(_) => tonic::Code::NotFound,
        }
    }

    /// Whether asking again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DiscoveryError::Stopped)
    }
}

/// Requests to the owner.
#[derive(Debug)]
pub(crate) enum Command {
    /// Poll a tablet now; answer with its state once a poll that started
    /// after this request has finished and the snapshot holding it is published.
    Refresh {
        /// The tablet.
        alias: TabletAlias,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Arc<TabletState>, DiscoveryError>>,
    },
    /// The config file's dynamic settings changed.
    SetDynamic {
        /// `--instance-poll-time`.
        poll_interval: Duration,
        /// `--topo-information-refresh-duration`.
        topo_refresh_interval: Duration,
        /// `--enable-primary-disk-stalled-recovery`.
        disk_stalled_is_failure: bool,
    },
}

/// The shared side of discovery: snapshots, notifications, commands.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct DiscoveryHandle {
    /// Commands to the owner.
    commands: mpsc::Sender<Command>,
    /// The latest published snapshot.
    snapshots: watch::Receiver<Arc<ClusterSnapshot>>,
    /// Shard-changed notifications (subscribe to receive).
    changes: broadcast::Sender<ShardChange>,
    /// True once the first full topology load and discovery round completed.
    ready: watch::Receiver<bool>,
    /// Discovery's counters.
    metrics: Arc<DiscoveryMetrics>,
    /// With `--sharing`: the assignment generation loaded.
    applied: watch::Receiver<u64>,
}

impl DiscoveryHandle {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        Arc::clone(&self.snapshots.borrow())
    }

    /// A receiver of every published snapshot (`changed().await` wakes on each).
    pub fn watch_snapshots(&self) -> watch::Receiver<Arc<ClusterSnapshot>> {
        self.snapshots.clone()
    }

    /// Receives [`ShardChange`]s from now on. A receiver that lags gets
    /// `RecvError::Lagged` and should analyse every shard.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<ShardChange> {
        self.changes.subscribe()
    }

    /// Whether analysis may run (see [`DiscoveryHandle::wait_ready`]).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Applies the config file's dynamic settings (poll interval, safety-net
    /// re-list interval, stalled-disk handling) from the next poll on.
    pub async fn apply_dynamic(&self, now: &crate::config::DynamicSettings) -> Result<(), DiscoveryError> {
        self.commands
            .send(Command::SetDynamic {
                poll_interval: now.instance_poll_time,
                topo_refresh_interval: now.topo_information_refresh_duration,
                disk_stalled_is_failure: now.enable_primary_disk_stalled_recovery,
            })
            .await
            .map_err(|_| DiscoveryError::Stopped)
    }

    /// Returns once the topology was fully loaded and one discovery round
    /// completed; `Err(Stopped)` if discovery stops first.
    pub async fn wait_ready(&self) -> Result<(), DiscoveryError> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| DiscoveryError::Stopped)
    }

    /// Polls a tablet now and returns its state after a poll that started
    /// after this call; the snapshot holding that poll is published by the
    /// time this returns (recoveries re-read the tablets they act on). Takes
    /// at most the poll deadline, twice if a poll was already in flight; a
    /// failed poll is not an error: the returned state says unreachable.
    pub async fn refresh_tablet(&self, alias: &TabletAlias) -> Result<Arc<TabletState>, DiscoveryError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Refresh {
                alias: alias.clone(),
                reply,
            })
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        rx.await.map_err(|_| DiscoveryError::Stopped)?
    }

    /// Polls every tablet of a shard now; returns the shard as published
    /// after all those polls.
    pub async fn refresh_shard(&self, shard: &KeyspaceShard) -> Result<Arc<ShardState>, DiscoveryError> {
        let aliases: Vec<TabletAlias> = self
            .snapshot()
            .shard(shard)
            .ok_or_else(|| DiscoveryError::UnknownShard(shard.clone()))?
            .tablets
            .iter()
            .map(|t| t.alias().clone())
            .collect();
        let results = futures::future::join_all(aliases.iter().map(|a| self.refresh_tablet(a))).await;
        for r in results {
            match r {
                // A tablet deleted meanwhile is simply no longer in the shard.
                Ok(_) | Err(DiscoveryError::UnknownTablet(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Refreshes are answered after the snapshot holding them is published.
        self.snapshot()
            .shard(shard)
            .cloned()
            .ok_or_else(|| DiscoveryError::UnknownShard(shard.clone()))
    }

    /// With `--sharing`: the assignment generation discovery has loaded
    /// (the new shards listed and every tablet in them polled once).
    pub fn watch_applied_assignment(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Discovery's counters.
    pub fn metrics(&self) -> &Arc<DiscoveryMetrics> {
        &self.metrics
    }
}

/// The running discovery task; dropping it stops discovery (and its polls
/// and streams).
pub struct DiscoveryTask {
    /// Stops the owner loop.
    cancel: CancellationToken,
    /// The owner loop.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DiscoveryTask {
    /// Stops discovery and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("discovery task panicked: {e}");
        }
    }
}

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
