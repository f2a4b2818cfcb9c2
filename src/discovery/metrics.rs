//! Discovery's counters: plain atomics the owner task updates and anyone can
//! read, the poll latency histogram, and the gauges computed from the
//! latest snapshot; [`DiscoveryHandle::register_metrics`] registers them all.
//! Labels are fixed sets ([`TabletErrorKind`]), never tablet names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::Metric as _;
use prometheus::{Histogram, HistogramOpts};

use super::DiscoveryHandle;
use crate::model::ClusterSnapshot;
use crate::tablet::{HealthStreamMetrics, TabletErrorKind};
use crate::telemetry::metrics::{FamilyCollector, MetricType, MetricsRegistry, Series, single};

/// Upper bounds of the poll latency buckets, in microseconds (the last
/// bucket, above the largest bound, is implicit).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
    15_000_000,
];

/// The poll latency histogram: `vtorc_discovery_instance_timings{action="Instance"}`,
/// in seconds, with the bounds of [`LATENCY_BUCKETS_US`].
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    /// The histogram.
    inner: Histogram,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "vtorc_discovery_instance_timings",
            "Latency of completed tablet polls, in seconds",
        )
        .const_label("action", "Instance")
        .buckets(LATENCY_BUCKETS_US.iter().map(|us| *us as f64 / 1e6).collect());
        LatencyHistogram {
            inner: Histogram::with_opts(opts).expect("a valid name and increasing bounds"),
        }
    }
}

impl LatencyHistogram {
    /// Records one value.
    pub fn record(&self, value: Duration) {
        self.inner.observe(value.as_secs_f64());
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.inner.get_sample_count()
    }

    /// Sum of the values recorded.
    pub fn sum(&self) -> Duration {
        Duration::try_from_secs_f64(self.inner.get_sample_sum()).unwrap_or_default()
    }

