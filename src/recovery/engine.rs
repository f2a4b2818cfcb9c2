//! The recovery loop: when to analyse which shard, and how recoveries of a
//! shard are started.
//!
//! - **Triggers**: every [`ShardChange`] from discovery marks its shard
//!   dirty; dirty shards are analysed together `event_debounce` after the
//!   first mark (an event storm costs one analysis per shard per window).
//!   A full pass over every shard runs every `--recovery-poll-duration`
//!   (and at once when the change feed lagged).
//! - **One task per shard**: a shard with problems gets a task unless one
//!   is in flight; a change seen meanwhile re-runs the shard when the task
//!   ends. The order of shards in a pass is shuffled (less lock contention
//!   between vtorc instances).
//! - **Inside a shard** (reference §5.5): problems that need ordered
//!   execution run one after another first, then the rest concurrently;
//!   all of them queue for the shard lock.
//! - **Global cap**: `--max-concurrent-recoveries` permits, taken by a gate
//!   run once it passes the cheap gates.
//! - **Shutdown** ([`RecoveryTask::shutdown`]): no new shard lock is taken,
//!   running recoveries get `--shutdown-wait-time` to finish, then they are
//!   cancelled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::seq::SliceRandom;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::audit::{
    AuditFileWriter, AuditFilter, AuditLog, DetectionRecord, RecoveryRecord, Scope, SkipReason,
};
use super::error::RecoveryError;
use super::gate;
use super::ladder::{self, GateResult, Verdict};
use super::metrics::RecoveryMetrics;
use super::shared::Shared;
use super::view::ClusterView;
use super::{RecoveryConfig, cooldown::CooldownMap};
use crate::analysis::{self, AnalysisCode, DetectionAnalysis, RecoveryKind};
use crate::config::DynamicSettings;
use crate::ids::KeyspaceShard;
use crate::reparent::{Reparenter, WallClock};
use crate::tablet::TabletManager;
use crate::topo::Topo;

/// How long cancelled recoveries get to audit their end before they are aborted.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the engine works with.
pub struct RecoveryDeps {
    /// The topology (records, shard locks).
    pub topo: Topo,
    /// Tablet RPCs.
    pub tmc: Arc<dyn TabletManager>,
    /// Discovery.
    pub cluster: Arc<dyn ClusterView>,
    /// ERS and PRS.
    pub reparenter: Arc<Reparenter>,
    /// Wall clock for audit timestamps.
    pub clock: WallClock,
}

/// The recovery engine before it runs. Build with [`RecoveryEngine::new`],
/// start with [`RecoveryEngine::spawn`].
pub struct RecoveryEngine {
    /// State shared with recoveries and handles.
    shared: Arc<Shared>,
    /// The audit file writer, if `--audit-file-location` is set.
    writer: Option<AuditFileWriter>,
}

/// The running engine; dropping it cancels everything at once, while
/// [`RecoveryTask::shutdown`] stops gracefully.
pub struct RecoveryTask {
    /// Stops the loop (graceful).
    stop: CancellationToken,
    /// State (for the hard stop on drop).
    shared: Arc<Shared>,
    /// The loop.
    task: Option<tokio::task::JoinHandle<Result<(), RecoveryError>>>,
}

/// Operators' and APIs' access to the engine. Cheap to clone.
#[derive(Clone)]
pub struct RecoveryHandle {
    /// State shared with the engine.
    shared: Arc<Shared>,
}

/// What the engine would do about one problem right now (see
/// [`RecoveryHandle::explain`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The problem (with `RecoveryNotClearingProblem` among its structure
    /// warnings when its recoveries do not clear it).
    pub analysis: DetectionAnalysis,
    /// What would happen: the first gate of `gates` that stops it.
    pub decision: Decision,
    /// The gate ladder, in order (see [`super::ladder`]).
    pub gates: Vec<GateResult>,
}

