//! The metrics registry of one vtorc, on the `prometheus` crate
//! (`tikv/rust-prometheus`).
//!
//! # The approach (one for the whole project)
//!
//! - Each module owns and registers its own families
//!   ([`crate::discovery::DiscoveryHandle::register_metrics`],
//!   [`crate::recovery::RecoveryHandle::register_metrics`],
//!   [`crate::reparent::ReparentMetrics::register`],
//!   [`crate::server::auth::GrpcAccess::register_metrics`]): the crate's metric
//!   types where the module updates a metric in place (counter vectors,
//!   histograms), or a [`FamilyCollector`] that reads the module's own
//!   atomics or snapshot when `/metrics` is scraped. This module imports no
//!   other module of vtorc: telemetry serves them, not the reverse.
//! - [`MetricsRegistry`] is a value, not a global, so tests build their
//!   own. `/metrics` is the crate's text encoder over the gathered families
//!   (Prometheus text format 0.0.4); `/debug/vars` walks the same typed
//!   families ([`MetricsRegistry::families`]).
//! - Names: Go VTOrc's Prometheus names (prefix `vtorc_`, label names in
//!   snake_case) where Go has the metric (reference §10); our own metrics use
//!   the same prefix. Label values are bounded sets (error kinds, outcomes,
//!   analysis codes) plus keyspace/shard/cell; tablet aliases only in
//!   `vtorc_detected_problems`, as in Go.
//!
//! Why `prometheus` rather than `prometheus-client`: the OpenMetrics
//! encoder of `prometheus-client` appends `_total` to every counter and
//! ends the page with `# EOF`, which would rename Go VTOrc's counters
//! (`vtorc_recoveries_count`), and it offers no typed view of the gathered
//! families, so `/debug/vars` would have to parse the text again.
//! `prometheus` writes the 0.0.4 text format Go's client writes, gives
//! `gather()` as typed families, and is maintained by TiKV.
//!
//! | Family | Type | Labels | Registered by |
//! |---|---|---|---|
//! | `vtorc_discoveries_attempt`, `vtorc_discoveries_fail`, `vtorc_discoveries_instance_poll_seconds_exceeded` | counter | – | discovery |
//! | `vtorc_discovery_workers` | gauge | – | discovery (`--discovery-workers`) |
//! | `vtorc_discovery_instance_timings` | histogram (s) | action=`Instance` | discovery |
//! | `vtorc_discovery_poll_failures` | counter | kind | discovery |
//! | `vtorc_discovery_*` | counter/gauge | – | discovery (rounds, topo events, resyncs, snapshots, ...) |
//! | `vtorc_health_stream_*` | counter | – | discovery (the health streams' counters) |
//! | `vtorc_tablets_watched_by_cell` | gauge | cell | discovery (snapshot) |
//! | `vtorc_tablets_watched_by_shard` | gauge | keyspace, shard, ers_disabled | discovery (snapshot) |
//! | `vtorc_emergency_reparent_shard_disabled` | gauge | keyspace, shard | discovery (snapshot) |
//! | `vtorc_errant_gtid_tablet_count` | gauge | – | discovery (snapshot) |
//! | `vtorc_ready` | gauge | – | discovery (readiness gate, 1 = ready) |
//! | `vtorc_pending_recoveries`, `vtorc_detected_problems`, `vtorc_recoveries_count`, `vtorc_successful_recoveries`, `vtorc_failed_recoveries`, `vtorc_skipped_recoveries`, `vtorc_shard_locks_active`, `vtorc_shard_lock_timings` | see [`crate::recovery::RecoveryMetrics`] | | recovery |
//! | `vtorc_global_recoveries_enabled` | gauge | – | recovery (1 = enabled) |
//! | `vtorc_audit_dropped_lines` | counter | – | recovery (audit file lines dropped) |
//! | `vtorc_emergency_reparent_counts`, `vtorc_planned_reparent_counts` | counter | keyspace, shard, result | reparent |
//! | `vtorc_reparent_shard_operation_timings` | summary (s) | operation | reparent |
//! | `vtorc_grpc_calls_denied` | counter | method, reason | `server::auth` (gRPC access policy refusals; with a policy) |
//! | `vtorc_grpc_mutating_identities`, `vtorc_grpc_mutating_identities_reloads` | gauge, counter | –, result | `server::auth` (`--grpc-mutating-identities-file`) |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use prometheus::Error;
use prometheus::core::{Collector, Desc};
pub use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{Encoder as _, TextEncoder};

/// The collectors of one vtorc, gathered together.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    /// The crate's registry: checks names and renders `/metrics`.
    registry: prometheus::Registry,
    /// The same collectors, for [`MetricsRegistry::families`], which keeps
    /// families that have no series yet (the crate's `gather` drops them).
    collectors: Arc<Mutex<Vec<Arc<dyn Collector>>>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("collectors", &self.lock().len())
            .finish()
    }
}

