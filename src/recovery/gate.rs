//! The gate order of one recovery (reference §6.2), step by step:
//!
//! | # | Gate | Skip / stop |
//! |---|---|---|
//! | 1 | recovery function and skip code | `NoRecoveryAction` |
//! | 2 | detection record (upsert, stable id per incident) | – |
//! | 3 | global recoveries switch | `GlobalRecoveriesDisabled` |
//! | 4 | `--cells-no-recovery` (unvalidated holds everything) | `CellNoRecoveryUnvalidated`, `CellNoRecovery` |
//! | – | back-off: the problem came back after earlier recoveries (ours) | `RecoveryBackoff` |
//! | 5 | non-shard-wide: re-poll the primary, re-run analysis | `PrimaryRecovery` |
//! | 6 | `TryLockShard` (`VTOrc Recovery for <code> on <alias>`), refused after SIGTERM | lock refused |
//! | 7 | actionable: re-read keyspace and shard records | abort |
//! | 8 | shard-wide: re-read the shard's tablets, re-poll them all (not the dead primary of DeadPrimary codes) | `CellNoRecovery` (ClusterHasNoPrimary) |
//! | 9 | otherwise: re-read tablet records, re-poll the analysed tablet and the shard primary | abort without a primary |
//! | 10 | re-run analysis; same tablet, same recovery? | `StaleAnalysis` |
//! | 11 | cells re-check on the fresh entry | `CellNoRecovery` |
//! | – | ERS-based recovery with ERS disabled (global / keyspace / shard) | `EmergencyReparentShardDisabled` |
//! | – | ERS-based recovery within `--recovery-period-block-duration` of vtorc's last ERS of the shard | `EmergencyReparentCooldown` |
//! | 12 | run the recovery function ("not attempted" ends here, no counters) | – |
//! | 13 | `RecoveriesCount` and `Successful`/`FailedRecoveries` | – |
//! | 14 | post-refresh (shard-wide: every tablet; otherwise the analysed one) | – |
//! | 15 | unlock | – |
//!
//! Each step is a gate of [`super::ladder::LADDER`]; the verdicts this
//! run reached are recorded on the detection (Explain shows them).
//!
//! Additions to Go VTOrc, both to make failover fast without weakening a
//! gate: (a) step 5 of an `UnreachablePrimary*` analysis also re-polls the
//! analysed primary's direct replicas, so a dead primary is recognised as
//! `DeadPrimary` at once instead of after their next scheduled poll; (b)
//! recoveries of one shard started by the same pass queue in-process for
//! the lock (Go lets them fail `TryLockShard` and retry a tick later).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument;

use super::actions::{self, ActionCtx, NotAttempted};
use super::audit::SkipReason;
use super::backoff::BackoffKey;
use super::error::RecoveryError;
use super::ladder::{self, Gate, GateResult, Verdict};
use super::metrics::LockAction;
use super::shared::Shared;
use super::view::{FreshRecords, direct_replicas, overlay_records, shard_primary};
use crate::analysis::{self, AnalysisCode, DetectionAnalysis, Durability, RecoveryKind};
use crate::ids::KeyspaceShard;
use crate::model::ClusterSnapshot;
use crate::proto::topodata::TabletAlias;
use crate::topo::ShardLock;

/// Longest a gate waits to re-poll a tablet whose last check already
/// failed (see `Shared::refresh`).
const UNREACHABLE_REFRESH_BOUND: Duration = Duration::from_secs(1);

/// How one pass through the gates ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateOutcome {
    /// A gate skipped the recovery (counted in `SkippedRecoveries`).
    Skipped(SkipReason),
    /// The shard lock could not be taken (held elsewhere, or shutting down).
    LockRefused(String),
    /// A refresh or read the gate needs failed; nothing was changed.
    Aborted(AbortReason),
    /// The recovery function decided not to act (no counters).
    NotAttempted(NotAttempted),
    /// The recovery function ran.
    Recovered {
        /// Its audit id.
        recovery_id: u64,
        /// Whether it succeeded.
        success: bool,
    },
}

