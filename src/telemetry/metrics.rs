//! The metrics registry: pull-based sources rendered in the Prometheus text
//! exposition format (version 0.0.4) when `/metrics` is scraped.
//!
//! # The approach (one for the whole project)
//!
//! - Each module owns its counters: atomics for plain counters and gauges,
//!   a small map behind a `std::sync::Mutex` for labelled series
//!   ([`crate::discovery::DiscoveryMetrics`], [`crate::recovery::RecoveryMetrics`],
//!   [`crate::reparent::ReparentMetrics`], [`crate::tablet::HealthStreamMetrics`]).
//!   Updating one is a relaxed atomic add or one short lock; nothing is
//!   allocated per poll.
//! - A [`MetricSource`] turns one module's counters into metric families.
//!   [`MetricsRegistry`] holds the sources of one vtorc and renders them all;
//!   it is a value, not a global, so tests build their own.
//! - Names: Go VTOrc's Prometheus names (prefix `vtorc_`, label names in
//!   snake_case) where Go has the metric (reference §10); our own metrics use
//!   the same prefix. Label values are bounded sets (error kinds, outcomes,
//!   analysis codes) plus keyspace/shard/cell; tablet aliases only in
//!   `vtorc_detected_problems`, as in Go.
//!
//! | Family | Type | Labels | Source |
//! |---|---|---|---|
//! | `vtorc_discoveries_attempt` | counter | – | polls started |
//! | `vtorc_discoveries_fail` | counter | – | polls failed |
//! | `vtorc_discoveries_instance_poll_seconds_exceeded` | counter | – | polls past the slow threshold |
//! | `vtorc_discovery_workers` | gauge | – | `--discovery-workers` |
//! | `vtorc_discovery_instance_timings` | histogram (s) | action=`Instance` | poll latency |
//! | `vtorc_discovery_poll_failures` | counter | kind | failed polls by error kind |
//! | `vtorc_discovery_*` | counter/gauge | – | rounds, topo events, resyncs, snapshots, ... |
//! | `vtorc_health_stream_*` | counter | – | health stream connects, breaks, messages |
//! | `vtorc_tablets_watched_by_cell` | gauge | cell | snapshot |
//! | `vtorc_tablets_watched_by_shard` | gauge | keyspace, shard, ers_disabled | snapshot |
//! | `vtorc_emergency_reparent_shard_disabled` | gauge | keyspace, shard | snapshot |
//! | `vtorc_errant_gtid_tablet_count` | gauge | – | snapshot |
//! | `vtorc_ready` | gauge | – | readiness gate (1 = ready) |
//! | `vtorc_pending_recoveries`, `vtorc_detected_problems`, `vtorc_recoveries_count`, `vtorc_successful_recoveries`, `vtorc_failed_recoveries`, `vtorc_skipped_recoveries`, `vtorc_shard_locks_active`, `vtorc_shard_lock_timings` | see [`crate::recovery::RecoveryMetrics`] | | recovery engine |
//! | `vtorc_global_recoveries_enabled` | gauge | – | global switch (1 = enabled) |
//! | `vtorc_audit_dropped_lines` | counter | – | audit file lines dropped |
//! | `vtorc_emergency_reparent_counts`, `vtorc_planned_reparent_counts` | counter | keyspace, shard, result | reparents |
//! | `vtorc_reparent_shard_operation_timings` | summary (s) | operation | reparents |
//! | `vtorc_grpc_calls_denied` | counter | method, reason | gRPC access policy refusals ([`crate::server::auth`]) |
//! | `vtorc_grpc_mutating_identities`, `vtorc_grpc_mutating_identities_reloads` | gauge, counter | –, result | `--grpc-mutating-identities-file` |

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::discovery::{DiscoveryHandle, DiscoveryMetrics, metrics::LATENCY_BUCKETS_US};
use crate::model::ClusterSnapshot;
use crate::recovery::RecoveryHandle;
use crate::reparent::{Operation, ReparentMetrics};
use crate::tablet::TabletErrorKind;

mod exposition;

pub use exposition::{Family, Sample, SampleSeries, parse_exposition};