/// A collector shared between the crate's registry and ours.
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn Collector>>> {
        self.collectors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a collector; fails when one of its family names is invalid or
    /// already registered.
    pub fn register(&self, collector: impl Collector + 'static) -> Result<(), Error> {
        self.register_shared(Arc::new(collector))
    }

    /// [`MetricsRegistry::register`] for a collector its module keeps too.
    pub fn register_shared(&self, collector: Arc<dyn Collector>) -> Result<(), Error> {
        self.registry.register(Box::new(Shared(Arc::clone(&collector))))?;
        self.lock().push(collector);
        Ok(())
    }

    /// Every family with at least one series, in the Prometheus text
    /// format (version 0.0.4), sorted by name.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // The text encoder fails only on a family without series or name,
        // which `gather` never returns.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("failed to encode the metrics: {e:#}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Every family, typed, sorted by name, those without series included
    /// (for renderings other than Prometheus's, such as `/debug/vars`).
    pub fn families(&self) -> Vec<MetricFamily> {
        let collectors: Vec<Arc<dyn Collector>> = self.lock().clone();
        let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for family in collectors.iter().flat_map(|c| c.collect()) {
            match by_name.get_mut(family.name()) {
                Some(existing) => {
                    let mut family = family;
                    existing.mut_metric().extend(family.take_metric());
                }
                None => {
                    by_name.insert(family.name().to_string(), family);
                }
            }
        }
        by_name.into_values().collect()
    }
}

/// A label value of a metric.
pub fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// One family whose series are computed when collected.
#[derive(Debug)]
pub struct FamilySpec {
    /// Its descriptor (name, help, label names).
    desc: Desc,
    /// Counter or gauge.
    kind: MetricType,
}

/// The series of one [`FamilySpec`] being collected: label values (in the
/// order of the spec's label names) and a value.
pub type Series = Vec<(Vec<String>, f64)>;

/// A collector of families computed at collection time from a module's own
/// state (atomics, a snapshot): `collect` returns one [`Series`] list per
/// spec, in the order of the specs.
pub struct FamilyCollector {
    /// The families.
    specs: Vec<FamilySpec>,
    /// Their series.
    collect: Box<dyn Fn() -> Vec<Series> + Send + Sync>,
}

impl FamilyCollector {
    /// A collector of `specs` (name, help, kind, label names); invalid names
    /// are an error.
    pub fn new(
        specs: &[(&str, &str, MetricType, &[&str])],
        collect: impl Fn() -> Vec<Series> + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let specs = specs
            .iter()
            .map(|(name, help, kind, labels)| {
                Ok(FamilySpec {
                    desc: Desc::new(
                        (*name).to_string(),
                        (*help).to_string(),
                        labels.iter().map(|l| (*l).to_string()).collect(),
                        std::collections::HashMap::new(),
                    )?,
                    kind: *kind,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(FamilyCollector {
            specs,
            collect: Box::new(collect),
        })
    }
}

impl Collector for FamilyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.specs.iter().map(|s| &s.desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut series = (self.collect)().into_iter();
        self.specs
            .iter()
            .map(|spec| {
                let mut family = MetricFamily::default();
                family.set_name(spec.desc.fq_name.clone());
                family.set_help(spec.desc.help.clone());
                family.set_field_type(spec.kind);
                let rows = series.next().unwrap_or_default();
                family.set_metric(
                    rows.into_iter()
                        .map(|(values, v)| metric(&spec.desc.variable_labels, &values, spec.kind, v))
                        .collect(),
                );
                family
            })
            .collect()
    }
}

/// One counter or gauge sample with labels sorted by name, as the crate
/// writes its own.
fn metric(names: &[String], values: &[String], kind: MetricType, value: f64) -> Metric {
    let mut labels: Vec<prometheus::proto::LabelPair> = names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = prometheus::proto::LabelPair::default();
            l.set_name(n.clone());
            l.set_value(v.clone());
            l
        })
        .collect();
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = prometheus::proto::Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = prometheus::proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

/// An unlabelled series.
pub fn single(value: impl Into<f64>) -> Series {
    vec![(Vec::new(), value.into())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_collectors_render_sorted_escaped_and_reject_duplicate_names() {
        let registry = MetricsRegistry::new();
        registry
            .register(
                FamilyCollector::new(
                    &[
                        ("z_gauge", "help with \\ and\nnewline", MetricType::GAUGE, &["a"]),
                        ("a_counter", "h", MetricType::COUNTER, &[]),
                        ("empty", "h", MetricType::COUNTER, &["k"]),
                    ],
                    || {
                        vec![
                            vec![(vec!["x\"y\\z\nw".to_string()], 1.0)],
                            single(3u32),
                            Vec::new(),
                        ]
                    },
                )
                .expect("valid names"),
            )
            .expect("first registration");
        let text = registry.render();
        assert!(
            text.contains("# HELP z_gauge help with \\\\ and\\nnewline\n"),
            "{text}"
        );
        assert!(text.contains("z_gauge{a=\"x\\\"y\\\\z\\nw\"} 1\n"), "{text}");
        assert!(
            text.find("a_counter 3\n") < text.find("z_gauge{"),
            "families sorted by name: {text}"
        );
        assert!(!text.contains("empty"), "no series, no family: {text}");
        let names: Vec<String> = registry.families().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["a_counter", "empty", "z_gauge"]);
        let again = FamilyCollector::new(&[("a_counter", "h", MetricType::COUNTER, &[])], Vec::new)
            .expect("valid names");
        assert!(
            registry.register(again).is_err(),
            "a family name is registered once"
        );
    }
}
