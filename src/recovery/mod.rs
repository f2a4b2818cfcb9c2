//! The recovery engine: turns detected problems into repairs, safely, with
//! several vtorc instances (and vtctld) watching the same shards.
//!
//! # Flow
//!
//! ```text
//! discovery ──ShardChange──▶ engine (debounce) ──▶ analyze_shard ──▶ one task per shard
//!           ──snapshot────▶ engine (every --recovery-poll-duration) ──▶ analyze (all shards)
//!                                                  │
//!   shard task: ordered problems one by one, then the rest concurrently; each through
//!   gate::check_and_recover: skip code → detection → global switch → cells → back-off →
//!   primary re-check → TryLockShard → re-read records → re-poll → re-analyse (same tablet,
//!   same recovery?) → ERS switches → ERS cooldown → actions::plan/execute → counters →
//!   post-refresh → unlock (the ladder of ladder.rs)
//! ```
//!
//! # Module map
//!
//! | File | What |
//! |---|---|
//! | `engine.rs` | the loop, scheduling, [`RecoveryHandle`] (toggles, audit, metrics, explain), shutdown |
//! | `gate.rs` | the exact gate order of one recovery (reference §6.2), [`GateOutcome`], [`AbortReason`] |
//! | `shared.rs` | the state the gates and the recovery functions share (so `actions.rs` does not import `gate.rs`) |
//! | `actions.rs` | what each recovery does (reference §6.4); [`NotAttempted`] |
//! | `audit.rs` | detections and recoveries: ring, JSON-lines file, broadcast |
//! | `metrics.rs` | Go VTOrc's recovery metrics on the `prometheus` crate |
//! | `view.rs` | the [`ClusterView`] seam over discovery; the fresh-records overlay; `shard_primary`, `direct_replicas` |
//! | `cooldown.rs` | [`CooldownMap`] (replica restarts once a minute) |
//! | `ladder.rs` | the gate ladder as data: every gate with its verdict, shared by the engine, Explain and the audit |
//! | `backoff.rs` | back-off of recoveries that do not clear their problem; ERS cooldown; acknowledgements |
//!
//! # Safety
//!
//! The shard lock in the topology is the only exclusion between processes:
//! every instance may detect, only the lock holder acts, and it acts only
//! if the problem still holds after it re-read the records and re-polled
//! the tablets under the lock. An instance that dies mid-recovery loses its
//! lock when its lease expires (`--topo-etcd-lease-ttl`); another one then
//! re-checks and finishes whatever is still needed. Within one process, a
//! shard has at most one task at a time.
//!
//! # Gotchas
//!
//! - Unit tests drive the gates with an in-process [`ClusterView`] fake;
//!   end-to-end tests live in `integration/tests/recovery_*.rs`.
//! - Adding an analysis code: map it in `analysis::codes::recovery()`; if
//!   it needs a new recovery, add a [`RecoveryKind`] arm to
//!   `actions::plan` and `actions::execute`.

mod actions;
pub mod audit;
pub mod backoff;
pub mod cooldown;
mod engine;
pub mod error;
mod gate;
pub mod ladder;
pub mod metrics;
mod shared;
pub mod view;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use actions::NotAttempted;
pub use audit::{
    AuditEvent, AuditFilter, AuditLog, DetectionRecord, RecoveryOutcome, RecoveryRecord, RecoveryStep,
    SkipReason, StepLevel,
};
pub use backoff::{BackoffConfig, BackoffKey};
pub use cooldown::CooldownMap;
pub use engine::{Decision, Explanation, RecoveryDeps, RecoveryEngine, RecoveryHandle, RecoveryTask};
pub use error::RecoveryError;
pub use gate::{AbortReason, GateOutcome};
pub use ladder::{Gate, GateResult, LADDER, Verdict};
pub use metrics::{LockAction, RecoveryMetrics};
pub use view::ClusterView;

use crate::analysis::AnalysisConfig;
use crate::config::Config;

