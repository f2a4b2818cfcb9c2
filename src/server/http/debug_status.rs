//! `/debug/status`: a small HTML status page in the spirit of Go servenv's,
//! with Go VTOrc's "Recent Recoveries" table.
//!
//! Sections: the process (start time, uptime, host, pid, version, command
//! line, readiness, global recoveries switch, what is watched), the
//! configuration (every setting, as `/api/config` lists them), "Recent
//! Recoveries" (the newest 20 recoveries of the audit, Go's page size), and
//! the tablets vtorc cannot reach (at most [`MAX_UNREACHABLE`], with the
//! poll error), plus links to the other debug pages.
//!
//! Everything written into the page is escaped with [`escape_html`]: tablet
//! records, host names and error texts come from the network.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{DebugState, config_value};
use crate::config::GoDuration;
use crate::model::Reachability;
use crate::recovery::AuditFilter;
use crate::recovery::audit::{RecoveryOutcome, RecoveryRecord, rfc3339};

/// Recoveries listed (Go VTOrc's page size).
pub(super) const RECENT_RECOVERIES: usize = 20;

/// Shards watched here listed at most in "Work Sharing" (all of them:
/// `/api/sharing`).
pub(super) const MAX_SHARD_OWNERS: usize = 500;

/// Unreachable tablets listed at most.
pub(super) const MAX_UNREACHABLE: usize = 100;

/// Escapes text for HTML element content and quoted attribute values, as
/// Go's `html.EscapeString` / `template.HTMLEscapeString` do (`&`, `<`,
/// `>`, `"`, `'`; NUL becomes U+FFFD).
pub(super) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One row of "Recent Recoveries".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RecoveryRow {
    /// Recovery id.
    pub id: u64,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// Analysis code acted on.
    pub analysis: String,
    /// Recovery function (Go's `RecoveryType`).
    pub recovery_type: String,
    /// Analysed tablet.
    pub tablet: String,
    /// Start (RFC 3339).
    pub started: String,
    /// End (RFC 3339; empty while running).
    pub ended: String,
    /// `Succeeded`, `Failed` or `Running`.
    pub outcome: &'static str,
    /// New primary, if one was promoted.
    pub successor: String,
    /// The error, if it failed.
    pub error: String,
}

impl From<&RecoveryRecord> for RecoveryRow {
    fn from(r: &RecoveryRecord) -> Self {
        RecoveryRow {
            id: r.recovery_id,
            keyspace: r.keyspace.clone(),
            shard: r.shard.clone(),
            analysis: r.analysis.name().to_string(),
            recovery_type: r.recovery_type.name().to_string(),
            tablet: r.tablet_alias.to_string(),
            started: rfc3339(r.started_at),
            ended: r.ended_at.map(rfc3339).unwrap_or_default(),
            outcome: match r.outcome {
                RecoveryOutcome::Running => "Running",
                RecoveryOutcome::Succeeded => "Succeeded",
                RecoveryOutcome::Failed => "Failed",
            },
            successor: r
                .successor_alias
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            error: r.error.clone().unwrap_or_default(),
        }
    }
}

/// One row of "Unreachable Tablets".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct UnreachableRow {
    /// Tablet alias.
    pub alias: String,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// Topo tablet type.
    pub tablet_type: String,
    /// vttablet host (topo record).
    pub hostname: String,
    /// MySQL `host:port` (topo record).
    pub mysql: String,
    /// Unreachable since (RFC 3339).
    pub since: String,
    /// The latest poll error.
    pub reason: String,
}