/// The engine's decision for one problem, read off its gate ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It would run this recovery (subject to the gates that need the
    /// lock, which may still skip it as `StaleAnalysis` or `PrimaryRecovery`).
    Recover(RecoveryKind),
    /// A gate skips it (a gate that needs I/O: the engine's last verdict).
    Skip(SkipReason),
    /// The engine's last attempt stopped without a skip (lock refused,
    /// aborted, not attempted), with the reason.
    Stopped(String),
    /// It would take the lock and do nothing (generic problems).
    NoAction,
}

impl Decision {
    /// The decision a ladder leads to for `kind`.
    pub fn of(kind: RecoveryKind, gates: &[GateResult]) -> Decision {
        match gates.iter().find(|g| g.stops()) {
            Some(g) => match g.verdict {
                Verdict::Skip(r) => Decision::Skip(r),
                _ => Decision::Stopped(format!("{}: {}", g.gate, g.reason)),
            },
            None if kind == RecoveryKind::Generic => Decision::NoAction,
            None => Decision::Recover(kind),
        }
    }
}

impl RecoveryEngine {
    /// Builds the engine and its handle. Fails only if the audit file
    /// cannot be opened.
    pub fn new(
        config: RecoveryConfig,
        deps: RecoveryDeps,
    ) -> std::io::Result<(RecoveryEngine, RecoveryHandle)> {
        let (audit, writer) = AuditLog::new(
            config.audit_capacity,
            config.instance.clone(),
            deps.clock,
            config.audit_file_location.clone(),
        )?;
        let shared = Arc::new(Shared {
            recoveries_enabled: config.allow_recovery.into(),
            ers_allowed: config.allow_emergency_reparent.into(),
            cells_validated: config.cells_no_recovery.is_empty().into(),
            topo: deps.topo,
            tmc: deps.tmc,
            cluster: deps.cluster,
            reparenter: deps.reparenter,
            audit: Arc::new(audit),
            metrics: Arc::new(RecoveryMetrics::default()),
            permits: tokio::sync::Semaphore::new(config.max_concurrent_recoveries.max(1)),
            restart_cooldown: std::sync::Mutex::new(CooldownMap::new(config.restart_replica_cooldown)),
            backoff: std::sync::Mutex::new(super::backoff::Backoff::new(config.backoff)),
            draining: CancellationToken::new(),
            cancel: CancellationToken::new(),
            sharing: std::sync::OnceLock::new(),
            config: arc_swap::ArcSwap::from_pointee(config),
        });
        if !shared.config.load().allow_recovery {
            tracing::info!("global recoveries disabled (--allow-recovery=false)");
        }
        let handle = RecoveryHandle {
            shared: Arc::clone(&shared),
        };
        Ok((RecoveryEngine { shared, writer }, handle))
    }

    /// With `--sharing`: recoveries start only while this instance's member
    /// lease is known valid. Call before [`RecoveryEngine::spawn`].
    pub fn set_sharing(&self, sharing: crate::sharing::SharingHandle) {
        let _ = self.shared.sharing.set(sharing);
    }

    /// The shared state (tests drive the gates directly).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts the loop.
    pub fn spawn(self) -> RecoveryTask {
        let stop = CancellationToken::new();
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(run(self.shared, self.writer, stop.clone()));
        RecoveryTask {
            stop,
            shared,
            task: Some(task),
        }
    }
}

impl RecoveryTask {
    /// Graceful stop (SIGTERM): no new shard lock, wait up to
    /// `--shutdown-wait-time` for running recoveries, then cancel them.
    /// Returns the loop's result.
    pub async fn shutdown(mut self) -> Result<(), RecoveryError> {
        self.stop.cancel();
        self.join().await
    }

    /// Waits until the loop stops on its own (a fatal error such as an
    /// unknown cell in `--cells-no-recovery`, or discovery stopping).
    pub async fn wait(&mut self) -> Result<(), RecoveryError> {
        self.join().await
    }

    /// Awaits the loop. Cancel-safe: if this future is dropped, the handle
    /// stays here (a later `shutdown` still waits for the loop).
    async fn join(&mut self) -> Result<(), RecoveryError> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let joined = task.await;
        self.task = None;
        match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => {
                tracing::error!("recovery loop panicked: {e}");
                Err(RecoveryError::Cancelled(format!("recovery loop panicked: {e}")))
            }
            Err(e) => Err(RecoveryError::Cancelled(e.to_string())),
        }
    }
}

