//! Discovery's counters: plain atomics the owner task updates and anyone can
//! read (a later exporter maps them to Prometheus). Labels are fixed sets
//! ([`TabletErrorKind`]), never tablet names.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::tablet::{HealthStreamMetrics, TabletErrorKind};

/// Upper bounds of the poll latency buckets, in microseconds (the last
/// bucket, above the largest bound, is implicit).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
    15_000_000,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket: `buckets[i]` counts values `<= LATENCY_BUCKETS_US[i]`
    /// (and above the previous bound); the last slot counts larger values.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all values, in microseconds.
    sum_us: AtomicU64,
    /// Number of values.
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Records one value.
    pub fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|bound| *bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the values recorded.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// Count per bucket (see [`LATENCY_BUCKETS_US`]).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// The bucket bound below which at least `q` (0..=1) of the values lie;
    /// `None` when empty or when the quantile lies in the open last bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let counts = self.buckets();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return LATENCY_BUCKETS_US.get(i).map(|us| Duration::from_micros(*us));
            }
        }
        None
    }
}

/// Discovery's counters and gauges.
#[derive(Debug, Default)]
pub struct DiscoveryMetrics {
    /// Gauge: tablets currently watched (after `--clusters-to-watch`).
    pub tablets_watched: AtomicU64,
    /// Gauge: shards currently watched.
    pub shards_watched: AtomicU64,
    /// Polls started.
    pub polls_started: AtomicU64,
    /// Polls that returned a full status.
    pub polls_succeeded: AtomicU64,
    /// Failed polls, by [`TabletErrorKind::index`].
    pub poll_failures: [AtomicU64; TabletErrorKind::ALL.len()],
    /// Polls that ran past the slow threshold (hung checks).
    pub polls_slow: AtomicU64,
    /// Latency of completed polls, failed ones included.
    pub poll_latency: LatencyHistogram,
    /// Polls triggered by a health event (stream broke, reconnected, serving
    /// state or health error changed) rather than by the schedule.
    pub polls_triggered: AtomicU64,
    /// Pings of a shard primary that went unanswered (timeout, no connection).
    pub primary_ping_failures: AtomicU64,
    /// Completed discovery rounds (every watched tablet polled once).
    pub rounds: AtomicU64,
    /// Duration of the last completed round, in microseconds.
    pub last_round_us: AtomicU64,
    /// Topology events applied.
    pub topo_events: AtomicU64,
    /// Full topology loads applied (resyncs and safety-net re-lists).
    pub topo_resyncs: AtomicU64,
    /// Safety-net re-lists that failed.
    pub topo_relist_failures: AtomicU64,
    /// Health events handled.
    pub health_events: AtomicU64,
    /// Snapshots published.
    pub snapshots_published: AtomicU64,
    /// Shard-changed notifications sent.
    pub shard_notifications: AtomicU64,
    /// The health streams' own counters (connects, reconnects, breaks).
    pub streams: Arc<HealthStreamMetrics>,
}

impl DiscoveryMetrics {
    /// Counts one failed poll.
    pub fn poll_failed(&self, kind: TabletErrorKind) {
        self.poll_failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed polls of one kind.
    pub fn poll_failures(&self, kind: TabletErrorKind) -> u64 {
        self.poll_failures[kind.index()].load(Ordering::Relaxed)
    }

    /// Health streams reopened after a break.
    pub fn stream_reconnects(&self) -> u64 {
        self.streams.reconnects.load(Ordering::Relaxed)
    }

    /// Duration of the last completed discovery round.
    pub fn last_round(&self) -> Duration {
        Duration::from_micros(self.last_round_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(250));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(20));
        let b = h.buckets();
        assert_eq!(b[0], 2);
        assert_eq!(b[4], 1);
        assert_eq!(b[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_micros(250)));
        assert_eq!(h.quantile_bound(0.75), Some(Duration::from_millis(5)));
        assert_eq!(h.quantile_bound(1.0), None);
    }
}
