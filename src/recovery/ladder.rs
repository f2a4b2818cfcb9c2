//! The gate ladder as data: one ordered list of gates, each with a verdict.
//!
//! The engine (`gate::check_and_recover`) walks [`LADDER`] and records the
//! verdict of every gate it evaluated on the detection
//! ([`DetectionRecord::gates`](super::DetectionRecord)); Explain walks the
//! same list with [`evaluate`] and no side effects: gates that need I/O or
//! the shard lock report the engine's last verdict for the problem (from the
//! audit) or "not evaluated: needs the lock". The skip metrics and the
//! audit's skip reason come from the same verdicts. No other code decides
//! whether a recovery is skipped.

use serde::Serialize;
use tokio::time::Instant;

use super::audit::SkipReason;
use super::backoff::BackoffKey;
use super::shared::Shared;
use crate::analysis::{AnalysisCode, DetectionAnalysis, RecoveryKind};

/// One gate of the recovery path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Gate {
    /// The code has a recovery (and it is switched on).
    RecoveryAction,
    /// Global recoveries switch.
    GlobalSwitch,
    /// `--cells-no-recovery` (re-checked on the fresh entry under the lock).
    Cells,
    /// Back-off of recoveries that do not clear their problem (ours).
    Backoff,
    /// Re-poll of the primary for non-shard-wide recoveries (I/O).
    PrimaryRecheck,
    /// `TryLockShard` (I/O).
    ShardLock,
    /// Records re-read, tablets re-polled, shard re-analysed (I/O, lock).
    FreshAnalysis,
    /// ERS switches: global, keyspace, shard (evaluated on the fresh entry).
    ErsSwitch,
    /// Cooldown after vtorc's last ERS of the shard (evaluated on the fresh entry).
    ErsCooldown,
    /// The recovery function's own check before it acts (I/O, e.g. Ping).
    Plan,
}

/// Every gate, in the order the engine evaluates them.
pub const LADDER: [Gate; 10] = [
    Gate::RecoveryAction,
    Gate::GlobalSwitch,
    Gate::Cells,
    Gate::Backoff,
    Gate::PrimaryRecheck,
    Gate::ShardLock,
    Gate::FreshAnalysis,
    Gate::ErsSwitch,
    Gate::ErsCooldown,
    Gate::Plan,
];

impl Gate {
    /// Display name: the skip reason the gate reports (Go's label where it
    /// has one), or the step.
    pub fn name(self) -> &'static str {
        match self {
            Gate::RecoveryAction => SkipReason::NoRecoveryAction.as_str(),
            Gate::GlobalSwitch => SkipReason::GlobalRecoveriesDisabled.as_str(),
            Gate::Cells => SkipReason::CellNoRecovery.as_str(),
            Gate::Backoff => SkipReason::RecoveryBackoff.as_str(),
            Gate::PrimaryRecheck => SkipReason::PrimaryRecovery.as_str(),
            Gate::ShardLock => "ShardLock",
            Gate::FreshAnalysis => SkipReason::StaleAnalysis.as_str(),
            Gate::ErsSwitch => SkipReason::EmergencyReparentShardDisabled.as_str(),
            Gate::ErsCooldown => SkipReason::EmergencyReparentCooldown.as_str(),
            Gate::Plan => "RecoveryPlan",
        }
    }

    /// Whether the gate needs I/O or the shard lock (Explain does not run it).
    pub fn needs_io(self) -> bool {
        matches!(
            self,
            Gate::PrimaryRecheck | Gate::ShardLock | Gate::FreshAnalysis | Gate::Plan
        )
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A gate's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Lets the recovery through.
    Pass,
    /// Skips it (counted in `SkippedRecoveries` with the gate's skip reason).
    Skip(SkipReason),
    /// Stops it without a skip count: lock refused, aborted, not attempted.
    Stop,
    /// Needs I/O or the lock; not evaluated here.
    Deferred,
    /// Does not apply to this recovery.
    NotApplicable,
}