/// Why a pass through the gates stopped without changing anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbortReason {
    /// The engine is closing its permits.
    #[error("recovery permits closed")]
    PermitsClosed,
    /// Re-polling the primary failed.
    #[error("{0}")]
    PrimaryRecheck(String),
    /// Reading the keyspace and shard records failed.
    #[error("read keyspace/shard records: {0}")]
    ReadRecords(String),
    /// Listing the shard's tablets failed.
    #[error("read the shard's tablets: {0}")]
    ReadTablets(String),
    /// The shard is not (any more) among the watched ones.
    #[error("the shard is not watched")]
    ShardNotWatched,
    /// Re-polling the tablets involved failed.
    #[error("{0}")]
    Refresh(String),
    /// A non-shard-wide recovery found no primary.
    #[error("the shard has no primary")]
    NoPrimary,
    /// The keyspace's durability policy is not one we know.
    #[error("durability policy: {0}")]
    DurabilityPolicy(String),
    /// The keyspace has no record.
    #[error("no keyspace record")]
    NoKeyspaceRecord,
}

impl Shared {
    /// Step 1: the skip code of an analysis.
    pub(crate) fn skip_code(&self, a: &DetectionAnalysis) -> Option<SkipReason> {
        match a.recovery {
            RecoveryKind::None => Some(SkipReason::NoRecoveryAction),
            RecoveryKind::RecoverErrantGtidDetected
                if !self.config.load().change_tablets_with_errant_gtid_to_drained =>
            {
                Some(SkipReason::NoRecoveryAction)
            }
            _ => None,
        }
    }

    /// Whether `cell` is in `--cells-no-recovery`.
    fn cell_denied(&self, cell: &str) -> bool {
        self.config.load().cells_no_recovery.iter().any(|c| c == cell)
    }

    /// Step 4 (and 11): the cells-no-recovery gate.
    pub(crate) fn cell_gate(&self, a: &DetectionAnalysis) -> Option<SkipReason> {
        if self.config.load().cells_no_recovery.is_empty() {
            return None;
        }
        if !self.cells_validated.load(Ordering::SeqCst) {
            return Some(SkipReason::CellNoRecoveryUnvalidated);
        }
        if !a.actionable || a.analysis == AnalysisCode::ClusterHasNoPrimary {
            return None;
        }
        if a.analyzed_cell.is_empty() || self.cell_denied(&a.analyzed_cell) {
            return Some(SkipReason::CellNoRecovery);
        }
        None
    }

    /// Counts and audits a skip; `run` is the ladder up to the skipping gate.
    fn skip(&self, a: &DetectionAnalysis, reason: SkipReason, run: Vec<GateResult>) -> GateOutcome {
        self.metrics.skipped(a.recovery, &a.keyspace_shard(), reason);
        self.audit
            .note_skip(&a.analyzed_instance_alias, a.analysis, reason);
        self.audit.note_gates(&a.analyzed_instance_alias, a.analysis, run);
        tracing::debug!(
            keyspace = %a.analyzed_keyspace,
            shard = %a.analyzed_shard,
            tablet = %a.analyzed_instance_alias,
            analysis = %a.analysis,
            reason = reason.as_str(),
            "recovery skipped"
        );
        GateOutcome::Skipped(reason)
    }

    /// Notes a stop that is not a skip at `gate` and returns it; `run` is
    /// the ladder before that gate.
    fn stop(
        &self,
        a: &DetectionAnalysis,
        gate: Gate,
        outcome: GateOutcome,
        mut run: Vec<GateResult>,
    ) -> GateOutcome {
        let note = match &outcome {
            GateOutcome::LockRefused(e) => format!("shard lock not taken: {e}"),
            GateOutcome::Aborted(e) => format!("aborted: {e}"),
            GateOutcome::NotAttempted(e) => format!("not attempted: {e}"),
            other => format!("{other:?}"),
        };
        run.push(GateResult::new(gate, Verdict::Stop, note.clone()));
        self.audit.note(&a.analyzed_instance_alias, a.analysis, note);
        self.audit.note_gates(&a.analyzed_instance_alias, a.analysis, run);
        outcome
    }