    /// Count per bucket (see [`LATENCY_BUCKETS_US`]), not cumulative; the
    /// last slot counts values above the largest bound.
    pub fn buckets(&self) -> Vec<u64> {
        let metric = self.inner.metric();
        let h = metric.get_histogram();
        let mut previous = 0;
        let mut out: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| {
                let n = b.cumulative_count().saturating_sub(previous);
                previous = b.cumulative_count();
                n
            })
            .collect();
        out.push(h.get_sample_count().saturating_sub(previous));
        out
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

/// The counter families of [`DiscoveryMetrics`]: name, help, value.
fn counters(m: &DiscoveryMetrics) -> Vec<(&'static str, &'static str, MetricType, f64)> {
    use MetricType::{COUNTER, GAUGE};
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let failures: u64 = TabletErrorKind::ALL.iter().map(|k| m.poll_failures(*k)).sum();
    vec![
        (
            "vtorc_discoveries_attempt",
            "Tablet polls (FullStatus) started",
            COUNTER,
            load(&m.polls_started),
        ),
        (
            "vtorc_discoveries_fail",
            "Tablet polls that failed",
            COUNTER,
            failures as f64,
        ),
        (
            "vtorc_discoveries_instance_poll_seconds_exceeded",
            "Tablet polls that ran past the slow-poll threshold",
            COUNTER,
            load(&m.polls_slow),
        ),
        (
            "vtorc_discovery_polls_succeeded",
            "Tablet polls that returned a full status",
            COUNTER,
            load(&m.polls_succeeded),
        ),
        (
            "vtorc_discovery_polls_triggered",
            "Tablet polls triggered by a health event",
            COUNTER,
            load(&m.polls_triggered),
        ),
        (
            "vtorc_discovery_rounds",
            "Completed discovery rounds",
            COUNTER,
            load(&m.rounds),
        ),
        (
            "vtorc_discovery_topo_events",
            "Topology events applied",
            COUNTER,
            load(&m.topo_events),
        ),
        (
            "vtorc_discovery_topo_resyncs",
            "Full topology loads applied",
            COUNTER,
            load(&m.topo_resyncs),
        ),
        (
            "vtorc_discovery_topo_relist_failures",
            "Safety-net topology re-lists that failed",
            COUNTER,
            load(&m.topo_relist_failures),
        ),
        (
            "vtorc_discovery_health_events",
            "Health stream events handled",
            COUNTER,
            load(&m.health_events),
        ),
        (
            "vtorc_discovery_snapshots_published",
            "Cluster snapshots published",
            COUNTER,
            load(&m.snapshots_published),
        ),
        (
            "vtorc_discovery_shard_notifications",
            "Shard-changed notifications sent",
            COUNTER,
            load(&m.shard_notifications),
        ),
        (
            "vtorc_health_stream_subscriptions",
            "Health stream subscriptions started",
            COUNTER,
            load(&m.streams.subscriptions),
        ),
        (
            "vtorc_health_stream_connects",
            "Health streams opened",
            COUNTER,
            load(&m.streams.connects),
        ),
        (
            "vtorc_health_stream_reconnects",
            "Health streams reopened after a break",
            COUNTER,
            load(&m.streams.reconnects),
        ),
        (
            "vtorc_health_stream_breaks",
            "Health stream outages",
            COUNTER,
            load(&m.streams.breaks),
        ),
        (
            "vtorc_health_stream_failed_attempts",
            "Failed attempts to open a health stream",
            COUNTER,
            load(&m.streams.failed_attempts),
        ),
        (
            "vtorc_health_stream_messages",
            "Health messages received",
            COUNTER,
            load(&m.streams.messages),
        ),
        (
            "vtorc_discovery_last_round_seconds",
            "Duration of the last completed discovery round, in seconds",
            GAUGE,
            m.last_round().as_secs_f64(),
        ),
    ]
}

/// The gauges computed from a snapshot, in the order of [`SNAPSHOT_FAMILIES`].
fn snapshot_series(snapshot: &ClusterSnapshot, ready: bool) -> Vec<Series> {
    let mut by_cell: BTreeMap<&str, u64> = BTreeMap::new();
    let mut errant = 0u32;
    let mut by_shard = Vec::new();
    let mut disabled_by_shard = Vec::new();
    for shard in snapshot.shards.values() {
        for t in &shard.tablets {
            *by_cell.entry(t.alias().cell.as_str()).or_default() += 1;
            if t.observation.as_ref().is_some_and(|o| !o.errant_gtids.is_empty()) {
                errant += 1;
            }
        }
        let disabled = shard.emergency_reparent_disabled
            || snapshot
                .keyspaces
                .get(&shard.keyspace)
                .is_some_and(|k| k.emergency_reparent_disabled);
        let names = vec![shard.keyspace.clone(), shard.shard.clone()];
        let mut with_flag = names.clone();
        with_flag.push(disabled.to_string());
        by_shard.push((with_flag, shard.tablets.len() as f64));
        disabled_by_shard.push((names, f64::from(u8::from(disabled))));
    }
    vec![
        single(u8::from(ready)),
        by_cell
            .into_iter()
            .map(|(cell, n)| (vec![cell.to_string()], n as f64))
            .collect(),
        by_shard,
        disabled_by_shard,
        single(errant),
    ]
}

/// The snapshot's gauge families: name, help, label names.
const SNAPSHOT_FAMILIES: [(&str, &str, MetricType, &[&str]); 5] = [
    (
        "vtorc_ready",
        "1 once the topology was loaded and one discovery round completed",
        MetricType::GAUGE,
        &[],
    ),
    (
        "vtorc_tablets_watched_by_cell",
        "Tablets watched, by cell",
        MetricType::GAUGE,
        &["cell"],
    ),
    (
        "vtorc_tablets_watched_by_shard",
        "Tablets watched, by shard (ers_disabled: ERS disabled for the keyspace or shard)",
        MetricType::GAUGE,
        &["keyspace", "shard", "ers_disabled"],
    ),
    (
        "vtorc_emergency_reparent_shard_disabled",
        "1 when EmergencyReparentShard is disabled for the shard (keyspace or shard record)",
        MetricType::GAUGE,
        &["keyspace", "shard"],
    ),
    (
        "vtorc_errant_gtid_tablet_count",
        "Tablets whose MySQL has errant GTIDs",
        MetricType::GAUGE,
        &[],
    ),
];

/// Registers discovery's families: its counters, the poll latency
/// histogram, and the gauges of `snapshot` and `ready` (read when
/// collected); `workers` is `--discovery-workers`.
pub fn register(
    registry: &MetricsRegistry,
    metrics: &Arc<DiscoveryMetrics>,
    workers: usize,
    snapshot: impl Fn() -> Arc<ClusterSnapshot> + Send + Sync + 'static,
    ready: impl Fn() -> bool + Send + Sync + 'static,
) -> Result<(), crate::telemetry::metrics::Error> {
    registry.register(metrics.poll_latency.inner.clone())?;
    let mut specs: Vec<(&str, &str, MetricType, &[&str])> = counters(metrics)
        .into_iter()
        .map(|(name, help, kind, _)| (name, help, kind, &[] as &[&str]))
        .collect();
    specs.push((
        "vtorc_discovery_workers",
        "Tablet polls allowed at once (--discovery-workers)",
        MetricType::GAUGE,
        &[],
    ));
    specs.push((
        "vtorc_discovery_poll_failures",
        "Failed tablet polls by error kind",
        MetricType::COUNTER,
        &["kind"],
    ));
    specs.extend(SNAPSHOT_FAMILIES);
    let m = Arc::clone(metrics);
    registry.register(FamilyCollector::new(&specs, move || {
        let mut series: Vec<Series> = counters(&m).into_iter().map(|(_, _, _, v)| single(v)).collect();
        series.push(single(workers as f64));
        series.push(
            TabletErrorKind::ALL
                .iter()
                .map(|k| (vec![k.as_str().to_string()], m.poll_failures(*k) as f64))
                .collect(),
        );
        series.extend(snapshot_series(&snapshot(), ready()));
        series
    })?)
}

impl DiscoveryHandle {
    /// Registers discovery's families (see [`register`]) for this handle's
    /// counters, snapshots and readiness.
    pub fn register_metrics(
        &self,
        registry: &MetricsRegistry,
        workers: usize,
    ) -> Result<(), crate::telemetry::metrics::Error> {
        let snapshots = self.clone();
        let ready = self.clone();
        register(
            registry,
            self.metrics(),
            workers,
            move || snapshots.snapshot(),
            move || ready.is_ready(),
        )
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