/// What the page shows, gathered from the handles.
#[derive(Clone, Debug, Default)]
pub(super) struct StatusPage {
    /// This host.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
    /// vtorc version.
    pub version: String,
    /// Command line.
    pub cmdline: String,
    /// Start time (RFC 3339).
    pub started: String,
    /// Time since the start.
    pub uptime: Duration,
    /// Discovery ready.
    pub ready: bool,
    /// Why not ready.
    pub not_ready_reason: String,
    /// Global recoveries switch.
    pub global_recoveries: bool,
    /// Keyspaces watched.
    pub keyspaces: usize,
    /// Shards watched.
    pub shards: usize,
    /// Tablets watched.
    pub tablets: usize,
    /// Settings (name, value).
    pub config: Vec<(String, String)>,
    /// Newest recoveries first.
    pub recoveries: Vec<RecoveryRow>,
    /// Unreachable tablets (at most [`MAX_UNREACHABLE`]).
    pub unreachable: Vec<UnreachableRow>,
    /// Unreachable tablets in all.
    pub unreachable_total: usize,
    /// With `--sharing`: this instance's standing (name, value).
    pub sharing: Vec<(String, String)>,
    /// With `--sharing`: the members (id, addresses, ready).
    pub members: Vec<(String, String, bool)>,
    /// With `--sharing`: the shards watched here, with their owner.
    pub shard_owners: Vec<(String, String)>,
}

const STYLE: &str = "body{font-family:sans-serif;font-size:14px;margin:1em}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\
th{background:#eee}td.err{color:#a00;white-space:pre-wrap}";

impl StatusPage {
    /// The HTML page.
    pub fn render(&self) -> String {
        let e = escape_html;
        let mut h = String::with_capacity(8192);
        h.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(h, "<title>Status for vtorc on {}</title>", e(&self.hostname));
        let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
        let _ = writeln!(h, "<h1>Status for vtorc on {}</h1>", e(&self.hostname));
        h.push_str("<table>\n");
        let mut info = |name: &str, value: String| {
            let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", e(name), e(&value));
        };
        info(
            "Started",
            format!("{} (up {})", self.started, GoDuration(self.uptime)),
        );
        info("Host", self.hostname.clone());
        info("Process", format!("pid {}, vtorc {}", self.pid, self.version));
        info("Running", self.cmdline.clone());
        info(
            "Discovery",
            if self.ready {
                "ready".to_string()
            } else {
                format!("not ready: {}", self.not_ready_reason)
            },
        );
        info(
            "Global recoveries",
            if self.global_recoveries {
                "enabled"
            } else {
                "disabled"
            }
            .to_string(),
        );
        info(
            "Watching",
            format!(
                "{} keyspaces, {} shards, {} tablets",
                self.keyspaces, self.shards, self.tablets
            ),
        );
        h.push_str("</table>\n");

        if !self.sharing.is_empty() {
            h.push_str("<h2>Work Sharing</h2>\n<table>\n");
            for (name, value) in &self.sharing {
                let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", e(name), e(value));
            }
            h.push_str("</table>\n<table class=\"members\">\n<tr><th>Member</th><th>Addresses</th><th>Ready</th></tr>\n");
            for (id, addresses, ready) in &self.members {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e(id),
                    e(addresses),
                    if *ready { "yes" } else { "no" }
                );
            }
            h.push_str(
                "</table>\n<table class=\"owners\">\n<tr><th>Shard watched here</th><th>Owner</th></tr>\n",
            );
            for (shard, owner) in &self.shard_owners {
                let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", e(shard), e(owner));
            }
            h.push_str("</table>\n<p>Every shard's owner: <a href=\"/api/sharing\">/api/sharing</a></p>\n");
        }

        h.push_str("<h2>Configuration</h2>\n<table>\n");
        for (name, value) in &self.config {
            let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", e(name), e(value));
        }
        h.push_str("</table>\n");