/// Prometheus metric types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
    /// Sum and count (no quantiles here).
    Summary,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
pub struct PromText {
    /// The text so far.
    out: String,
}

impl PromText {
    /// Starts a metric family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line. Label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: MetricKind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// Text already in the exposition format (whole families).
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.out.push('\n');
        }
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Something that contributes metric families at scrape time.
pub trait MetricSource: Send + Sync {
    /// Writes this source's families. Family names must be unique across
    /// the sources of one registry.
    fn render(&self, out: &mut PromText);
}

/// The sources of one vtorc, rendered together.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    /// Sources in rendering order.
    sources: Vec<Arc<dyn MetricSource>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    /// Adds a source.
    pub fn register(&mut self, source: impl MetricSource + 'static) -> &mut Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// The registry of a running vtorc: discovery (counters and the
    /// snapshot's gauges), the recovery engine and the reparent engine.
    pub fn for_vtorc(
        discovery: &DiscoveryHandle,
        discovery_workers: usize,
        recovery: &RecoveryHandle,
        reparent: Arc<ReparentMetrics>,
    ) -> Self {
        let mut r = MetricsRegistry::new();
        let snapshots = discovery.clone();
        let ready = discovery.clone();
        r.register(DiscoverySource {
            metrics: Arc::clone(discovery.metrics()),
            workers: discovery_workers,
        })
        .register(SnapshotSource {
            snapshot: Box::new(move || snapshots.snapshot()),
            ready: Box::new(move || ready.is_ready()),
        })
        .register(RecoverySource {
            handle: recovery.clone(),
        })
        .register(ReparentSource { metrics: reparent });
        r
    }

    /// Every family of every source, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = PromText::default();
        for s in &self.sources {
            s.render(&mut out);
        }
        out.finish()
    }

    /// Every family of every source, typed (what [`MetricsRegistry::render`]
    /// writes, read back), for renderings other than Prometheus's.
    pub fn families(&self) -> Vec<Family> {
        parse_exposition(&self.render())
    }
}

/// Discovery's and the health streams' counters.
pub struct DiscoverySource {
    /// The counters.
    pub metrics: Arc<DiscoveryMetrics>,
    /// `--discovery-workers`.
    pub workers: usize,
}

