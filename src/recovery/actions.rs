//! The recovery functions (reference §6.4), each in two steps:
//!
//! - [`plan`] decides what to do from the analysis re-checked under the
//!   lock, changing nothing (at most a `Ping`). "Not attempted" ends here,
//!   with no recovery record and no counters.
//! - [`execute`] does it, logging every RPC and every ERS/PRS event as a
//!   step of the recovery record.
//!
//! | Recovery | What it does |
//! |---|---|
//! | `RecoverDeadPrimary` | ERS, `WaitAllTablets=false` |
//! | `RecoverPrimaryTabletDeleted` | ERS, `WaitAllTablets=true` |
//! | `RecoverIncapacitatedPrimary` | `Ping` (2 s; no answer ⇒ not attempted), PRS avoiding the primary, ERS if PRS fails and ERS is enabled |
//! | `ElectNewPrimary` | PRS, no new primary given |
//! | `RecoverPrimaryHasPrimary` | `ResetReplicationParameters` on the primary |
//! | `FixPrimary` | `UndoDemotePrimary(semiSync = ackers > 0)` |
//! | `FixReplica` | `SetReadOnly`, then `SetReplicationSource(primary, forceStart, semiSync per policy, heartbeat = net timeout / 2)` |
//! | `ReconcileStaleTopoPrimary` | best effort `DemotePrimary(force)` then `SetReplicationSource`, alongside the authoritative topo type change to REPLICA |
//! | `RecoverErrantGTIDDetected` | `ChangeType(DRAINED)` |
//! | `RestartArbitraryDirectReplica` / `RestartAllDirectReplicas` | `RestartReplication` (fallback `StartReplication`) on one / all direct replicas, each at most once a minute |
//! | generic | nothing ("not attempted") |
//!
//! Deviation from Go VTOrc: the recoveries that only talk to the analysed
//! tablet (`FixReplica`, `FixPrimary`, `RecoverPrimaryHasPrimary`,
//! `RecoverErrantGTIDDetected`) are "not attempted" while that tablet does
//! not answer its polls, instead of failing on every pass.
//!
//! Decision on Go's "limit counts permutation positions" quirk of the
//! restart recoveries: not reproduced. `RestartArbitraryDirectReplica`
//! restarts the first *direct replica not in cooldown* of a random
//! permutation, so it restarts one whenever one exists, instead of doing
//! nothing when the permutation happens to start with the primary or an
//! indirect replica.

use std::future::Future;
use std::time::Duration;

use rand::seq::SliceRandom;
use tracing::Instrument;

use super::audit::{AuditLog, OperatorRequest, StepLevel};
use super::error::RecoveryError;
use super::shared::Shared;
use super::view::{direct_replicas, shard_primary};
use crate::analysis::{AnalysisCode, DetectionAnalysis, Durability, RecoveryKind};
use crate::model::ShardState;
use crate::proto::tabletmanagerdata::SetReplicationSourceRequest;
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::reparent::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentError, ReparentOutcome, Reparenter,
};
use crate::tablet::{TabletError, TabletManager as _, TabletManagerExt as _};
use crate::topo::{ShardLock, TopoError};

/// How often a running ERS/PRS's log is copied into the recovery's steps.
const LOG_COPY_INTERVAL: Duration = Duration::from_millis(20);

/// What a recovery function works with.
pub(crate) struct ActionCtx<'a> {
    /// Engine state.
    pub(crate) shared: &'a Shared,
    /// The analysis as re-checked under the lock.
    pub(crate) entry: &'a DetectionAnalysis,
    /// The shard with records re-read under the lock and tablets re-polled.
    pub(crate) shard: &'a ShardState,
    /// The keyspace's durability policy.
    pub(crate) durability: Durability,
    /// The shard lock held for this recovery.
    pub(crate) lock: &'a ShardLock,
}