        h.push_str("<h2>Recent Recoveries</h2>\n");
        if self.recoveries.is_empty() {
            h.push_str("<p>No recoveries yet.</p>\n");
        } else {
            h.push_str(
                "<table class=\"recoveries\">\n<tr><th>Recovery ID</th><th>Keyspace/Shard</th>\
                 <th>Analysis</th><th>Recovery Type</th><th>Tablet</th><th>Started</th>\
                 <th>Ended</th><th>Outcome</th><th>Successor</th><th>Error</th></tr>\n",
            );
            for r in &self.recoveries {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                    r.id,
                    e(&r.keyspace),
                    e(&r.shard),
                    e(&r.analysis),
                    e(&r.recovery_type),
                    e(&r.tablet),
                    e(&r.started),
                    e(&r.ended),
                    e(r.outcome),
                    e(&r.successor),
                    e(&r.error),
                );
            }
            h.push_str("</table>\n");
        }

        h.push_str("<h2>Unreachable Tablets</h2>\n");
        if self.unreachable.is_empty() {
            h.push_str("<p>None.</p>\n");
        } else {
            h.push_str(
                "<table class=\"unreachable\">\n<tr><th>Tablet</th><th>Keyspace/Shard</th>\
                 <th>Type</th><th>Host</th><th>MySQL</th><th>Since</th><th>Last Error</th></tr>\n",
            );
            for t in &self.unreachable {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"err\">{}</td></tr>",
                    e(&t.alias),
                    e(&t.keyspace),
                    e(&t.shard),
                    e(&t.tablet_type),
                    e(&t.hostname),
                    e(&t.mysql),
                    e(&t.since),
                    e(&t.reason),
                );
            }
            h.push_str("</table>\n");
            if self.unreachable_total > self.unreachable.len() {
                let _ = writeln!(
                    h,
                    "<p>... and {} more.</p>",
                    self.unreachable_total - self.unreachable.len()
                );
            }
        }

        h.push_str(
            "<p><a href=\"/debug/vars\">/debug/vars</a> · <a href=\"/metrics\">/metrics</a> · \
             <a href=\"/debug/health\">/debug/health</a> · \
             <a href=\"/api/detection-analysis\">/api/detection-analysis</a> · \
             <a href=\"/api/recoveries\">/api/recoveries</a> · \
             <a href=\"/api/database-state\">/api/database-state</a> · \
             <a href=\"/api/config\">/api/config</a></p>\n</body>\n</html>\n",
        );
        h
    }
}

/// A monotonic instant in the past as wall-clock time.
fn wall_of(at: tokio::time::Instant, now: tokio::time::Instant, wall: SystemTime) -> SystemTime {
    wall.checked_sub(now.saturating_duration_since(at))
        .unwrap_or(wall)
}

/// Gathers the page from the handles.
fn gather(state: &DebugState) -> StatusPage {
    let ctx = &state.ctx;
    let now = crate::clock::now();
    let wall = (ctx.clock)();
    let snapshot = ctx.discovery.snapshot();
    let health = ctx.health();
    let config = match config_value(ctx) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
        Ok(other) => vec![("config".to_string(), other.to_string())],
        Err(e) => vec![("config".to_string(), format!("failed to encode: {e}"))],
    };
    let recoveries = ctx
        .recovery
        .recoveries(&AuditFilter::all().recent(RECENT_RECOVERIES))
        .iter()
        .map(RecoveryRow::from)
        .collect();
    let mut unreachable = Vec::new();
    let mut unreachable_total = 0;
    for shard in snapshot.shards.values() {
        for t in &shard.tablets {
            let Reachability::Unreachable { since, reason } = &t.reachability else {
                continue;
            };
            unreachable_total += 1;
            if unreachable.len() < MAX_UNREACHABLE {
                unreachable.push(UnreachableRow {
                    alias: t.alias().to_string(),
                    keyspace: shard.keyspace.clone(),
                    shard: shard.shard.clone(),
                    tablet_type: t.tablet_type().as_str_name().to_string(),
                    hostname: t.tablet.hostname.clone(),
                    mysql: format!("{}:{}", t.tablet.mysql_hostname, t.tablet.mysql_port),
                    since: rfc3339(wall_of(*since, now, wall)),
                    reason: reason.clone(),
                });
            }
        }
    }
    let (mut sharing, mut members, mut shard_owners) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(handle) = &ctx.sharing {
        let status = handle.status();
        let assignment = handle.assignment();
        sharing.push(("Member id".to_string(), status.me.clone()));
        sharing.push((
            "Acting".to_string(),
            match (status.acting, status.acting_for_ms) {
                (true, Some(ms)) => format!("yes (lease known valid for {ms} ms more)"),
                _ => "no (lease not known valid: no recoveries start)".to_string(),
            },
        ));
        sharing.push((
            "Assignment".to_string(),
            format!(
                "generation {} (loaded: {}), {} members, {} earlier member sets still watched (handover)",
                status.generation,
                status.applied_generation,
                status.members.len(),
                status.retained_views
            ),
        ));
        for m in &status.members {
            let addresses = [m.record.grpc_address.as_deref(), m.record.http_address.as_deref()]
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            members.push((m.record.id.clone(), addresses, m.ready));
        }
        for key in snapshot.shards.keys().take(MAX_SHARD_OWNERS) {
            let owner = assignment
                .owner(&key.keyspace, &key.shard)
                .map_or_else(|| "-".to_string(), str::to_string);
            let owner = if assignment.owns(&key.keyspace, &key.shard) {
                format!("{owner} (this instance)")
            } else {
                format!("{owner} (handing over)")
            };
            shard_owners.push((key.to_string(), owner));
        }
    }
    StatusPage {
        sharing,
        members,
        shard_owners,
        hostname: ctx.hostname.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cmdline: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        started: rfc3339(state.started_wall),
        uptime: Duration::from_secs(now.saturating_duration_since(state.started).as_secs()),
        ready: health.ready,
        not_ready_reason: health.reason,
        global_recoveries: ctx.recovery.global_recoveries_enabled(),
        keyspaces: snapshot.keyspaces.len(),
        shards: snapshot.shards.len(),
        tablets: snapshot.tablet_count(),
        config,
        recoveries,
        unreachable,
        unreachable_total,
    }
}

