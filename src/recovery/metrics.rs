//! Recovery metrics with Go VTOrc's names (reference §10), in a small
//! registry this module owns; [`RecoveryMetrics::render_prometheus`] writes
//! them in the Prometheus text format (prefix `vtorc_`, labels in
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::audit::SkipReason;
use crate::analysis::{AnalysisCode, DetectionAnalysis, RecoveryKind};
use crate::ids::KeyspaceShard;

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

/// A histogram of durations.
#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Observations per bucket of [`LOCK_BUCKETS`] (not cumulative), plus +Inf.
    buckets: [u64; LOCK_BUCKETS.len() + 1],
    /// Number of observations.
    count: u64,
    /// Sum of observations in seconds.
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LOCK_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LOCK_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += secs;
    }
}

/// `(RecoveryType, Keyspace, Shard)`.
type RecoveryKey = (&'static str, String, String);

/// The labelled series; behind a mutex.
#[derive(Debug, Default)]
struct Series {
    /// `DetectedProblems`: `(Analysis, TabletAlias, Keyspace, Shard)` present = 1.
    detected: BTreeMap<(String, String, String, String), ()>,
    /// `RecoveriesCount`.
    recoveries: BTreeMap<RecoveryKey, u64>,
    /// `SuccessfulRecoveries`.
    successful: BTreeMap<RecoveryKey, u64>,
    /// `FailedRecoveries`.
    failed: BTreeMap<RecoveryKey, u64>,
    /// `SkippedRecoveries` by `(RecoveryType, Keyspace, Shard, Reason)`.
    skipped: BTreeMap<(&'static str, String, String, &'static str), u64>,
    /// `ShardLockTimings{Action=Lock}`.
    lock: Histogram,
    /// `ShardLockTimings{Action=Unlock}`.
    unlock: Histogram,
}

/// The recovery engine's metrics; shared by the engine and the API.
#[derive(Debug, Default)]
pub struct RecoveryMetrics {
    /// `PendingRecoveries`: gate runs in progress.
    pending: AtomicI64,
    /// `ShardLocksActive`: shard locks this process holds.
    locks_active: AtomicI64,
    /// Labelled series. A `std::sync::Mutex`, held only to update or copy.
    series: Mutex<Series>,
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard<'a> {
    /// The gauge.
    gauge: &'a AtomicI64,
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RecoveryMetrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PendingRecoveries` +1 until the guard drops.
    pub fn pending_guard(&self) -> GaugeGuard<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        GaugeGuard { gauge: &self.pending }
    }

    /// `ShardLocksActive` +1 until the guard drops.
    pub fn lock_guard(&self) -> GaugeGuard<'_> {
        self.locks_active.fetch_add(1, Ordering::Relaxed);
        GaugeGuard {
            gauge: &self.locks_active,
        }
    }

    /// Current `PendingRecoveries`.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Current `ShardLocksActive`.
    pub fn shard_locks_active(&self) -> i64 {
        self.locks_active.load(Ordering::Relaxed)
    }

    /// Replaces the `DetectedProblems` series of one shard (`Some`) or of
    /// all shards (`None`) with `problems` (rows that only carry structure
    /// warnings, `NoProblem`, are not problems and get no series).
    pub fn set_detected(&self, shard: Option<&KeyspaceShard>, problems: &[DetectionAnalysis]) {
        let mut s = self.series();
        match shard {
            None => s.detected.clear(),
            Some(key) => s
                .detected
                .retain(|(_, _, ks, sh), _| !(ks == &key.keyspace && sh == &key.shard)),
        }
        for p in problems.iter().filter(|p| p.analysis != AnalysisCode::NoProblem) {
            s.detected.insert(
                (
                    p.analysis.name().to_string(),
                    p.analyzed_instance_alias.to_string(),
                    p.analyzed_keyspace.clone(),
                    p.analyzed_shard.clone(),
                ),
                (),
            );
        }
    }

    /// The current `DetectedProblems` series: (analysis, alias, keyspace, shard).
    pub fn detected_problems(&self) -> Vec<(String, String, String, String)> {
        self.series().detected.keys().cloned().collect()
    }

    /// `SkippedRecoveries` +1.
    pub fn skipped(&self, kind: RecoveryKind, key: &KeyspaceShard, reason: SkipReason) {
        let mut s = self.series();
        *s.skipped
            .entry((
                kind.name(),
                key.keyspace.clone(),
                key.shard.clone(),
                reason.as_str(),
            ))
            .or_default() += 1;
    }

    /// `RecoveriesCount` +1 and `SuccessfulRecoveries` or `FailedRecoveries` +1.
    pub fn recovered(&self, kind: RecoveryKind, key: &KeyspaceShard, success: bool) {
        let k = (kind.name(), key.keyspace.clone(), key.shard.clone());
        let mut s = self.series();
        *s.recoveries.entry(k.clone()).or_default() += 1;
        if success {
            *s.successful.entry(k).or_default() += 1;
        } else {
            *s.failed.entry(k).or_default() += 1;
        }
    }

    /// `ShardLockTimings{Action}` observation.
    pub fn lock_timing(&self, action: LockAction, d: Duration) {
        let mut s = self.series();
        match action {
            LockAction::Lock => s.lock.observe(d),
            LockAction::Unlock => s.unlock.observe(d),
        }
    }

    /// `SkippedRecoveries{RecoveryType,Keyspace,Shard,Reason}`.
    pub fn skipped_count(&self, kind: RecoveryKind, key: &KeyspaceShard, reason: SkipReason) -> u64 {
        self.series()
            .skipped
            .get(&(
                kind.name(),
                key.keyspace.clone(),
                key.shard.clone(),
                reason.as_str(),
            ))
            .copied()
            .unwrap_or(0)
    }

    /// (`RecoveriesCount`, `SuccessfulRecoveries`, `FailedRecoveries`) of one series.
    pub fn recovery_counts(&self, kind: RecoveryKind, key: &KeyspaceShard) -> (u64, u64, u64) {
        let k = (kind.name(), key.keyspace.clone(), key.shard.clone());
        let s = self.series();
        let get = |m: &BTreeMap<RecoveryKey, u64>| m.get(&k).copied().unwrap_or(0);
        (get(&s.recoveries), get(&s.successful), get(&s.failed))
    }

    /// Number of `ShardLockTimings` observations of `action`.
    pub fn lock_timing_count(&self, action: LockAction) -> u64 {
        let s = self.series();
        match action {
            LockAction::Lock => s.lock.count,
            LockAction::Unlock => s.unlock.count,
        }
    }

    /// All metrics in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let s = self.series();
        let mut out = String::new();
        gauge(
            &mut out,
            "vtorc_pending_recoveries",
            "Recoveries being evaluated or run",
            self.pending(),
        );
        header(
            &mut out,
            "vtorc_detected_problems",
            "gauge",
            "Problems currently detected (1 per tablet and analysis)",
        );
        for (analysis, alias, ks, shard) in s.detected.keys() {
            let _ = writeln!(
                out,
                "vtorc_detected_problems{{analysis=\"{}\",keyspace=\"{}\",shard=\"{}\",tablet_alias=\"{}\"}} 1",
                esc(analysis),
                esc(ks),
                esc(shard),
                esc(alias)
            );
        }
        for (name, help, map) in [
            ("vtorc_recoveries_count", "Recoveries run", &s.recoveries),
            (
                "vtorc_successful_recoveries",
                "Recoveries that succeeded",
                &s.successful,
            ),
            ("vtorc_failed_recoveries", "Recoveries that failed", &s.failed),
        ] {
            header(&mut out, name, "counter", help);
            for ((kind, ks, shard), v) in map {
                let _ = writeln!(
                    out,
                    "{name}{{keyspace=\"{}\",recovery_type=\"{}\",shard=\"{}\"}} {v}",
                    esc(ks),
                    esc(kind),
                    esc(shard)
                );
            }
        }
        header(
            &mut out,
            "vtorc_skipped_recoveries",
            "counter",
            "Recoveries skipped, by reason",
        );
        for ((kind, ks, shard, reason), v) in &s.skipped {
            let _ = writeln!(
                out,
                "vtorc_skipped_recoveries{{keyspace=\"{}\",reason=\"{}\",recovery_type=\"{}\",shard=\"{}\"}} {v}",
                esc(ks),
                esc(reason),
                esc(kind),
                esc(shard)
            );
        }
        gauge(
            &mut out,
            "vtorc_shard_locks_active",
            "Shard locks held by this process",
            self.shard_locks_active(),
        );
        header(
            &mut out,
            "vtorc_shard_lock_timings",
            "histogram",
            "Time to take and release shard locks",
        );
        for (action, h) in [(LockAction::Lock, &s.lock), (LockAction::Unlock, &s.unlock)] {
            let mut cumulative = 0;
            for (i, bound) in LOCK_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i];
                let _ = writeln!(
                    out,
                    "vtorc_shard_lock_timings_bucket{{action=\"{}\",le=\"{bound}\"}} {cumulative}",
                    action.as_str()
                );
            }
            let _ = writeln!(
                out,
                "vtorc_shard_lock_timings_bucket{{action=\"{}\",le=\"+Inf\"}} {}",
                action.as_str(),
                h.count
            );
            let _ = writeln!(
                out,
                "vtorc_shard_lock_timings_sum{{action=\"{}\"}} {}",
                action.as_str(),
                h.sum
            );
            let _ = writeln!(
                out,
                "vtorc_shard_lock_timings_count{{action=\"{}\"}} {}",
                action.as_str(),
                h.count
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        let mut snapshot = crate::model::fixtures::ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .edit("zone1", 101, |t| {
                use crate::model::fixtures::TabletFixture;
                t.stop_replication();
            })
            .build();
        crate::model::fixtures::ShardBuilder::new("ks", "1", "none", now)
            .primary("zone1", 200)
            .replica("zone1", 201)
            .edit("zone1", 201, |t| {
                use crate::model::fixtures::TabletFixture;
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