/// What a recovery will do.
#[derive(Debug)]
pub(crate) enum Plan {
    /// ERS.
    Ers {
        /// `WaitAllTablets`.
        wait_all: bool,
    },
    /// PRS avoiding `primary`, then ERS if allowed.
    Incapacitated {
        /// The incapacitated primary.
        primary: TabletAlias,
    },
    /// PRS electing a first primary.
    Elect,
    /// `ResetReplicationParameters`.
    ResetReplication(Tablet),
    /// `UndoDemotePrimary`.
    FixPrimary {
        /// The primary.
        primary: Tablet,
        /// Semi-sync on the primary.
        semi_sync: bool,
    },
    /// `SetReadOnly` + `SetReplicationSource`.
    FixReplica {
        /// The replica.
        replica: Tablet,
        /// The shard primary to replicate from.
        primary: TabletAlias,
        /// Semi-sync acks from the replica.
        semi_sync: bool,
        /// Heartbeat interval, seconds.
        heartbeat: f64,
    },
    /// Demote (best effort) and change the topo type to REPLICA.
    StaleTopoPrimary {
        /// The stale primary.
        stale: Tablet,
        /// The current primary, if any.
        primary: Option<TabletAlias>,
        /// Semi-sync acks from the demoted tablet.
        semi_sync: bool,
    },
    /// `ChangeType(DRAINED)`.
    Drain {
        /// The tablet.
        tablet: Tablet,
        /// Semi-sync flag passed along.
        semi_sync: bool,
    },
    /// Restart replication on these direct replicas.
    Restart {
        /// The replicas (cooldown already taken).
        replicas: Vec<Tablet>,
        /// Semi-sync acks from them.
        semi_sync: bool,
    },
}

/// A plan and the tablets it touches (for the recovery record).
#[derive(Debug)]
pub(crate) struct Planned {
    /// The plan.
    pub(crate) plan: Plan,
    /// Tablets involved, the analysed one first.
    pub(crate) tablets: Vec<TabletAlias>,
}

impl ActionCtx<'_> {
    fn analyzed(&self) -> Result<Tablet, NotAttempted> {
        self.shard
            .tablet(&self.entry.analyzed_instance_alias)
            .map(|t| t.tablet.clone())
            .ok_or_else(|| NotAttempted::TabletGone(self.entry.analyzed_instance_alias.clone()))
    }

    fn all_tablets(&self) -> Vec<TabletAlias> {
        let mut out = vec![self.entry.analyzed_instance_alias.clone()];
        out.extend(
            self.shard
                .tablets
                .iter()
                .map(|t| t.alias().clone())
                .filter(|a| *a != self.entry.analyzed_instance_alias),
        );
        out
    }

    /// The newest PRIMARY other than the analysed tablet.
    fn other_primary(&self) -> Option<Tablet> {
        let mut shard = self.shard.clone();
        shard.remove_tablet(&self.entry.analyzed_instance_alias);
        shard_primary(&shard).map(|t| t.tablet.clone())
    }
}

/// Recoveries that change the analysed tablet through its own RPCs only.
/// They are not attempted while the tablet does not answer polls (Go
/// VTOrc would retry them on every pass against a dead tablet, failing
/// each time): a dead replica's stale "writable, not replicating" state is
/// nothing to fix, and a dead primary is the shard-wide recoveries' job.
fn needs_reachable_tablet(kind: RecoveryKind) -> bool {
    matches!(
        kind,
        RecoveryKind::FixReplica
            | RecoveryKind::FixPrimary
            | RecoveryKind::RecoverPrimaryHasPrimary
            | RecoveryKind::RecoverErrantGtidDetected
    )
}

