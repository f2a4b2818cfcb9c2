//! The discovery owner: one task, `&mut self`, that applies topology events,
//! health events and poll results to the cluster model and publishes it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    hash::{DefaultHasher, Hash, Hasher},
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::FutureExt;
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    ChangeCause, Command, DiscoveryConfig, DiscoveryError, DiscoveryHandle, DiscoveryMetrics, DiscoveryTask,
    ShardChange,
    liveness::{Liveness, PingOutcome},
    schedule::{PollEnd, PollSchedule},
};
use crate::{
    ids::KeyspaceShard,
    model::{
        ClusterSnapshot, HeartbeatReport, KeyspaceInfo, Observation, Reachability, ShardState, StreamHealth,
        TabletState,
    },
    proto::{
        query::StreamHealthResponse,
        replicationdata::FullStatus,
        topodata::{Keyspace, Shard, Tablet, TabletAlias, TabletType},
    },
    tablet::{
        HealthEvent, HealthEventKind, HealthSource, HealthStreams, TabletError, TabletManager,
        TabletManagerExt,
    },
    topo::{
        Topo, TopoError,
        watch::{CellSnapshot, GlobalSnapshot, TopoEvent, TopoWatcher, WatchScope},
    },
};

/// Capacity of the health event channel (stream tasks wait when it is full).
const HEALTH_EVENT_BUFFER: usize = 4096;

/// Capacity of the command channel.
const COMMAND_BUFFER: usize = 1024;

/// Capacity of the shard-change broadcast (slower receivers see `Lagged`).
const CHANGE_BUFFER: usize = 4096;

/// Delay before restarting a topo watch whose tasks stopped.
const WATCH_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Discovery's own bookkeeping for one watched tablet (not published).
#[derive(Debug)]
struct TabletAux {
    /// The shard whose `tablets` list holds the tablet.
    shard: KeyspaceShard,
    /// The last health message's relevant fields; `None` = none received.
    health: Option<HealthSummary>,
    /// The last discovery round this tablet completed (or was exempt from).
    round_done: u64,
}

/// The parts of a health message whose change triggers a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HealthSummary {
    /// `serving`.
    serving: bool,
    /// `realtime_stats.health_error`.
    error: String,
    /// `target.tablet_type`.
    tablet_type: i32,
    /// `primary_term_start_timestamp`.
    term: i64,
}

impl HealthSummary {
    fn of(h: &StreamHealthResponse) -> Self {
        HealthSummary {
            serving: h.serving,
            error: h
                .realtime_stats
                .as_ref()
                .map(|s| s.health_error.clone())
                .unwrap_or_default(),
            tablet_type: h.target.as_ref().map_or(0, |t| t.tablet_type),
            term: h.primary_term_start_timestamp,
        }
    }
}

/// Where the answer to a refresh request goes.
type RefreshReply = oneshot::Sender<Result<Arc<TabletState>, DiscoveryError>>;

/// A refresh request waiting for a poll.
#[derive(Debug)]
struct Waiter {
    /// Answer after a poll with at least this sequence number finished.
    min_seq: u64,
    /// Where the answer goes.
    reply: RefreshReply,
}

/// What a poll task returns.
struct PollOutcome {
    /// The tablet.
    alias: TabletAlias,
    /// The poll's sequence number (increasing in start order).
    seq: u64,
    /// When the poll started.
    started: Instant,
    /// When it finished.
    finished: Instant,
    /// The answer.
    result: Result<FullStatus, TabletError>,
}

/// Progress of the first full topology load.
#[derive(Debug, Default)]
struct TopoLoad {
    /// Cells named by the last global snapshot; `None` = no global snapshot yet.
    cells_expected: Option<BTreeSet<String>>,
    /// Cells whose tablets were loaded at least once.
    cells_loaded: BTreeSet<String>,
    /// Whether the first full load happened (stays true).
    complete: bool,
}

/// A re-list for a new sharing assignment: done once the new watch has
/// listed the global records and every cell, and every tablet it added was
/// polled once; then the assignment's generation is reported applied.
#[derive(Debug, Default)]
struct Relist {
    /// The assignment generation being loaded.
    generation: u64,
    /// Cells named by the re-list's global snapshot; `None` = not yet seen.
    cells_expected: Option<BTreeSet<String>>,
    /// Cells re-listed since.
    cells_loaded: BTreeSet<String>,
    /// Tablets added since, not yet polled.
    waiting: HashSet<TabletAlias>,
}

/// Discovery rounds: every watched tablet polled once.
#[derive(Debug, Default)]
struct Rounds {
    /// Current round number (tablets with `round_done < id` still count).
    id: u64,
    /// Tablets still to complete the current round.
    remaining: usize,
    /// Start of the current round; `None` = no round running (topology not
    /// loaded yet, or no tablets).
    started: Option<Instant>,
}

/// Compact view of what analysis cares about in a tablet, compared before
/// and after a change to decide whether its shard changed.
#[derive(Debug, PartialEq, Eq)]
struct Signature {
    /// 0 unknown, 1 reachable, 2 unreachable.
    reachability: u8,
    /// Whether an observation exists.
    observed: bool,
    /// Observed type, read-only, thread states, semi-sync and disk flags.
    flags: (i32, bool, i32, i32, [bool; 5], bool),
    /// Hash of the replication source `host:port` and errant GTID text.
    source_and_errant: u64,
    /// Primary health window verdict.
    primary_unhealthy: bool,
}