impl MetricSource for DiscoverySource {
    fn render(&self, out: &mut PromText) {
        use MetricKind::{Counter, Gauge, Histogram};
        let m = &self.metrics;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let failures: u64 = TabletErrorKind::ALL.iter().map(|k| m.poll_failures(*k)).sum();
        out.single(
            "vtorc_discoveries_attempt",
            Counter,
            "Tablet polls (FullStatus) started",
            load(&m.polls_started),
        );
        out.single(
            "vtorc_discoveries_fail",
            Counter,
            "Tablet polls that failed",
            failures,
        );
        out.single(
            "vtorc_discoveries_instance_poll_seconds_exceeded",
            Counter,
            "Tablet polls that ran past the slow-poll threshold",
            load(&m.polls_slow),
        );
        out.single(
            "vtorc_discovery_workers",
            Gauge,
            "Tablet polls allowed at once (--discovery-workers)",
            self.workers,
        );
        out.family(
            "vtorc_discovery_instance_timings",
            Histogram,
            "Latency of completed tablet polls, in seconds",
        );
        let buckets = m.poll_latency.buckets();
        let mut cumulative = 0u64;
        for (i, bound_us) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += buckets.get(i).copied().unwrap_or(0);
            let le = format!("{}", *bound_us as f64 / 1e6);
            out.sample(
                "vtorc_discovery_instance_timings_bucket",
                &[("action", "Instance"), ("le", &le)],
                cumulative,
            );
        }
        let count = m.poll_latency.count();
        out.sample(
            "vtorc_discovery_instance_timings_bucket",
            &[("action", "Instance"), ("le", "+Inf")],
            count,
        );
        out.sample(
            "vtorc_discovery_instance_timings_sum",
            &[("action", "Instance")],
            m.poll_latency.sum().as_secs_f64(),
        );
        out.sample(
            "vtorc_discovery_instance_timings_count",
            &[("action", "Instance")],
            count,
        );
        out.family(
            "vtorc_discovery_poll_failures",
            Counter,
            "Failed tablet polls by error kind",
        );
        for kind in TabletErrorKind::ALL {
            out.sample(
                "vtorc_discovery_poll_failures",
                &[("kind", kind.as_str())],
                m.poll_failures(kind),
            );
        }
        for (name, kind, help, value) in [
            (
                "vtorc_discovery_polls_succeeded",
                Counter,
                "Tablet polls that returned a full status",
                load(&m.polls_succeeded),
            ),
            (
                "vtorc_discovery_polls_triggered",
                Counter,
                "Tablet polls triggered by a health event",
                load(&m.polls_triggered),
            ),
            (
                "vtorc_discovery_rounds",
                Counter,
                "Completed discovery rounds",
                load(&m.rounds),
            ),
            (
                "vtorc_discovery_topo_events",
                Counter,
                "Topology events applied",
                load(&m.topo_events),
            ),
            (
                "vtorc_discovery_topo_resyncs",
                Counter,
                "Full topology loads applied",
                load(&m.topo_resyncs),
            ),
            (
                "vtorc_discovery_topo_relist_failures",
                Counter,
                "Safety-net topology re-lists that failed",
                load(&m.topo_relist_failures),
            ),
            (
                "vtorc_discovery_health_events",
                Counter,
                "Health stream events handled",
                load(&m.health_events),
            ),
            (
                "vtorc_discovery_snapshots_published",
                Counter,
                "Cluster snapshots published",
                load(&m.snapshots_published),
            ),
            (
                "vtorc_discovery_shard_notifications",
                Counter,
                "Shard-changed notifications sent",
                load(&m.shard_notifications),
            ),
            (
                "vtorc_health_stream_subscriptions",
                Counter,
                "Health stream subscriptions started",
                load(&m.streams.subscriptions),
            ),
            (
                "vtorc_health_stream_connects",
                Counter,
                "Health streams opened",
                load(&m.streams.connects),
            ),
            (
                "vtorc_health_stream_reconnects",
                Counter,
                "Health streams reopened after a break",
                load(&m.streams.reconnects),
            ),
            (
                "vtorc_health_stream_breaks",
                Counter,
                "Health stream outages",
                load(&m.streams.breaks),
            ),
            (
                "vtorc_health_stream_failed_attempts",
                Counter,
                "Failed attempts to open a health stream",
                load(&m.streams.failed_attempts),
            ),
            (
                "vtorc_health_stream_messages",
                Counter,
                "Health messages received",
                load(&m.streams.messages),
            ),
        ] {
            out.single(name, kind, help, value);
        }
        out.single(
            "vtorc_discovery_last_round_seconds",
            Gauge,
            "Duration of the last completed discovery round, in seconds",
            m.last_round().as_secs_f64(),
        );
    }
}

