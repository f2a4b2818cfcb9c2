//! Recovery metrics with Go VTOrc's names (reference §10), on
//! the `prometheus` crate's types, registered by
//! [`RecoveryHandle::register_metrics`] (prefix `vtorc_`, labels in
//! snake_case as Vitess's Prometheus backend writes them).
//!
//! | Go name | Type | Labels |
//! |---|---|---|
//! | `PendingRecoveries` | gauge | – |
//! | `DetectedProblems` | gauges (1 per current problem) | Analysis, TabletAlias, Keyspace, Shard |
//! | `RecoveriesCount` / `SuccessfulRecoveries` / `FailedRecoveries` | counters | RecoveryType, Keyspace, Shard |
//! | `SkippedRecoveries` | counters | RecoveryType, Keyspace, Shard, Reason |
//! | `ShardLocksActive` | gauge | – |
//! | `ShardLockTimings` | timings (histogram) | Action (`Lock`, `Unlock`) |
//!
//! `DetectedProblems` has a tablet-alias label for compatibility with Go
//! (STYLE rule 12's exception); its series are removed when the problem
//! goes away, so the set stays as large as the set of current problems.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::RecoveryHandle;
use super::audit::SkipReason;
use crate::analysis::{AnalysisCode, DetectionAnalysis, RecoveryKind};
use crate::ids::KeyspaceShard;
use crate::telemetry::metrics::{Error, FamilyCollector, MetricType, MetricsRegistry, single};

/// Upper bounds (seconds) of the `ShardLockTimings` histogram buckets.
const LOCK_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// `Action` label of `ShardLockTimings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockAction {
    /// Taking the shard lock.
    Lock,
    /// Releasing it.
    Unlock,
}

impl LockAction {
    fn as_str(self) -> &'static str {
        match self {
            LockAction::Lock => "Lock",
            LockAction::Unlock => "Unlock",
        }
    }
}

/// `DetectedProblems` label values: (Analysis, TabletAlias, Keyspace, Shard).
type ProblemKey = [String; 4];

/// The recovery engine's metrics; shared by the engine and the API.
#[derive(Debug)]
pub struct RecoveryMetrics {
    /// `PendingRecoveries`: gate runs in progress.
    pending: IntGauge,
    /// `ShardLocksActive`: shard locks this process holds.
    locks_active: IntGauge,
    /// `DetectedProblems`: 1 per current problem.
    detected: IntGaugeVec,
    /// The label values of the `detected` series, to replace one shard's.
    /// A `std::sync::Mutex`, held only to update or copy.
    detected_keys: Mutex<BTreeSet<ProblemKey>>,
    /// `RecoveriesCount`.
    recoveries: IntCounterVec,
    /// `SuccessfulRecoveries`.
    successful: IntCounterVec,
    /// `FailedRecoveries`.
    failed: IntCounterVec,
    /// `SkippedRecoveries`.
    skipped: IntCounterVec,
    /// `ShardLockTimings{Action}`.
    lock_timings: HistogramVec,
}

