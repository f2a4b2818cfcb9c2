//! Vitess's reparent counters, kept for compatibility:
//! `EmergencyReparentCounts{Keyspace,Shard,Result}`,
//! `PlannedReparentCounts{Keyspace,Shard,Result}` and
//! `reparent_shard_operation_timings{Operation}`. The keyspace/shard labels
//! are Vitess's (reference §10); their cardinality is the number of shards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Summary};
use prometheus::{IntCounterVec, Opts};

use crate::telemetry::metrics::{Error, Metric, MetricFamily, MetricType, MetricsRegistry};

/// Which reparent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// EmergencyReparentShard.
    Emergency,
    /// PlannedReparentShard.
    Planned,
}

impl Operation {
    /// Vitess's operation name (the `Operation` label of the timings).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Emergency => "EmergencyReparentShard",
            Operation::Planned => "PlannedReparentShard",
        }
    }
}

/// Counts and total time per operation.
#[derive(Debug)]
pub struct ReparentMetrics {
    /// `vtorc_emergency_reparent_counts{keyspace,shard,result}`.
    emergency: IntCounterVec,
    /// `vtorc_planned_reparent_counts{keyspace,shard,result}`.
    planned: IntCounterVec,
    /// `vtorc_reparent_shard_operation_timings{operation}`: (number, total
    /// time) per operation, as a summary without quantiles.
    timings: Arc<Timings>,
}

/// The timings summary: a collector of its own (the crate has no summary
/// type that keeps only count and sum).
#[derive(Debug)]
struct Timings {
    /// Its descriptor.
    desc: Desc,
    /// (number, total time) per operation. A `std::sync::Mutex`: updated
    /// once per reparent, never held across an `.await`.
    by_operation: Mutex<BTreeMap<Operation, (u64, Duration)>>,
}

impl Collector for Timings {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let by_operation = self.by_operation.lock().unwrap_or_else(|p| p.into_inner());
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(
            [Operation::Emergency, Operation::Planned]
                .into_iter()
                .map(|op| {
                    let (n, total) = by_operation.get(&op).copied().unwrap_or_default();
                    let mut label = LabelPair::default();
                    label.set_name("operation".to_string());
                    label.set_value(op.as_str().to_string());
                    let mut summary = Summary::default();
                    summary.set_sample_count(n);
                    summary.set_sample_sum(total.as_secs_f64());
                    let mut m = Metric::default();
                    m.set_label(vec![label]);
                    m.set_summary(summary);
                    m
                })
                .collect(),
        );
        vec![family]
    }
}

impl Default for ReparentMetrics {
    fn default() -> Self {
        let counts = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["keyspace", "shard", "result"])
                .expect("a valid name and labels")
        };
        ReparentMetrics {
            emergency: counts(
                "vtorc_emergency_reparent_counts",
                "EmergencyReparentShard runs by result",
            ),
            planned: counts(
                "vtorc_planned_reparent_counts",
                "PlannedReparentShard runs by result",
            ),
            timings: Arc::new(Timings {
                desc: Desc::new(
                    "vtorc_reparent_shard_operation_timings".to_string(),
                    "Time spent in reparent operations, in seconds".to_string(),
                    vec!["operation".to_string()],
                    HashMap::new(),
                )
                .expect("a valid name"),
                by_operation: Mutex::default(),
            }),
        }
    }
}

impl ReparentMetrics {
    /// Records one finished reparent.
    pub(crate) fn record(&self, op: Operation, keyspace: &str, shard: &str, success: bool, took: Duration) {
        let result = if success { "success" } else { "failure" };
        let counts = match op {
            Operation::Emergency => &self.emergency,
            Operation::Planned => &self.planned,
        };
        counts.with_label_values(&[keyspace, shard, result]).inc();
        let mut timings = self
            .timings
            .by_operation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = timings.entry(op).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    /// How many reparents of `op` ran and their total time.
    pub fn timing(&self, op: Operation) -> (u64, Duration) {
        self.timings
            .by_operation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&op)
            .copied()
            .unwrap_or_default()
    }

    /// Registers the counters and the timings.
    pub fn register(&self, registry: &MetricsRegistry) -> Result<(), Error> {
        registry.register(self.emergency.clone())?;
        registry.register(self.planned.clone())?;
        registry.register_shared(Arc::clone(&self.timings) as Arc<dyn Collector>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_shard_and_result() {
        let m = ReparentMetrics::default();
        m.record(Operation::Emergency, "ks", "0", true, Duration::from_millis(5));
        m.record(Operation::Emergency, "ks", "0", false, Duration::from_millis(7));
        m.record(Operation::Emergency, "ks", "0", true, Duration::from_millis(1500));
        let registry = MetricsRegistry::new();
        m.register(&registry).expect("registered once");
        let text = registry.render();
        assert!(
            text.contains("# TYPE vtorc_emergency_reparent_counts counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "vtorc_emergency_reparent_counts{keyspace=\"ks\",result=\"success\",shard=\"0\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "vtorc_emergency_reparent_counts{keyspace=\"ks\",result=\"failure\",shard=\"0\"} 1\n"
            )
        );
        assert!(text.contains("# TYPE vtorc_reparent_shard_operation_timings summary\n"));
        assert!(text.contains(
            "vtorc_reparent_shard_operation_timings_sum{operation=\"EmergencyReparentShard\"} 1.512\n"
        ));
        assert!(text.contains(
            "vtorc_reparent_shard_operation_timings_count{operation=\"PlannedReparentShard\"} 0\n"
        ));
        assert_eq!(m.timing(Operation::Emergency), (3, Duration::from_millis(1512)));
        assert_eq!(m.timing(Operation::Planned), (0, Duration::ZERO));
    }
}