/// Settings of the recovery engine. Flags keep Go VTOrc's names.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    /// Analysis options (`--instance-poll-time`, `--reasonable-replication-lag`, ...).
    pub analysis: AnalysisConfig,
    /// `--recovery-poll-duration`: the periodic full pass.
    pub recovery_poll_duration: Duration,
    /// How long shard-change events are collected before the shards they
    /// name are analysed (bounds analysis work under an event storm).
    pub event_debounce: Duration,
    /// `--max-concurrent-recoveries`: gate runs past the cheap gates at once.
    pub max_concurrent_recoveries: usize,
    /// `--allow-recovery`: false = start with global recoveries disabled.
    pub allow_recovery: bool,
    /// `--allow-emergency-reparent`: the initial global ERS switch.
    pub allow_emergency_reparent: bool,
    /// `--change-tablets-with-errant-gtid-to-drained`.
    pub change_tablets_with_errant_gtid_to_drained: bool,
    /// `--cells-no-recovery`.
    pub cells_no_recovery: Vec<String>,
    /// `--wait-replicas-timeout`, passed to ERS and PRS.
    pub wait_replicas_timeout: Duration,
    /// `--tolerable-replication-lag`, passed to PRS (zero = none).
    pub tolerable_replication_lag: Duration,
    /// `--prevent-cross-cell-failover`, passed to ERS.
    pub prevent_cross_cell_failover: bool,
    /// `--remote-operation-timeout`: bound on each refresh and read.
    pub remote_operation_timeout: Duration,
    /// `--shutdown-wait-time`: how long SIGTERM waits for running recoveries.
    pub shutdown_wait_time: Duration,
    /// `--audit-file-location`: JSON-lines audit file (`None` = memory only).
    pub audit_file_location: Option<PathBuf>,
    /// Recoveries (and resolved detections) kept in memory.
    pub audit_capacity: usize,
    /// How long a replica waits between two replication restarts.
    pub restart_replica_cooldown: Duration,
    /// `Ping` timeout of `RecoverIncapacitatedPrimary` (Go: 2 s).
    pub incapacitated_ping_timeout: Duration,
    /// A recovery running longer than this is warned about (and again
    /// every such period).
    pub long_recovery_warning: Duration,
    /// This instance's name in audit records.
    pub instance: String,
    /// Back-off and ERS cooldown (`--recovery-backoff-*`,
    /// `--recovery-not-clearing-threshold`, `--recovery-period-block-duration`).
    pub backoff: BackoffConfig,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            analysis: AnalysisConfig::default(),
            recovery_poll_duration: Duration::from_secs(1),
            event_debounce: Duration::from_millis(5),
            max_concurrent_recoveries: 32,
            allow_recovery: true,
            allow_emergency_reparent: true,
            change_tablets_with_errant_gtid_to_drained: false,
            cells_no_recovery: Vec::new(),
            wait_replicas_timeout: Duration::from_secs(30),
            tolerable_replication_lag: Duration::ZERO,
            prevent_cross_cell_failover: false,
            remote_operation_timeout: Duration::from_secs(15),
            shutdown_wait_time: Duration::from_secs(30),
            audit_file_location: None,
            audit_capacity: 1000,
            restart_replica_cooldown: Duration::from_secs(60),
            incapacitated_ping_timeout: Duration::from_secs(2),
            long_recovery_warning: Duration::from_secs(30),
            instance: String::from("vtorc"),
            backoff: BackoffConfig::default(),
        }
    }
}

impl RecoveryConfig {
    /// The engine's settings from vtorc's configuration; `instance` names
    /// this process in audit records.
    pub fn from_config(config: &Config, instance: impl Into<String>) -> Self {
        RecoveryConfig {
            analysis: AnalysisConfig::from_config(config),
            recovery_poll_duration: config.recovery_poll_duration,
            max_concurrent_recoveries: config.max_concurrent_recoveries.max(1),
            allow_recovery: config.allow_recovery,
            allow_emergency_reparent: config.allow_emergency_reparent,
            change_tablets_with_errant_gtid_to_drained: config.change_tablets_with_errant_gtid_to_drained,
            cells_no_recovery: config.cells_no_recovery.clone(),
            wait_replicas_timeout: config.wait_replicas_timeout,
            tolerable_replication_lag: config.tolerable_replication_lag,
            prevent_cross_cell_failover: config.prevent_cross_cell_failover,
            remote_operation_timeout: config.remote_operation_timeout,
            shutdown_wait_time: config.shutdown_wait_time,
            audit_file_location: config.audit_file_location.clone(),
            instance: instance.into(),
            backoff: BackoffConfig {
                initial: config.recovery_backoff_initial,
                max: config.recovery_backoff_max,
                not_clearing_threshold: config.recovery_not_clearing_threshold,
                ers_cooldown: config.recovery_period_block_duration,
            },
            ..RecoveryConfig::default()
        }
    }
}