impl Default for RecoveryMetrics {
    fn default() -> Self {
        const RECOVERY: &[&str] = &["recovery_type", "keyspace", "shard"];
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid name");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid name and labels")
        };
        let lock_timings = HistogramVec::new(
            HistogramOpts::new("vtorc_shard_lock_timings", "Time to take and release shard locks")
                .buckets(LOCK_BUCKETS.to_vec()),
            &["action"],
        )
        .expect("a valid name and increasing bounds");
        for action in [LockAction::Lock, LockAction::Unlock] {
            // Both series from the start, as Go's timings show them.
            lock_timings.with_label_values(&[action.as_str()]);
        }
        RecoveryMetrics {
            pending: gauge("vtorc_pending_recoveries", "Recoveries being evaluated or run"),
            locks_active: gauge("vtorc_shard_locks_active", "Shard locks held by this process"),
            detected: IntGaugeVec::new(
                Opts::new(
                    "vtorc_detected_problems",
                    "Problems currently detected (1 per tablet and analysis)",
                ),
                &["analysis", "tablet_alias", "keyspace", "shard"],
            )
            .expect("a valid name and labels"),
            detected_keys: Mutex::default(),
            recoveries: counters("vtorc_recoveries_count", "Recoveries run", RECOVERY),
            successful: counters(
                "vtorc_successful_recoveries",
                "Recoveries that succeeded",
                RECOVERY,
            ),
            failed: counters("vtorc_failed_recoveries", "Recoveries that failed", RECOVERY),
            skipped: counters(
                "vtorc_skipped_recoveries",
                "Recoveries skipped, by reason",
                &["recovery_type", "keyspace", "shard", "reason"],
            ),
            lock_timings,
        }
    }
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a> {
    /// The gauge.
    gauge: &'a IntGauge,
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The value of the series of `vec` with these label values (in the order
/// of its label names), 0 when it has none; never creates the series.
fn value_of(vec: &impl prometheus::core::Collector, values: &[&str]) -> u64 {
    vec.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .find(|m| {
            let mut mine: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
            let mut wanted = values.to_vec();
            mine.sort_unstable();
            wanted.sort_unstable();
            mine == wanted
        })
        .map_or(0, |m| m.get_counter().get_value() as u64)
}

impl RecoveryMetrics {
    /// `PendingRecoveries` +1 until the guard drops.
    pub fn pending_guard(&self) -> GaugeGuard<'_> {
        self.pending.inc();
        GaugeGuard { gauge: &self.pending }
    }

    /// `ShardLocksActive` +1 until the guard drops.
    pub fn lock_guard(&self) -> GaugeGuard<'_> {
        self.locks_active.inc();
        GaugeGuard {
            gauge: &self.locks_active,
        }
    }

    /// Current `PendingRecoveries`.
    pub fn pending(&self) -> i64 {
        self.pending.get()
    }

    /// Current `ShardLocksActive`.
    pub fn shard_locks_active(&self) -> i64 {
        self.locks_active.get()
    }

    /// Replaces the `DetectedProblems` series of one shard (`Some`) or of
    /// all shards (`None`) with `problems` (rows that only carry structure
    /// warnings, `NoProblem`, are not problems and get no series).
    pub fn set_detected(&self, shard: Option<&KeyspaceShard>, problems: &[DetectionAnalysis]) {
        let mut keys = self.detected_keys.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<ProblemKey> = keys
            .iter()
            .filter(|[_, _, ks, sh]| shard.is_none_or(|key| ks == &key.keyspace && sh == &key.shard))
            .cloned()
            .collect();
        for key in gone {
            let values: Vec<&str> = key.iter().map(String::as_str).collect();
            // The series exists: it was added with these values.
            let _ = self.detected.remove_label_values(&values);
            keys.remove(&key);
        }
        for p in problems.iter().filter(|p| p.analysis != AnalysisCode::NoProblem) {
            let key = [
                p.analysis.name().to_string(),
                p.analyzed_instance_alias.to_string(),
                p.analyzed_keyspace.clone(),
                p.analyzed_shard.clone(),
            ];
            let values: Vec<&str> = key.iter().map(String::as_str).collect();
            self.detected.with_label_values(&values).set(1);
            keys.insert(key);
        }
    }

    /// The current `DetectedProblems` series: (analysis, alias, keyspace, shard).
    pub fn detected_problems(&self) -> Vec<(String, String, String, String)> {
        self.detected_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|[a, t, k, s]| (a.clone(), t.clone(), k.clone(), s.clone()))
            .collect()
    }

    /// `SkippedRecoveries` +1.
    pub fn skipped(&self, kind: RecoveryKind, key: &KeyspaceShard, reason: SkipReason) {
        self.skipped
            .with_label_values(&[kind.name(), &key.keyspace, &key.shard, reason.as_str()])
            .inc();
    }

    /// `RecoveriesCount` +1 and `SuccessfulRecoveries` or `FailedRecoveries` +1.
    pub fn recovered(&self, kind: RecoveryKind, key: &KeyspaceShard, success: bool) {
        let values = [kind.name(), key.keyspace.as_str(), key.shard.as_str()];
        self.recoveries.with_label_values(&values).inc();
        if success {
            self.successful.with_label_values(&values).inc();
        } else {
            self.failed.with_label_values(&values).inc();
        }
    }

    /// `ShardLockTimings{Action}` observation.
    pub fn lock_timing(&self, action: LockAction, d: Duration) {
        self.lock_timings
            .with_label_values(&[action.as_str()])
            .observe(d.as_secs_f64());
    }

    /// `SkippedRecoveries{RecoveryType,Keyspace,Shard,Reason}`.
    pub fn skipped_count(&self, kind: RecoveryKind, key: &KeyspaceShard, reason: SkipReason) -> u64 {
        value_of(
            &self.skipped,
            &[kind.name(), &key.keyspace, &key.shard, reason.as_str()],
        )
    }

    /// (`RecoveriesCount`, `SuccessfulRecoveries`, `FailedRecoveries`) of one series.
    pub fn recovery_counts(&self, kind: RecoveryKind, key: &KeyspaceShard) -> (u64, u64, u64) {
        let values = [kind.name(), key.keyspace.as_str(), key.shard.as_str()];
        (
            value_of(&self.recoveries, &values),
            value_of(&self.successful, &values),
            value_of(&self.failed, &values),
        )
    }

    /// Number of `ShardLockTimings` observations of `action`.
    pub fn lock_timing_count(&self, action: LockAction) -> u64 {
        self.lock_timings
            .with_label_values(&[action.as_str()])
            .get_sample_count()
    }

    /// These families alone, in the Prometheus text format (for tests).
    #[cfg(test)]
    pub(crate) fn render_prometheus(&self) -> String {
        let registry = MetricsRegistry::new();
        self.register(&registry).expect("names registered once");
        registry.render()
    }

    /// Registers the families above.
    pub fn register(&self, registry: &MetricsRegistry) -> Result<(), Error> {
        registry.register(self.pending.clone())?;
        registry.register(self.locks_active.clone())?;
        registry.register(self.detected.clone())?;
        registry.register(self.recoveries.clone())?;
        registry.register(self.successful.clone())?;
        registry.register(self.failed.clone())?;
        registry.register(self.skipped.clone())?;
        registry.register(self.lock_timings.clone())
    }
}

