//! The reparent engine: EmergencyReparentShard and PlannedReparentShard with
//! Vitess's semantics (reference §7.4, §7.5).
//!
//! Both are named-phase step machines ([`ErsPhase`], [`PrsPhase`]) run by a
//! [`Reparenter`]. Each phase has a tracing span and tags the events it logs
//! to an [`EventLog`], which vtctld returns as `logutil.Event`s and the
//! recovery audit can store as recovery steps.
//!
//! # Safety rules (from upstream, kept as invariants)
//!
//! - Never promote a tablet that has received transactions it has not
//!   applied (relay-log waits, catch-up waits).
//! - Never promote when the most advanced tablets disagree (split brain) or
//!   when too few tablets were reached to be sure nothing else accepts
//!   writes (`haveRevoked`).
//! - Never promote a tablet with errant GTIDs; an explicit `new_primary`
//!   passes every guard like any other candidate.
//! - Only promote a tablet that will get enough semi-sync acks.
//! - Re-check the shard lock at phase boundaries; losing it (its token
//!   fires) aborts the RPC in flight at once.
//! - Every stage is bounded: single RPCs by `--remote-operation-timeout`,
//!   waits and repointing by `--wait-replicas-timeout` (or the request's).
//!
//! The shard record's `primary_alias` is not written here: the promoted
//! tablet's agent does it (as vttablet's shard sync does).
//!
//! # Entry points
//!
//! ```no_run
//! # async fn demo(topo: vtorc::topo::Topo, tmc: std::sync::Arc<dyn vtorc::tablet::TabletManager>)
//! #     -> Result<(), vtorc::reparent::ReparentError> {
//! use vtorc::reparent::{EmergencyReparentOptions, EventLog, ReparentConfig, Reparenter};
//! let reparenter = Reparenter::new(topo, tmc, ReparentConfig::default());
//! let log = EventLog::default();
//! let outcome = reparenter
//!     .emergency_reparent_shard("commerce", "0", &EmergencyReparentOptions::default(), None, &log)
//!     .await?;
//! println!("promoted {:?} in {:?}", outcome.new_primary.and_then(|t| t.alias), outcome.duration);
//! # Ok(()) }
//! ```

mod context;
mod error;
mod ers;
mod events;
mod metrics;
mod options;
pub mod position;
mod prs;
#[cfg(test)]
mod testutil;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

pub use self::error::{ReparentError, ReparentResult};
pub use self::ers::ErsPhase;
pub use self::events::{EventLevel, EventLog, ReparentEvent, WallClock, system_wall_clock};
pub use self::metrics::{Operation, ReparentMetrics};
pub use self::options::{EmergencyReparentOptions, PlannedReparentOptions, ers_lock_action, prs_lock_action};
pub use self::prs::PrsPhase;
use crate::config::Config;
use crate::proto::topodata::Tablet;
use crate::tablet::TabletManager;
use crate::topo::Topo;

/// Time bounds of the reparent engine.
#[derive(Clone, Copy, Debug)]
pub struct ReparentConfig {
    /// `--remote-operation-timeout`: each single RPC (stop replication,
    /// demote, promote, journal) and each topo read.
    pub remote_operation_timeout: Duration,
    /// `--wait-replicas-timeout`: relay-log waits, catch-up and repointing,
    /// unless the request gives its own.
    pub wait_replicas_timeout: Duration,
    /// Wall clock for event times and the reparent journal.
    pub clock: WallClock,
}

impl Default for ReparentConfig {
    fn default() -> Self {
        ReparentConfig {
            remote_operation_timeout: Duration::from_secs(15),
            wait_replicas_timeout: Duration::from_secs(30),
            clock: system_wall_clock,
        }
    }
}

impl ReparentConfig {
    /// The bounds from vtorc's configuration.
    pub fn from_config(config: &Config) -> Self {
        ReparentConfig {
            remote_operation_timeout: config.remote_operation_timeout,
            wait_replicas_timeout: config.wait_replicas_timeout,
            clock: system_wall_clock,
        }
    }
}

/// What a successful reparent did.
#[derive(Clone, Debug, PartialEq)]
pub struct ReparentOutcome {
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// The promoted tablet (its record as read before the promotion);
    /// `None` when PRS had nothing to do.
    pub new_primary: Option<Tablet>,
    /// Wall time of the whole operation, lock included.
    pub duration: Duration,
}