impl Signature {
    fn of(t: &TabletState, now: Instant, window: Duration) -> Self {
        let reachability = match t.reachability {
            Reachability::Unknown => 0,
            Reachability::Reachable { .. } => 1,
            Reachability::Unreachable { .. } => 2,
        };
        let mut hasher = DefaultHasher::new();
        let flags = match &t.observation {
            Some(o) => {
                o.source_host().hash(&mut hasher);
                o.source_port().hash(&mut hasher);
                // Hash the errant set's text without allocating it.
                let _ = write!(HashWriter(&mut hasher), "{}", o.errant_gtids);
                let (io, sql) = o
                    .replication
                    .as_ref()
                    .map_or((0, 0), |r| (r.io_thread.to_wire(), r.sql_thread.to_wire()));
                let s = &o.semi_sync;
                (
                    o.tablet_type as i32,
                    o.read_only,
                    io,
                    sql,
                    [
                        s.primary_enabled,
                        s.primary_status,
                        s.replica_enabled,
                        s.replica_status,
                        s.blocked,
                    ],
                    t.disk_stalled,
                )
            }
            None => (0, false, 0, 0, [false; 5], t.disk_stalled),
        };
        Signature {
            reachability,
            observed: t.observation.is_some(),
            flags,
            source_and_errant: hasher.finish(),
            primary_unhealthy: t.primary_health.is_unhealthy(now, window),
        }
    }
}

/// Feeds formatted text into a hasher.
struct HashWriter<'a>(&'a mut DefaultHasher);

impl std::fmt::Write for HashWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

/// The owner of the cluster model. Build with [`Discovery::new`], run with
/// [`Discovery::spawn`].
pub struct Discovery {
    /// Settings.
    config: DiscoveryConfig,
    /// The topology (watched; restarted for the safety-net re-list).
    topo: Topo,
    /// Polls go through it.
    tmc: Arc<dyn TabletManager>,
    /// One health stream per watched tablet.
    streams: HealthStreams,
    /// Events of the health streams.
    health_rx: mpsc::Receiver<HealthEvent>,
    /// Commands from handles.
    commands_rx: mpsc::Receiver<Command>,
    /// The working model; published by cloning (shards and tablets are `Arc`s
    /// shared with the published snapshots, copied on write).
    model: ClusterSnapshot,
    /// Bookkeeping per watched tablet; its keys are exactly the tablets in `model`.
    tablets: HashMap<TabletAlias, TabletAux>,
    /// Shards that have a topo shard record (others exist only for their tablets).
    shard_records: HashSet<KeyspaceShard>,
    /// When to poll what.
    schedule: PollSchedule,
    /// Polls in flight.
    polls: JoinSet<PollOutcome>,
    /// Primary pings and replica probes.
    liveness: Liveness,
    /// Sequence number of the next poll.
    next_seq: u64,
    /// Refresh requests waiting for a poll, by tablet.
    waiters: HashMap<TabletAlias, Vec<Waiter>>,
    /// Refresh requests whose poll is done, answered at the next publish.
    answered: Vec<(TabletAlias, RefreshReply)>,
    /// Publishes snapshots.
    snapshot_tx: watch::Sender<Arc<ClusterSnapshot>>,
    /// Sends shard-change notifications.
    changes_tx: broadcast::Sender<ShardChange>,
    /// Readiness flag.
    ready_tx: watch::Sender<bool>,
    /// First topology load progress.
    load: TopoLoad,
    /// Discovery rounds.
    rounds: Rounds,
    /// Whether the model changed since the last publish.
    dirty: bool,
    /// Shards to notify at the next publish, with their first cause.
    changed: BTreeMap<KeyspaceShard, ChangeCause>,
    /// When the last snapshot was published.
    last_publish: Option<Instant>,
    /// Counters.
    metrics: Arc<DiscoveryMetrics>,
    /// With `--sharing`: the assignments to follow.
    assignment_rx: Option<watch::Receiver<Arc<crate::sharing::Assignment>>>,
    /// With `--sharing`: the assignment generation loaded (re-listed and
    /// polled once).
    applied_tx: watch::Sender<u64>,
    /// The re-list in progress for a new assignment.
    relist: Option<Relist>,
    /// Stops the loop, the polls and the streams.
    cancel: CancellationToken,
}

