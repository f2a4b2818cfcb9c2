//! The HTTP API on `--port` over real HTTP/1.1: Go VTOrc's paths, JSON
//! shapes (Go keys, one-space indent, `null` for empty lists) and exact
//! texts, `/debug/health` gated on readiness, and `/metrics` checked by a
//! Prometheus text-format parser and by a strict checker of our own.

mod api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use api_support::*;
use integration::cluster::{ClusterBuilder, poll_until};
use vtorc::proto::vtorc::v1 as pb;

const SHARD_ALONE: &str = "Filtering by shard without keyspace isn't supported\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_500_until_discovery_is_ready_and_liveness_is_always_200() {
    let mut world = MemoryWorld::new();
    let (addr, server) = world.serve_http().await;
    let r = http(addr, "GET", "/debug/health").await.expect("health");
    assert_eq!(r.status, 500, "{}", r.body);
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(json["Healthy"], false);
    assert_eq!(json["Hostname"], "memory-world");
    assert!(
        json["Error"].as_str().is_some_and(|e| e.contains("discovery")),
        "{json}"
    );
    let live = http(addr, "GET", "/debug/liveness").await.expect("liveness");
    assert_eq!((live.status, live.body.as_str()), (200, ""));

    world.start_discovery();
    let body = poll_until(Duration::from_secs(10), "health 200", || async {
        let r = http(addr, "GET", "/debug/health").await?;
        Ok((r.status == 200).then_some(r.body))
    })
    .await
    .expect("ready");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["Healthy"], true);
    assert!(json["Error"].is_null());
    assert!(
        body.starts_with("{\n \"Healthy\": true,"),
        "one-space indent: {body}"
    );
    let metrics = get_ok(addr, "/metrics").await;
    assert!(metrics.contains("\nvtorc_ready 1\n"), "{metrics}");
    world.stop().await;
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the HTTP server stops on shutdown")
        .expect("no panic")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_go_shapes_over_real_http() {
    // Without vttablet heartbeats: under MariaDB's one-GTID-per-domain
    // positions the primary's next write (a heartbeat every 250 ms) hides the
    // replica's errant GTID and stops its replication instead (a diverged
    // replica, see `recovery_errant.rs`); this test needs the errant state to
    // last until the endpoint lists it.
    let cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .heartbeat(None)
        .started()
        .await;
    let vtorc = RunningVtorc::start(&cluster, &[]).await;
    let addr = vtorc.http;
    let mut c = vtorc.client().await;

    // Healthy shard: empty lists are `null`.
    poll_until(Duration::from_secs(20), "no detection analysis", || async {
        Ok((get_ok(addr, "/api/detection-analysis").await == "null").then_some(()))
    })
    .await
    .expect("healthy");
    assert_eq!(get_ok(addr, "/api/problems").await, "null");
    assert_eq!(get_ok(addr, "/api/errant-gtids").await, "null");
    assert_eq!(get_ok(addr, "/api/recoveries").await, "null");
    let r = http(addr, "GET", "/api/detection-analysis").await.expect("GET");
    assert_eq!(r.header("content-type"), Some("application/json"));

    // A shard without a keyspace: Go's 400 and text.
    for path in ["/api/detection-analysis", "/api/problems", "/api/errant-gtids"] {
        let r = http(addr, "GET", &format!("{path}?shard=0")).await.expect("GET");
        assert_eq!((r.status, r.body.as_str()), (400, SHARD_ALONE), "{path}");
    }
    let r = http(addr, "GET", "/api/recoveries?limit=x").await.expect("GET");
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("limit: "), "{}", r.body);

    // Health and liveness.
    let r = http(addr, "GET", "/debug/health").await.expect("health");
    assert_eq!(r.status, 200, "{}", r.body);
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(json["Healthy"], true);
    assert!(json["Hostname"].as_str().is_some_and(|h| !h.is_empty()));
    let live = http(addr, "GET", "/debug/liveness").await.expect("liveness");
    assert_eq!((live.status, live.body.as_str()), (200, ""));

    // Configuration: a JSON map of every setting, tab-indented, text/plain.
    let r = http(addr, "GET", "/api/config").await.expect("config");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert!(r.body.starts_with("{\n\t\""), "{}", r.body);
    let config: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(config["instance-poll-time"], "1s");
    assert_eq!(config["recovery-poll-duration"], "500ms");
    assert_eq!(config["topo-global-root"], "/vitess/global");
    assert_eq!(config["allow-recovery"], true);
    assert!(config["otlp-endpoint"].is_null());

    // Disable recoveries, then break replication on 101: it stays broken.
    let r = http(addr, "POST", "/api/disable-global-recoveries")
        .await
        .expect("disable");
    assert_eq!((r.status, r.body.as_str()), (200, "Global recoveries disabled\n"));
    let r = http(addr, "GET", "/api/disable-global-recoveries")
        .await
        .expect("again");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "Global recoveries disabled\n"),
        "idempotent"
    );
    let state = c
        .get_global_recoveries(pb::GetGlobalRecoveriesRequest {})
        .await
        .expect("GetGlobalRecoveries")
        .into_inner();
    assert_eq!(state.state, Some(pb::GlobalRecoveriesState { enabled: false }));
    cluster.stop_replication(&alias(101)).await.expect("STOP SLAVE");
    cluster
        .write_errant_transaction(&alias(102))
        .await
        .expect("errant write on 102");

    let body = poll_until(Duration::from_secs(20), "ReplicationStopped on 101", || async {
        let body = get_ok(addr, "/api/detection-analysis?keyspace=commerce&shard=0").await;
        // The top-level entry, not a nested mention (e.g. another tablet's
        // matched problems).
        let listed = serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .is_ok_and(|list| list.iter().any(|a| a["Analysis"] == "ReplicationStopped"));
        Ok(listed.then_some(body))
    })
    .await
    .expect("detected");
    assert!(body.starts_with("[\n {\n  \""), "one-space indent: {body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON array");
    let stopped = list
        .iter()
        .find(|a| a["Analysis"] == "ReplicationStopped")
        .expect("listed");
    assert_eq!(stopped["AnalyzedInstanceAlias"], "zone1-0000000101");
    assert_eq!(stopped["AnalyzedInstancePrimaryAlias"], "zone1-0000000100");
    assert_eq!(stopped["AnalyzedKeyspace"], KS);
    assert_eq!(stopped["AnalyzedShard"], "0");
    assert_eq!(stopped["TabletType"], 2, "enum number, as Go");
    assert_eq!(stopped["ReplicationStopped"], true);
    assert_eq!(stopped["IsActionableRecovery"], true);
    assert!(
        stopped["AnalysisMatchedProblems"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    );
    for key in [
        "CountReplicas",
        "LastCheckValid",
        "IsPrimary",
        "SemiSyncReplicaEnabled",
        "ErrantGTID",
    ] {
        assert!(stopped.get(key).is_some(), "{key} in {stopped}");
    }
    assert_eq!(
        get_ok(addr, "/api/detection-analysis?keyspace=other").await,
        "null"
    );

    let problems = listed(addr, "/api/problems?keyspace=commerce").await;
    let p101 = problems
        .iter()
        .find(|p| p["InstanceAlias"] == "zone1-0000000101")
        .expect("101 has problems");
    assert_eq!(p101["Problems"], serde_json::json!(["not_replicating"]), "{p101}");
    assert_eq!(p101["ReplicationSQLThreadRuning"], false);
    assert_eq!(p101["ReplicationIOThreadRuning"], false);
    assert_eq!(
        p101["Port"],
        cluster.tablet(&alias(101)).expect("101").mysql_port()
    );
    assert_eq!(p101["DataCenter"], "zone1");
    assert_eq!(p101["IsLastCheckValid"], true);
    let behind = &p101["SecondsBehindPrimary"];
    assert!(
        behind["Int64"].is_i64() && behind["Valid"].is_boolean(),
        "Go's NullInt64: {behind}"
    );

    let errant = listed(addr, "/api/errant-gtids?keyspace=commerce&shard=0").await;
    assert_eq!(errant.len(), 1, "{errant:?}");
    assert_eq!(errant[0]["InstanceAlias"], "zone1-0000000102");
    let gtid = errant[0]["GtidErrant"].as_str().expect("text");
    assert!(
        !gtid.is_empty() && !gtid.contains('/'),
        "GTID set without flavor: {gtid}"
    );
    assert!(
        errant[0]["Problems"]
            .as_array()
            .is_some_and(|p| p.contains(&serde_json::json!("errant_gtid")))
    );
    let grpc_errant = c
        .get_errant_gtids(pb::GetErrantGtidsRequest {
            keyspace: KS.into(),
            shard: "0".into(),
        })
        .await
        .expect("GetErrantGtids")
        .into_inner()
        .tablets;
    assert_eq!(grpc_errant.len(), 1);
    assert_eq!(
        grpc_errant[0]
            .mysql
            .as_ref()
            .map(|m| m.errant_gtids.trim_start_matches("MariaDB/").to_string()),
        Some(gtid.to_string())
    );

    // Metrics while problems are held: skips counted, problems reported.
    let metrics = poll_until(Duration::from_secs(20), "skips in /metrics", || async {
        let body = get_ok(addr, "/metrics").await;
        Ok(body
            .contains("reason=\"GlobalRecoveriesDisabled\",recovery_type=\"FixReplica\"")
            .then_some(body))
    })
    .await
    .expect("metrics");
    check_prometheus_text(&metrics);
    assert!(metrics.contains("vtorc_global_recoveries_enabled 0\n"));
    assert!(metrics.contains(
        "vtorc_detected_problems{analysis=\"ReplicationStopped\",keyspace=\"commerce\",shard=\"0\",tablet_alias=\"zone1-0000000101\"} 1"
    ));
    assert!(metrics.contains("vtorc_errant_gtid_tablet_count 1\n"));

    // Enable: vtorc repairs replication, the audit shows it.
    let r = http(addr, "PUT", "/api/enable-global-recoveries")
        .await
        .expect("enable");
    assert_eq!((r.status, r.body.as_str()), (200, "Global recoveries enabled\n"));
    let recoveries = poll_until(
        Duration::from_secs(30),
        "a recovery in /api/recoveries",
        || async {
            let body = get_ok(addr, "/api/recoveries?keyspace=commerce&shard=0&limit=5").await;
            Ok(body.contains("\"Succeeded\"").then_some(body))
        },
    )
    .await
    .expect("repaired");
    let recoveries: Vec<serde_json::Value> = serde_json::from_str(&recoveries).expect("JSON array");
    assert!(recoveries.len() <= 5);
    assert!(
        recoveries
            .iter()
            .any(|r| r["tablet_alias"] == "zone1-0000000101" && r["outcome"] == "Succeeded"),
        "{recoveries:?}"
    );
    let metrics = get_ok(addr, "/metrics").await;
    check_prometheus_text(&metrics);
    assert!(metrics.contains("vtorc_global_recoveries_enabled 1\n"));
    assert!(metrics.contains("vtorc_successful_recoveries{keyspace=\"commerce\",recovery_type="));
    vtorc.stop().await;
}