/// Why a recovery function decided not to act.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAttempted {
    /// The tablet did not answer its last poll.
    #[error("{0} did not answer its last poll; its last known state is not worth acting on")]
    Unpolled(TabletAlias),
    /// The analysis has no recovery.
    #[error("{0} has no recovery action")]
    NoRecoveryAction(AnalysisCode),
    /// The analysed tablet left the topology.
    #[error("tablet {0} is no longer in the topo")]
    TabletGone(TabletAlias),
    /// An incapacitated primary vtorc cannot ping that others may still hear.
    #[error(
        "primary {primary} does not answer Ping ({error}); {}: not failing over \
         (see --heartbeat-silence-threshold and --primary-tablet-down-grace)",
        why_not_dead(*.replicating)
    )]
    PrimaryMayBeAlive {
        /// The primary.
        primary: TabletAlias,
        /// The ping's error.
        error: String,
        /// Replicas that still replicate from it.
        replicating: u32,
    },
    /// A recovery kind that only an operator's request through the Vtctld
    /// service runs (analysis never picks it).
    #[error("{} runs only when an operator requests it through the Vtctld service", .0.name())]
    OperatorOnly(RecoveryKind),
    /// A replica fix found no primary.
    #[error("the shard has no primary to replicate from")]
    NoPrimary,
    /// A restart of direct replicas found none.
    #[error("{0} has no direct replica to restart")]
    NoDirectReplica(TabletAlias),
    /// Every direct replica was restarted within the cooldown.
    #[error("every direct replica of {primary} had its replication restarted within the last {cooldown:?}")]
    RestartCooldown {
        /// The primary.
        primary: TabletAlias,
        /// `--restart-replica-cooldown` (the period of one restart per replica).
        cooldown: Duration,
    },
}

/// Why an unanswered ping is not a dead primary: had the replicas stopped
/// hearing it, or had its tablet server been refusing connections past the
/// grace, the analysis would be DeadPrimary (analysis::evidence).
fn why_not_dead(replicating: u32) -> String {
    if replicating > 0 {
        format!(
            "{replicating} of its replicas still replicate from it and show no sign of having stopped hearing it, \
             so vtorc alone may be cut off from it"
        )
    } else {
        "no replica confirms it is gone".to_string()
    }
}

