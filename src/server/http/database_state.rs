//! `/api/database-state`: what vtorc holds, as Go VTOrc's dump of its
//! SQLite store.
//!
//! Go answers `[{"TableName": "...", "Rows": [{"column": "value", ...}]}]`
//! (text/plain, tab-indented JSON) over every table of its backend. vtorc
//! has no SQL store; its state lives in the discovery snapshot and the
//! recovery audit. This endpoint renders that state in the same outer
//! shape, one "table" per kind of record we hold, named after Go's table
//! and with Go's column names where we hold the same fact. Values are
//! strings as SQLite returns them: integers and booleans (`"0"`/`"1"`) as
//! decimal text, times as `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC (SQLite's
//! `DATETIME` text), and `null` where Go's column would be SQL `NULL`
//! (something never happened). Rows of a table are sorted like Go's
//! (primary key order); an empty table has `"Rows": null`, as Go's nil
//! slice. JSON is HTML-escaped as Go's `json.Marshal` does.
//!
//! | Table (Go's name) | One row per | Source | Columns beyond Go's |
//! |---|---|---|---|
//! | `database_instance` | tablet polled successfully at least once (Go has no row before that) | the tablet's last `FullStatus` observation and poll times | `semi_sync_blocked` |
//! | `topology_recovery` | recovery kept in the audit ring | audit | `recovery_type`, `outcome` (`Running`, `Succeeded`, `Failed`) |
//! | `recovery_detection` | incident kept in the audit (open and resolved) | audit | `first_detection_timestamp`, `recovery_type`, `skip_reason`, `skip_count`, `resolved_timestamp`, `resolution` |
//! | `global_recovery_disable` | one row (`disable_recovery = 1`) while recoveries are globally disabled | recovery engine switch | – |
//! | `topology_recovery_steps` | step of a recovery kept in the audit | audit | `step`, `level` |
//! | `vitess_tablet` | tablet in the watched topology | topo tablet record | `tablet_hostname` (the vttablet host; Go's `hostname` is MySQL's) |
//! | `vitess_keyspace` | watched keyspace | topo keyspace record | – |
//! | `vitess_shard` | watched shard | topo shard record | – |
//!
//! Differences from Go's values: `topology_recovery.is_successful` is `1`
//! for every recovery that succeeded (Go: only when a new primary was
//! promoted); `topology_recovery_steps.recovery_step_id` numbers the steps
//! of this answer (the audit keeps no step ids); `vitess_tablet.info` is
//! the record in compact protobuf text format written by us (field order
//! and values as Go's `prototext`, whitespace may differ). Go's tables
//! with no equivalent here are left out: `audit`, `node_health`,
//! `database_instance_last_analysis`, `database_instance_analysis_changelog`,
//! `database_instance_stale_binlog_coordinates`, `vtorc_db_deployments`,
//! `vitess_cell` (we keep no cell list).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::ser::PrettyFormatter;
use tokio::time::Instant;

use super::{ApiContext, go_json_with, go_thread_state, gtid_text, json_response_typed};
use crate::model::{ClusterSnapshot, TabletState, TopoTime};
use crate::mysql::Position;
use crate::proto::topodata::Tablet;
use crate::recovery::AuditFilter;
use crate::recovery::audit::{DetectionRecord, RecoveryOutcome, RecoveryRecord, rfc3339};

/// One row: column → value (`None` = SQL `NULL`), sorted by column as Go's
/// map encoding sorts keys.
type Row = BTreeMap<&'static str, Option<String>>;

/// One table of the answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Table {
    /// Go's table name.
    table_name: &'static str,
    /// The rows (`None` = empty, rendered `null`).
    rows: Option<Vec<Row>>,
}

impl Table {
    fn new(table_name: &'static str, rows: Vec<Row>) -> Self {
        Table {
            table_name,
            rows: (!rows.is_empty()).then_some(rows),
        }
    }
}

/// What the tables are rendered from.
pub(super) struct Sources<'a> {
    /// The latest snapshot.
    pub snapshot: &'a ClusterSnapshot,
    /// Recoveries kept in the audit (any order).
    pub recoveries: &'a [RecoveryRecord],
    /// Detections kept in the audit (any order).
    pub detections: &'a [DetectionRecord],
    /// The global recoveries switch.
    pub global_recoveries_enabled: bool,
    /// Monotonic now (poll times are monotonic).
    pub now: Instant,
    /// Wall-clock now.
    pub wall: SystemTime,
}

