//! The servenv-style debug pages and Go's store dump over real HTTP/1.1
//! against a real cluster (etcd, three MariaDB-backed tablets):
//! `/debug/vars` (expvar JSON, counters that move with a real recovery),
//! `/debug/status` (HTML with the recovery in "Recent Recoveries", text
//! from the topology escaped) and `/api/database-state` (Go's
//! `[{"TableName", "Rows"}]` over the tablets, instances and the audit).

mod api_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use api_support::*;
use integration::cluster::poll_until;
use integration::testkit::semi_sync_commerce;
use vtorc::proto::topodata::{Tablet, TabletType};

/// A host name no DNS knows, full of HTML.
const HOSTILE: &str = "<script>alert(\"vtorc\")</script>&'x";

/// `/debug/vars` parsed; checks the expvar page layout on the way.
async fn vars(addr: SocketAddr) -> serde_json::Value {
    let r = http(addr, "GET", "/debug/vars").await.expect("GET /debug/vars");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert!(
        r.body.starts_with("{\n\"") && r.body.ends_with("\n}\n"),
        "Go's expvar layout: {}",
        r.body
    );
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("JSON ({e}): {}", r.body))
}

/// `/api/database-state` parsed as (table name → rows).
async fn database_state(addr: SocketAddr) -> Vec<(String, Vec<serde_json::Value>)> {
    let r = http(addr, "GET", "/api/database-state")
        .await
        .expect("GET /api/database-state");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    assert!(r.body.starts_with("[\n\t{\n\t\t\"TableName\": "), "{}", r.body);
    assert!(!r.body.contains('<'), "HTML-escaped as Go's json: {}", r.body);
    let tables: Vec<serde_json::Value> = serde_json::from_str(&r.body).expect("JSON array");
    tables
        .into_iter()
        .map(|t| {
            let name = t["TableName"].as_str().expect("TableName").to_string();
            let rows = match &t["Rows"] {
                serde_json::Value::Null => Vec::new(),
                serde_json::Value::Array(rows) => rows.clone(),
                other => panic!("Rows of {name}: {other}"),
            };
            for row in &rows {
                for (column, value) in row.as_object().expect("a row is an object") {
                    assert!(
                        value.is_string() || value.is_null(),
                        "{name}.{column} is a string or null: {value}"
                    );
                }
            }
            (name, rows)
        })
        .collect()
}

fn table<'a>(tables: &'a [(String, Vec<serde_json::Value>)], name: &str) -> &'a [serde_json::Value] {
    &tables
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("table {name}"))
        .1
}