/// Decides what to do, or why not.
pub(crate) async fn plan(ctx: &ActionCtx<'_>) -> Result<Planned, NotAttempted> {
    let e = ctx.entry;
    let alias = e.analyzed_instance_alias.clone();
    if needs_reachable_tablet(e.recovery) && !e.last_check_valid {
        return Err(NotAttempted::Unpolled(alias));
    }
    let plan = match e.recovery {
        RecoveryKind::None | RecoveryKind::Generic => {
            return Err(NotAttempted::NoRecoveryAction(e.analysis));
        }
        RecoveryKind::OperatorPlannedReparentShard | RecoveryKind::OperatorEmergencyReparentShard => {
            return Err(NotAttempted::OperatorOnly(e.recovery));
        }
        RecoveryKind::RecoverDeadPrimary => Plan::Ers { wait_all: false },
        RecoveryKind::RecoverPrimaryTabletDeleted => Plan::Ers { wait_all: true },
        RecoveryKind::RecoverIncapacitatedPrimary => {
            let primary = ctx.analyzed()?;
            let timeout = ctx.shared.config.load().incapacitated_ping_timeout;
            if let Err(err) = ctx.shared.tmc.with_timeout(timeout).ping(&primary).await {
                return Err(NotAttempted::PrimaryMayBeAlive {
                    primary: alias,
                    error: err.to_string(),
                    replicating: e.count_valid_replicating_replicas,
                });
            }
            Plan::Incapacitated {
                primary: alias.clone(),
            }
        }
        RecoveryKind::ElectNewPrimary => Plan::Elect,
        RecoveryKind::RecoverPrimaryHasPrimary => Plan::ResetReplication(ctx.analyzed()?),
        RecoveryKind::FixPrimary => {
            let primary = ctx.analyzed()?;
            let semi_sync = ctx.durability.semi_sync_ackers(&primary) > 0;
            Plan::FixPrimary { primary, semi_sync }
        }
        RecoveryKind::FixReplica => {
            let replica = ctx.analyzed()?;
            let primary = ctx.other_primary().ok_or(NotAttempted::NoPrimary)?;
            let semi_sync = ctx.durability.is_replica_semi_sync(&primary, &replica);
            let heartbeat = f64::from(e.replica_net_timeout.max(0)) / 2.0;
            Plan::FixReplica {
                replica,
                primary: crate::tablet::rpc::alias_of(&primary),
                semi_sync,
                heartbeat,
            }
        }
        RecoveryKind::ReconcileStaleTopoPrimary => {
            let stale = ctx.analyzed()?;
            let primary = ctx.other_primary();
            let semi_sync = primary
                .as_ref()
                .is_some_and(|p| ctx.durability.is_replica_semi_sync(p, &stale));
            Plan::StaleTopoPrimary {
                stale,
                primary: primary.as_ref().map(crate::tablet::rpc::alias_of),
                semi_sync,
            }
        }
        RecoveryKind::RecoverErrantGtidDetected => {
            let tablet = ctx.analyzed()?;
            let semi_sync = ctx
                .other_primary()
                .is_some_and(|p| ctx.durability.is_replica_semi_sync(&p, &tablet));
            Plan::Drain { tablet, semi_sync }
        }
        RecoveryKind::RestartArbitraryDirectReplica | RecoveryKind::RestartAllDirectReplicas => {
            let primary = ctx.analyzed()?;
            let mut candidates: Vec<Tablet> = direct_replicas(ctx.shard, &alias)
                .into_iter()
                .map(|t| t.tablet.clone())
                .collect();
            if candidates.is_empty() {
                return Err(NotAttempted::NoDirectReplica(alias));
            }
            candidates.shuffle(&mut rand::rng());
            let limit = if e.recovery == RecoveryKind::RestartArbitraryDirectReplica {
                1
            } else {
                usize::MAX
            };
            let now = crate::clock::now();
            let mut chosen = Vec::new();
            {
                let mut cooldown = ctx
                    .shared
                    .restart_cooldown
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for t in candidates {
                    if chosen.len() >= limit {
                        break;
                    }
                    if cooldown.try_acquire(&crate::tablet::rpc::alias_of(&t), now) {
                        chosen.push(t);
                    }
                }
            }
            if chosen.is_empty() {
                return Err(NotAttempted::RestartCooldown {
                    primary: alias,
                    cooldown: ctx.shared.config.load().restart_replica_cooldown,
                });
            }
            let semi_sync = chosen
                .iter()
                .all(|r| ctx.durability.is_replica_semi_sync(&primary, r));
            Plan::Restart {
                replicas: chosen,
                semi_sync,
            }
        }
    };
    let tablets = match &plan {
        Plan::Ers { .. } | Plan::Incapacitated { .. } | Plan::Elect => ctx.all_tablets(),
        Plan::FixReplica { primary, .. } => vec![alias.clone(), primary.clone()],
        Plan::StaleTopoPrimary { primary, .. } => {
            std::iter::once(alias.clone()).chain(primary.clone()).collect()
        }
        Plan::Restart { replicas, .. } => std::iter::once(alias.clone())
            .chain(replicas.iter().map(crate::tablet::rpc::alias_of))
            .collect(),
        Plan::ResetReplication(_) | Plan::FixPrimary { .. } | Plan::Drain { .. } => vec![alias.clone()],
    };
    Ok(Planned { plan, tablets })
}

/// Writes steps of one recovery to the audit and the log (inside the
/// recovery's span, so every step line carries its keyspace, shard,
/// analysis and recovery id).
struct Recorder<'a> {
    /// The audit the steps go to.
    audit: &'a AuditLog,
    /// The recovery's id.
    id: u64,
}