/// `GET /debug/status`.
pub(super) async fn handler(State(state): State<DebugState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        gather(&state).render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert('x')</script>&\"\0";

    #[test]
    fn escape_html_escapes_every_special_character() {
        assert_eq!(
            escape_html(HOSTILE),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;\u{fffd}"
        );
        assert_eq!(escape_html("zone1-0000000100 ü"), "zone1-0000000100 ü");
        assert_eq!(escape_html(""), "");
    }

    #[test]
    fn the_page_lists_recoveries_and_escapes_everything_from_the_network() {
        let page = StatusPage {
            hostname: HOSTILE.into(),
            started: "2024-01-02T03:04:05Z".into(),
            uptime: Duration::from_secs(3723),
            ready: true,
            global_recoveries: true,
            config: vec![("cell".into(), HOSTILE.into())],
            recoveries: vec![RecoveryRow {
                id: 7,
                keyspace: "commerce".into(),
                shard: "0".into(),
                analysis: "ReplicationStopped".into(),
                recovery_type: "FixReplica".into(),
                tablet: "zone1-0000000101".into(),
                started: "2024-01-02T03:04:06Z".into(),
                ended: "2024-01-02T03:04:07Z".into(),
                outcome: "Failed",
                successor: String::new(),
                error: HOSTILE.into(),
            }],
            unreachable: vec![UnreachableRow {
                alias: "zone1-0000000199".into(),
                hostname: HOSTILE.into(),
                mysql: format!("{HOSTILE}:3306"),
                reason: HOSTILE.into(),
                ..Default::default()
            }],
            unreachable_total: 150,
            sharing: vec![("Member id".into(), HOSTILE.into())],
            members: vec![(HOSTILE.into(), HOSTILE.into(), true)],
            shard_owners: vec![(HOSTILE.into(), HOSTILE.into())],
            ..Default::default()
        };
        let html = page.render();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains('\0'));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;"));
        assert!(html.contains("<h2>Recent Recoveries</h2>"));
        assert!(html.contains("<h2>Work Sharing</h2>"));
        assert!(html.contains(
            "<tr><td>7</td><td>commerce/0</td><td>ReplicationStopped</td><td>FixReplica</td>\
             <td>zone1-0000000101</td><td>2024-01-02T03:04:06Z</td><td>2024-01-02T03:04:07Z</td>\
             <td>Failed</td>"
        ));
        assert!(html.contains("2024-01-02T03:04:05Z (up 1h2m3s)"), "{html}");
        assert!(html.contains("<td>zone1-0000000199</td>"));
        assert!(html.contains("... and 149 more."));
    }

    #[test]
    fn an_empty_page_says_so() {
        let html = StatusPage::default().render();
        assert!(html.contains("No recoveries yet."));
        assert!(html.contains("not ready: "));
        assert!(html.ends_with("</html>\n"));
    }
}