async fn status(addr: SocketAddr) -> String {
    let r = http(addr, "GET", "/debug/status")
        .await
        .expect("GET /debug/status");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_pages_and_database_state_follow_a_real_recovery() {
    let cluster = semi_sync_commerce().await;
    let vtorc = RunningVtorc::start(&cluster, &[]).await;
    let addr = vtorc.http;
    poll_until(Duration::from_secs(20), "no detection analysis", || async {
        Ok((get_ok(addr, "/api/detection-analysis").await == "null").then_some(()))
    })
    .await
    .expect("healthy");

    // /debug/vars: Go names, numbers, multi-label keys, timings, defaults.
    let v = vars(addr).await;
    assert!(
        v["cmdline"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s.is_string())),
        "{v}"
    );
    assert!(v["Uptime"].as_i64().is_some_and(|n| n > 0), "{v}");
    assert!(v.get("memstats").is_none(), "no Go runtime stats");
    assert!(v["DiscoveriesAttempt"].as_i64().is_some_and(|n| n >= 3), "{v}");
    assert_eq!(v["TabletsWatchedByCell"]["zone1"], 3, "{v}");
    assert_eq!(v["TabletsWatchedByShard"]["commerce.0.false"], 3, "{v}");
    assert_eq!(v["Ready"], 1);
    let timings = &v["DiscoveryInstanceTimings"];
    assert!(
        timings["TotalCount"].as_i64().is_some_and(|n| n >= 3),
        "{timings}"
    );
    assert!(timings["TotalTime"].as_i64().is_some_and(|n| n > 0), "{timings}");
    let instance = timings["Histograms"]["Instance"]
        .as_object()
        .expect("Instance histogram");
    assert!(instance.contains_key("inf") && instance.contains_key("Count") && instance.contains_key("Time"));
    let recovered_before = v["SuccessfulRecoveries"]["FixReplica.commerce.0"]
        .as_i64()
        .unwrap_or(0);
    let locks_before = v["ShardLockTimings"]["Histograms"]["Lock"]["Count"]
        .as_i64()
        .unwrap_or(0);

    // /api/database-state lists the cluster's tablets, instances, shard and keyspace.
    let tables = database_state(addr).await;
    let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "database_instance",
        "topology_recovery",
        "recovery_detection",
        "global_recovery_disable",
        "topology_recovery_steps",
        "vitess_tablet",
        "vitess_keyspace",
        "vitess_shard",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let cluster_aliases: BTreeSet<String> = cluster
        .shard_tablets(KS, "0")
        .iter()
        .map(|t| t.alias().to_string())
        .collect();
    assert_eq!(cluster_aliases.len(), 3);
    let tablet_rows = table(&tables, "vitess_tablet");
    let listed: BTreeSet<String> = tablet_rows
        .iter()
        .map(|r| r["alias"].as_str().expect("alias").to_string())
        .collect();
    assert_eq!(listed, cluster_aliases);
    for row in tablet_rows {
        let alias = row["alias"].as_str().expect("alias");
        let t = cluster
            .tablets()
            .iter()
            .find(|t| t.alias().to_string() == alias)
            .expect("a cluster tablet");
        assert_eq!(row["port"], t.mysql_port().to_string(), "{row}");
        assert_eq!(row["keyspace"], KS);
        assert_eq!(row["shard"], "0");
        assert_eq!(row["cell"], "zone1");
        assert!(
            row["info"]
                .as_str()
                .is_some_and(|i| i.starts_with("alias:{cell:\"zone1\" uid:")),
            "{row}"
        );
    }
    let primary = cluster
        .primary(KS, "0")
        .await
        .expect("primary")
        .alias()
        .to_string();
    let primary_row = tablet_rows
        .iter()
        .find(|r| r["alias"] == primary.as_str())
        .expect("primary row");
    assert_eq!(primary_row["tablet_type"], "1", "PRIMARY");
    let instances = table(&tables, "database_instance");
    assert_eq!(instances.len(), 3, "every tablet was polled");
    for row in instances {
        assert_eq!(row["data_center"], "zone1");
        assert!(row["last_seen"].is_string(), "{row}");
        assert!(row["version"].as_str().is_some_and(|v| !v.is_empty()), "{row}");
        assert_eq!(row["mariadb_gtid"], "1", "{row}");
        let is_primary = row["alias"] == primary.as_str();
        assert_eq!(row["read_only"], if is_primary { "0" } else { "1" }, "{row}");
        assert_eq!(
            row["replication_depth"],
            if is_primary { "0" } else { "1" },
            "{row}"
        );
    }
    let shard = &table(&tables, "vitess_shard")[0];
    assert_eq!(shard["primary_alias"], primary.as_str());
    assert_eq!(
        table(&tables, "vitess_keyspace")[0]["durability_policy"],
        "semi_sync"
    );
    assert!(table(&tables, "global_recovery_disable").is_empty());

    // A fixed problem: replication stopped on a replica, vtorc restarts it.
    let replica = cluster_aliases
        .iter()
        .find(|a| **a != primary)
        .expect("a replica")
        .clone();
    let replica_alias = cluster
        .tablets()
        .iter()
        .find(|t| t.alias().to_string() == replica)
        .expect("replica")
        .alias()
        .clone();
    cluster
        .stop_replication(&replica_alias)
        .await
        .expect("STOP SLAVE");
    let v = poll_until(
        Duration::from_secs(30),
        "SuccessfulRecoveries moved in /debug/vars",
        || async {
            let v = vars(addr).await;
            let n = v["SuccessfulRecoveries"]["FixReplica.commerce.0"]
                .as_i64()
                .unwrap_or(0);
            Ok((n > recovered_before).then_some(v))
        },
    )
    .await
    .expect("the recovery is counted");
    assert!(
        v["RecoveriesCount"]["FixReplica.commerce.0"]
            .as_i64()
            .is_some_and(|n| n > recovered_before),
        "{v}"
    );
    let locks = &v["ShardLockTimings"];
    assert!(
        locks["Histograms"]["Lock"]["Count"]
            .as_i64()
            .is_some_and(|n| n > locks_before),
        "the recovery took the shard lock: {locks}"
    );
    assert!(locks["TotalTime"].as_i64().is_some_and(|n| n > 0), "{locks}");

    // /debug/status shows it in "Recent Recoveries".
    let html = status(addr).await;
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<h2>Recent Recoveries</h2>"), "{html}");
    assert!(html.contains("<th>Started</th><td>"), "{html}");
    assert!(html.contains("<h2>Configuration</h2>"), "{html}");
    assert!(html.contains("<tr><th>cell</th><td>zone1</td></tr>"), "{html}");
    let row = format!("<td>commerce/0</td><td>ReplicationStopped</td><td>FixReplica</td><td>{replica}</td>");
    let at = html.find(&row).unwrap_or_else(|| panic!("{row} in {html}"));
    let row_end = html[at..].find("</tr>").map_or(html.len(), |e| at + e);
    assert!(
        html[at..row_end].contains("<td>Succeeded</td>"),
        "{}",
        &html[at..row_end]
    );

    // The audit in Go's tables.
    let tables = database_state(addr).await;
    let recovery = table(&tables, "topology_recovery")
        .iter()
        .find(|r| r["alias"] == replica.as_str() && r["analysis"] == "ReplicationStopped")
        .expect("the recovery is a topology_recovery row")
        .clone();
    assert_eq!(recovery["is_successful"], "1", "{recovery}");
    assert_eq!(recovery["keyspace"], KS);
    assert!(recovery["end_recovery"].is_string(), "{recovery}");
    assert_eq!(recovery["all_errors"], "");
    let id = recovery["recovery_id"].as_str().expect("id").to_string();
    assert!(
        table(&tables, "topology_recovery_steps")
            .iter()
            .any(|s| s["recovery_id"] == id.as_str() && s["message"].is_string()),
        "steps of recovery {id}"
    );
    let detection = recovery["detection_id"].as_str().expect("detection id");
    assert!(
        table(&tables, "recovery_detection")
            .iter()
            .any(|d| d["detection_id"] == detection && d["alias"] == replica.as_str()),
        "detection {detection}"
    );

    // A tablet record full of HTML in the topology: listed as is in the
    // JSON (escaped), shown escaped on the status page once its polls fail.
    let hostile_alias = alias(199);
    cluster
        .topo()
        .create_tablet(&Tablet {
            alias: Some(hostile_alias.clone()),
            hostname: HOSTILE.to_string(),
            port_map: [("grpc".to_string(), 1), ("vt".to_string(), 1)].into(),
            keyspace: KS.to_string(),
            shard: "0".to_string(),
            r#type: TabletType::Rdonly as i32,
            mysql_hostname: HOSTILE.to_string(),
            mysql_port: 1,
            ..Default::default()
        })
        .await
        .expect("create the hostile tablet record");
    let tables = poll_until(
        Duration::from_secs(20),
        "the hostile tablet in /api/database-state",
        || async {
            let tables = database_state(addr).await;
            let listed = table(&tables, "vitess_tablet")
                .iter()
                .any(|r| r["alias"] == "zone1-0000000199");
            Ok(listed.then_some(tables))
        },
    )
    .await
    .expect("discovered");
    let row = table(&tables, "vitess_tablet")
        .iter()
        .find(|r| r["alias"] == "zone1-0000000199")
        .expect("row");
    assert_eq!(row["hostname"], HOSTILE);
    assert_eq!(row["tablet_hostname"], HOSTILE);
    assert_eq!(row["tablet_type"], "3", "RDONLY");
    let html = poll_until(
        Duration::from_secs(20),
        "the hostile tablet among the unreachable ones",
        || async {
            let html = status(addr).await;
            Ok(html.contains("<td>zone1-0000000199</td>").then_some(html))
        },
    )
    .await
    .expect("listed as unreachable");
    assert!(!html.contains("<script>"), "unescaped text in {html}");
    assert!(!html.contains(HOSTILE));
    assert!(
        html.contains("<td>&lt;script&gt;alert(&#34;vtorc&#34;)&lt;/script&gt;&amp;&#39;x</td>"),
        "{html}"
    );
    let v = vars(addr).await;
    assert_eq!(v["TabletsWatchedByCell"]["zone1"], 4, "{v}");

    cluster
        .topo()
        .delete_tablet(&hostile_alias)
        .await
        .expect("delete the hostile tablet record");
    vtorc.stop().await;
}