/// One gate with its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GateResult {
    /// The gate.
    pub gate: Gate,
    /// Its verdict.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
    /// True when the verdict is the engine's, from its last run for this
    /// problem (Explain only; the gate needs I/O).
    pub from_last_run: bool,
}

impl GateResult {
    pub(crate) fn new(gate: Gate, verdict: Verdict, reason: impl Into<String>) -> Self {
        GateResult {
            gate,
            verdict,
            reason: reason.into(),
            from_last_run: false,
        }
    }

    /// The skip reason, if the verdict is a skip.
    pub fn skip_reason(&self) -> Option<SkipReason> {
        match self.verdict {
            Verdict::Skip(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the gate stops the recovery (skip or stop).
    pub fn stops(&self) -> bool {
        matches!(self.verdict, Verdict::Skip(_) | Verdict::Stop)
    }
}

/// Evaluates a gate that needs no I/O on `a` at `now`, without side
/// effects. `None` for I/O gates.
pub(crate) fn evaluate(
    shared: &Shared,
    gate: Gate,
    a: &DetectionAnalysis,
    now: Instant,
) -> Option<GateResult> {
    use Verdict::*;
    let r = match gate {
        Gate::RecoveryAction => match shared.skip_code(a) {
            Some(reason) => GateResult::new(
                gate,
                Skip(reason),
                if matches!(a.recovery, RecoveryKind::RecoverErrantGtidDetected) {
                    format!(
                        "{} is only acted on with --change-tablets-with-errant-gtid-to-drained (off)",
                        a.analysis
                    )
                } else {
                    format!("{} has no recovery", a.analysis)
                },
            ),
            None => GateResult::new(
                gate,
                Pass,
                format!("{} is recovered by {}", a.analysis, a.recovery.name()),
            ),
        },
        Gate::GlobalSwitch => {
            if shared.recoveries_enabled() {
                GateResult::new(gate, Pass, "recoveries are globally enabled")
            } else {
                GateResult::new(
                    gate,
                    Skip(SkipReason::GlobalRecoveriesDisabled),
                    "recoveries are globally disabled",
                )
            }
        }
        Gate::Cells => {
            let config = shared.config.load();
            let cells = &config.cells_no_recovery;
            match shared.cell_gate(a) {
                Some(SkipReason::CellNoRecoveryUnvalidated) => GateResult::new(
                    gate,
                    Skip(SkipReason::CellNoRecoveryUnvalidated),
                    "--cells-no-recovery is not validated against the topology yet",
                ),
                Some(reason) => GateResult::new(
                    gate,
                    Skip(reason),
                    format!(
                        "cell {:?} is in --cells-no-recovery {cells:?} (or unknown)",
                        a.analyzed_cell
                    ),
                ),
                None if cells.is_empty() => GateResult::new(
                    gate,
                    NotApplicable,
                    "no cell is denied (--cells-no-recovery is empty)",
                ),
                None if !a.actionable || a.analysis == AnalysisCode::ClusterHasNoPrimary => GateResult::new(
                    gate,
                    Pass,
                    "not checked for this code here (ClusterHasNoPrimary: the shard's cells under the lock)",
                ),
                None => GateResult::new(
                    gate,
                    Pass,
                    format!(
                        "cell {:?} is not in --cells-no-recovery {cells:?}",
                        a.analyzed_cell
                    ),
                ),
            }
        }
        Gate::Backoff => {
            let key = BackoffKey::of(a);
            let state = shared.backoff();
            let cfg = state.config();
            match state.held(&key, now) {
                Some(h) if !h.left.is_zero() => GateResult::new(
                    gate,
                    Skip(SkipReason::RecoveryBackoff),
                    format!(
                        "{} recovery(ies) of {key} did not clear it (last one {}); next attempt in {:.1}s \
                         (waits double from --recovery-backoff-initial={:?} up to --recovery-backoff-max={:?}); \
                         AckRecovery clears it",
                        h.ineffective,
                        if h.last_success { "succeeded" } else { "failed" },
                        h.left.as_secs_f64(),
                        cfg.initial,
                        cfg.max
                    ),
                ),
                Some(h) => GateResult::new(
                    gate,
                    Pass,
                    format!(
                        "{} earlier recovery(ies) did not clear it; the back-off of {:?} is over",
                        h.ineffective, h.wait
                    ),
                ),
                None => GateResult::new(gate, Pass, "no recent recovery of this problem"),
            }
        }
        Gate::ErsSwitch => {
            if !a.recovery.uses_ers() {
                GateResult::new(
                    gate,
                    NotApplicable,
                    format!("{} does not run EmergencyReparentShard", a.recovery.name()),
                )
            } else if shared.ers_enabled_for(a) {
                GateResult::new(gate, Pass, "EmergencyReparentShard is allowed")
            } else {
                let mut why = Vec::new();
                if !shared.ers_allowed.load(std::sync::atomic::Ordering::SeqCst) {
                    why.push("globally (--allow-emergency-reparent=false)");
                }
                if a.analyzed_keyspace_emergency_reparent_disabled {
                    why.push("for the keyspace");
                }
                if a.analyzed_shard_emergency_reparent_disabled {
                    why.push("for the shard");
                }
                GateResult::new(
                    gate,
                    Skip(SkipReason::EmergencyReparentShardDisabled),
                    format!("EmergencyReparentShard is disabled {}", why.join(", ")),
                )
            }
        }
        Gate::ErsCooldown => {
            let cooldown = shared.backoff().config().ers_cooldown;
            if !a.recovery.uses_ers() {
                GateResult::new(
                    gate,
                    NotApplicable,
                    format!("{} does not run EmergencyReparentShard", a.recovery.name()),
                )
            } else if let Some((since, left)) = shared.backoff().ers_cooldown(&a.keyspace_shard(), now) {
                GateResult::new(
                    gate,
                    Skip(SkipReason::EmergencyReparentCooldown),
                    format!(
                        "vtorc promoted a new primary of {} by EmergencyReparentShard {:.1}s ago; no other one for \
                         --recovery-period-block-duration={cooldown:?} ({:.1}s left); AckRecovery clears it, \
                         an operator's EmergencyReparentShard is not blocked",
                        a.keyspace_shard(),
                        since.as_secs_f64(),
                        left.as_secs_f64()
                    ),
                )
            } else {
                GateResult::new(
                    gate,
                    Pass,
                    format!(
                        "no vtorc EmergencyReparentShard of the shard within --recovery-period-block-duration={cooldown:?}"
                    ),
                )
            }
        }
        Gate::PrimaryRecheck | Gate::ShardLock | Gate::FreshAnalysis | Gate::Plan => return None,
    };
    Some(r)
}

/// The ladder of `a` for Explain: pure gates evaluated now, I/O gates from
/// `last` (the engine's last run for this problem) or deferred.
pub(crate) fn explain(
    shared: &Shared,
    a: &DetectionAnalysis,
    now: Instant,
    last: &[GateResult],
) -> Vec<GateResult> {
    LADDER
        .iter()
        .map(|&gate| match evaluate(shared, gate, a, now) {
            Some(r) => r,
            None => match last.iter().find(|r| r.gate == gate) {
                Some(r) => GateResult {
                    from_last_run: true,
                    ..r.clone()
                },
                None => io_not_evaluated(gate, a),
            },
        })
        .collect()
}

fn io_not_evaluated(gate: Gate, a: &DetectionAnalysis) -> GateResult {
    let what = match gate {
        Gate::PrimaryRecheck if a.shard_wide_recovery => {
            return GateResult::new(
                gate,
                Verdict::NotApplicable,
                "a shard-wide recovery does not wait for the primary",
            );
        }
        Gate::PrimaryRecheck => "the shard primary is re-polled first; a primary problem is recovered first",
        Gate::ShardLock => "TryLockShard; refused while vtctld or another vtorc holds the lock",
        Gate::FreshAnalysis => "records re-read, tablets re-polled and the shard re-analysed under the lock",
        _ => "the recovery's own check before it acts (e.g. Ping for IncapacitatedPrimary)",
    };
    GateResult::new(
        gate,
        Verdict::Deferred,
        format!("not evaluated: needs the lock; {what}"),
    )
}