/// Parses `/metrics` with `prometheus-parse`, then checks the text strictly
/// (what a lenient parser lets through): every sample belongs to a family
/// declared by `# TYPE` before it, families are declared once, label sets
/// are well formed and unique, values are numbers, histograms have
/// cumulative buckets ending in `+Inf` equal to `_count`.
/// The JSON array `path` answers once it lists something (Go's endpoints
/// answer `null` for an empty list), waiting up to 20 s for that.
async fn listed(addr: SocketAddr, path: &str) -> Vec<serde_json::Value> {
    let body = poll_until(
        Duration::from_secs(20),
        &format!("{path} lists something"),
        || async {
            let body = get_ok(addr, path).await;
            Ok((body != "null").then_some(body))
        },
    )
    .await
    .expect("listed");
    serde_json::from_str(&body).expect("JSON array")
}

fn check_prometheus_text(text: &str) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse accepts /metrics");
    let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "vtorc_discoveries_attempt",
        "vtorc_discoveries_fail",
        "vtorc_discovery_instance_timings",
        "vtorc_tablets_watched_by_cell",
        "vtorc_tablets_watched_by_shard",
        "vtorc_pending_recoveries",
        "vtorc_detected_problems",
        "vtorc_skipped_recoveries",
        "vtorc_shard_lock_timings",
        "vtorc_health_stream_connects",
    ] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }
    let sample = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} present"))
    };
    let counter = sample("vtorc_discoveries_attempt");
    assert!(
        matches!(counter.value, prometheus_parse::Value::Counter(v) if v >= 3.0),
        "{counter:?}"
    );
    let hist = sample("vtorc_discovery_instance_timings");
    assert!(
        matches!(&hist.value, prometheus_parse::Value::Histogram(b) if !b.is_empty()),
        "{hist:?}"
    );

    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut buckets: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family declared twice: {name}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (name_labels, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("numeric value: {line}"));
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("closed labels: {line}")),
            ),
            None => (name_labels, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && name.starts_with("vtorc_"),
            "metric name {name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("sample before its # TYPE: {line}"));
        let mut label_names = Vec::new();
        let mut le = None;
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, v) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("label syntax: {line}"));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {k}: {line}"
            );
            let mut end = None;
            let mut escaped = false;
            for (i, ch) in v.char_indices() {
                match (escaped, ch) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated label value: {line}"));
            if k == "le" {
                le = Some(v[..end].to_string());
            }
            label_names.push(k.to_string());
            rest = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
        }
        let unique: BTreeSet<&String> = label_names.iter().collect();
        assert_eq!(unique.len(), label_names.len(), "duplicate label: {line}");
        assert!(series.insert(name_labels.to_string()), "duplicate series: {line}");
        if kind == "histogram" {
            let key = format!(
                "{family}{{{}}}",
                labels
                    .split(',')
                    .filter(|l| !l.starts_with("le="))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if name.ends_with("_bucket") {
                buckets
                    .entry(key)
                    .or_default()
                    .push((le.expect("bucket has le"), value));
            } else if name.ends_with("_count") {
                counts.insert(key, value);
            }
        }
    }
    assert!(!buckets.is_empty(), "histograms are exported");
    for (key, b) in &buckets {
        assert!(
            b.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative buckets: {key} {b:?}"
        );
        let (last_le, last) = b.last().expect("non-empty");
        assert_eq!(last_le, "+Inf", "{key}");
        assert_eq!(Some(last), counts.get(key), "+Inf equals _count: {key}");
    }
}
