//! Vitess's reparent counters, kept for compatibility:
//! `EmergencyReparentCounts{Keyspace,Shard,Result}`,
//! `PlannedReparentCounts{Keyspace,Shard,Result}` and
//! `reparent_shard_operation_timings{Operation}`. The keyspace/shard labels
//! are Vitess's (reference §10); their cardinality is the number of shards.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

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

/// One counter row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReparentCount {
    /// Which reparent.
    pub operation: Operation,
    /// Keyspace label.
    pub keyspace: String,
    /// Shard label.
    pub shard: String,
    /// `success` or `failure`.
    pub result: &'static str,
    /// How many.
    pub count: u64,
}

/// Counter key: (operation, keyspace, shard, result).
type CountKey = (Operation, String, String, &'static str);

/// Counts and total time per operation.
#[derive(Debug, Default)]
pub struct ReparentMetrics {
    /// Counters by (operation, keyspace, shard, result). A `std::sync::Mutex`:
    /// updated once per reparent, never held across an `.await`.
    counts: Mutex<BTreeMap<CountKey, u64>>,
    /// (number, total time) per operation.
    timings: Mutex<BTreeMap<Operation, (u64, Duration)>>,
}

impl ReparentMetrics {
    /// Records one finished reparent.
    pub(crate) fn record(&self, op: Operation, keyspace: &str, shard: &str, success: bool, took: Duration) {
        let result = if success { "success" } else { "failure" };
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, keyspace.to_string(), shard.to_string(), result))
            .or_default() += 1;
        let mut timings = self.timings.lock().unwrap_or_else(|p| p.into_inner());
        let entry = timings.entry(op).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    /// Every counter row.
    pub fn counts(&self) -> Vec<ReparentCount> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((operation, keyspace, shard, result), count)| ReparentCount {
                operation: *operation,
                keyspace: keyspace.clone(),
                shard: shard.clone(),
                result,
                count: *count,
            })
            .collect()
    }

    /// How many reparents of `op` ran and their total time.
    pub fn timing(&self, op: Operation) -> (u64, Duration) {
        self.timings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&op)
            .copied()
            .unwrap_or_default()
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
        m.record(Operation::Emergency, "ks", "0", true, Duration::from_millis(1));
        let counts = m.counts();
        assert_eq!(counts.len(), 2);
        assert!(counts.iter().any(|c| c.result == "success"
            && c.count == 2
            && c.operation.as_str() == "EmergencyReparentShard"));
        assert_eq!(m.timing(Operation::Emergency), (3, Duration::from_millis(13)));
        assert_eq!(m.timing(Operation::Planned), (0, Duration::ZERO));
    }
}