impl Drop for RecoveryTask {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.draining.cancel();
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The loop's own state.
struct Scheduler {
    /// Shards with a task running → whether a change arrived meanwhile.
    in_flight: HashMap<KeyspaceShard, bool>,
    /// The shard tasks; each returns its shard.
    tasks: JoinSet<KeyspaceShard>,
    /// Shards to analyse at `debounce_at`.
    dirty: BTreeSet<KeyspaceShard>,
    /// When the dirty shards are analysed (`None` = nothing pending).
    debounce_at: Option<Instant>,
    /// Keyspace notes already logged (each once).
    logged_notes: HashSet<String>,
}

async fn run(
    shared: Arc<Shared>,
    writer: Option<AuditFileWriter>,
    stop: CancellationToken,
) -> Result<(), RecoveryError> {
    let writer_stop = CancellationToken::new();
    let mut aux = JoinSet::new();
    if let Some(w) = writer {
        aux.spawn(w.run(writer_stop.clone()));
    }
    let mut sched = Scheduler {
        in_flight: HashMap::new(),
        tasks: JoinSet::new(),
        dirty: BTreeSet::new(),
        debounce_at: None,
        logged_notes: HashSet::new(),
    };
    let result = main_loop(&shared, &stop, &mut sched).await;
    drain(&shared, &mut sched).await;
    writer_stop.cancel();
    while aux.join_next().await.is_some() {}
    match &result {
        Err(e) if e.is_cancelled() => tracing::warn!("recovery loop stopped: {e:#}"),
        Err(e) => tracing::error!("recovery loop stopped: {e:#}"),
        Ok(()) => {}
    }
    result
}

async fn main_loop(
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    sched: &mut Scheduler,
) -> Result<(), RecoveryError> {
    let mut changes = shared.cluster.subscribe_changes();
    tokio::select! {
        r = shared.cluster.wait_ready() => r.map_err(|e| RecoveryError::discovery("wait for discovery", e))?,
        _ = stop.cancelled() => return Ok(()),
    }
    validate_cells(shared).await?;
    tracing::info!("recovery engine running");
    let mut period = shared.config.load().recovery_poll_duration;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // `--recovery-poll-duration` is dynamic (config file).
        let wanted = shared.config.load().recovery_poll_duration;
        if wanted != period {
            period = wanted;
            tick = tokio::time::interval_at(crate::clock::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        let debounce_at = sched.debounce_at;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            Some(joined) = sched.tasks.join_next(), if !sched.tasks.is_empty() => {
                match joined {
                    Ok(key) => {
                        if sched.in_flight.remove(&key) == Some(true) {
                            sched.dirty.insert(key);
                            sched.debounce_at.get_or_insert_with(crate::clock::now);
                        }
                    }
                    Err(e) => {
                        // The shard stays marked in flight; a panic is a bug.
                        tracing::error!("a shard recovery task failed: {e}");
                    }
                }
            }
            event = changes.recv() => match event {
                Ok(change) => {
                    if let Some(rerun) = sched.in_flight.get_mut(&change.shard) {
                        *rerun = true;
                    } else {
                        sched.dirty.insert(change.shard);
                        sched
                            .debounce_at
                            .get_or_insert_with(|| crate::clock::now() + shared.config.load().event_debounce);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!("missed {n} shard change notifications; analysing every shard");
                    full_pass(shared, sched);
                }
                Err(RecvError::Closed) => {
                    return Err(RecoveryError::Cancelled("discovery stopped".into()));
                }
            },
            _ = tokio::time::sleep_until(debounce_at.unwrap_or_else(crate::clock::now)), if debounce_at.is_some() => {
                sched.debounce_at = None;
                let shards = std::mem::take(&mut sched.dirty);
                shard_pass(shared, sched, shards);
            }
            _ = tick.tick() => {
                if !shared.cells_validated.load(Ordering::SeqCst) {
                    validate_cells(shared).await?;
                }
                full_pass(shared, sched);
            }
        }
    }
}

/// Graceful end: no new locks, wait for running shard tasks, then cancel.
async fn drain(shared: &Shared, sched: &mut Scheduler) {
    shared.draining.cancel();
    shared.audit.shutdown("Triggered via SIGTERM");
    if !sched.tasks.is_empty() {
        tracing::info!(
            running = sched.tasks.len(),
            "waiting up to {:?} for running recoveries",
            shared.config.load().shutdown_wait_time
        );
        let wait_all = async { while sched.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.config.load().shutdown_wait_time, wait_all)
            .await
            .is_err()
        {
            tracing::warn!("recoveries still running after the shutdown wait; cancelling them");
        }
    }
    // Cancelled recoveries stop at their next RPC or reparent phase and
    // audit their end; anything still running after that is aborted.
    shared.cancel.cancel();
    let wind_down = async { while sched.tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(CANCEL_GRACE, wind_down).await.is_err() {
        sched.tasks.abort_all();
        while sched.tasks.join_next().await.is_some() {}
    }
    sched.in_flight.clear();
}

/// Checks `--cells-no-recovery` against the topology's cells. Unknown cells
/// are fatal; an unreachable topology defers validation (and holds every
/// recovery as `CellNoRecoveryUnvalidated`).
async fn validate_cells(shared: &Shared) -> Result<(), RecoveryError> {
    if shared.cells_validated.load(Ordering::SeqCst) {
        return Ok(());
    }
    match tokio::time::timeout(shared.config.load().remote_operation_timeout, shared.topo.cells()).await {
        Ok(Ok(known)) => {
            let unknown: Vec<String> = shared
                .config
                .load()
                .cells_no_recovery
                .iter()
                .filter(|c| !known.contains(c))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(RecoveryError::UnknownCells { unknown, known });
            }
            shared.cells_validated.store(true, Ordering::SeqCst);
            tracing::info!(cells = ?shared.config.load().cells_no_recovery, "--cells-no-recovery validated");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::warn!("cannot validate --cells-no-recovery yet, holding recoveries: {e}");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("cannot validate --cells-no-recovery yet (topo timeout), holding recoveries");
            Ok(())
        }
    }
}

fn log_notes(sched: &mut Scheduler, notes: &[analysis::KeyspaceNote]) {
    for note in notes {
        let text = note.to_string();
        if sched.logged_notes.insert(text.clone()) {
            if note.is_error() {
                tracing::warn!(keyspace = note.keyspace(), "{text}");
            } else {
                tracing::info!(keyspace = note.keyspace(), "{text}");
            }
        }
    }
}

/// Analyses every shard and starts recoveries.
fn full_pass(shared: &Arc<Shared>, sched: &mut Scheduler) {
    let snapshot = shared.cluster.snapshot();
    let out = analysis::analyze(&snapshot, &shared.config.load().analysis, crate::clock::now());
    log_notes(sched, &out.notes);
    shared.metrics.set_detected(None, &out.problems);
    shared.audit.observe_pass(Scope::All, &out.problems);
    let mut by_shard: BTreeMap<KeyspaceShard, Vec<DetectionAnalysis>> = BTreeMap::new();
    for p in out.problems {
        by_shard.entry(p.keyspace_shard()).or_default().push(p);
    }
    let mut shards: Vec<(KeyspaceShard, Vec<DetectionAnalysis>)> = by_shard.into_iter().collect();
    shards.shuffle(&mut rand::rng());
    for (key, problems) in shards {
        spawn_shard(shared, sched, key, problems);
    }
}

/// Analyses the given shards and starts recoveries.
fn shard_pass(shared: &Arc<Shared>, sched: &mut Scheduler, shards: BTreeSet<KeyspaceShard>) {
    let snapshot = shared.cluster.snapshot();
    let now = crate::clock::now();
    let mut work = Vec::new();
    for key in shards {
        if let Some(rerun) = sched.in_flight.get_mut(&key) {
            *rerun = true;
            continue;
        }
        let out = analysis::analyze_shard(&snapshot, &key, &shared.config.load().analysis, now);
        log_notes(sched, &out.notes);
        shared.metrics.set_detected(Some(&key), &out.problems);
        shared.audit.observe_pass(Scope::Shard(&key), &out.problems);
        work.push((key, out.problems));
    }
    work.shuffle(&mut rand::rng());
    for (key, problems) in work {
        spawn_shard(shared, sched, key, problems);
    }
}

/// Starts the task of one shard unless one is in flight.
fn spawn_shard(
    shared: &Arc<Shared>,
    sched: &mut Scheduler,
    key: KeyspaceShard,
    mut problems: Vec<DetectionAnalysis>,
) {
    problems.retain(|p| p.analysis != AnalysisCode::NoProblem);
    if problems.is_empty() || sched.in_flight.contains_key(&key) || shared.draining.is_cancelled() {
        return;
    }
    analysis::sort_analyses(&mut problems);
    sched.in_flight.insert(key.clone(), false);
    let shared = Arc::clone(shared);
    let span = tracing::debug_span!("shard_recoveries", keyspace = %key.keyspace, shard = %key.shard);
    sched.tasks.spawn(
        async move {
            run_shard(&shared, problems).await;
            key
        }
        .instrument(span),
    );
}

/// Runs a shard's problems: ordered ones one by one, then the rest together.
pub(crate) async fn run_shard(shared: &Shared, problems: Vec<DetectionAnalysis>) {
    let (ordered, rest): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| p.analysis.requires_ordered_execution());
    let queue = tokio::sync::Mutex::new(());
    for p in ordered {
        gate::check_and_recover(shared, p, Some(&queue)).await;
    }
    futures::future::join_all(
        rest.into_iter()
            .map(|p| gate::check_and_recover(shared, p, Some(&queue))),
    )
    .await;
}

impl RecoveryHandle {
    /// Enables global recoveries (idempotent); returns the new state (`true`).
    pub fn enable_global_recoveries(&self) -> bool {
        if !self.shared.recoveries_enabled.swap(true, Ordering::SeqCst) {
            tracing::info!("global recoveries enabled");
        }
        true
    }