impl Recorder<'_> {
    fn step(&self, step: &str, level: StepLevel, message: impl Into<String>) {
        let message = message.into();
        match level {
            StepLevel::Info => tracing::info!(step, "{message}"),
            StepLevel::Warning => tracing::warn!(step, "{message}"),
            StepLevel::Error => tracing::warn!(step, "{message}"),
        }
        self.audit.step(self.id, step, level, message);
    }

    /// Runs one tablet RPC as a step; stops at once if the lock is lost or
    /// the engine is cancelled.
    async fn rpc<T>(
        &self,
        ctx: &ActionCtx<'_>,
        step: &str,
        tablet: &TabletAlias,
        fut: impl Future<Output = Result<T, TabletError>>,
    ) -> Result<T, RecoveryError> {
        let lock_lost = ctx.lock.cancellation_token();
        let result = tokio::select! {
            r = fut => r.map_err(|e| RecoveryError::tablet(format!("{step} on {tablet}"), e)),
            _ = lock_lost.cancelled() => Err(RecoveryError::LockLost(ctx.lock.key().to_string())),
            _ = ctx.shared.cancel.cancelled() => Err(RecoveryError::Cancelled("vtorc is shutting down".into())),
        };
        match &result {
            Ok(_) => self.step(step, StepLevel::Info, format!("{step} on {tablet}: ok")),
            Err(e) => self.step(step, StepLevel::Warning, format!("{e:#}")),
        }
        result
    }

    /// [`Recorder::rpc`] on `tablet`, named by its alias, for a step whose
    /// result the recovery does not need: its successor is `None`.
    async fn only_rpc(
        &self,
        ctx: &ActionCtx<'_>,
        step: &str,
        tablet: &Tablet,
        fut: impl Future<Output = Result<(), TabletError>>,
    ) -> Result<Option<TabletAlias>, RecoveryError> {
        let alias = crate::tablet::rpc::alias_of(tablet);
        self.rpc(ctx, step, &alias, fut).await.map(|()| None)
    }

    /// Repoints `replica` (`alias`) at `primary` as the step
    /// `SetReplicationSource`: replication force-started, no wait position,
    /// `semi_sync` acks, heartbeat every `heartbeat` seconds (0 = the
    /// tablet's default).
    async fn repoint(
        &self,
        ctx: &ActionCtx<'_>,
        replica: &Tablet,
        alias: &TabletAlias,
        primary: &TabletAlias,
        semi_sync: bool,
        heartbeat: f64,
    ) -> Result<(), RecoveryError> {
        let request = SetReplicationSourceRequest {
            parent: Some(primary.clone()),
            time_created_ns: 0,
            force_start_replication: true,
            wait_position: String::new(),
            semi_sync,
            heartbeat_interval: heartbeat,
        };
        self.rpc(
            ctx,
            "SetReplicationSource",
            alias,
            ctx.shared.tmc.set_replication_source(replica, request),
        )
        .await
    }

    /// Runs an ERS/PRS, copying its log into the steps as it goes.
    async fn reparent<T>(&self, prefix: &str, log: &EventLog, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        let mut copied = 0;
        let mut tick = tokio::time::interval(LOG_COPY_INTERVAL);
        loop {
            tokio::select! {
                out = &mut fut => {
                    self.copy(prefix, log, &mut copied);
                    return out;
                }
                _ = tick.tick() => self.copy(prefix, log, &mut copied),
            }
        }
    }

    fn copy(&self, prefix: &str, log: &EventLog, copied: &mut usize) {
        let events = log.events();
        for e in events.iter().skip(*copied) {
            self.audit.reparent_step(self.id, prefix, e);
        }
        *copied = events.len();
    }
}