impl Sources<'_> {
    /// A poll time as wall-clock SQL text.
    fn at(&self, at: Option<Instant>) -> Option<String> {
        at.map(|at| {
            let ago = self.now.saturating_duration_since(at);
            sql_time(self.wall.checked_sub(ago).unwrap_or(self.wall))
        })
    }
}

/// SQLite `DATETIME` text of a wall-clock time (UTC).
fn sql_time(t: SystemTime) -> String {
    sql_text(&rfc3339(t))
}

/// RFC 3339 UTC (`2023-11-14T22:13:20.5Z`) as SQL text (`2023-11-14 22:13:20.5`).
fn sql_text(rfc3339: &str) -> String {
    rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
}

fn topo_time(t: Option<TopoTime>) -> Option<String> {
    t.map(|t| sql_text(&t.to_string()))
}

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn flag(b: bool) -> Option<String> {
    Some(if b { "1" } else { "0" }.to_string())
}

/// `8.0.36-log` → `8.0` (Go's `major_version`).
fn major_version(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Every table, in Go's table order.
pub(super) fn tables(src: &Sources<'_>) -> Vec<Table> {
    let mut recoveries: Vec<&RecoveryRecord> = src.recoveries.iter().collect();
    recoveries.sort_by_key(|r| r.recovery_id);
    let mut detections: Vec<&DetectionRecord> = src.detections.iter().collect();
    detections.sort_by_key(|d| d.detection_id);
    vec![
        Table::new("database_instance", database_instance(src)),
        Table::new(
            "topology_recovery",
            recoveries.iter().map(|r| topology_recovery(r)).collect(),
        ),
        Table::new(
            "recovery_detection",
            detections.iter().map(|d| recovery_detection(d)).collect(),
        ),
        Table::new(
            "global_recovery_disable",
            if src.global_recoveries_enabled {
                Vec::new()
            } else {
                vec![Row::from([("disable_recovery", text(1))])]
            },
        ),
        Table::new("topology_recovery_steps", recovery_steps(&recoveries)),
        Table::new("vitess_tablet", vitess_tablet(src.snapshot)),
        Table::new("vitess_keyspace", vitess_keyspace(src.snapshot)),
        Table::new("vitess_shard", vitess_shard(src.snapshot)),
    ]
}

/// All tablets, by alias (Go's primary key).
fn all_tablets(snapshot: &ClusterSnapshot) -> Vec<&TabletState> {
    let mut tablets: Vec<&TabletState> = snapshot
        .shards
        .values()
        .flat_map(|s| s.tablets.iter().map(AsRef::as_ref))
        .collect();
    tablets.sort_by_cached_key(|t| t.alias().to_string());
    tablets
}

fn database_instance(src: &Sources<'_>) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in all_tablets(src.snapshot) {
        let Some(o) = t.observation.as_deref() else {
            continue;
        };
        let r = o.replication.clone().unwrap_or_default();
        let replicating = o.replication.is_some() && !o.has_no_source();
        let lag = o.replication.as_ref().and_then(|r| r.lag_seconds);
        let coords = o.binlog_coordinates.as_ref();
        rows.push(Row::from([
            ("alias", text(t.alias())),
            ("hostname", text(&t.tablet.mysql_hostname)),
            ("port", text(t.tablet.mysql_port)),
            ("last_checked", src.at(t.poll.last_checked)),
            ("last_seen", src.at(t.poll.last_seen)),
            ("last_attempted_check", src.at(t.poll.last_attempted_check)),
            ("last_check_partial_success", flag(t.poll.partial_success)),
            ("server_id", text(o.server_id)),
            ("server_uuid", text(&o.server_uuid)),
            ("version", text(&o.version)),
            ("major_version", text(major_version(&o.version))),
            ("version_comment", text(&o.version_comment)),
            ("read_only", flag(o.read_only)),
            ("binlog_format", text(&o.binlog_format)),
            ("binlog_row_image", text(&o.binlog_row_image)),
            ("log_bin", flag(o.log_bin)),
            ("log_replica_updates", flag(o.log_replica_updates)),
            (
                "binary_log_file",
                text(coords.map(|c| c.file.as_str()).unwrap_or("")),
            ),
            ("binary_log_pos", text(coords.map_or(0, |c| c.pos))),
            ("source_host", text(&r.source_host)),
            ("source_port", text(r.source_port)),
            ("source_uuid", text(&r.source_uuid)),
            ("replica_net_timeout", text(o.replica_net_timeout)),
            ("heartbeat_interval", text(format!("{:.4}", o.heartbeat_interval))),
            ("replica_sql_running", flag(r.sql_thread.is_running())),
            ("replica_io_running", flag(r.io_thread.is_running())),
            (
                "replication_sql_thread_state",
                text(go_thread_state(r.sql_thread)),
            ),
            ("replication_io_thread_state", text(go_thread_state(r.io_thread))),
            ("has_replication_filters", flag(r.has_replication_filters)),
            ("oracle_gtid", flag(r.auto_position)),
            (
                "mariadb_gtid",
                flag(matches!(o.executed_position, Position::MariaDb(_))),
            ),
            ("executed_gtid_set", text(gtid_text(&o.executed_position))),
            ("gtid_mode", text(&o.gtid_mode)),
            ("gtid_purged", text(gtid_text(&o.gtid_purged))),
            ("gtid_errant", text(gtid_text(&o.errant_gtids))),
            ("last_sql_error", text(&r.last_sql_error)),
            ("last_io_error", text(&r.last_io_error)),
            ("replication_lag_seconds", lag.map(|l| l.to_string())),
            ("sql_delay", text(r.sql_delay)),
            ("data_center", text(&t.alias().cell)),
            ("replication_depth", text(u8::from(replicating))),
            ("has_replication_credentials", flag(!r.source_user.is_empty())),
            ("semi_sync_primary_enabled", flag(o.semi_sync.primary_enabled)),
            ("semi_sync_replica_enabled", flag(o.semi_sync.replica_enabled)),
            ("semi_sync_primary_timeout", text(o.semi_sync.primary_timeout_ms)),
            (
                "semi_sync_primary_wait_for_replica_count",
                text(o.semi_sync.wait_for_replica_count),
            ),
            ("semi_sync_primary_status", flag(o.semi_sync.primary_status)),
            ("semi_sync_primary_clients", text(o.semi_sync.primary_clients)),
            ("semi_sync_replica_status", flag(o.semi_sync.replica_status)),
            ("semi_sync_blocked", flag(o.semi_sync.blocked)),
            ("is_disk_stalled", flag(t.disk_stalled)),
        ]));
    }
    rows
}