impl Discovery {
    /// Builds discovery (not running yet) and its handle. `tmc` answers
    /// polls; `health` opens health streams (both usually the same
    /// [`crate::tablet::GrpcTabletManager`]).
    pub fn new(
        config: DiscoveryConfig,
        topo: Topo,
        tmc: Arc<dyn TabletManager>,
        health: Arc<dyn HealthSource>,
    ) -> (Discovery, DiscoveryHandle) {
        let cancel = CancellationToken::new();
        let (health_tx, health_rx) = mpsc::channel(HEALTH_EVENT_BUFFER);
        let streams = HealthStreams::new(health, health_tx, config.streams.clone(), cancel.child_token());
        let metrics = Arc::new(DiscoveryMetrics {
            streams: Arc::clone(streams.metrics()),
            ..DiscoveryMetrics::default()
        });
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(ClusterSnapshot::default()));
        let (changes_tx, _) = broadcast::channel(CHANGE_BUFFER);
        let (ready_tx, ready_rx) = watch::channel(false);
        let (applied_tx, applied_rx) = watch::channel(0u64);
        let mut config = config;
        let assignment_rx = config.sharing.take();
        let relist = None;
        let handle = DiscoveryHandle {
            applied: applied_rx,
            commands: commands_tx,
            snapshots: snapshot_rx,
            changes: changes_tx.clone(),
            ready: ready_rx,
            metrics: Arc::clone(&metrics),
        };
        let liveness = Liveness::new(config.liveness.clone(), crate::clock::now());
        let discovery = Discovery {
            schedule: PollSchedule::new(config.schedule.clone()),
            config,
            topo,
            tmc,
            streams,
            health_rx,
            commands_rx,
            model: ClusterSnapshot::default(),
            tablets: HashMap::new(),
            shard_records: HashSet::new(),
            polls: JoinSet::new(),
            liveness,
            next_seq: 1,
            waiters: HashMap::new(),
            answered: Vec::new(),
            snapshot_tx,
            changes_tx,
            ready_tx,
            load: TopoLoad::default(),
            rounds: Rounds::default(),
            dirty: false,
            changed: BTreeMap::new(),
            last_publish: None,
            metrics,
            assignment_rx,
            applied_tx,
            relist,
            cancel,
        };
        (discovery, handle)
    }

    /// Runs the owner loop in a task; dropping the returned value stops it.
    pub fn spawn(self) -> DiscoveryTask {
        let cancel = self.cancel.clone();
        let task = tokio::spawn(self.run());
        DiscoveryTask {
            cancel,
            task: Some(task),
        }
    }

    /// The owner loop; returns when cancelled.
    async fn run(mut self) {
        // `--sharing`: nothing is loaded before this instance knows its share.
        if let Some(rx) = self.assignment_rx.as_mut() {
            let first = tokio::select! {
                () = self.cancel.cancelled() => return,
                a = rx.wait_for(|a| a.generation > 0) => a.map(|a| Arc::clone(&a)),
            };
            let Ok(a) = first else {
                return;
            };
            self.relist = Some(Relist {
                generation: a.generation,
                ..Relist::default()
            });
            self.config.filter.set_assignment(a);
        }
        let mut watcher: Option<TopoWatcher> = Some(self.topo.watch());
        let mut watcher_restart_at: Option<Instant> = None;
        let mut refresh = self.config.topo_refresh_interval;
        let mut next_relist = (!refresh.is_zero()).then(|| crate::clock::now() + refresh);
        // Timer-driven dispatches happen at most once per tick, so polls
        // falling due close together start together (fewer wake-ups);
        // event-driven work (new tablets, triggers) is dispatched at once.
        let tick = self.config.dispatch_tick;
        let mut last_tick = crate::clock::now();
        loop {
            let now = crate::clock::now();
            self.dispatch(now);
            self.maybe_publish(now);
            let wake = self.schedule.next_wakeup().map(|t| t.max(last_tick + tick));
            // (Dirty and never published cannot happen here: `maybe_publish` just ran.)
            let publish_at = self.publish_due();
            let liveness_at = self.liveness.next_wakeup();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                // Health events before poll results: they are what detects a
                // failure in tens of milliseconds, and they are few (one per
                // change, and per tablet every ~20 s when idle). With poll
                // results first, a loop that always had a result ready (1 s
                // polls of 10,000 tablets, ~4,000 results a second) left the
                // events waiting in their channel for up to seconds. A fixed
                // order still lets a constant stream starve the branches
                // below it; an unbiased select cost ~15 points of a core at
                // 10,000 tablets (it polls the timers too; BENCHMARKS.md).
                Some(event) = self.health_rx.recv() => self.on_health(event),
                Some(outcome) = self.polls.join_next(), if !self.polls.is_empty() => match outcome {
                    Ok(outcome) => self.on_poll(outcome),
                    // Poll tasks catch their panics; a join error means an abort at shutdown.
                    Err(e) => tracing::debug!("poll task ended abnormally: {e}"),
                },
                Some(outcome) = self.liveness.pings.join_next(), if !self.liveness.pings.is_empty() => {
                    if let Ok(outcome) = outcome {
                        self.on_ping(outcome);
                    }
                }
                Some(_) = self.liveness.probe_calls.join_next(), if !self.liveness.probe_calls.is_empty() => {}
                () = sleep_until(liveness_at) => {
                    let now = crate::clock::now();
                    self.liveness.tick(now, &self.tmc, self.model.shards.values());
                }
                event = next_topo_event(watcher.as_mut()) => match event {
                    Some(event) => self.on_topo_event(event),
                    None => {
                        tracing::error!("topology watch stopped; restarting it");
                        watcher = None;
                        watcher_restart_at = Some(crate::clock::now() + WATCH_RESTART_DELAY);
                    }
                },
                Some(command) = self.commands_rx.recv() => {
                    self.on_command(command);
                    // `--topo-information-refresh-duration` is dynamic.
                    if self.config.topo_refresh_interval != refresh {
                        refresh = self.config.topo_refresh_interval;
                        next_relist = (!refresh.is_zero()).then(|| crate::clock::now() + refresh);
                    }
                }
                () = sleep_until(wake) => {
                    last_tick = crate::clock::now();
                    self.on_slow_polls(last_tick);
                }
                () = sleep_until(publish_at) => {}
                assignment = next_assignment(self.assignment_rx.as_mut()) => match assignment {
                    Some(a) => if self.set_assignment(a) {
                        // The newly watched shards' records come from a
                        // fresh listing, swapped in like any resync.
                        watcher = Some(self.topo.watch());
                    },
                    None => self.assignment_rx = None,
                },
                () = sleep_until(watcher_restart_at) => {
                    watcher = Some(self.topo.watch());
                    watcher_restart_at = None;
                }
                () = sleep_until(next_relist) => {
                    // The safety net: a new watch re-lists everything and
                    // sends full snapshots, swapped in like any resync.
                    tracing::debug!("safety-net topology re-list");
                    watcher = Some(self.topo.watch());
                    next_relist = Some(crate::clock::now() + refresh);
                }
            }
        }
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.reply.send(Err(DiscoveryError::Stopped));
            }
        }
    }

    // ---- polls ----

    /// Starts the polls the schedule allows now.
    fn dispatch(&mut self, now: Instant) {
        for alias in self.schedule.start_ready(now) {
            let Some(state) = self.tablet_state(&alias).cloned() else {
                self.schedule.remove(&alias);
                continue;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            if state.is_shut_down() {
                // Gracefully shut down (tablet_shutdown_time set): not polled,
                // as in Go VTOrc; its last state stays as it was.
                self.schedule
                    .finished(&alias, PollEnd::Answered, &mut rand::rng());
                self.round_progress(&alias, now);
                self.complete_waiters(&alias, seq);
                continue;
            }
            self.metrics.polls_started.fetch_add(1, Ordering::Relaxed);
            let tmc = Arc::clone(&self.tmc);
            let timeout = self.config.poll_timeout;
            self.polls.spawn(async move {
                let started = crate::clock::now();
                let client = tmc.with_timeout(timeout);
                let call = client.full_status(&state.tablet);
                let result = match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(result) => result,
                    Err(_) => Err(TabletError::invalid_response(
                        &alias,
                        "FullStatus",
                        "the poll panicked (bug); treated as a failed poll",
                    )),
                };
                PollOutcome {
                    alias,
                    seq,
                    started,
                    finished: crate::clock::now(),
                    result,
                }
            });
        }
    }

    /// Polls running past the slow threshold (and, every `slow_after`, still
    /// running): record the hung attempt at `now`.
    fn on_slow_polls(&mut self, now: Instant) {
        for (alias, newly) in self.schedule.mark_slow(now) {
            if let Some(t) = self.tablet_state_mut(&alias) {
                t.record_poll_in_progress(now);
            }
            self.dirty = true;
            if newly {
                self.metrics.polls_slow.fetch_add(1, Ordering::Relaxed);
                self.round_progress(&alias, now);
            }
        }
    }

    /// Applies one poll result.
    fn on_poll(&mut self, outcome: PollOutcome) {
        let PollOutcome {
            alias,
            seq,
            started,
            finished: now,
            result,
        } = outcome;
        let end = match &result {
            Err(e) if e.is_unreachable() => PollEnd::Unreachable,
            _ => PollEnd::Answered,
        };
        if !self.schedule.finished(&alias, end, &mut rand::rng()) {
            return; // forgotten meanwhile
        }
        self.metrics
            .poll_latency
            .record(now.saturating_duration_since(started));
        match &result {
            Ok(_) => {
                self.metrics.polls_succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.metrics.poll_failed(e.kind());
                tracing::debug!(tablet = %alias, "failed to poll tablet: {e}");
            }
        }
        let window = self.config.primary_health_window;
        let disk_stalled_is_failure = self.config.disk_stalled_is_failure;
        let Some(shard_key) = self.tablets.get(&alias).map(|a| a.shard.clone()) else {
            return;
        };
        let Some(shard) = self.model.shards.get_mut(&shard_key).map(Arc::make_mut) else {
            return;
        };
        let Ok(index) = shard.tablets.binary_search_by(|t| t.alias().cmp(&alias)) else {
            return;
        };
        let before = Signature::of(&shard.tablets[index], now, window);
        let success = {
            let t = Arc::make_mut(&mut shard.tablets[index]);
            let success = match result {
                Ok(fs) if fs.disk_stalled && disk_stalled_is_failure => {
                    t.record_poll_failure(now, "disk stalled".into(), true, true);
                    false
                }
                Ok(fs) => {
                    let observation = Observation::from_full_status(&fs);
                    if !observation.parse_errors.is_empty() {
                        tracing::warn!(
                            tablet = %alias,
                            errors = ?observation.parse_errors,
                            "tablet reported positions that do not parse"
                        );
                    }
                    t.record_poll_success(now, observation);
                    true
                }
                Err(e) => {
                    t.record_poll_failure(now, e.to_string(), false, false);
                    t.note_refused(now, e.is_refused());
                    false
                }
            };
            if t.tablet_type() == TabletType::Primary {
                t.primary_health.record(now, success, window);
            }
            success
        };
        if success {
            let errant = shard.errant_gtids_of(&alias);
            let t = Arc::make_mut(&mut shard.tablets[index]);
            if let Some(o) = t.observation_mut() {
                match errant {
                    Ok(errant) => o.errant_gtids = errant,
                    Err(e) => o.parse_errors.push(format!("errant GTIDs: {e}")),
                }
            }
        }
        let after = Signature::of(&shard.tablets[index], now, window);
        self.dirty = true;
        if before != after {
            self.mark_changed(&shard_key, ChangeCause::Poll);
        }
        self.round_progress(&alias, now);
        self.complete_waiters(&alias, seq);
    }

    // ---- liveness ----

    /// Applies one ping answer: a primary that did not answer has failed a
    /// check; it is polled at once and its replicas are probed.
    fn on_ping(&mut self, outcome: PingOutcome) {
        if !self.liveness.ping_done(&outcome) {
            return;
        }
        let Some(error) = outcome.error else {
            return;
        };
        let alias = outcome.alias;
        let now = outcome.at;
        let Some(shard_key) = self.tablets.get(&alias).map(|a| a.shard.clone()) else {
            return;
        };
        tracing::info!(tablet = %alias, "primary did not answer a ping: {error}");
        self.metrics.primary_ping_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.tablet_state_mut(&alias) {
            t.record_check_failure(now, format!("Ping: {error}"), error.is_refused());
        }
        self.dirty = true;
        self.trigger_poll(&alias, ChangeCause::Poll);
        let Some(shard) = self.model.shards.get(&shard_key).cloned() else {
            return;
        };
        for replica in self.liveness.start_probe(now, &shard, &alias, &self.tmc) {
            self.trigger_poll(&replica, ChangeCause::Poll);
        }
    }

    // ---- health ----

    /// Applies one health stream event.
    fn on_health(&mut self, event: HealthEvent) {
        if !self.streams.is_current(&event) {
            return;
        }
        self.metrics.health_events.fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::now();
        let alias = event.alias;
        let Some(aux) = self.tablets.get_mut(&alias) else {
            return;
        };
        match event.kind {
            HealthEventKind::Connected { after_break } => {
                if after_break {
                    tracing::info!(tablet = %alias, "health stream reconnected");
                    self.trigger_poll(&alias, ChangeCause::Health);
                }
            }
            HealthEventKind::Health(h) => {
                let summary = HealthSummary::of(&h);
                let changed = aux.health.as_ref().is_some_and(|old| *old != summary);
                let stream_health = if summary.error.is_empty() {
                    StreamHealth::Healthy {
                        since: now,
                        serving: summary.serving,
                    }
                } else {
                    StreamHealth::Unhealthy {
                        since: now,
                        reason: summary.error.clone(),
                    }
                };
                let non_primary = summary.tablet_type != TabletType::Primary as i32;
                aux.health = Some(summary);
                let shard = aux.shard.clone();
                self.set_stream_health(&alias, stream_health);
                let report = match h.realtime_stats.as_ref() {
                    Some(stats) if non_primary && stats.health_error.is_empty() => Some(HeartbeatReport {
                        lag_seconds: stats.replication_lag_seconds,
                        at: now,
                    }),
                    _ => None,
                };
                self.set_heartbeat(&alias, &shard, report);
                if changed {
                    tracing::debug!(tablet = %alias, serving = h.serving, "tablet health changed");
                    self.trigger_poll(&alias, ChangeCause::Health);
                }
            }
            HealthEventKind::Broken { error } => {
                tracing::info!(tablet = %alias, "health stream broke: {error}");
                self.set_stream_health(
                    &alias,
                    StreamHealth::Unreachable {
                        since: now,
                        reason: error.to_string(),
                    },
                );
                self.trigger_poll(&alias, ChangeCause::Health);
            }
        }
    }

    /// Stores a replica's heartbeat report. Only a probed shard needs every
    /// report (freshness is evidence then, and analysis re-runs); elsewhere
    /// only a changed lag is stored, so steady streams cost nothing.
    fn set_heartbeat(&mut self, alias: &TabletAlias, shard: &KeyspaceShard, report: Option<HeartbeatReport>) {
        let probing = self.liveness.is_probing(shard);
        let Some(current) = self.tablet_state(alias) else {
            return;
        };
        let unchanged = match (&current.heartbeat, &report) {
            (None, None) => true,
            (Some(a), Some(b)) => a.lag_seconds == b.lag_seconds,
            _ => false,
        };
        if unchanged && !probing {
            return;
        }
        if let Some(t) = self.tablet_state_mut(alias) {
            t.heartbeat = report;
        }
        self.dirty = true;
        if probing {
            self.mark_changed(shard, ChangeCause::Health);
        }
    }

    /// Stores the stream's view, keeping `since` while the state is unchanged.
    fn set_stream_health(&mut self, alias: &TabletAlias, new: StreamHealth) {
        let Some(current) = self.tablet_state(alias) else {
            return;
        };
        let same = match (&current.stream_health, &new) {
            (StreamHealth::Healthy { serving: a, .. }, StreamHealth::Healthy { serving: b, .. }) => a == b,
            (StreamHealth::Unhealthy { reason: a, .. }, StreamHealth::Unhealthy { reason: b, .. }) => a == b,
            (StreamHealth::Unreachable { .. }, StreamHealth::Unreachable { .. }) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(t) = self.tablet_state_mut(alias) {
            t.stream_health = new;
        }
        self.dirty = true;
    }

    /// Polls a tablet as soon as possible and reports its shard changed.
    fn trigger_poll(&mut self, alias: &TabletAlias, cause: ChangeCause) {
        if self.schedule.poll_now(alias) {
            self.metrics.polls_triggered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(shard) = self.tablets.get(alias).map(|a| a.shard.clone()) {
            self.mark_changed(&shard, cause);
        }
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Refresh { alias, reply } => {
                if !self.tablets.contains_key(&alias) {
                    let _ = reply.send(Err(DiscoveryError::UnknownTablet(alias)));
                    return;
                }
                self.waiters.entry(alias.clone()).or_default().push(Waiter {
                    min_seq: self.next_seq,
                    reply,
                });
                self.schedule.poll_now(&alias);
            }
            Command::SetDynamic {
                poll_interval,
                topo_refresh_interval,
                disk_stalled_is_failure,
            } => {
                self.config.schedule.poll_interval = poll_interval;
                self.schedule.set_poll_interval(poll_interval);
                self.config.topo_refresh_interval = topo_refresh_interval;
                self.config.disk_stalled_is_failure = disk_stalled_is_failure;
            }
        }
    }

    /// Moves the refresh requests satisfied by poll `seq` to the answer list.
    fn complete_waiters(&mut self, alias: &TabletAlias, seq: u64) {
        let Some(list) = self.waiters.get_mut(alias) else {
            return;
        };
        let mut i = 0;
        while i < list.len() {
            if list[i].min_seq <= seq {
                let w = list.swap_remove(i);
                self.answered.push((alias.clone(), w.reply));
            } else {
                i += 1;
            }
        }
        if list.is_empty() {
            self.waiters.remove(alias);
        }
        self.dirty = true;
    }

    // ---- topology ----

    fn on_topo_event(&mut self, event: TopoEvent) {
        self.metrics.topo_events.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = self.relist.as_mut() {
            match &event {
                TopoEvent::GlobalResync(snapshot) => {
                    r.cells_expected = Some(snapshot.cells.keys().cloned().collect());
                }
                TopoEvent::CellResync(snapshot) => {
                    r.cells_loaded.insert(snapshot.cell.clone());
                }
                TopoEvent::CellDeleted { cell } => {
                    if let Some(expected) = r.cells_expected.as_mut() {
                        expected.remove(cell);
                    }
                }
                _ => {}
            }
        }
        self.on_topo_event_inner(event);
        self.check_relist();
    }

    fn on_topo_event_inner(&mut self, event: TopoEvent) {
        match event {
            TopoEvent::GlobalResync(snapshot) => self.apply_global(snapshot),
            TopoEvent::CellResync(snapshot) => self.apply_cell(snapshot),
            TopoEvent::CellChanged { .. } => {}
            TopoEvent::CellDeleted { cell } => {
                let gone: Vec<TabletAlias> =
                    self.tablets.keys().filter(|a| a.cell == cell).cloned().collect();
                for alias in gone {
                    self.forget_tablet(&alias);
                }
                self.load.cells_loaded.remove(&cell);
                if let Some(expected) = self.load.cells_expected.as_mut() {
                    expected.remove(&cell);
                }
                self.check_loaded();
            }
            TopoEvent::KeyspaceChanged { name, keyspace } => self.put_keyspace(&name, Some(&keyspace.value)),
            TopoEvent::KeyspaceDeleted { name } => self.put_keyspace(&name, None),
            TopoEvent::ShardChanged {
                keyspace_shard,
                shard,
            } => self.put_shard_record(&keyspace_shard, Some(&shard.value)),
            TopoEvent::ShardDeleted { keyspace_shard } => self.put_shard_record(&keyspace_shard, None),
            TopoEvent::TabletChanged { tablet, .. } => self.put_tablet(tablet.value),
            TopoEvent::TabletDeleted { alias, .. } => self.forget_tablet(&alias),
            TopoEvent::Corrupt(error) => self.on_corrupt(error),
            TopoEvent::WatchError { scope, error } => {
                let scope = match scope {
                    WatchScope::Global => "global".to_string(),
                    WatchScope::Cell(cell) => cell,
                };
                tracing::warn!(scope = %scope, "topology watch failed, re-listing: {error}");
            }
        }
    }

    /// Replaces keyspaces and shard records with a full global listing.
    fn apply_global(&mut self, snapshot: GlobalSnapshot) {
        self.metrics.topo_resyncs.fetch_add(1, Ordering::Relaxed);
        for e in &snapshot.errors {
            tracing::warn!("skipping topology record: {e}");
        }
        for name in missing_from(self.model.keyspaces.keys(), |k| {
            snapshot.keyspaces.contains_key(k)
        }) {
            self.put_keyspace(&name, None);
        }
        for (name, keyspace) in &snapshot.keyspaces {
            self.put_keyspace(name, Some(&keyspace.value));
        }
        for key in missing_from(self.shard_records.iter(), |k| snapshot.shards.contains_key(k)) {
            self.put_shard_record(&key, None);
        }
        for (key, shard) in &snapshot.shards {
            self.put_shard_record(key, Some(&shard.value));
        }
        // A cell missing from the listing is gone: so are its tablets.
        for alias in missing_from(self.tablets.keys(), |a| snapshot.cells.contains_key(&a.cell)) {
            self.forget_tablet(&alias);
        }
        self.load.cells_loaded.retain(|c| snapshot.cells.contains_key(c));
        self.load.cells_expected = Some(snapshot.cells.keys().cloned().collect());
        self.check_loaded();
    }

    /// Replaces one cell's tablets with a full listing of the cell.
    fn apply_cell(&mut self, snapshot: CellSnapshot) {
        self.metrics.topo_resyncs.fetch_add(1, Ordering::Relaxed);
        for e in &snapshot.errors {
            tracing::warn!(cell = %snapshot.cell, "skipping tablet record: {e}");
        }
        let present: HashSet<&TabletAlias> = snapshot
            .tablets
            .iter()
            .filter_map(|t| t.value.alias.as_ref())
            .collect();
        let gone: Vec<TabletAlias> = self
            .tablets
            .keys()
            .filter(|a| a.cell == snapshot.cell && !present.contains(a))
            .cloned()
            .collect();
        for alias in gone {
            self.forget_tablet(&alias);
        }
        for tablet in snapshot.tablets {
            self.put_tablet(tablet.value);
        }
        self.load.cells_loaded.insert(snapshot.cell);
        self.check_loaded();
    }

    /// A record that no longer decodes: drop what we held for it.
    fn on_corrupt(&mut self, error: TopoError) {
        tracing::warn!("dropping corrupt topology record: {error}");
        let TopoError::Corrupt { key, .. } = &error else {
            return;
        };
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            [.., "tablets", alias, "Tablet"] => {
                if let Ok(alias) = TabletAlias::parse(alias) {
                    self.forget_tablet(&alias);
                }
            }
            [.., "keyspaces", keyspace, "shards", shard, "Shard"] => {
                self.put_shard_record(&KeyspaceShard::new(*keyspace, *shard), None);
            }
            [.., "keyspaces", keyspace, "Keyspace"] => self.put_keyspace(keyspace, None),
            _ => {}
        }
    }

    /// Sets (`Some`) or removes (`None`) a keyspace record.
    fn put_keyspace(&mut self, name: &str, record: Option<&Keyspace>) {
        if !self.config.filter.watches_keyspace(name) {
            return;
        }
        let changed = match record {
            Some(record) => {
                let info = KeyspaceInfo::from_record(name, record);
                if self.model.keyspaces.get(name).is_some_and(|k| **k == info) {
                    false
                } else {
                    self.model.put_keyspace(info);
                    true
                }
            }
            None => self.model.keyspaces.remove(name).is_some(),
        };
        if changed {
            self.dirty = true;
            let shards: Vec<KeyspaceShard> = self
                .model
                .shards
                .keys()
                .filter(|k| k.keyspace == name)
                .cloned()
                .collect();
            for key in shards {
                self.mark_changed(&key, ChangeCause::Topology);
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) a shard record.
    fn put_shard_record(&mut self, key: &KeyspaceShard, record: Option<&Shard>) {
        if !self.config.filter.watches_shard(&key.keyspace, &key.shard) {
            return;
        }
        let fresh = match record {
            Some(r) => {
                self.shard_records.insert(key.clone());
                ShardState::from_record(key.keyspace.clone(), key.shard.clone(), r, Vec::new())
            }
            None => {
                if !self.shard_records.remove(key) {
                    return;
                }
                if self.model.shards.get(key).is_some_and(|s| s.tablets.is_empty()) {
                    self.model.shards.remove(key);
                    self.dirty = true;
                    return;
                }
                ShardState::from_record(
                    key.keyspace.clone(),
                    key.shard.clone(),
                    &Shard::default(),
                    Vec::new(),
                )
            }
        };
        let shard = self.ensure_shard(key);
        let same = shard.primary_alias == fresh.primary_alias
            && shard.primary_term_start == fresh.primary_term_start
            && shard.emergency_reparent_disabled == fresh.emergency_reparent_disabled;
        if same {
            return;
        }
        let shard = Arc::make_mut(shard);
        shard.primary_alias = fresh.primary_alias;
        shard.primary_term_start = fresh.primary_term_start;
        shard.emergency_reparent_disabled = fresh.emergency_reparent_disabled;
        self.dirty = true;
        self.mark_changed(key, ChangeCause::Topology);
    }

    /// The shard, created empty if needed.
    fn ensure_shard(&mut self, key: &KeyspaceShard) -> &mut Arc<ShardState> {
        self.model.shards.entry(key.clone()).or_insert_with(|| {
            Arc::new(ShardState::from_record(
                key.keyspace.clone(),
                key.shard.clone(),
                &Shard::default(),
                Vec::new(),
            ))
        })
    }

    /// Adds or updates a tablet from its topo record.
    fn put_tablet(&mut self, record: Tablet) {
        let Some(alias) = record.alias.clone() else {
            tracing::warn!("ignoring a tablet record without alias");
            return;
        };
        if !self.config.filter.watches_tablet(&record) {
            if self.tablets.contains_key(&alias) {
                self.forget_tablet(&alias);
            }
            return;
        }
        let key = KeyspaceShard::new(record.keyspace.clone(), record.shard.clone());
        let now = crate::clock::now();
        match self.tablets.get(&alias).map(|a| a.shard.clone()) {
            None => {
                self.streams.subscribe(&record);
                let state = Arc::new(TabletState::new(record));
                Arc::make_mut(self.ensure_shard(&key)).upsert_tablet(state);
                self.tablets.insert(
                    alias.clone(),
                    TabletAux {
                        shard: key.clone(),
                        health: None,
                        round_done: self.rounds.id,
                    },
                );
                self.schedule.add(&alias);
                if let Some(r) = self.relist.as_mut() {
                    r.waiting.insert(alias.clone());
                }
                tracing::debug!(tablet = %alias, shard = %key, "tablet discovered");
                if self.load.complete && self.rounds.started.is_none() {
                    self.start_round(now);
                }
            }
            Some(old_key) => {
                let Some(current) = self.tablet_state(&alias) else {
                    return;
                };
                if current.tablet == record {
                    return;
                }
                self.streams.subscribe(&record);
                if old_key == key {
                    if let Some(t) = self.tablet_state_mut(&alias) {
                        t.tablet = record;
                    }
                } else {
                    // Moved to another shard: keep what was observed.
                    let mut state = self
                        .remove_from_shard(&old_key, &alias)
                        .unwrap_or_else(|| Arc::new(TabletState::new(record.clone())));
                    Arc::make_mut(&mut state).tablet = record;
                    Arc::make_mut(self.ensure_shard(&key)).upsert_tablet(state);
                    if let Some(aux) = self.tablets.get_mut(&alias) {
                        aux.shard = key.clone();
                    }
                    self.mark_changed(&old_key, ChangeCause::Topology);
                }
            }
        }
        self.dirty = true;
        self.mark_changed(&key, ChangeCause::Topology);
        self.update_gauges();
    }

    /// Forgets a tablet: model, schedule, stream, cached channel, waiters.
    fn forget_tablet(&mut self, alias: &TabletAlias) {
        let Some(aux) = self.tablets.remove(alias) else {
            return;
        };
        if let Some(r) = self.relist.as_mut() {
            r.waiting.remove(alias);
        }
        self.remove_from_shard(&aux.shard, alias);
        self.schedule.remove(alias);
        self.streams.unsubscribe(alias);
        self.liveness.forget(alias);
        self.tmc.forget(alias);
        if let Some(waiters) = self.waiters.remove(alias) {
            for w in waiters {
                let _ = w.reply.send(Err(DiscoveryError::UnknownTablet(alias.clone())));
            }
        }
        if self.rounds.started.is_some() && aux.round_done < self.rounds.id {
            self.rounds.remaining = self.rounds.remaining.saturating_sub(1);
            if self.rounds.remaining == 0 {
                self.complete_round(crate::clock::now());
            }
        }
        tracing::debug!(tablet = %alias, "tablet forgotten");
        self.dirty = true;
        self.mark_changed(&aux.shard, ChangeCause::Topology);
        self.update_gauges();
    }

    /// Removes a tablet from a shard's list; drops the shard when it has
    /// neither tablets nor a record.
    fn remove_from_shard(&mut self, key: &KeyspaceShard, alias: &TabletAlias) -> Option<Arc<TabletState>> {
        let shard = self.model.shards.get_mut(key)?;
        shard.tablet(alias)?;
        let removed = Arc::make_mut(shard).remove_tablet(alias);
        if shard.tablets.is_empty() && !self.shard_records.contains(key) {
            self.model.shards.remove(key);
        }
        removed
    }

    // ---- sharing ----

    /// Applies a new assignment: shards no longer watched are dropped at
    /// once (each in one step, so no snapshot shows half a shard); returns
    /// whether a re-list is needed to load newly watched shards.
    fn set_assignment(&mut self, a: Arc<crate::sharing::Assignment>) -> bool {
        let previous = self.config.filter.assignment().cloned();
        self.config.filter.set_assignment(Arc::clone(&a));
        let gone: Vec<KeyspaceShard> = self
            .model
            .shards
            .keys()
            .filter(|k| !self.config.filter.watches_shard(&k.keyspace, &k.shard))
            .cloned()
            .collect();
        let dropped = gone.len();
        for key in gone {
            self.drop_shard(&key);
        }
        let shrink = previous.is_some_and(|p| a.is_shrink_of(&p));
        tracing::info!(
            generation = a.generation,
            dropped_shards = dropped,
            relist = !shrink,
            "sharing: applying a new assignment"
        );
        if shrink {
            match self.relist.as_mut() {
                Some(r) => r.generation = a.generation,
                None => {
                    self.applied_tx.send_replace(a.generation);
                }
            }
            return false;
        }
        self.relist = Some(Relist {
            generation: a.generation,
            ..Relist::default()
        });
        true
    }

    /// Forgets a whole shard: its record and every tablet.
    fn drop_shard(&mut self, key: &KeyspaceShard) {
        self.shard_records.remove(key);
        let aliases: Vec<TabletAlias> = self
            .model
            .shards
            .get(key)
            .map(|s| s.tablets.iter().map(|t| t.alias().clone()).collect())
            .unwrap_or_default();
        for alias in aliases {
            self.forget_tablet(&alias);
        }
        if self.model.shards.remove(key).is_some() {
            self.dirty = true;
        }
        self.update_gauges();
    }

    /// Reports the re-listed assignment applied once it is loaded.
    fn check_relist(&mut self) {
        let Some(r) = &self.relist else {
            return;
        };
        let listed = r
            .cells_expected
            .as_ref()
            .is_some_and(|e| e.is_subset(&r.cells_loaded));
        if listed && r.waiting.is_empty() {
            let generation = r.generation;
            self.relist = None;
            tracing::info!(
                generation,
                tablets = self.tablets.len(),
                shards = self.model.shards.len(),
                "sharing: assignment loaded"
            );
            self.applied_tx.send_replace(generation);
        }
    }

    // ---- readiness, rounds ----

    /// Marks the first full topology load once every expected cell was listed.
    fn check_loaded(&mut self) {
        if self.load.complete {
            return;
        }
        let Some(expected) = &self.load.cells_expected else {
            return;
        };
        if expected.is_subset(&self.load.cells_loaded) {
            self.load.complete = true;
            tracing::info!(
                tablets = self.tablets.len(),
                shards = self.model.shards.len(),
                "topology loaded"
            );
            self.start_round(crate::clock::now());
        }
    }

    /// Starts a discovery round over every watched tablet.
    fn start_round(&mut self, now: Instant) {
        self.rounds.id += 1;
        self.rounds.remaining = self.tablets.len();
        if self.rounds.remaining == 0 {
            self.rounds.started = None;
            self.set_ready();
        } else {
            self.rounds.started = Some(now);
        }
    }

    /// A tablet's poll in the current round is done (answered, failed, hung or skipped).
    fn round_progress(&mut self, alias: &TabletAlias, now: Instant) {
        if let Some(r) = self.relist.as_mut()
            && r.waiting.remove(alias)
        {
            self.check_relist();
        }
        if self.rounds.started.is_none() {
            return;
        }
        let id = self.rounds.id;
        let Some(aux) = self.tablets.get_mut(alias) else {
            return;
        };
        if aux.round_done >= id {
            return;
        }
        aux.round_done = id;
        self.rounds.remaining = self.rounds.remaining.saturating_sub(1);
        if self.rounds.remaining == 0 {
            self.complete_round(now);
        }
    }

    fn complete_round(&mut self, now: Instant) {
        if let Some(started) = self.rounds.started {
            let took = now.saturating_duration_since(started);
            self.metrics.rounds.fetch_add(1, Ordering::Relaxed);
            self.metrics.last_round_us.store(
                u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        self.set_ready();
        self.start_round(now);
    }

    fn set_ready(&mut self) {
        let changed = self
            .ready_tx
            .send_if_modified(|ready| !std::mem::replace(ready, true));
        if changed {
            tracing::info!(
                tablets = self.tablets.len(),
                "discovery ready: topology loaded and every tablet polled"
            );
            // Publish now so readers of a ready handle see the full model.
            self.dirty = true;
            self.last_publish = None;
        }
    }

    // ---- publishing ----

    fn mark_changed(&mut self, shard: &KeyspaceShard, cause: ChangeCause) {
        if !self.changed.contains_key(shard) {
            self.changed.insert(shard.clone(), cause);
        }
    }

    /// When the changed model may be published: a shard change or an
    /// answered refresh `publish_interval` after the last publication,
    /// routine updates `routine_publish_interval` after it (see the module
    /// docs). `None` = nothing changed, or nothing was published yet (or
    /// readiness asked for a publication): publish at once.
    fn publish_due(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        let last = self.last_publish?;
        let gap = if self.changed.is_empty() && self.answered.is_empty() {
            self.config.routine_publish_interval
        } else {
            self.config.publish_interval
        };
        Some(last + gap)
    }

    /// Publishes the model if it changed and the publish interval allows.
    fn maybe_publish(&mut self, now: Instant) {
        if !self.dirty {
            return;
        }
        if let Some(due) = self.publish_due()
            && now < due
        {
            return;
        }
        let snapshot = Arc::new(self.model.clone());
        self.snapshot_tx.send_replace(Arc::clone(&snapshot));
        self.last_publish = Some(now);
        self.dirty = false;
        self.metrics.snapshots_published.fetch_add(1, Ordering::Relaxed);
        for (alias, reply) in self.answered.drain(..) {
            let state = self
                .tablets
                .get(&alias)
                .and_then(|aux| snapshot.shard(&aux.shard))
                .and_then(|s| s.tablet(&alias))
                .cloned()
                .ok_or_else(|| DiscoveryError::UnknownTablet(alias.clone()));
            let _ = reply.send(state);
        }
        for (shard, cause) in std::mem::take(&mut self.changed) {
            self.metrics.shard_notifications.fetch_add(1, Ordering::Relaxed);
            // No receiver yet is fine: recovery reads the snapshot when it starts.
            let _ = self.changes_tx.send(ShardChange { shard, cause });
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .tablets_watched
            .store(self.tablets.len() as u64, Ordering::Relaxed);
        self.metrics
            .shards_watched
            .store(self.model.shards.len() as u64, Ordering::Relaxed);
    }

    // ---- model access ----

    fn tablet_state(&self, alias: &TabletAlias) -> Option<&Arc<TabletState>> {
        let aux = self.tablets.get(alias)?;
        self.model.shards.get(&aux.shard)?.tablet(alias)
    }

    fn tablet_state_mut(&mut self, alias: &TabletAlias) -> Option<&mut TabletState> {
        let aux = self.tablets.get(alias)?;
        let shard = Arc::make_mut(self.model.shards.get_mut(&aux.shard)?);
        let index = shard.tablets.binary_search_by(|t| t.alias().cmp(alias)).ok()?;
        Some(Arc::make_mut(&mut shard.tablets[index]))
    }
}

/// The next topo event, or pending forever without a watcher.
async fn next_topo_event(watcher: Option<&mut TopoWatcher>) -> Option<TopoEvent> {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The next assignment, or pending forever without a receiver; `None`
/// once the sender is gone.
async fn next_assignment(
    rx: Option<&mut watch::Receiver<Arc<crate::sharing::Assignment>>>,
) -> Option<Arc<crate::sharing::Assignment>> {
    match rx {
        Some(rx) => {
            rx.changed().await.ok()?;
            Some(Arc::clone(&rx.borrow_and_update()))
        }
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The keys of `known` that a fresh listing no longer has (`listed` is
/// false), collected so the caller can drop them while it changes the map
/// they came from.
fn missing_from<'a, K: Clone + 'a>(
    known: impl Iterator<Item = &'a K>,
    listed: impl Fn(&K) -> bool,
) -> Vec<K> {
    known.filter(|k| !listed(k)).cloned().collect()
}