/// Does what `plan` decided. `Ok(successor)`: the new primary, if one was promoted.
pub(crate) async fn execute(
    ctx: &ActionCtx<'_>,
    plan: Plan,
    recovery_id: u64,
) -> Result<Option<TabletAlias>, RecoveryError> {
    let rec = Recorder {
        audit: &ctx.shared.audit,
        id: recovery_id,
    };
    match plan {
        Plan::Ers { wait_all } => run_ers(ctx, &rec, wait_all).await,
        Plan::Incapacitated { primary } => match run_prs(ctx, &rec, Some(primary)).await {
            Ok(outcome) => Ok(promoted(&rec, outcome.new_primary.as_ref())),
            Err(e) if e.is_cancelled() => Err(reparent_error("PlannedReparentShard", e)),
            Err(e) => {
                if !ctx.shared.ers_enabled_for(ctx.entry) {
                    rec.step(
                        "fallback",
                        StepLevel::Warning,
                        format!("PRS failed ({e}); ERS is disabled for this shard, not falling back"),
                    );
                    return Err(reparent_error("PlannedReparentShard", e));
                }
                rec.step(
                    "fallback",
                    StepLevel::Warning,
                    format!("PRS failed ({e}); falling back to ERS"),
                );
                run_ers(ctx, &rec, false).await
            }
        },
        Plan::Elect => {
            let outcome = run_prs(ctx, &rec, None)
                .await
                .map_err(|e| reparent_error("PlannedReparentShard", e))?;
            Ok(promoted(&rec, outcome.new_primary.as_ref()))
        }
        Plan::ResetReplication(primary) => {
            let reset = ctx.shared.tmc.reset_replication_parameters(&primary);
            rec.only_rpc(ctx, "ResetReplicationParameters", &primary, reset)
                .await
        }
        Plan::FixPrimary { primary, semi_sync } => {
            let undo = ctx.shared.tmc.undo_demote_primary(&primary, semi_sync);
            rec.only_rpc(ctx, "UndoDemotePrimary", &primary, undo).await
        }
        Plan::FixReplica {
            replica,
            primary,
            semi_sync,
            heartbeat,
        } => {
            let alias = crate::tablet::rpc::alias_of(&replica);
            rec.rpc(ctx, "SetReadOnly", &alias, ctx.shared.tmc.set_read_only(&replica))
                .await?;
            rec.repoint(ctx, &replica, &alias, &primary, semi_sync, heartbeat)
                .await?;
            Ok(None)
        }
        Plan::StaleTopoPrimary {
            stale,
            primary,
            semi_sync,
        } => reconcile_stale_primary(ctx, &rec, stale, primary, semi_sync).await,
        Plan::Drain { tablet, semi_sync } => {
            let drain = ctx
                .shared
                .tmc
                .change_type(&tablet, TabletType::Drained, semi_sync);
            rec.only_rpc(ctx, "ChangeType", &tablet, drain).await
        }
        Plan::Restart { replicas, semi_sync } => {
            let mut last_error = None;
            let mut restarted = 0;
            for replica in &replicas {
                let alias = crate::tablet::rpc::alias_of(replica);
                let tmc = &ctx.shared.tmc;
                let mut result = rec
                    .rpc(
                        ctx,
                        "RestartReplication",
                        &alias,
                        tmc.restart_replication(replica, semi_sync),
                    )
                    .await;
                // A tablet that answered but failed to restart may still
                // start replication; an unreachable one would not answer.
                let unreachable =
                    |e: &RecoveryError| matches!(e, RecoveryError::Tablet(t) if t.source.is_unreachable());
                if matches!(&result, Err(e) if !e.is_cancelled() && !unreachable(e)) {
                    result = rec
                        .rpc(
                            ctx,
                            "StartReplication",
                            &alias,
                            tmc.start_replication(replica, semi_sync),
                        )
                        .await;
                }
                match result {
                    Ok(()) => restarted += 1,
                    Err(e) if e.is_cancelled() => return Err(e),
                    Err(e) => last_error = Some(e),
                }
            }
            match (restarted, last_error) {
                (0, Some(e)) => Err(e),
                _ => Ok(None),
            }
        }
    }
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn reparent_error(context: &'static str, source: ReparentError) -> RecoveryError {
    RecoveryError::Reparent { context, source }
}

/// Audits a promotion and returns the successor.
fn promoted(rec: &Recorder<'_>, new_primary: Option<&Tablet>) -> Option<TabletAlias> {
    let successor = new_primary.and_then(|t| t.alias.clone());
    if let Some(s) = &successor {
        rec.step("promoted", StepLevel::Info, format!("promoted replica: {s}"));
    }
    successor
}

/// `RecoverDeadPrimary` / `RecoverPrimaryTabletDeleted`: ERS.
async fn run_ers(
    ctx: &ActionCtx<'_>,
    rec: &Recorder<'_>,
    wait_all: bool,
) -> Result<Option<TabletAlias>, RecoveryError> {
    let cfg = ctx.shared.config.load_full();
    let opts = EmergencyReparentOptions {
        wait_replicas_timeout: Some(cfg.wait_replicas_timeout),
        prevent_cross_cell_promotion: cfg.prevent_cross_cell_failover,
        wait_for_all_tablets: wait_all,
        cancel: ctx.shared.cancel.child_token(),
        ..EmergencyReparentOptions::default()
    };
    let outcome = reparent_shard(ctx, rec, "ers", async |reparenter, keyspace, shard, lock, log| {
        reparenter
            .emergency_reparent_shard(keyspace, shard, &opts, Some(lock), log)
            .await
    })
    .await
    .map_err(|e| reparent_error("EmergencyReparentShard", e))?;
    Ok(promoted(rec, outcome.new_primary.as_ref()))
}

/// A PRS of the analysed shard (avoiding `avoid` when given) with the
/// configured replica wait and tolerable lag; see [`reparent_shard`].
async fn run_prs(
    ctx: &ActionCtx<'_>,
    rec: &Recorder<'_>,
    avoid: Option<TabletAlias>,
) -> Result<ReparentOutcome, ReparentError> {
    let cfg = ctx.shared.config.load_full();
    let opts = PlannedReparentOptions {
        avoid_primary: avoid,
        wait_replicas_timeout: Some(cfg.wait_replicas_timeout),
        tolerable_replication_lag: non_zero(cfg.tolerable_replication_lag),
        cancel: ctx.shared.cancel.child_token(),
        ..PlannedReparentOptions::default()
    };
    reparent_shard(ctx, rec, "prs", async |reparenter, keyspace, shard, lock, log| {
        reparenter
            .planned_reparent_shard(keyspace, shard, &opts, Some(lock), log)
            .await
    })
    .await
}

/// Runs `reparent` (given the reparenter, the analysed keyspace and shard,
/// the held shard lock and the event log to write to), copying its events
/// into the record's steps as `<prefix>:<phase>` while it runs.
async fn reparent_shard(
    ctx: &ActionCtx<'_>,
    rec: &Recorder<'_>,
    prefix: &str,
    reparent: impl AsyncFnOnce(
        &Reparenter,
        &str,
        &str,
        &ShardLock,
        &EventLog,
    ) -> Result<ReparentOutcome, ReparentError>,
) -> Result<ReparentOutcome, ReparentError> {
    let log = EventLog::default();
    let run = reparent(
        &ctx.shared.reparenter,
        &ctx.entry.analyzed_keyspace,
        &ctx.entry.analyzed_shard,
        ctx.lock,
        &log,
    );
    rec.reparent(prefix, &log, run).await
}

/// A reparent an operator requested through the Vtctld service, for its
/// audit record (see [`run_operator_reparent`]).
#[derive(Clone, Debug)]
pub struct OperatorReparent {
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// `OperatorPlannedReparentShard` or `OperatorEmergencyReparentShard`.
    pub kind: RecoveryKind,
    /// The tablet it acts on: the shard's primary when it has one, else the
    /// requested new primary (the zero alias when neither is known).
    pub tablet: TabletAlias,
    /// Who asked, for what.
    pub request: OperatorRequest,
}

/// Runs `reparent` (a PRS or ERS writing its events to `log`) as an audited
/// operator-requested reparent, on the path vtorc's own ERS/PRS recoveries
/// take: a recovery record is started, every ERS/PRS event is copied into
/// its steps as it happens (`prs:<phase>` / `ers:<phase>`), a `promoted`
/// step names the new primary, and the record ends with the outcome (the
/// new primary, or the error). The record goes to the ring, the audit file
/// and the Watch subscribers like every other. Not a vtorc recovery: no
/// detection, no back-off, no recovery counters (the reparent's own
/// counters still count it). Returns the reparent's result unchanged.
pub async fn run_operator_reparent(
    audit: &AuditLog,
    op: OperatorReparent,
    log: &EventLog,
    reparent: impl Future<Output = Result<ReparentOutcome, ReparentError>>,
) -> Result<ReparentOutcome, ReparentError> {
    let mut tablets = vec![op.tablet.clone()];
    tablets.extend(
        [&op.request.new_primary, &op.request.avoid_primary]
            .into_iter()
            .flatten()
            .filter(|a| **a != op.tablet)
            .cloned(),
    );
    let describe = op.request.describe();
    let recovery_id = audit.start_operator_reparent(
        &op.keyspace,
        &op.shard,
        op.kind,
        op.tablet.clone(),
        tablets,
        op.request,
    );
    let span = tracing::info_span!(
        parent: None,
        "recovery",
        keyspace = %op.keyspace,
        shard = %op.shard,
        analysis = %crate::analysis::AnalysisCode::NoProblem,
        recovery_id,
    );
    let prefix = if op.kind == RecoveryKind::OperatorEmergencyReparentShard {
        "ers"
    } else {
        "prs"
    };
    let rec = Recorder {
        audit,
        id: recovery_id,
    };
    span.in_scope(|| tracing::info!("{describe}"));
    let started = crate::clock::now();
    let result = rec.reparent(prefix, log, reparent).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let audited = match &result {
        Ok(outcome) => Ok(span.in_scope(|| promoted(&rec, outcome.new_primary.as_ref()))),
        Err(e) => Err(format!("{e:#}")),
    };
    span.in_scope(|| match &audited {
        Ok(successor) => tracing::info!(
            elapsed_ms = elapsed.as_millis() as u64,
            successor = successor.as_ref().map(ToString::to_string).unwrap_or_default(),
            "{} succeeded",
            op.kind.name()
        ),
        Err(e) => tracing::warn!("{} failed: {e}", op.kind.name()),
    });
    audit.finish_recovery(recovery_id, audited, elapsed);
    result
}

/// `ReconcileStaleTopoPrimary`: the RPCs are best effort (the old primary is
/// often unreachable); the topo type change is what counts.
async fn reconcile_stale_primary(
    ctx: &ActionCtx<'_>,
    rec: &Recorder<'_>,
    stale: Tablet,
    primary: Option<TabletAlias>,
    semi_sync: bool,
) -> Result<Option<TabletAlias>, RecoveryError> {
    let alias = crate::tablet::rpc::alias_of(&stale);
    let best_effort = async {
        if rec
            .rpc(
                ctx,
                "DemotePrimary",
                &alias,
                ctx.shared.tmc.demote_primary(&stale, true),
            )
            .await
            .is_err()
        {
            return;
        }
        if let Some(primary) = &primary {
            let _ = rec.repoint(ctx, &stale, &alias, primary, semi_sync, 0.0).await;
        }
    };
    let authoritative = async {
        let result = ctx
            .shared
            .topo
            .update_tablet_fields(&alias, |t| {
                if t.r#type == TabletType::Primary as i32 {
                    t.r#type = TabletType::Replica as i32;
                    t.primary_term_start_time = None;
                    Ok(())
                } else {
                    Err(TopoError::NoUpdateNeeded)
                }
            })
            .await;
        match result {
            Ok(_) | Err(TopoError::NoUpdateNeeded) => {
                rec.step(
                    "ChangeTabletType",
                    StepLevel::Info,
                    format!("topo type of {alias} is REPLICA"),
                );
                Ok(())
            }
            Err(e) => {
                let e = RecoveryError::topo(format!("change the topo type of {alias} to REPLICA"), e);
                rec.step("ChangeTabletType", StepLevel::Error, format!("{e:#}"));
                Err(e)
            }
        }
    };
    let ((), topo) = tokio::join!(best_effort, authoritative);
    topo.map(|()| None)
}