    /// Evaluates the pure gate `gate` on `a` into `run`; the skip, if it skips.
    fn pure_gate(&self, gate: Gate, a: &DetectionAnalysis, run: &mut Vec<GateResult>) -> Option<SkipReason> {
        let r = ladder::evaluate(self, gate, a, crate::clock::now())?;
        let skip = r.skip_reason();
        run.push(r);
        skip
    }

    /// Polls `aliases` concurrently, each bounded by the remote-operation
    /// timeout. Tablets gone from discovery are ignored; a timeout leaves the
    /// tablet as it was. `Err` only if discovery has stopped.
    async fn refresh(&self, aliases: &[TabletAlias]) -> Result<(), RecoveryError> {
        let full = self.config.load().remote_operation_timeout;
        let snapshot = self.cluster.snapshot();
        let polls = aliases.iter().map(|alias| {
            // A tablet whose last check already failed (a frozen or cut-off
            // host) would hold the gate for a whole poll deadline, and the
            // shard's other recoveries (DeadPrimary among them) behind it;
            // its re-poll gets a short bound and it stays as it was.
            let unreachable = snapshot
                .shards
                .values()
                .find_map(|s| s.tablet(alias))
                .is_some_and(|t| t.unreachable_since().is_some());
            let bound = if unreachable {
                full.min(UNREACHABLE_REFRESH_BOUND)
            } else {
                full
            };
            async move {
                match tokio::time::timeout(bound, self.cluster.refresh_tablet(alias)).await {
                    Ok(Ok(_)) | Ok(Err(crate::discovery::DiscoveryError::UnknownTablet(_))) => Ok(()),
                    Ok(Err(crate::discovery::DiscoveryError::UnknownShard(_))) => Ok(()),
                    Ok(Err(e)) => Err(RecoveryError::discovery(format!("refresh {alias}"), e)),
                    Err(_) => {
                        tracing::debug!(tablet = %alias, "refresh timed out after {bound:?}");
                        Ok(())
                    }
                }
            }
        });
        for r in futures::future::join_all(polls).await {
            r?;
        }
        Ok(())
    }

    /// Whether `fresh` has an entry for the same tablet with the same
    /// recovery function and skip code as `a`; returns it.
    fn same_problem(
        &self,
        a: &DetectionAnalysis,
        fresh: Vec<DetectionAnalysis>,
    ) -> Option<DetectionAnalysis> {
        let skip = self.skip_code(a);
        fresh.into_iter().find(|p| {
            p.analyzed_instance_alias == a.analyzed_instance_alias
                && p.recovery == a.recovery
                && self.skip_code(p) == skip
        })
    }

    fn analyze_shard(&self, snapshot: &ClusterSnapshot, key: &KeyspaceShard) -> Vec<DetectionAnalysis> {
        analysis::analyze_shard(snapshot, key, &self.config.load().analysis, crate::clock::now()).problems
    }
}

/// Codes whose analysed tablet is an unreachable primary that may simply
/// have lost its vttablet: the re-check polls its direct replicas too.
fn is_unreachable_primary_family(code: AnalysisCode) -> bool {
    matches!(
        code,
        AnalysisCode::UnreachablePrimary
            | AnalysisCode::UnreachablePrimaryWithBrokenReplicas
            | AnalysisCode::UnreachablePrimaryWithLaggingReplicas
    )
}

/// Codes whose analysed (dead) primary is not re-polled before the recovery.
fn excludes_dead_primary_from_refresh(code: AnalysisCode) -> bool {
    matches!(
        code,
        AnalysisCode::DeadPrimary
            | AnalysisCode::DeadPrimaryAndSomeReplicas
            | AnalysisCode::DeadPrimaryAndReplicas
            | AnalysisCode::DeadPrimaryWithoutReplicas
    )
}

