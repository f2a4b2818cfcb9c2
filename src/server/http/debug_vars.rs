//! `/debug/vars`: every metric of the registry as Go's expvar JSON, the
//! page Go VTOrc's servenv serves with all its stats variables.
//!
//! # Shape
//!
//! The page is Go's expvar handler output: `{`, one `"Name": value` per
//! line sorted by name, `}`; values are compact JSON, HTML-escaped like Go's
//! `json.Marshal`. Each family of the metrics registry (the typed families
//! `/metrics` encodes, plus those without series yet) becomes one variable:
//!
//! - **name**: Go VTOrc's expvar name where Go has the metric (reference
//!   §10, e.g. `vtorc_recoveries_count` → `RecoveriesCount`,
//!   `vtorc_reparent_shard_operation_timings` →
//!   `reparent_shard_operation_timings`); our own families drop the
//!   `vtorc_` prefix and are written in CamelCase
//!   (`vtorc_health_stream_connects` → `HealthStreamConnects`).
//! - **counter or gauge without labels**: a number.
//! - **with labels**: an object whose keys are the label values joined
//!   with `.` in Go's label order (`RecoveriesCount`: RecoveryType,
//!   Keyspace, Shard → `"FixReplica.commerce.0": 1`), a `.` inside a value
//!   written as `_`, as Go's `stats` package renders multi-dimensional
//!   counters and gauges. A labelled family with no series yet is `{}`.
//! - **histogram** (timings): Go's `stats.Timings` / `MultiTimings` shape,
//!   `{"TotalCount": n, "TotalTime": ns, "Histograms": {"<labels>":
//!   {"<bound ns>": count, ..., "inf": count, "Count": n, "Time": ns}}}`,
//!   with per-bucket (not cumulative) counts as Go writes them. The bounds
//!   are our histogram's bounds in nanoseconds, which are not always Go's
//!   (Go's timings cut at 0.5 ms, 1 ms, 5 ms, ... 10 s;
//!   `DiscoveryInstanceTimings` here cuts at 250 µs, 500 µs, 1 ms, ...).
//! - **summary** (`reparent_shard_operation_timings`): the same shape
//!   without bucket keys (we keep only count and sum).
//!
//! Besides the metrics: `cmdline` (the process arguments, Go expvar's
//! default variable) and `Uptime` (nanoseconds since the HTTP server
//! started at vtorc start-up, servenv's `Uptime`). Go expvar's other
//! default, `memstats`, is Go runtime memory statistics: Rust has no
//! equivalent, so it is left out.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::ser::CompactFormatter;

use super::{DebugState, go_json_with};
use crate::telemetry::metrics::{Metric, MetricFamily, MetricType, label};

/// The labels of the recovery counters: one series per recovery type and
/// shard.
const PER_RECOVERY: &[&str] = &["recovery_type", "keyspace", "shard"];

/// The labels of the reparent counters: one series per shard and result.
const PER_REPARENT_RESULT: &[&str] = &["keyspace", "shard", "result"];