    /// Disables global recoveries (idempotent); returns the new state
    /// (`false`). Detection and auditing go on; recoveries are skipped with
    /// `GlobalRecoveriesDisabled`. A recovery already past that gate finishes.
    pub fn disable_global_recoveries(&self) -> bool {
        if self.shared.recoveries_enabled.swap(false, Ordering::SeqCst) {
            tracing::info!("global recoveries disabled");
        }
        false
    }

    /// Whether global recoveries are enabled.
    pub fn global_recoveries_enabled(&self) -> bool {
        self.shared.recoveries_enabled()
    }

    /// Sets the global ERS switch (`--allow-emergency-reparent`, dynamic);
    /// returns the new state.
    pub fn set_emergency_reparent_allowed(&self, allowed: bool) -> bool {
        if self.shared.ers_allowed.swap(allowed, Ordering::SeqCst) != allowed {
            tracing::info!(allowed, "emergency reparent switch changed");
        }
        allowed
    }

    /// Applies the config file's dynamic settings (`previous` = the ones
    /// applied before): the global switches change only when their key
    /// changed (an API toggle is not undone by an unrelated edit); the
    /// durations and flags replace the engine's settings for the next pass
    /// and the next recovery.
    pub fn apply_dynamic(&self, previous: &DynamicSettings, now: &DynamicSettings) {
        if previous.allow_recovery != now.allow_recovery {
            if now.allow_recovery {
                self.enable_global_recoveries();
            } else {
                self.disable_global_recoveries();
            }
        }
        if previous.allow_emergency_reparent != now.allow_emergency_reparent {
            self.set_emergency_reparent_allowed(now.allow_emergency_reparent);
        }
        let mut config = RecoveryConfig::clone(&self.shared.config.load());
        config.recovery_poll_duration = now.recovery_poll_duration;
        config.wait_replicas_timeout = now.wait_replicas_timeout;
        config.tolerable_replication_lag = now.tolerable_replication_lag;
        config.prevent_cross_cell_failover = now.prevent_cross_cell_failover;
        config.change_tablets_with_errant_gtid_to_drained = now.change_tablets_with_errant_gtid_to_drained;
        config.analysis.instance_poll_time = now.instance_poll_time;
        config.analysis.reasonable_replication_lag = now.reasonable_replication_lag;
        config.analysis.enable_primary_disk_stalled_recovery = now.enable_primary_disk_stalled_recovery;
        self.shared.config.store(Arc::new(config));
    }