/// Step 5: re-poll the shard primary (and, for an unreachable primary, its
/// direct replicas) and re-run analysis. `Ok(false)` = the analysed tablet
/// no longer has this problem: primary mitigation comes first.
async fn recheck_primary_health(shared: &Shared, a: &DetectionAnalysis) -> Result<bool, RecoveryError> {
    let key = a.keyspace_shard();
    let snapshot = shared.cluster.snapshot();
    let Some(shard) = snapshot.shard(&key) else {
        return Ok(false);
    };
    let mut targets: BTreeSet<TabletAlias> = BTreeSet::new();
    // The analysed tablet's replication source and the shard primary
    // (they differ for a replica connected to the wrong primary).
    if let Some(source) = &a.analyzed_instance_primary_alias {
        targets.insert(source.clone());
    }
    if let Some(p) = shard_primary(shard) {
        targets.insert(p.alias().clone());
    }
    if is_unreachable_primary_family(a.analysis) {
        targets.insert(a.analyzed_instance_alias.clone());
        targets.extend(
            direct_replicas(shard, &a.analyzed_instance_alias)
                .into_iter()
                .map(|t| t.alias().clone()),
        );
    }
    let targets: Vec<TabletAlias> = targets.into_iter().collect();
    shared.refresh(&targets).await?;
    let fresh = shared.analyze_shard(&shared.cluster.snapshot(), &key);
    Ok(shared.same_problem(a, fresh).is_some())
}

/// Runs one analysis through every gate and, if all pass, its recovery.
/// `queue`: recoveries of one shard started together wait on it for the
/// lock instead of failing `TryLockShard` against each other.
pub(crate) async fn check_and_recover(
    shared: &Shared,
    a: DetectionAnalysis,
    queue: Option<&tokio::sync::Mutex<()>>,
) -> GateOutcome {
    let key = a.keyspace_shard();
    let _pending = shared.metrics.pending_guard();
    // 2. Detection record (Go writes none for skip-code skips; we record
    // every problem seen).
    shared.audit.observe(&a);
    let mut run: Vec<GateResult> = Vec::with_capacity(ladder::LADDER.len());
    // 1, 3, 4 and the back-off: the pure gates before the lock, in ladder order.
    for gate in [
        Gate::RecoveryAction,
        Gate::GlobalSwitch,
        Gate::Cells,
        Gate::Backoff,
    ] {
        if let Some(reason) = shared.pure_gate(gate, &a, &mut run) {
            return shared.skip(&a, reason, run);
        }
    }
    let _permit = tokio::select! {
        permit = shared.permits.acquire() => match permit {
            Ok(p) => p,
            Err(_) => return shared.stop(&a, Gate::PrimaryRecheck, GateOutcome::Aborted(AbortReason::PermitsClosed), run),
        },
        _ = shared.draining.cancelled() => {
            return shared.stop(&a, Gate::ShardLock, GateOutcome::LockRefused("vtorc is shutting down".into()), run);
        }
    };
    // 5. Primary re-check for non-shard-wide recoveries.
    if a.shard_wide_recovery {
        run.push(GateResult::new(
            Gate::PrimaryRecheck,
            Verdict::NotApplicable,
            "a shard-wide recovery does not wait for the primary",
        ));
    } else {
        match recheck_primary_health(shared, &a).await {
            Ok(true) => run.push(GateResult::new(
                Gate::PrimaryRecheck,
                Verdict::Pass,
                "the primary was re-polled and the problem is still the tablet's own",
            )),
            Ok(false) => {
                tracing::info!(
                    keyspace = %key.keyspace,
                    shard = %key.shard,
                    tablet = %a.analyzed_instance_alias,
                    analysis = %a.analysis,
                    "aborting {}, primary mitigation is required",
                    a.recovery.name()
                );
                run.push(GateResult::new(
                    Gate::PrimaryRecheck,
                    Verdict::Skip(SkipReason::PrimaryRecovery),
                    "after re-polling the primary the tablet no longer has this problem: primary mitigation first",
                ));
                return shared.skip(&a, SkipReason::PrimaryRecovery, run);
            }
            Err(e) => {
                return shared.stop(
                    &a,
                    Gate::PrimaryRecheck,
                    GateOutcome::Aborted(AbortReason::PrimaryRecheck(format!("{e:#}"))),
                    run,
                );
            }
        }
    }
    // 6. Try-lock.
    let _queued = match queue {
        Some(q) => Some(q.lock().await),
        None => None,
    };
    if shared.draining.is_cancelled() {
        return shared.stop(
            &a,
            Gate::ShardLock,
            GateOutcome::LockRefused("vtorc is shutting down".into()),
            run,
        );
    }
    if let Some(why) = shared.sharing_refusal() {
        return shared.stop(&a, Gate::ShardLock, GateOutcome::LockRefused(why), run);
    }
    let action = format!(
        "VTOrc Recovery for {} on {}",
        a.analysis, a.analyzed_instance_alias
    );
    let started = crate::clock::now();
    let lock = shared
        .topo
        .try_lock_shard(&key.keyspace, &key.shard, &action)
        .await;
    shared.metrics.lock_timing(LockAction::Lock, started.elapsed());
    let lock = match lock {
        Ok(lock) => lock,
        Err(e) => {
            tracing::debug!(keyspace = %key.keyspace, shard = %key.shard, analysis = %a.analysis, "shard lock not taken: {e}");
            return shared.stop(&a, Gate::ShardLock, GateOutcome::LockRefused(e.to_string()), run);
        }
    };
    // The lease may have lapsed while the lock was being taken.
    if let Some(why) = shared.sharing_refusal() {
        if let Err(e) = lock.unlock().await {
            tracing::warn!(keyspace = %key.keyspace, shard = %key.shard, "failed to unlock the shard: {e}");
        }
        return shared.stop(&a, Gate::ShardLock, GateOutcome::LockRefused(why), run);
    }
    run.push(GateResult::new(
        Gate::ShardLock,
        Verdict::Pass,
        format!("shard lock taken ({action})"),
    ));
    let _active = shared.metrics.lock_guard();
    let outcome = under_lock(shared, &a, &lock, run).await;
    // 15. Unlock.
    let started = crate::clock::now();
    if let Err(e) = lock.unlock().await {
        tracing::warn!(keyspace = %key.keyspace, shard = %key.shard, "failed to unlock the shard: {e}");
    }
    shared.metrics.lock_timing(LockAction::Unlock, started.elapsed());
    outcome
}