fn topology_recovery(r: &RecoveryRecord) -> Row {
    Row::from([
        ("recovery_id", text(r.recovery_id)),
        ("alias", text(&r.tablet_alias)),
        ("start_recovery", text(sql_time(r.started_at))),
        ("end_recovery", r.ended_at.map(sql_time)),
        (
            "successor_alias",
            r.successor_alias.as_ref().map(ToString::to_string),
        ),
        ("analysis", text(r.analysis.name())),
        ("keyspace", text(&r.keyspace)),
        ("shard", text(&r.shard)),
        ("is_successful", flag(r.outcome == RecoveryOutcome::Succeeded)),
        ("all_errors", text(r.error.as_deref().unwrap_or(""))),
        ("detection_id", text(r.detection_id)),
        ("recovery_type", text(r.recovery_type.name())),
        (
            "outcome",
            text(match r.outcome {
                RecoveryOutcome::Running => "Running",
                RecoveryOutcome::Succeeded => "Succeeded",
                RecoveryOutcome::Failed => "Failed",
            }),
        ),
    ])
}

fn recovery_detection(d: &DetectionRecord) -> Row {
    Row::from([
        ("detection_id", text(d.detection_id)),
        ("alias", text(&d.tablet_alias)),
        ("analysis", text(d.analysis.name())),
        ("keyspace", text(&d.keyspace)),
        ("shard", text(&d.shard)),
        ("detection_timestamp", text(sql_time(d.detected_at))),
        ("first_detection_timestamp", text(sql_time(d.first_detected_at))),
        ("recovery_type", text(d.recovery_type.name())),
        ("skip_reason", d.skip_reason.map(|s| s.as_str().to_string())),
        ("skip_count", text(d.skip_count)),
        ("resolved_timestamp", d.resolved_at.map(sql_time)),
        ("resolution", d.resolution.clone()),
    ])
}