    /// The engine's current settings.
    pub fn config(&self) -> Arc<RecoveryConfig> {
        self.shared.config.load_full()
    }

    /// The global ERS switch.
    pub fn emergency_reparent_allowed(&self) -> bool {
        self.shared.ers_allowed.load(Ordering::SeqCst)
    }

    /// Whether the engine is shutting down (no new shard locks).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.is_cancelled()
    }

    /// The audit log (query, subscribe).
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.shared.audit
    }

    /// Recoveries matching `filter`, newest first.
    pub fn recoveries(&self, filter: &AuditFilter) -> Vec<RecoveryRecord> {
        self.shared.audit.recoveries(filter)
    }

    /// Detections matching `filter`: active ones, then resolved ones, newest first.
    pub fn detections(&self, filter: &AuditFilter) -> Vec<DetectionRecord> {
        self.shared.audit.detections(filter)
    }

    /// Every audit change from now on (for a server-streaming Watch).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<super::audit::AuditEvent> {
        self.shared.audit.subscribe()
    }

    /// The recovery metrics.
    pub fn metrics(&self) -> &Arc<RecoveryMetrics> {
        &self.shared.metrics
    }

    /// What the engine would do about each problem of `key` right now,
    /// without acting: the gate ladder of each problem (pure gates evaluated
    /// now on the latest snapshot, gates that need I/O from the engine's
    /// last attempt, see [`ladder`]).
    pub fn explain(&self, key: &KeyspaceShard) -> Vec<Explanation> {
        let shared = &self.shared;
        let snapshot = shared.cluster.snapshot();
        let now = crate::clock::now();
        let mut problems =
            analysis::analyze_shard(&snapshot, key, &shared.config.load().analysis, now).problems;
        problems.retain(|p| p.analysis != AnalysisCode::NoProblem);
        analysis::sort_analyses(&mut problems);
        problems
            .into_iter()
            .map(|mut a| {
                let last = shared
                    .audit
                    .active_detection(&a.analyzed_instance_alias, a.analysis)
                    .map(|d| d.gates)
                    .unwrap_or_default();
                let gates = ladder::explain(shared, &a, now, &last);
                self.mark_not_clearing(&mut a, now);
                Explanation {
                    decision: Decision::of(a.recovery, &gates),
                    analysis: a,
                    gates,
                }
            })
            .collect()
    }

    /// Adds `RecoveryNotClearingProblem` to `a`'s structure warnings when
    /// recoveries of it keep not clearing it (see [`super::backoff`]).
    pub fn mark_not_clearing(&self, a: &mut DetectionAnalysis, now: tokio::time::Instant) {
        let key = super::backoff::BackoffKey::of(a);
        if self.shared.backoff().not_clearing(&key, now).is_some()
            && !a
                .structure_analysis
                .contains(&analysis::StructureWarning::RecoveryNotClearingProblem)
        {
            a.structure_analysis
                .push(analysis::StructureWarning::RecoveryNotClearingProblem);
        }
    }

    /// Acknowledges recoveries of `shard` (all shards if `None`): clears
    /// their back-offs and ERS cooldowns, audited with `comment`. Returns
    /// how many were cleared (orchestrator's `ack-recovery`).
    pub fn acknowledge(&self, shard: Option<&KeyspaceShard>, comment: &str) -> usize {
        let cleared = self.shared.backoff().acknowledge(shard);
        let (ks, sh) = shard.map_or((String::new(), String::new()), |k| {
            (k.keyspace.clone(), k.shard.clone())
        });
        self.shared.audit.acknowledged(&ks, &sh, comment, cleared);
        cleared
    }
}