/// RPCs a finished reparent left running: the last `SetReplicationSource`
/// calls of an ERS, which returns as soon as one replica follows the new
/// primary. Each is bounded by the wait timeout; dropping the reparenter
/// aborts them.
#[derive(Debug, Default)]
pub(crate) struct Stragglers {
    /// The calls. A `std::sync::Mutex`: held to spawn or reap, never across
    /// an `.await`.
    set: Mutex<JoinSet<()>>,
}

impl Stragglers {
    /// Starts `fut`, reaping finished calls first.
    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(fut);
    }

    /// Waits for every call still running.
    async fn wait(&self) {
        let mut set = std::mem::take(&mut *self.set.lock().unwrap_or_else(|p| p.into_inner()));
        while set.join_next().await.is_some() {}
    }
}

/// Runs ERS and PRS against one topology with one tablet client. Cheap to
/// share behind an `Arc`; concurrent reparents of one shard are serialized
/// by the shard lock.
pub struct Reparenter {
    /// The topology (shard lock, records).
    topo: Topo,
    /// The tablet client.
    tmc: Arc<dyn TabletManager>,
    /// Time bounds.
    config: ReparentConfig,
    /// Calls left running by finished reparents.
    stragglers: Stragglers,
    /// Outcome counters and timings.
    metrics: Arc<ReparentMetrics>,
}

impl std::fmt::Debug for Reparenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reparenter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reparenter {
    /// A reparenter over `topo` and `tmc`.
    pub fn new(topo: Topo, tmc: Arc<dyn TabletManager>, config: ReparentConfig) -> Self {
        Reparenter {
            topo,
            tmc,
            config,
            stragglers: Stragglers::default(),
            metrics: Arc::new(ReparentMetrics::default()),
        }
    }

    /// The time bounds.
    pub fn config(&self) -> &ReparentConfig {
        &self.config
    }

    /// The topology it works on.
    pub fn topo(&self) -> &Topo {
        &self.topo
    }

    /// `EmergencyReparentCounts` / `PlannedReparentCounts` and timings.
    pub fn metrics(&self) -> Arc<ReparentMetrics> {
        self.metrics.clone()
    }

    /// Waits until the calls left running by finished reparents have ended
    /// (each is bounded by its wait timeout). For shutdown and tests.
    pub async fn wait_for_background_calls(&self) {
        self.stragglers.wait().await;
    }

    /// The part ERS and PRS share around their body: runs `body` in `span`,
    /// times it, records the `operation`'s metrics and writes the final line
    /// to `log` (`finished <Operation> in <elapsed>`, `<Operation> cancelled:
    /// <e>` at WARN, `failed <Operation>: <e>` at ERROR). The caller builds
    /// the span, so its name and target stay those of the operation's module.
    async fn run_reparent(
        &self,
        operation: Operation,
        keyspace: &str,
        shard: &str,
        log: &EventLog,
        span: tracing::Span,
        body: impl std::future::Future<Output = ReparentResult<Option<Tablet>>>,
    ) -> ReparentResult<ReparentOutcome> {
        let started = crate::clock::now();
        let result = body.instrument(span).await;
        let elapsed = started.elapsed();
        self.metrics
            .record(operation, keyspace, shard, result.is_ok(), elapsed);
        let name = operation.as_str();
        match &result {
            Ok(_) => log.info(format!("finished {name} in {elapsed:?}")),
            Err(e) if e.is_cancelled() => log.warn(format!("{name} cancelled: {e}")),
            Err(e) => log.error(format!("failed {name}: {e}")),
        }
        result.map(|new_primary| ReparentOutcome {
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            new_primary,
            duration: elapsed,
        })
    }

    /// What every phase of a reparent under `lock` uses: the clients, the
    /// step log, the time bounds (`wait_replicas`: the request's replica
    /// wait; zero or none = the configured one) and both cancellations.
    fn run<'a>(
        &'a self,
        log: &'a EventLog,
        lock: &context::LockRef<'_>,
        wait_replicas: Option<Duration>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> context::Run<'a> {
        context::Run {
            tmc: self.tmc.as_ref(),
            topo: &self.topo,
            log,
            bounds: context::Bounds {
                remote: self.config.remote_operation_timeout,
                wait_replicas: wait_replicas
                    .filter(|d| !d.is_zero())
                    .unwrap_or(self.config.wait_replicas_timeout),
                clock: self.config.clock,
            },
            lock_token: lock.token(),
            cancel,
        }
    }
}