/// Gauges computed from the latest cluster snapshot.
pub struct SnapshotSource {
    /// The latest snapshot.
    pub snapshot: Box<dyn Fn() -> Arc<ClusterSnapshot> + Send + Sync>,
    /// Whether discovery is ready.
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

impl MetricSource for SnapshotSource {
    fn render(&self, out: &mut PromText) {
        use MetricKind::Gauge;
        let snapshot = (self.snapshot)();
        let mut by_cell: BTreeMap<&str, u64> = BTreeMap::new();
        let mut errant = 0u64;
        for shard in snapshot.shards.values() {
            for t in &shard.tablets {
                *by_cell.entry(t.alias().cell.as_str()).or_default() += 1;
                if t.observation.as_ref().is_some_and(|o| !o.errant_gtids.is_empty()) {
                    errant += 1;
                }
            }
        }
        out.single(
            "vtorc_ready",
            Gauge,
            "1 once the topology was loaded and one discovery round completed",
            u8::from((self.ready)()),
        );
        out.family("vtorc_tablets_watched_by_cell", Gauge, "Tablets watched, by cell");
        for (cell, n) in &by_cell {
            out.sample("vtorc_tablets_watched_by_cell", &[("cell", cell)], n);
        }
        out.family(
            "vtorc_tablets_watched_by_shard",
            Gauge,
            "Tablets watched, by shard (ers_disabled: ERS disabled for the keyspace or shard)",
        );
        for shard in snapshot.shards.values() {
            let disabled = shard.emergency_reparent_disabled
                || snapshot
                    .keyspaces
                    .get(&shard.keyspace)
                    .is_some_and(|k| k.emergency_reparent_disabled);
            out.sample(
                "vtorc_tablets_watched_by_shard",
                &[
                    ("ers_disabled", if disabled { "true" } else { "false" }),
                    ("keyspace", &shard.keyspace),
                    ("shard", &shard.shard),
                ],
                shard.tablets.len(),
            );
        }
        out.family(
            "vtorc_emergency_reparent_shard_disabled",
            Gauge,
            "1 when EmergencyReparentShard is disabled for the shard (keyspace or shard record)",
        );
        for shard in snapshot.shards.values() {
            let disabled = shard.emergency_reparent_disabled
                || snapshot
                    .keyspaces
                    .get(&shard.keyspace)
                    .is_some_and(|k| k.emergency_reparent_disabled);
            out.sample(
                "vtorc_emergency_reparent_shard_disabled",
                &[("keyspace", &shard.keyspace), ("shard", &shard.shard)],
                u8::from(disabled),
            );
        }
        out.single(
            "vtorc_errant_gtid_tablet_count",
            Gauge,
            "Tablets whose MySQL has errant GTIDs",
            errant,
        );
    }
}

/// The recovery engine's metrics and switches.
pub struct RecoverySource {
    /// The engine.
    pub handle: RecoveryHandle,
}

impl MetricSource for RecoverySource {
    fn render(&self, out: &mut PromText) {
        out.raw(&self.handle.metrics().render_prometheus());
        out.single(
            "vtorc_global_recoveries_enabled",
            MetricKind::Gauge,
            "1 when recoveries are globally enabled",
            u8::from(self.handle.global_recoveries_enabled()),
        );
        out.single(
            "vtorc_audit_dropped_lines",
            MetricKind::Counter,
            "Audit file lines dropped because the writer fell behind",
            self.handle.audit().dropped_lines(),
        );
    }
}

/// Vitess's reparent counters.
pub struct ReparentSource {
    /// The counters.
    pub metrics: Arc<ReparentMetrics>,
}

impl MetricSource for ReparentSource {
    fn render(&self, out: &mut PromText) {
        let counts = self.metrics.counts();
        for (op, name, help) in [
            (
                Operation::Emergency,
                "vtorc_emergency_reparent_counts",
                "EmergencyReparentShard runs by result",
            ),
            (
                Operation::Planned,
                "vtorc_planned_reparent_counts",
                "PlannedReparentShard runs by result",
            ),
        ] {
            out.family(name, MetricKind::Counter, help);
            for c in counts.iter().filter(|c| c.operation == op) {
                out.sample(
                    name,
                    &[
                        ("keyspace", &c.keyspace),
                        ("result", c.result),
                        ("shard", &c.shard),
                    ],
                    c.count,
                );
            }
        }
        out.family(
            "vtorc_reparent_shard_operation_timings",
            MetricKind::Summary,
            "Time spent in reparent operations, in seconds",
        );
        for op in [Operation::Emergency, Operation::Planned] {
            let (n, total) = self.metrics.timing(op);
            out.sample(
                "vtorc_reparent_shard_operation_timings_sum",
                &[("operation", op.as_str())],
                total.as_secs_f64(),
            );
            out.sample(
                "vtorc_reparent_shard_operation_timings_count",
                &[("operation", op.as_str())],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::fixtures::{ShardBuilder, TabletFixture};

    #[test]
    fn label_values_are_escaped() {
        let mut t = PromText::default();
        t.family("m", MetricKind::Gauge, "help with \\ and\nnewline");
        t.sample("m", &[("a", "x\"y\\z\nw")], 1);
        let text = t.finish();
        assert!(text.contains("# HELP m help with \\\\ and\\nnewline\n"), "{text}");
        assert!(text.contains("m{a=\"x\\\"y\\\\z\\nw\"} 1\n"), "{text}");
    }

    #[test]
    fn discovery_counters_map_to_go_names_and_a_cumulative_histogram() {
        let m = Arc::new(DiscoveryMetrics::default());
        m.polls_started.fetch_add(5, Ordering::Relaxed);
        m.poll_failed(TabletErrorKind::Timeout);
        m.poll_failed(TabletErrorKind::Unreachable);
        m.poll_latency.record(Duration::from_micros(100));
        m.poll_latency.record(Duration::from_millis(3));
        let mut r = MetricsRegistry::new();
        r.register(DiscoverySource {
            metrics: m,
            workers: 7,
        });
        let text = r.render();
        assert!(text.contains("vtorc_discoveries_attempt 5\n"), "{text}");
        assert!(text.contains("vtorc_discoveries_fail 2\n"));
        assert!(text.contains("vtorc_discovery_workers 7\n"));
        assert!(text.contains("vtorc_discovery_poll_failures{kind=\"timeout\"} 1\n"));
        assert!(
            text.contains("vtorc_discovery_instance_timings_bucket{action=\"Instance\",le=\"0.00025\"} 1\n")
        );
        assert!(
            text.contains("vtorc_discovery_instance_timings_bucket{action=\"Instance\",le=\"0.005\"} 2\n")
        );
        assert!(
            text.contains("vtorc_discovery_instance_timings_bucket{action=\"Instance\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("vtorc_discovery_instance_timings_count{action=\"Instance\"} 2\n"));
    }

    #[test]
    fn snapshot_gauges_count_tablets_by_cell_and_shard_and_errant_gtids() {
        let now = crate::clock::now();
        let snapshot = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone2", 200)
            .edit("zone2", 200, |t| {
                t.obs().errant_gtids =
                    crate::mysql::Position::parse("MySQL56/00000000-0000-0000-0000-000000000009:1")
                        .expect("valid");
            })
            .build();
        let snapshot = Arc::new(snapshot);
        let mut r = MetricsRegistry::new();
        r.register(SnapshotSource {
            snapshot: Box::new(move || Arc::clone(&snapshot)),
            ready: Box::new(|| true),
        });
        let text = r.render();
        assert!(text.contains("vtorc_ready 1\n"), "{text}");
        assert!(text.contains("vtorc_tablets_watched_by_cell{cell=\"zone1\"} 2\n"));
        assert!(text.contains("vtorc_tablets_watched_by_cell{cell=\"zone2\"} 1\n"));
        assert!(text.contains(
            "vtorc_tablets_watched_by_shard{ers_disabled=\"false\",keyspace=\"ks\",shard=\"0\"} 3\n"
        ));
        assert!(text.contains("vtorc_emergency_reparent_shard_disabled{keyspace=\"ks\",shard=\"0\"} 0\n"));
        assert!(text.contains("vtorc_errant_gtid_tablet_count 1\n"));
    }

    #[test]
    fn reparent_counts_and_timings_render() {
        let m = Arc::new(ReparentMetrics::default());
        m.record(Operation::Emergency, "ks", "0", true, Duration::from_millis(1500));
        let mut r = MetricsRegistry::new();
        r.register(ReparentSource {
            metrics: Arc::clone(&m),
        });
        let text = r.render();
        assert!(text.contains("# TYPE vtorc_emergency_reparent_counts counter\n"));
        assert!(
            text.contains(
                "vtorc_emergency_reparent_counts{keyspace=\"ks\",result=\"success\",shard=\"0\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "vtorc_reparent_shard_operation_timings_count{operation=\"EmergencyReparentShard\"} 1\n"
        ));
        assert!(text.contains(
            "vtorc_reparent_shard_operation_timings_sum{operation=\"EmergencyReparentShard\"} 1.5\n"
        ));
        assert!(text.contains(
            "vtorc_reparent_shard_operation_timings_count{operation=\"PlannedReparentShard\"} 0\n"
        ));
    }
}