/// Go VTOrc's expvar name and label order of the families Go has
/// (reference §10), by Prometheus family name.
const GO_VARS: &[(&str, &str, &[&str])] = &[
    ("vtorc_pending_recoveries", "PendingRecoveries", &[]),
    (
        "vtorc_detected_problems",
        "DetectedProblems",
        &["analysis", "tablet_alias", "keyspace", "shard"],
    ),
    ("vtorc_recoveries_count", "RecoveriesCount", PER_RECOVERY),
    (
        "vtorc_successful_recoveries",
        "SuccessfulRecoveries",
        PER_RECOVERY,
    ),
    ("vtorc_failed_recoveries", "FailedRecoveries", PER_RECOVERY),
    (
        "vtorc_skipped_recoveries",
        "SkippedRecoveries",
        &["recovery_type", "keyspace", "shard", "reason"],
    ),
    ("vtorc_shard_locks_active", "ShardLocksActive", &[]),
    ("vtorc_shard_lock_timings", "ShardLockTimings", &["action"]),
    ("vtorc_discoveries_attempt", "DiscoveriesAttempt", &[]),
    ("vtorc_discoveries_fail", "DiscoveriesFail", &[]),
    (
        "vtorc_discoveries_instance_poll_seconds_exceeded",
        "DiscoveriesInstancePollSecondsExceeded",
        &[],
    ),
    ("vtorc_discovery_workers", "DiscoveryWorkers", &[]),
    (
        "vtorc_discovery_instance_timings",
        "DiscoveryInstanceTimings",
        &["action"],
    ),
    ("vtorc_errant_gtid_tablet_count", "ErrantGtidTabletCount", &[]),
    ("vtorc_tablets_watched_by_cell", "TabletsWatchedByCell", &["cell"]),
    (
        "vtorc_tablets_watched_by_shard",
        "TabletsWatchedByShard",
        &["keyspace", "shard", "ers_disabled"],
    ),
    (
        "vtorc_emergency_reparent_shard_disabled",
        "EmergencyReparentShardDisabled",
        &["keyspace", "shard"],
    ),
    (
        "vtorc_emergency_reparent_counts",
        "EmergencyReparentCounts",
        PER_REPARENT_RESULT,
    ),
    (
        "vtorc_planned_reparent_counts",
        "PlannedReparentCounts",
        PER_REPARENT_RESULT,
    ),
    (
        "vtorc_reparent_shard_operation_timings",
        "reparent_shard_operation_timings",
        &["operation"],
    ),
];

/// A value of the page; objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Var {
    /// An integer.
    Int(i64),
    /// A number that is not an integer (`null` if not finite).
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Var>),
    /// An object, keys in this order.
    Object(Vec<(String, Var)>),
}

impl Var {
    /// An integer when the value is one (counters are), else a float.
    fn number(v: f64) -> Var {
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
            Var::Int(v as i64)
        } else {
            Var::Float(v)
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Var::Int(i) => out.push_str(&i.to_string()),
            Var::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => out.push_str(&n.to_string()),
                None => out.push_str("null"),
            },
            Var::Str(s) => out.push_str(&json_string(s)),
            Var::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Var::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&json_string(k));
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal, HTML-escaped as Go's `json.Marshal` writes it.
fn json_string(s: &str) -> String {
    match go_json_with(s, CompactFormatter) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => "\"\"".to_string(),
    }
}

/// The expvar name of a family and Go's label order (empty = as written).
fn go_name(family: &str) -> (String, &'static [&'static str]) {
    if let Some((_, name, labels)) = GO_VARS.iter().find(|(prom, _, _)| *prom == family) {
        return ((*name).to_string(), labels);
    }
    let base = family.strip_prefix("vtorc_").unwrap_or(family);
    let mut name = String::with_capacity(base.len());
    for word in base.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    (name, &[])
}

/// The key of a labelled series: label values in `order` (then any other
/// label, by name), `.` inside a value written as `_`, joined with `.`.
fn series_key(metric: &Metric, order: &[&str]) -> String {
    let mut values: Vec<String> = order
        .iter()
        .map(|name| label(metric, name).unwrap_or("").replace('.', "_"))
        .collect();
    values.extend(
        metric
            .get_label()
            .iter()
            .filter(|l| !order.contains(&l.name()))
            .map(|l| l.value().replace('.', "_")),
    );
    values.join(".")
}

/// Seconds as whole nanoseconds (Go's timings count in nanoseconds).
fn nanos(seconds: f64) -> i64 {
    // `as` saturates and maps NaN to 0.
    (seconds * 1e9).round() as i64
}