impl RecoveryHandle {
    /// Registers the engine's families: [`RecoveryMetrics`], the global
    /// switch and the audit's dropped lines (read when collected).
    pub fn register_metrics(&self, registry: &MetricsRegistry) -> Result<(), Error> {
        self.metrics().register(registry)?;
        let handle = self.clone();
        registry.register(FamilyCollector::new(
            &[
                (
                    "vtorc_global_recoveries_enabled",
                    "1 when recoveries are globally enabled",
                    MetricType::GAUGE,
                    &[],
                ),
                (
                    "vtorc_audit_dropped_lines",
                    "Audit file lines dropped because the writer fell behind",
                    MetricType::COUNTER,
                    &[],
                ),
            ],
            move || {
                vec![
                    single(u8::from(handle.global_recoveries_enabled())),
                    single(handle.audit().dropped_lines() as f64),
                ]
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render_in_prometheus_text() {
        let m = RecoveryMetrics::default();
        let key = KeyspaceShard::new("ks", "0");
        m.recovered(RecoveryKind::RecoverDeadPrimary, &key, true);
        m.recovered(RecoveryKind::RecoverDeadPrimary, &key, false);
        m.skipped(RecoveryKind::None, &key, SkipReason::NoRecoveryAction);
        m.lock_timing(LockAction::Lock, Duration::from_millis(3));
        {
            let _g = m.pending_guard();
            let _l = m.lock_guard();
            assert_eq!(m.pending(), 1);
            assert_eq!(m.shard_locks_active(), 1);
        }
        assert_eq!(m.pending(), 0);
        assert_eq!(
            m.recovery_counts(RecoveryKind::RecoverDeadPrimary, &key),
            (2, 1, 1)
        );
        let text = m.render_prometheus();
        assert!(text.contains(
            "vtorc_recoveries_count{keyspace=\"ks\",recovery_type=\"RecoverDeadPrimary\",shard=\"0\"} 2"
        ));
        assert!(text.contains(
            "vtorc_skipped_recoveries{keyspace=\"ks\",reason=\"NoRecoveryAction\",recovery_type=\"\",shard=\"0\"} 1"
        ));
        assert!(text.contains("vtorc_shard_lock_timings_bucket{action=\"Lock\",le=\"0.005\"} 1"));
        assert!(text.contains("vtorc_shard_lock_timings_bucket{action=\"Lock\",le=\"0.001\"} 0"));
        assert!(text.contains("vtorc_shard_lock_timings_count{action=\"Unlock\"} 0"));
        assert!(text.contains("vtorc_pending_recoveries 0"));
    }

    #[test]
    fn detected_problems_of_one_shard_are_replaced_without_touching_others() {
        let m = RecoveryMetrics::default();
        let now = crate::clock::now();
        let mut snapshot = crate::testkit::ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .edit("zone1", 101, |t| {
                use crate::testkit::TabletFixture;
                t.stop_replication();
            })
            .build();
        crate::testkit::ShardBuilder::new("ks", "1", "none", now)
            .primary("zone1", 200)
            .replica("zone1", 201)
            .edit("zone1", 201, |t| {
                use crate::testkit::TabletFixture;
                t.stop_replication();
            })
            .add_to(&mut snapshot);
        let out = crate::analysis::analyze(&snapshot, &crate::analysis::AnalysisConfig::default(), now);
        // Each shard: PrimarySingleReplicaNotReplicating on the primary,
        // ReplicationStopped on the replica.
        m.set_detected(None, &out.problems);
        assert_eq!(m.detected_problems().len(), 4);
        m.set_detected(Some(&KeyspaceShard::new("ks", "0")), &[]);
        let left = m.detected_problems();
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|(_, _, _, shard)| shard == "1"));
        assert!(m.render_prometheus().contains(
            "vtorc_detected_problems{analysis=\"ReplicationStopped\",keyspace=\"ks\",shard=\"1\",tablet_alias=\"zone1-0000000201\"} 1"
        ));
    }
}