/// Steps 7–14, with the shard lock held.
async fn under_lock(
    shared: &Shared,
    a: &DetectionAnalysis,
    lock: &ShardLock,
    mut run: Vec<GateResult>,
) -> GateOutcome {
    let fresh_stop = |run: Vec<GateResult>, what: AbortReason| {
        shared.stop(a, Gate::FreshAnalysis, GateOutcome::Aborted(what), run)
    };
    let key = a.keyspace_shard();
    let topo = &shared.topo;
    let mut fresh = FreshRecords::default();
    // 7. Keyspace and shard records.
    if a.actionable {
        match tokio::try_join!(
            topo.get_keyspace(&key.keyspace),
            topo.get_shard(&key.keyspace, &key.shard)
        ) {
            Ok((ks, shard)) => {
                fresh.keyspace = Some(ks.value);
                fresh.shard = Some(shard.value);
            }
            Err(e) => return fresh_stop(run, AbortReason::ReadRecords(e.to_string())),
        }
    }
    // 8 / 9. Tablet records, then polls.
    match topo.tablets_by_shard(&key.keyspace, &key.shard).await {
        Ok(listing) => {
            fresh.tablets_complete = listing.errors.is_empty();
            fresh.tablets = Some(listing.items.into_iter().map(|t| t.value).collect());
        }
        Err(e) => return fresh_stop(run, AbortReason::ReadTablets(e.to_string())),
    }
    let overlay = overlay_records(&shared.cluster.snapshot(), &key, &fresh);
    let Some(shard) = overlay.shard(&key).cloned() else {
        return fresh_stop(run, AbortReason::ShardNotWatched);
    };
    if a.shard_wide_recovery {
        if a.analysis == AnalysisCode::ClusterHasNoPrimary
            && !shared.config.load().cells_no_recovery.is_empty()
        {
            let cells: BTreeSet<&str> = shard.tablets.iter().map(|t| t.alias().cell.as_str()).collect();
            if cells.is_empty() || cells.iter().all(|c| shared.cell_denied(c)) {
                run.push(GateResult::new(
                    Gate::FreshAnalysis,
                    Verdict::Skip(SkipReason::CellNoRecovery),
                    "every cell of the shard's tablets is in --cells-no-recovery",
                ));
                return shared.skip(a, SkipReason::CellNoRecovery, run);
            }
        }
        let targets: Vec<TabletAlias> = shard
            .tablets
            .iter()
            .map(|t| t.alias().clone())
            .filter(|alias| {
                !(excludes_dead_primary_from_refresh(a.analysis) && *alias == a.analyzed_instance_alias)
            })
            .collect();
        if let Err(e) = shared.refresh(&targets).await {
            return fresh_stop(run, AbortReason::Refresh(format!("{e:#}")));
        }
    } else {
        let Some(primary) = shard_primary(&shard).map(|t| t.alias().clone()) else {
            return fresh_stop(run, AbortReason::NoPrimary);
        };
        let mut targets = vec![a.analyzed_instance_alias.clone()];
        if primary != a.analyzed_instance_alias {
            targets.push(primary);
        }
        if let Err(e) = shared.refresh(&targets).await {
            return fresh_stop(run, AbortReason::Refresh(format!("{e:#}")));
        }
    }
    // 10. Re-run analysis on the refreshed state.
    let view = overlay_records(&shared.cluster.snapshot(), &key, &fresh);
    let Some(entry) = shared.same_problem(a, shared.analyze_shard(&view, &key)) else {
        shared.audit.resolve(
            &a.analyzed_instance_alias,
            a.analysis,
            SkipReason::StaleAnalysis.as_str(),
        );
        run.push(GateResult::new(
            Gate::FreshAnalysis,
            Verdict::Skip(SkipReason::StaleAnalysis),
            "after re-reading the records and re-polling the tablets the problem is gone",
        ));
        return shared.skip(a, SkipReason::StaleAnalysis, run);
    };
    // 11. Cells, on the fresh entry.
    if let Some(reason) = shared.cell_gate(&entry) {
        run.push(GateResult::new(
            Gate::FreshAnalysis,
            Verdict::Skip(reason),
            format!(
                "the fresh entry's cell {:?} is denied by --cells-no-recovery",
                entry.analyzed_cell
            ),
        ));
        return shared.skip(a, reason, run);
    }
    run.push(GateResult::new(
        Gate::FreshAnalysis,
        Verdict::Pass,
        format!(
            "still {} on {} after fresh reads and polls",
            entry.analysis, entry.analyzed_instance_alias
        ),
    ));
    // ERS disabled globally, for the keyspace or for the shard; ERS cooldown.
    for gate in [Gate::ErsSwitch, Gate::ErsCooldown] {
        if let Some(reason) = shared.pure_gate(gate, &entry, &mut run) {
            return shared.skip(a, reason, run);
        }
    }
    let Some(shard) = view.shard(&key).cloned() else {
        return shared.stop(
            a,
            Gate::Plan,
            GateOutcome::Aborted(AbortReason::ShardNotWatched),
            run,
        );
    };
    let durability = match view
        .keyspaces
        .get(&key.keyspace)
        .map(|k| Durability::from_name(&k.durability_policy))
    {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return shared.stop(
                a,
                Gate::Plan,
                GateOutcome::Aborted(AbortReason::DurabilityPolicy(e.to_string())),
                run,
            );
        }
        None => {
            return shared.stop(
                a,
                Gate::Plan,
                GateOutcome::Aborted(AbortReason::NoKeyspaceRecord),
                run,
            );
        }
    };
    // `--sharing`: the re-reads above took time; the lease must still be
    // known valid when the recovery function starts.
    if let Some(why) = shared.sharing_refusal() {
        return shared.stop(a, Gate::ShardLock, GateOutcome::LockRefused(why), run);
    }
    // 12. Run.
    let ctx = ActionCtx {
        shared,
        entry: &entry,
        shard: &shard,
        durability,
        lock,
    };
    let planned = match actions::plan(&ctx).await {
        Ok(p) => p,
        Err(reason) => {
            tracing::debug!(
                keyspace = %key.keyspace,
                shard = %key.shard,
                tablet = %a.analyzed_instance_alias,
                analysis = %a.analysis,
                "recovery not attempted: {reason}"
            );
            return shared.stop(a, Gate::Plan, GateOutcome::NotAttempted(reason), run);
        }
    };
    run.push(GateResult::new(Gate::Plan, Verdict::Pass, "the recovery ran"));
    shared
        .audit
        .note_gates(&a.analyzed_instance_alias, a.analysis, run);
    let recovery_id = shared.audit.start_recovery(&entry, planned.tablets.clone());
    let span = tracing::info_span!(
        parent: None,
        "recovery",
        keyspace = %key.keyspace,
        shard = %key.shard,
        analysis = %entry.analysis,
        recovery_id,
    );
    let started = crate::clock::now();
    let backoff_key = BackoffKey::of(&entry);
    let result = watchdog(
        shared.config.load().long_recovery_warning,
        actions::execute(&ctx, planned.plan, recovery_id).instrument(span.clone()),
        &span,
    )
    .await;
    let elapsed = started.elapsed();
    let success = result.is_ok();
    shared
        .audit
        .finish_recovery(recovery_id, result.clone().map_err(|e| format!("{e:#}")), elapsed);
    // Anti-flapping: the back-off counts this run; a vtorc ERS that promoted
    // a new primary starts the shard's ERS cooldown.
    {
        let now = crate::clock::now();
        let mut backoff = shared.backoff();
        if success && entry.recovery.uses_ers() {
            // A successful ERS replaced the primary: the next dead primary
            // of this shard is a new incident, not this one coming back
            // (the ERS cooldown is what spaces emergency reparents).
            backoff.forget(&backoff_key);
            backoff.record_ers(key.clone(), now);
        } else {
            backoff.record(backoff_key, started, now, success);
        }
    }
    // 13. Counters.
    shared.metrics.recovered(entry.recovery, &key, success);
    span.in_scope(|| match &result {
        Ok(successor) => {
            tracing::info!(
                elapsed_ms = elapsed.as_millis() as u64,
                successor = successor.as_ref().map(ToString::to_string).unwrap_or_default(),
                "recovery {} succeeded",
                entry.recovery.name()
            );
        }
        Err(e) if e.is_cancelled() => tracing::warn!("recovery {} cancelled: {e:#}", entry.recovery.name()),
        Err(e) => tracing::error!("failed to recover {}: {e:#}", entry.analysis),
    });
    if success {
        shared
            .audit
            .resolve(&a.analyzed_instance_alias, a.analysis, "recovered");
    }
    // 14. Post-refresh.
    let targets: Vec<TabletAlias> = if entry.shard_wide_recovery {
        match shared.cluster.snapshot().shard(&key) {
            Some(s) => s.tablets.iter().map(|t| t.alias().clone()).collect(),
            None => Vec::new(),
        }
    } else {
        vec![entry.analyzed_instance_alias.clone()]
    };
    if let Err(e) = shared.refresh(&targets).await {
        tracing::debug!(keyspace = %key.keyspace, shard = %key.shard, "post-recovery refresh: {e:#}");
    }
    GateOutcome::Recovered { recovery_id, success }
}

/// Runs `fut`, warning (in `span`) every `after` while it is still running.
async fn watchdog<T>(after: Duration, fut: impl std::future::Future<Output = T>, span: &tracing::Span) -> T {
    tokio::pin!(fut);
    if after.is_zero() {
        return fut.await;
    }
    let mut waited = Duration::ZERO;
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tokio::time::sleep(after) => {
                waited += after;
                span.in_scope(|| tracing::warn!(running_for_s = waited.as_secs(), "recovery is still running"));
            }
        }
    }
}