/// A histogram or summary family as Go's `stats.Timings`.
fn timings(family: &MetricFamily, order: &[&str]) -> Var {
    let mut series: BTreeMap<String, Var> = BTreeMap::new();
    let mut total_count = 0u64;
    let mut total_time = 0i64;
    for m in family.get_metric() {
        let mut entries = Vec::new();
        let (count, sum) = if family.get_field_type() == MetricType::HISTOGRAM {
            let h = m.get_histogram();
            let mut previous = 0;
            for b in h.get_bucket() {
                let n = b.cumulative_count().saturating_sub(previous);
                previous = b.cumulative_count();
                entries.push((nanos(b.upper_bound()).to_string(), Var::number(n as f64)));
            }
            let above = h.get_sample_count().saturating_sub(previous);
            entries.push(("inf".to_string(), Var::number(above as f64)));
            (h.get_sample_count(), h.get_sample_sum())
        } else {
            let s = m.get_summary();
            (s.sample_count(), s.sample_sum())
        };
        let time = nanos(sum);
        total_count = total_count.saturating_add(count);
        total_time = total_time.saturating_add(time);
        entries.push(("Count".to_string(), Var::number(count as f64)));
        entries.push(("Time".to_string(), Var::Int(time)));
        series.insert(series_key(m, order), Var::Object(entries));
    }
    Var::Object(vec![
        (
            "TotalCount".to_string(),
            Var::Int(i64::try_from(total_count).unwrap_or(i64::MAX)),
        ),
        ("TotalTime".to_string(), Var::Int(total_time)),
        (
            "Histograms".to_string(),
            Var::Object(series.into_iter().collect()),
        ),
    ])
}

/// A counter's or gauge's value.
fn value(family: &MetricFamily, m: &Metric) -> f64 {
    if family.get_field_type() == MetricType::COUNTER {
        m.get_counter().get_value()
    } else {
        m.get_gauge().get_value()
    }
}

/// A counter or gauge family: a number, or an object by series key.
fn values(family: &MetricFamily, order: &[&str]) -> Var {
    if let [m] = family.get_metric()
        && m.get_label().is_empty()
    {
        return Var::number(value(family, m));
    }
    let mut by_key: BTreeMap<String, f64> = BTreeMap::new();
    for m in family.get_metric() {
        *by_key.entry(series_key(m, order)).or_default() += value(family, m);
    }
    Var::Object(by_key.into_iter().map(|(k, v)| (k, Var::number(v))).collect())
}

/// The expvar variable of one family.
fn family_var(family: &MetricFamily) -> (String, Var) {
    let (name, order) = go_name(family.name());
    let var = match family.get_field_type() {
        MetricType::HISTOGRAM | MetricType::SUMMARY => timings(family, order),
        _ => values(family, order),
    };
    (name, var)
}

/// The page: `families` plus `extra` variables, sorted by name (a family
/// whose name is already taken is left out).
pub(super) fn render(families: &[MetricFamily], extra: Vec<(String, Var)>) -> String {
    let mut vars: BTreeMap<String, Var> = extra.into_iter().collect();
    for family in families {
        let (name, var) = family_var(family);
        vars.entry(name).or_insert(var);
    }
    let mut out = String::from("{\n");
    for (i, (name, var)) in vars.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&json_string(name));
        out.push_str(": ");
        var.write(&mut out);
    }
    out.push_str("\n}\n");
    out
}

/// The process arguments (`cmdline`); arguments that are not UTF-8 are
/// converted lossily.
fn cmdline() -> Var {
    Var::List(
        std::env::args_os()
            .map(|a| Var::Str(a.to_string_lossy().into_owned()))
            .collect(),
    )
}