fn recovery_steps(recoveries: &[&RecoveryRecord]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in recoveries {
        for step in &r.steps {
            rows.push(Row::from([
                ("recovery_step_id", text(rows.len() + 1)),
                ("recovery_id", text(r.recovery_id)),
                ("audit_at", text(sql_time(step.at))),
                ("message", text(&step.message)),
                ("step", text(&step.step)),
                ("level", text(format!("{:?}", step.level))),
            ]));
        }
    }
    rows
}

fn vitess_tablet(snapshot: &ClusterSnapshot) -> Vec<Row> {
    all_tablets(snapshot)
        .into_iter()
        .map(|t| {
            let record = &t.tablet;
            Row::from([
                ("alias", text(t.alias())),
                ("hostname", text(&record.mysql_hostname)),
                ("port", text(record.mysql_port)),
                ("keyspace", text(&record.keyspace)),
                ("shard", text(&record.shard)),
                ("cell", text(&t.alias().cell)),
                ("tablet_type", text(record.r#type)),
                ("primary_timestamp", topo_time(t.primary_term_start())),
                ("info", text(tablet_prototext(record))),
                ("tablet_hostname", text(&record.hostname)),
            ])
        })
        .collect()
}

fn vitess_keyspace(snapshot: &ClusterSnapshot) -> Vec<Row> {
    snapshot
        .keyspaces
        .values()
        .map(|k| {
            Row::from([
                ("keyspace", text(&k.name)),
                ("keyspace_type", text(k.keyspace_type as i32)),
                ("durability_policy", text(&k.durability_policy)),
                ("disable_emergency_reparent", flag(k.emergency_reparent_disabled)),
            ])
        })
        .collect()
}

fn vitess_shard(snapshot: &ClusterSnapshot) -> Vec<Row> {
    snapshot
        .shards
        .values()
        .map(|s| {
            Row::from([
                ("keyspace", text(&s.keyspace)),
                ("shard", text(&s.shard)),
                (
                    "primary_alias",
                    text(
                        s.primary_alias
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    ),
                ),
                (
                    "primary_timestamp",
                    text(topo_time(s.primary_term_start).unwrap_or_default()),
                ),
                ("disable_emergency_reparent", flag(s.emergency_reparent_disabled)),
            ])
        })
        .collect()
}

/// A string or bytes as a protobuf text literal.
fn proto_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
        }
        Err(_) => {
            for b in bytes {
                match b {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    0x20..=0x7e => out.push(char::from(*b)),
                    _ => {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
            }
        }
    }
    out.push('"');
}

/// A tablet record in compact protobuf text format, fields in number
/// order, default values left out (as Go's `prototext.Marshal`).
fn tablet_prototext(t: &Tablet) -> String {
    let mut fields: Vec<String> = Vec::new();
    let string = |name: &str, v: &str| -> Option<String> {
        (!v.is_empty()).then(|| {
            let mut s = format!("{name}:");
            proto_string(&mut s, v.as_bytes());
            s
        })
    };
    let time = |name: &str, t: Option<&crate::proto::vttime::Time>| -> Option<String> {
        let t = t?;
        let mut inner = Vec::new();
        if t.seconds != 0 {
            inner.push(format!("seconds:{}", t.seconds));
        }
        if t.nanoseconds != 0 {
            inner.push(format!("nanoseconds:{}", t.nanoseconds));
        }
        Some(format!("{name}:{{{}}}", inner.join(" ")))
    };
    if let Some(a) = &t.alias {
        let mut inner = Vec::new();
        inner.extend(string("cell", &a.cell));
        if a.uid != 0 {
            inner.push(format!("uid:{}", a.uid));
        }
        fields.push(format!("alias:{{{}}}", inner.join(" ")));
    }
    fields.extend(string("hostname", &t.hostname));
    for (k, v) in &t.port_map {
        let mut entry = String::from("port_map:{key:");
        proto_string(&mut entry, k.as_bytes());
        let _ = write!(entry, " value:{v}}}");
        fields.push(entry);
    }
    fields.extend(string("keyspace", &t.keyspace));
    fields.extend(string("shard", &t.shard));
    if let Some(kr) = &t.key_range {
        let mut inner = String::from("key_range:{");
        let mut parts = Vec::new();
        for (name, b) in [("start", &kr.start), ("end", &kr.end)] {
            if !b.is_empty() {
                let mut p = format!("{name}:");
                proto_string(&mut p, b);
                parts.push(p);
            }
        }
        inner.push_str(&parts.join(" "));
        inner.push('}');
        fields.push(inner);
    }
    if t.r#type != 0 {
        match crate::proto::topodata::TabletType::try_from(t.r#type) {
            Ok(tt) => fields.push(format!("type:{}", tt.as_str_name())),
            Err(_) => fields.push(format!("type:{}", t.r#type)),
        }
    }
    fields.extend(string("db_name_override", &t.db_name_override));
    for (k, v) in &t.tags {
        let mut entry = String::from("tags:{key:");
        proto_string(&mut entry, k.as_bytes());
        entry.push_str(" value:");
        proto_string(&mut entry, v.as_bytes());
        entry.push('}');
        fields.push(entry);
    }
    fields.extend(string("mysql_hostname", &t.mysql_hostname));
    if t.mysql_port != 0 {
        fields.push(format!("mysql_port:{}", t.mysql_port));
    }
    fields.extend(time(
        "primary_term_start_time",
        t.primary_term_start_time.as_ref(),
    ));
    if t.default_conn_collation != 0 {
        fields.push(format!("default_conn_collation:{}", t.default_conn_collation));
    }
    fields.extend(time("tablet_start_time", t.tablet_start_time.as_ref()));
    fields.extend(time("tablet_shutdown_time", t.tablet_shutdown_time.as_ref()));
    fields.join(" ")
}

/// `GET /api/database-state`.
pub(super) async fn handler(State(ctx): State<ApiContext>) -> Response {
    let snapshot = ctx.discovery.snapshot();
    let recoveries = ctx.recovery.recoveries(&AuditFilter::all());
    let detections = ctx.recovery.detections(&AuditFilter::all());
    let global_recoveries_enabled = ctx.recovery.global_recoveries_enabled();
    let now = crate::clock::now();
    let wall = (ctx.clock)();
    // With 10,000 tablets this renders tens of megabytes: keep it off the
    // async workers that also run discovery and recoveries.
    let rendered = tokio::task::spawn_blocking(move || {
        let src = Sources {
            snapshot: &snapshot,
            recoveries: &recoveries,
            detections: &detections,
            global_recoveries_enabled,
            now,
            wall,
        };
        go_json_with(&tables(&src), PrettyFormatter::with_indent(b"\t"))
    })
    .await;
    match rendered {
        Ok(body) => json_response_typed(StatusCode::OK, "text/plain; charset=utf-8", body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the database state failed: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::topodata::{KeyRange, TabletAlias, TabletType};
    use crate::testkit::{ShardBuilder, TabletFixture};

    fn rows<'a>(tables: &'a [Table], name: &str) -> &'a [Row] {
        tables
            .iter()
            .find(|t| t.table_name == name)
            .unwrap_or_else(|| panic!("table {name}"))
            .rows
            .as_deref()
            .unwrap_or(&[])
    }

    fn cell<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
        row.get(column)
            .unwrap_or_else(|| panic!("column {column} in {row:?}"))
            .as_deref()
    }

    #[test]
    fn tablets_keyspaces_shards_and_instances_become_go_tables() {
        let now = crate::clock::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let snapshot = ShardBuilder::new("ks", "0", "semi_sync", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone1", 102)
            .edit("zone1", 101, |t| t.stop_replication())
            .edit("zone1", 102, |t| {
                t.never_reached();
                t.tablet.hostname = "<b>host</b>".into();
            })
            .build();
        let src = Sources {
            snapshot: &snapshot,
            recoveries: &[],
            detections: &[],
            global_recoveries_enabled: false,
            now,
            wall,
        };
        let tables = tables(&src);
        let names: Vec<&str> = tables.iter().map(|t| t.table_name).collect();
        assert_eq!(
            names,
            [
                "database_instance",
                "topology_recovery",
                "recovery_detection",
                "global_recovery_disable",
                "topology_recovery_steps",
                "vitess_tablet",
                "vitess_keyspace",
                "vitess_shard"
            ]
        );
        let tablets = rows(&tables, "vitess_tablet");
        let aliases: Vec<_> = tablets.iter().map(|r| cell(r, "alias")).collect();
        assert_eq!(
            aliases,
            [
                Some("zone1-0000000100"),
                Some("zone1-0000000101"),
                Some("zone1-0000000102")
            ]
        );
        assert_eq!(cell(&tablets[0], "tablet_type"), Some("1"), "PRIMARY = 1");
        assert_eq!(cell(&tablets[0], "hostname"), Some("mysql-zone1-100"));
        assert_eq!(cell(&tablets[0], "port"), Some("3306"));
        assert_eq!(
            cell(&tablets[0], "primary_timestamp"),
            Some("2023-11-14 22:13:20")
        );
        let info = cell(&tablets[0], "info").expect("info");
        assert!(
            info.starts_with("alias:{cell:\"zone1\" uid:100} hostname:\"tablet-zone1-100\""),
            "{info}"
        );
        assert!(info.contains(" type:PRIMARY "), "{info}");
        assert_eq!(cell(&tablets[2], "tablet_hostname"), Some("<b>host</b>"));

        let instances = rows(&tables, "database_instance");
        assert_eq!(instances.len(), 2, "no row for the never-reached tablet");
        let replica = &instances[1];
        assert_eq!(cell(replica, "alias"), Some("zone1-0000000101"));
        assert_eq!(cell(replica, "replica_sql_running"), Some("0"));
        assert_eq!(cell(replica, "replication_io_thread_state"), Some("0"));
        assert_eq!(cell(replica, "source_host"), Some("mysql-zone1-100"));
        assert_eq!(cell(replica, "replication_depth"), Some("1"));
        assert_eq!(cell(replica, "data_center"), Some("zone1"));
        assert_eq!(
            cell(replica, "last_seen"),
            Some("2023-11-14 22:14:59"),
            "polled a second before now, as wall time"
        );
        assert_eq!(cell(&instances[0], "replication_depth"), Some("0"));

        let keyspaces = rows(&tables, "vitess_keyspace");
        assert_eq!(cell(&keyspaces[0], "durability_policy"), Some("semi_sync"));
        assert_eq!(cell(&keyspaces[0], "keyspace_type"), Some("0"));
        let shards = rows(&tables, "vitess_shard");
        assert_eq!(cell(&shards[0], "primary_alias"), Some("zone1-0000000100"));
        assert_eq!(cell(&shards[0], "disable_emergency_reparent"), Some("0"));
        assert_eq!(
            cell(&rows(&tables, "global_recovery_disable")[0], "disable_recovery"),
            Some("1")
        );
        assert!(rows(&tables, "topology_recovery").is_empty());

        let json = go_json_with(&tables, PrettyFormatter::with_indent(b"\t")).expect("encodes");
        let json = String::from_utf8(json).expect("utf-8");
        assert!(json.starts_with("[\n\t{\n\t\t\"TableName\": \"database_instance\",\n\t\t\"Rows\": ["));
        assert!(json.contains("\"TableName\": \"topology_recovery\",\n\t\t\"Rows\": null"));
        assert!(
            json.contains("\\u003cb\\u003ehost\\u003c/b\\u003e"),
            "HTML-escaped"
        );
        assert!(json.contains("\"replication_lag_seconds\": "));
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed[3]["Rows"][0]["disable_recovery"], "1");
    }

    #[test]
    fn prototext_escapes_strings_and_bytes_and_skips_defaults() {
        let t = Tablet {
            alias: Some(TabletAlias::new("zone1", 0)),
            hostname: "a\"b\\c\n\u{1}é".into(),
            port_map: [("grpc".to_string(), 16100)].into(),
            key_range: Some(KeyRange {
                start: vec![0x80],
                end: Vec::new(),
            }),
            r#type: TabletType::Replica as i32,
            tags: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            tablet_prototext(&t),
            "alias:{cell:\"zone1\"} hostname:\"a\\\"b\\\\c\\n\\x01é\" port_map:{key:\"grpc\" value:16100} \
             key_range:{start:\"\\x80\"} type:REPLICA tags:{key:\"k\" value:\"v\"}"
        );
        assert_eq!(tablet_prototext(&Tablet::default()), "");
        let unknown_type = Tablet {
            r#type: 99,
            ..Default::default()
        };
        assert_eq!(tablet_prototext(&unknown_type), "type:99");
    }

    #[test]
    fn sql_text_and_major_version() {
        assert_eq!(sql_text("2023-11-14T22:13:20.5Z"), "2023-11-14 22:13:20.5");
        assert_eq!(major_version("10.11.6-MariaDB"), "10.11");
        assert_eq!(major_version(""), "");
    }
}