/// `GET /debug/vars`.
pub(super) async fn handler(State(state): State<DebugState>) -> Response {
    let uptime = crate::clock::now().saturating_duration_since(state.started);
    let extra = vec![
        ("cmdline".to_string(), cmdline()),
        (
            "Uptime".to_string(),
            Var::Int(i64::try_from(uptime.as_nanos()).unwrap_or(i64::MAX)),
        ),
    ];
    let body = render(&state.ctx.metrics.families(), extra);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::analysis::RecoveryKind;
    use crate::discovery::DiscoveryMetrics;
    use crate::ids::KeyspaceShard;
    use crate::model::ClusterSnapshot;
    use crate::recovery::{LockAction, RecoveryMetrics};
    use crate::reparent::{Operation, ReparentMetrics};
    use crate::telemetry::metrics::{FamilyCollector, MetricsRegistry, Series, single};

    fn page(registry: &MetricsRegistry) -> serde_json::Value {
        let out = render(&registry.families(), vec![("cmdline".into(), cmdline())]);
        assert!(out.starts_with("{\n") && out.ends_with("\n}\n"), "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("valid JSON ({e}): {out}"))
    }

    fn registry_of(
        specs: &'static [(&'static str, &'static str, MetricType, &'static [&'static str])],
        series: impl Fn() -> Vec<Series> + Send + Sync + 'static,
    ) -> MetricsRegistry {
        let registry = MetricsRegistry::new();
        registry
            .register(FamilyCollector::new(specs, series).expect("valid names"))
            .expect("registered once");
        registry
    }

    fn row(values: &[&str], v: f64) -> (Vec<String>, f64) {
        (values.iter().map(|s| (*s).to_string()).collect(), v)
    }

    #[test]
    fn plain_counters_are_numbers_and_labelled_ones_objects_keyed_in_go_label_order() {
        use MetricType::{COUNTER, GAUGE};
        let registry = registry_of(
            &[
                ("vtorc_discoveries_attempt", "h", COUNTER, &[]),
                ("vtorc_discovery_last_round_seconds", "h", GAUGE, &[]),
                ("vtorc_recoveries_count", "h", COUNTER, PER_RECOVERY),
                (
                    "vtorc_skipped_recoveries",
                    "h",
                    COUNTER,
                    &["recovery_type", "keyspace", "shard", "reason"],
                ),
                ("vtorc_failed_recoveries", "h", COUNTER, PER_RECOVERY),
                ("vtorc_discovery_poll_failures", "h", COUNTER, &["kind"]),
            ],
            || {
                vec![
                    single(5u32),
                    single(0.25),
                    vec![row(&["FixReplica", "commerce", "-80"], 2.0)],
                    vec![row(&["FixReplica", "ks.x", "0", "StaleAnalysis"], 1.0)],
                    Vec::new(),
                    vec![row(&["timeout"], 3.0)],
                ]
            },
        );
        let v = page(&registry);
        assert_eq!(v["DiscoveriesAttempt"], 5);
        assert!(v["DiscoveriesAttempt"].is_i64(), "an integer, not 5.0");
        assert_eq!(v["DiscoveryLastRoundSeconds"], 0.25);
        assert_eq!(v["RecoveriesCount"]["FixReplica.commerce.-80"], 2);
        assert_eq!(
            v["SkippedRecoveries"]["FixReplica.ks_x.0.StaleAnalysis"], 1,
            "Go order, '.' in a value written as '_': {v}"
        );
        assert_eq!(v["FailedRecoveries"], serde_json::json!({}), "no series yet: {v}");
        assert_eq!(v["DiscoveryPollFailures"]["timeout"], 3);
        assert!(v["cmdline"].as_array().is_some_and(|a| !a.is_empty()));
    }

    #[test]
    fn histograms_become_go_timings_with_per_bucket_counts_in_nanoseconds() {
        let recovery = RecoveryMetrics::default();
        for ms in [0.4, 0.7, 0.9, 2000.0] {
            recovery.lock_timing(LockAction::Lock, Duration::from_secs_f64(ms / 1000.0));
        }
        let reparent = ReparentMetrics::default();
        reparent.record(Operation::Emergency, "ks", "0", true, Duration::from_millis(1500));
        let registry = MetricsRegistry::new();
        recovery.register(&registry).expect("registered once");
        reparent.register(&registry).expect("registered once");
        let out = render(&registry.families(), Vec::new());
        assert!(
            out.contains(
                "\"Lock\": {\"500000\": 1, \"1000000\": 2, \"5000000\": 0, \"10000000\": 0, \"50000000\": 0, \
                 \"100000000\": 0, \"500000000\": 0, \"1000000000\": 0, \"5000000000\": 1, \"10000000000\": 0, \
                 \"inf\": 0, \"Count\": 4, \"Time\": 2002000000}"
            ),
            "bucket order kept, per-bucket counts: {out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let lock = &v["ShardLockTimings"];
        assert_eq!(lock["TotalCount"], 4);
        assert_eq!(lock["TotalTime"], 2_002_000_000i64);
        assert_eq!(lock["Histograms"]["Unlock"]["Count"], 0);
        let ers = &v["reparent_shard_operation_timings"];
        assert_eq!(
            ers["Histograms"]["EmergencyReparentShard"],
            serde_json::json!({"Count": 1, "Time": 1_500_000_000i64})
        );
        assert_eq!(ers["TotalCount"], 1);
    }

    #[test]
    fn detected_problems_keys_follow_go_and_strings_are_html_escaped() {
        let registry = registry_of(
            &[
                (
                    "vtorc_detected_problems",
                    "h",
                    MetricType::GAUGE,
                    &["analysis", "keyspace", "shard", "tablet_alias"],
                ),
                ("vtorc_weird", "h", MetricType::GAUGE, &[]),
            ],
            || {
                vec![
                    vec![row(&["ReplicationStopped", "<ks>", "0", "zone1-0000000101"], 1.0)],
                    single(f64::NAN),
                ]
            },
        );
        let out = render(&registry.families(), Vec::new());
        assert!(
            out.contains("\"ReplicationStopped.zone1-0000000101.\\u003cks\\u003e.0\": 1"),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert!(v["Weird"].is_null(), "NaN is null: {out}");
    }

    /// The registry of every source with one fixed state.
    fn fixed_state() -> MetricsRegistry {
        use crate::recovery::audit::SkipReason;
        use crate::tablet::TabletErrorKind;
        use crate::testkit::{ShardBuilder, TabletFixture};

        let now = crate::clock::now();
        let mut snapshot = ShardBuilder::new("commerce", "0", "semi_sync", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone2", 200)
            .edit("zone2", 200, |t| {
                t.obs().errant_gtids =
                    crate::mysql::Position::parse("MySQL56/00000000-0000-0000-0000-000000000009:1")
                        .expect("valid");
            })
            .edit("zone1", 101, |t| t.stop_replication())
            .build();
        ShardBuilder::new("customer", "-80", "none", now)
            .primary("zone1", 300)
            .replica("zone2", 301)
            .add_to(&mut snapshot);
        if let Some(shard) = snapshot.shards.get_mut(&KeyspaceShard::new("customer", "-80")) {
            Arc::make_mut(shard).emergency_reparent_disabled = true;
        }
        let analysed = crate::analysis::analyze(&snapshot, &crate::analysis::AnalysisConfig::default(), now);
        let snapshot: Arc<ClusterSnapshot> = Arc::new(snapshot);

        let discovery = Arc::new(DiscoveryMetrics::default());
        discovery.polls_started.fetch_add(9, Ordering::Relaxed);
        discovery.polls_succeeded.fetch_add(6, Ordering::Relaxed);
        discovery.rounds.fetch_add(2, Ordering::Relaxed);
        discovery.streams.connects.fetch_add(4, Ordering::Relaxed);
        discovery.poll_failed(TabletErrorKind::Timeout);
        discovery.poll_failed(TabletErrorKind::Unreachable);
        discovery.poll_latency.record(Duration::from_micros(100));
        discovery.poll_latency.record(Duration::from_millis(3));
        discovery.poll_latency.record(Duration::from_secs(20));
        discovery.last_round_us.store(1_250_000, Ordering::Relaxed);

        let recovery = Arc::new(RecoveryMetrics::default());
        let key = KeyspaceShard::new("commerce", "0");
        recovery.set_detected(None, &analysed.problems);
        recovery.recovered(RecoveryKind::FixReplica, &key, true);
        recovery.recovered(RecoveryKind::RecoverDeadPrimary, &key, false);
        recovery.skipped(RecoveryKind::FixReplica, &key, SkipReason::NoRecoveryAction);
        recovery.lock_timing(LockAction::Lock, Duration::from_millis(2));
        recovery.lock_timing(LockAction::Unlock, Duration::from_micros(300));
        std::mem::forget(recovery.pending_guard());

        let reparent = ReparentMetrics::default();
        reparent.record(
            Operation::Emergency,
            "commerce",
            "0",
            true,
            Duration::from_secs(1),
        );
        reparent.record(
            Operation::Planned,
            "customer",
            "-80",
            false,
            Duration::from_millis(250),
        );

        let registry = MetricsRegistry::new();
        crate::discovery::metrics::register(&registry, &discovery, 3, move || Arc::clone(&snapshot), || true)
            .expect("registered once");
        recovery.register(&registry).expect("registered once");
        reparent.register(&registry).expect("registered once");
        registry
    }

    #[test]
    fn every_family_of_the_real_sources_becomes_a_variable() {
        let registry = fixed_state();
        let families = registry.families();
        let out = render(&families, Vec::new());
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v.as_object().map(|o| o.len()), Some(families.len()), "{out}");
        assert_eq!(
            registry.render().matches("# TYPE ").count(),
            families.len(),
            "every family has a series in this state"
        );
        assert_eq!(v["RecoveriesCount"]["FixReplica.commerce.0"], 1);
        assert_eq!(v["SuccessfulRecoveries"]["FixReplica.commerce.0"], 1);
        assert_eq!(v["ShardLockTimings"]["TotalCount"], 2);
        assert_eq!(v["ShardLockTimings"]["Histograms"]["Lock"]["5000000"], 1);
        assert_eq!(
            v["DiscoveryInstanceTimings"]["Histograms"]["Instance"]["Count"],
            3
        );
        assert_eq!(v["DiscoveryWorkers"], 3);
        assert_eq!(v["EmergencyReparentCounts"]["commerce.0.success"], 1);
        assert_eq!(
            v["reparent_shard_operation_timings"]["Histograms"]["EmergencyReparentShard"]["Time"],
            1_000_000_000i64
        );
    }

    /// `/metrics` and `/debug/vars` for one fixed state of every source,
    /// compared with the files in `testdata/`; `VTORC_UPDATE_GOLDEN=1`
    /// rewrites them (review the diff).
    #[test]
    fn metrics_and_debug_vars_of_a_fixed_state_match_the_golden_files() {
        let registry = fixed_state();
        let metrics = registry.render();
        let vars = render(&registry.families(), Vec::new());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/http/testdata");
        for (file, got) in [
            ("metrics.golden.txt", &metrics),
            ("debug_vars.golden.json", &vars),
        ] {
            let path = dir.join(file);
            if std::env::var_os("VTORC_UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).expect("create testdata");
                std::fs::write(&path, got).expect("write golden file");
                continue;
            }
            let want =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            assert_eq!(got, &want, "{file} differs from the golden file");
        }
    }

    #[test]
    fn names_of_our_own_families_are_camel_case() {
        assert_eq!(go_name("vtorc_health_stream_connects").0, "HealthStreamConnects");
        assert_eq!(go_name("vtorc_ready").0, "Ready");
        assert_eq!(go_name("odd__name_").0, "OddName");
        assert_eq!(
            go_name("vtorc_tablets_watched_by_shard").1,
            &["keyspace", "shard", "ers_disabled"]
        );
    }
}
