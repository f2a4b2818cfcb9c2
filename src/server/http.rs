//! HTTP on `--port`: Go VTOrc's endpoints with its paths, JSON shapes and
//! texts (reference §9), `/metrics`, and our audit as JSON.
//!
//! | Path | Go's access level | Answer |
//! |---|---|---|
//! | `/api/detection-analysis` | MONITORING | JSON array of `DetectionAnalysis` (Go keys) |
//! | `/api/problems` | MONITORING | JSON array of Instance objects with problems |
//! | `/api/errant-gtids` | MONITORING | JSON array of Instance objects with errant GTIDs |
//! | `/api/disable-global-recoveries` | ADMIN | `Global recoveries disabled\n` |
//! | `/api/enable-global-recoveries` | ADMIN | `Global recoveries enabled\n` |
//! | `/api/ack-recovery?keyspace=&shard=&comment=` | ADMIN | ours (orchestrator's name): clears the shard's back-offs and ERS cooldown, `Acknowledged: N ...\n` |
//! | `/api/ack-all-recoveries?comment=` | ADMIN | the same for every shard |
//! | `/api/config` | MONITORING | the configuration as a JSON map (tab indent) |
//! | `/api/database-state` | MONITORING | our in-memory state as Go's store dump, `[{"TableName", "Rows"}]` (see `http/database_state.rs`) |
//! | `/api/recoveries` | (ours) | our audit's recoveries, newest first (`limit` parameter) |
//! | `/api/sharing?keyspace=&shard=` | (ours) | with `--sharing`: the members and every shard's owner with its addresses (404 without `--sharing`) |
//! | `/debug/health` | MONITORING | health JSON; **500** until the first topology load and discovery round |
//! | `/debug/liveness` | servenv | 200, empty body |
//! | `/debug/status` | servenv | HTML status page with "Recent Recoveries" (see `http/debug_status.rs`) |
//! | `/debug/vars` | servenv | every metric as Go's expvar JSON (see `http/debug_vars.rs`) |
//! | `/metrics` | servenv | Prometheus text format |
//!
//! | `/debug/config` | DEBUGGING | the live configuration: values in effect, dynamic keys, config file, last reload error |
//!
//! Access levels are enforced by `--security-policy` as Go's servenv does:
//! empty lets everything through; `read-only` refuses ADMIN paths;
//! `deny-all` refuses every guarded path (MONITORING, ADMIN, DEBUGGING —
//! including `/debug/health`, as in Go). A refusal is a 403 with Go's text
//! (`Access denied: not allowed: read-only security-policy enforced`), a
//! warning in the log and an `AccessDenied` record in the audit. `/api/recoveries` (ours) is MONITORING; the servenv
//! pages (`/debug/liveness`, `/debug/status`, `/debug/vars`, `/metrics`)
//! are not guarded.
//!
//! Filters are the query parameters `keyspace` and `shard`; a shard without
//! a keyspace is a 400 with Go's exact text. JSON is pretty-printed with a
//! one-space indent and HTML-escaped like Go's `json.HTMLEscape`; an empty
//! list is `null`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use tokio::time::Instant;

use super::query::{ApiContext, ApiError, SHARD_WITHOUT_KEYSPACE, ShardFilter, TabletView};

mod database_state;
mod debug_status;
mod debug_vars;
use crate::config::SecurityPolicy;
use crate::model::ThreadState;
use crate::mysql::Position;

/// State of the servenv-style debug pages: the API's handles and when this
/// server started (vtorc start-up, for `Uptime` and "Started").
#[derive(Clone)]
struct DebugState {
    /// The API's handles.
    ctx: ApiContext,
    /// Wall-clock start.
    started_wall: SystemTime,
    /// Monotonic start.
    started: Instant,
}

/// The router of the HTTP API over `ctx`.
pub fn router(ctx: ApiContext) -> Router {
    let debug = DebugState {
        started_wall: (ctx.clock)(),
        started: crate::clock::now(),
        ctx: ctx.clone(),
    };
    let debug_pages = Router::new()
        .route("/debug/vars", get(debug_vars::handler))
        .route("/debug/status", get(debug_status::handler))
        .with_state(debug);
    Router::new()
        .route("/api/detection-analysis", get(detection_analysis))
        .route("/api/problems", get(problems))
        .route("/api/errant-gtids", get(errant_gtids))
        .route("/api/disable-global-recoveries", any(disable_global_recoveries))
        .route("/api/enable-global-recoveries", any(enable_global_recoveries))
        .route("/api/ack-recovery", any(ack_recovery))
        .route("/api/ack-all-recoveries", any(ack_all_recoveries))
        .route("/api/config", get(config))
        .route("/api/database-state", get(database_state::handler))
        .route("/api/recoveries", get(recoveries))
        .route("/api/sharing", get(sharing))
        .route("/debug/health", get(health))
        .route("/debug/config", get(debug_config))
        .route("/debug/liveness", get(liveness))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone())
        .merge(debug_pages)
        .layer(axum::middleware::from_fn_with_state(
            (ctx.config.security_policy, Arc::clone(ctx.recovery.audit())),
            access_guard,
        ))
}

/// Go's ACL levels of a path; `None` = not guarded.
fn access_level(path: &str) -> Option<&'static str> {
    match path {
        "/api/disable-global-recoveries"
        | "/api/enable-global-recoveries"
        | "/api/ack-recovery"
        | "/api/ack-all-recoveries" => Some("ADMIN"),
        "/debug/config" => Some("DEBUGGING"),
        p if p.starts_with("/api/") => Some("MONITORING"),
        "/debug/health" => Some("MONITORING"),
        _ => None,
    }
}

/// `--security-policy` on the HTTP API (see the module docs).
async fn access_guard(
    State((policy, audit)): State<(SecurityPolicy, Arc<crate::recovery::AuditLog>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let denied = match (policy, access_level(path)) {
        (_, None) | (SecurityPolicy::AllowAll, _) => None,
        (SecurityPolicy::DenyAll, Some(_)) => Some("not allowed: deny-all security-policy enforced"),
        (SecurityPolicy::ReadOnly, Some("ADMIN")) => Some("not allowed: read-only security-policy enforced"),
        (SecurityPolicy::ReadOnly, Some(_)) => None,
    };
    match denied {
        Some(reason) => {
            tracing::warn!(
                path,
                method = %request.method(),
                level = access_level(path).unwrap_or_default(),
                "HTTP request denied by --security-policy"
            );
            // Audited like a refused gRPC call.
            audit.access_denied(
                &format!("HTTP {} {path}", request.method()),
                "",
                "",
                "403 Forbidden",
                &format!("{reason} (--security-policy)"),
            );
            text(StatusCode::FORBIDDEN, format!("Access denied: {reason}\n"))
        }
        None => next.run(request).await,
    }
}

/// `/debug/config`: the live configuration as JSON (values in effect,
/// the dynamic keys, the config file, reloads and the last refused edit).
async fn debug_config(State(ctx): State<ApiContext>) -> Response {
    let live = ctx.live.borrow().clone();
    let body = config_value(&ctx).and_then(|config| {
        let value = serde_json::json!({
            "config": config,
            "config-file": live.config.config_file,
            "dynamic-keys": crate::config::dynamic::DYNAMIC_KEYS,
            "dynamic": live.dynamic,
            "reloads": live.reloads,
            "last-error": live.last_error,
            "pending-restart": live.pending_restart,
        });
        serde_json::to_string_pretty(&value)
    });
    match body {
        Ok(mut body) => {
            body.push('\n');
            json_response(StatusCode::OK, Ok(body.into_bytes()))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the configuration: {e}\n"),
        ),
    }
}

/// Serves the HTTP API on `listener` until `ctx.shutdown` fires.
pub async fn serve(listener: tokio::net::TcpListener, ctx: ApiContext) -> std::io::Result<()> {
    let shutdown = ctx.shutdown.clone();
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Go's `json.Marshal` / `json.MarshalIndent` output: `inner`'s layout with
/// `<`, `>`, `&`, U+2028 and U+2029 escaped as Go does.
struct GoJson<F> {
    /// The layout (compact or indented).
    inner: F,
}

impl<F: Formatter> Formatter for GoJson<F> {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.inner.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.inner.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Renders `value` as Go VTOrc's API does.
pub fn go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    go_json_with(value, PrettyFormatter::with_indent(b" "))
}

/// Renders `value` with `layout`, HTML-escaped as Go's encoder does.
fn go_json_with<T: Serialize + ?Sized, F: Formatter>(
    value: &T,
    layout: F,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoJson { inner: layout });
    value.serialize(&mut ser)?;
    Ok(out)
}

/// A list as Go renders a slice that may be nil: `null` when empty.
fn go_list<T: Serialize>(items: &[T]) -> Result<Vec<u8>, serde_json::Error> {
    if items.is_empty() {
        Ok(b"null".to_vec())
    } else {
        go_json(items)
    }
}

fn json_response(status: StatusCode, body: Result<Vec<u8>, serde_json::Error>) -> Response {
    json_response_typed(status, "application/json", body)
}

/// JSON `body` with `content_type` (Go answers some JSON as text/plain).
fn json_response_typed(
    status: StatusCode,
    content_type: &'static str,
    body: Result<Vec<u8>, serde_json::Error>,
) -> Response {
    match body {
        Ok(body) => (status, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode JSON: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn error_response(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    text(
        status,
        format!(
            "{}\n",
            super::query::bounded(&e.to_string(), super::query::ERROR_MAX)
        ),
    )
}

/// Reads the `keyspace` / `shard` query parameters and answers with `f`
/// (Go's 400 text for a shard without a keyspace).
fn with_filter(params: &HashMap<String, String>, f: impl FnOnce(ShardFilter) -> Response) -> Response {
    let keyspace = params.get("keyspace").map(String::as_str).unwrap_or("");
    let shard = params.get("shard").map(String::as_str).unwrap_or("");
    if keyspace.trim().is_empty() && !shard.trim().is_empty() {
        return text(StatusCode::BAD_REQUEST, format!("{SHARD_WITHOUT_KEYSPACE}\n"));
    }
    match ShardFilter::parse(keyspace, shard) {
        Ok(filter) => f(filter),
        Err(e) => error_response(e),
    }
}

async fn detection_analysis(
    State(ctx): State<ApiContext>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    with_filter(&params, |f| {
        json_response(StatusCode::OK, go_list(&ctx.detection_analysis(&f)))
    })
}

async fn problems(State(ctx): State<ApiContext>, Query(params): Query<HashMap<String, String>>) -> Response {
    with_filter(&params, |f| instances(&ctx, ctx.problems(&f)))
}

async fn errant_gtids(
    State(ctx): State<ApiContext>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    with_filter(&params, |f| instances(&ctx, ctx.errant_gtids(&f)))
}

fn instances(ctx: &ApiContext, views: Vec<TabletView>) -> Response {
    let now = crate::clock::now();
    let wall = (ctx.clock)();
    let list: Vec<InstanceJson> = views
        .iter()
        .map(|v| InstanceJson::new(v, ctx.current_config().instance_poll_time, now, wall))
        .collect();
    json_response(StatusCode::OK, go_list(&list))
}

async fn disable_global_recoveries(State(ctx): State<ApiContext>) -> Response {
    ctx.set_global_recoveries(false);
    text(StatusCode::OK, "Global recoveries disabled\n")
}

async fn enable_global_recoveries(State(ctx): State<ApiContext>) -> Response {
    ctx.set_global_recoveries(true);
    text(StatusCode::OK, "Global recoveries enabled\n")
}

/// Orchestrator's `ack-recovery`, by shard: `?keyspace=ks&shard=0&comment=...`.
async fn ack_recovery(
    State(ctx): State<ApiContext>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if get("keyspace").trim().is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "keyspace and shard are required (use /api/ack-all-recoveries for every shard)\n",
        );
    }
    match ctx.acknowledge(get("keyspace"), get("shard"), get("comment")) {
        Ok(n) => text(
            StatusCode::OK,
            format!("Acknowledged: {n} back-off(s) and cooldown(s) cleared\n"),
        ),
        Err(e) => error_response(e),
    }
}

/// Orchestrator's `ack-all-recoveries`: `?comment=...`.
async fn ack_all_recoveries(
    State(ctx): State<ApiContext>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let comment = params.get("comment").map(String::as_str).unwrap_or("");
    match ctx.acknowledge("", "", comment) {
        Ok(n) => text(
            StatusCode::OK,
            format!("Acknowledged: {n} back-off(s) and cooldown(s) cleared\n"),
        ),
        Err(e) => error_response(e),
    }
}

/// The configuration in effect as a JSON map, keys in name order (as Go
/// encodes its map); durations are Go duration strings (`5s`) through
/// [`Config`](crate::config::Config)'s own `Serialize`.
fn config_value(ctx: &ApiContext) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(&*ctx.current_config())
}

/// [`config_value`] as `/api/config` writes it (tab indent).
fn config_json(ctx: &ApiContext) -> Result<String, serde_json::Error> {
    let value = config_value(ctx)?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PrettyFormatter::with_indent(b"\t"));
    value.serialize(&mut ser)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn config(State(ctx): State<ApiContext>) -> Response {
    match config_json(&ctx) {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the configuration: {e}\n"),
        ),
    }
}

async fn recoveries(
    State(ctx): State<ApiContext>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => (n > 0).then_some(n),
        Some(Err(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "limit: expected a non-negative integer\n",
            );
        }
    };
    with_filter(&params, |f| {
        json_response(StatusCode::OK, go_list(&ctx.recoveries(&f, limit)))
    })
}

/// `GET /api/sharing[?keyspace=K[&shard=S]]`: the members and which one owns
/// each shard (where to ask about it). 404 without `--sharing`.
async fn sharing(State(ctx): State<ApiContext>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(handle) = &ctx.sharing else {
        return text(
            StatusCode::NOT_FOUND,
            "work sharing is off (--sharing): this instance watches every shard\n",
        );
    };
    let keyspace = params
        .get("keyspace")
        .map(String::as_str)
        .filter(|k| !k.is_empty());
    let shard = params.get("shard").map(String::as_str).filter(|s| !s.is_empty());
    if shard.is_some() && keyspace.is_none() {
        return text(StatusCode::BAD_REQUEST, "shard: needs keyspace\n");
    }
    let report = crate::sharing::report(&ctx.topo, handle, keyspace, shard).await;
    json_response(StatusCode::OK, serde_json::to_vec_pretty(&report))
}

/// Go VTOrc's health object (the keys operators script against).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthJson<'a> {
    /// Ready.
    healthy: bool,
    /// This host.
    hostname: &'a str,
    /// Go's process token; we have none.
    token: &'a str,
    /// Every vtorc acts on the shards it can lock.
    is_active_node: bool,
    /// Why not healthy.
    error: Option<&'a str>,
}

async fn health(State(ctx): State<ApiContext>) -> Response {
    let h = ctx.health();
    let body = HealthJson {
        healthy: h.ready,
        hostname: &ctx.hostname,
        token: "",
        is_active_node: true,
        error: (!h.ready).then_some(h.reason.as_str()),
    };
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json_response(status, go_json(&body))
}

async fn liveness() -> StatusCode {
    StatusCode::OK
}

async fn metrics(State(ctx): State<ApiContext>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        ctx.metrics.render(),
    )
        .into_response()
}

/// Go's `sql.NullInt64` JSON.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NullInt64 {
    /// The value (0 when not valid).
    int64: i64,
    /// Whether there is a value.
    valid: bool,
}

impl NullInt64 {
    fn of(v: Option<i64>) -> Self {
        NullInt64 {
            int64: v.unwrap_or(0),
            valid: v.is_some(),
        }
    }
}

/// Go's `BinlogCoordinates`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Coordinates {
    /// File.
    log_file: String,
    /// Offset.
    log_pos: u64,
    /// Always 0 (binary log).
    #[serde(rename = "Type")]
    kind: u8,
}

/// GTID set text without the flavor prefix, as Go stores it.
fn gtid_text(p: &Position) -> String {
    let s = p.to_string();
    match s.split_once('/') {
        Some((_, set)) => set.to_string(),
        None => s,
    }
}

/// Go's replication thread state numbers: -1 no thread, 0 stopped, 1 running, 2 other.
fn go_thread_state(s: ThreadState) -> i8 {
    match s {
        ThreadState::NoThread => -1,
        ThreadState::Stopped => 0,
        ThreadState::Running => 1,
        ThreadState::Connecting => 2,
    }
}

/// Go VTOrc's Instance object, from what vtorc observed.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceJson {
    hostname: String,
    port: i32,
    instance_alias: String,
    #[serde(rename = "ServerID")]
    server_id: u32,
    #[serde(rename = "ServerUUID")]
    server_uuid: String,
    version: String,
    version_comment: String,
    flavor_name: String,
    read_only: bool,
    binlog_format: String,
    binlog_row_image: String,
    log_bin_enabled: bool,
    log_replication_updates_enabled: bool,
    self_binlog_coordinates: Coordinates,
    source_host: String,
    source_port: i32,
    #[serde(rename = "SourceUUID")]
    source_uuid: String,
    replica_net_timeout: i32,
    heartbeat_interval: f64,
    #[serde(rename = "ReplicationSQLThreadRuning")]
    replication_sql_thread_runing: bool,
    #[serde(rename = "ReplicationIOThreadRuning")]
    replication_io_thread_runing: bool,
    #[serde(rename = "ReplicationSQLThreadState")]
    replication_sql_thread_state: i8,
    #[serde(rename = "ReplicationIOThreadState")]
    replication_io_thread_state: i8,
    has_replication_filters: bool,
    #[serde(rename = "GTIDMode")]
    gtid_mode: String,
    #[serde(rename = "UsingOracleGTID")]
    using_oracle_gtid: bool,
    #[serde(rename = "LastSQLError")]
    last_sql_error: String,
    #[serde(rename = "LastIOError")]
    last_io_error: String,
    seconds_behind_primary: NullInt64,
    #[serde(rename = "SQLDelay")]
    sql_delay: u32,
    executed_gtid_set: String,
    gtid_purged: String,
    gtid_errant: String,
    replication_lag_seconds: NullInt64,
    data_center: String,
    replication_depth: u32,
    has_replication_credentials: bool,
    semi_sync_primary_enabled: bool,
    semi_sync_replica_enabled: bool,
    semi_sync_primary_timeout: u64,
    semi_sync_primary_wait_for_replica_count: u32,
    semi_sync_primary_status: bool,
    semi_sync_primary_clients: u32,
    semi_sync_replica_status: bool,
    last_seen_timestamp: String,
    is_last_check_valid: bool,
    is_up_to_date: bool,
    is_recently_checked: bool,
    seconds_since_last_seen: NullInt64,
    stalled_disk: bool,
    problems: Vec<&'static str>,
}

impl InstanceJson {
    fn new(v: &TabletView, poll_time: Duration, now: Instant, wall: SystemTime) -> Self {
        let t = &v.tablet;
        let o = t.observation.as_deref().cloned().unwrap_or_default();
        let r = o.replication.clone().unwrap_or_default();
        let replicating = o.replication.is_some() && !o.has_no_source();
        let since_seen = t.poll.last_seen.map(|s| now.saturating_duration_since(s));
        let lag = o.replication.as_ref().and_then(|r| r.lag_seconds).map(i64::from);
        InstanceJson {
            hostname: t.tablet.mysql_hostname.clone(),
            port: t.tablet.mysql_port,
            instance_alias: t.alias().to_string(),
            server_id: o.server_id,
            server_uuid: o.server_uuid.clone(),
            version: o.version.clone(),
            version_comment: o.version_comment.clone(),
            flavor_name: if o.version.contains("MariaDB") {
                "MariaDB".into()
            } else if o.version.is_empty() {
                String::new()
            } else {
                "MySQL".into()
            },
            read_only: o.read_only,
            binlog_format: o.binlog_format.clone(),
            binlog_row_image: o.binlog_row_image.clone(),
            log_bin_enabled: o.log_bin,
            log_replication_updates_enabled: o.log_replica_updates,
            self_binlog_coordinates: Coordinates {
                log_file: o
                    .binlog_coordinates
                    .as_ref()
                    .map(|c| c.file.clone())
                    .unwrap_or_default(),
                log_pos: o.binlog_coordinates.as_ref().map_or(0, |c| c.pos),
                kind: 0,
            },
            source_host: r.source_host.clone(),
            source_port: r.source_port,
            source_uuid: r.source_uuid.clone(),
            replica_net_timeout: o.replica_net_timeout,
            heartbeat_interval: o.heartbeat_interval,
            replication_sql_thread_runing: r.sql_thread.is_running(),
            replication_io_thread_runing: r.io_thread.is_running(),
            replication_sql_thread_state: go_thread_state(r.sql_thread),
            replication_io_thread_state: go_thread_state(r.io_thread),
            has_replication_filters: r.has_replication_filters,
            gtid_mode: o.gtid_mode.clone(),
            using_oracle_gtid: r.auto_position,
            last_sql_error: r.last_sql_error.clone(),
            last_io_error: r.last_io_error.clone(),
            seconds_behind_primary: NullInt64::of(lag),
            sql_delay: r.sql_delay,
            executed_gtid_set: gtid_text(&o.executed_position),
            gtid_purged: gtid_text(&o.gtid_purged),
            gtid_errant: gtid_text(&o.errant_gtids),
            replication_lag_seconds: NullInt64::of(lag),
            data_center: t.alias().cell.clone(),
            replication_depth: u32::from(replicating),
            has_replication_credentials: !r.source_user.is_empty(),
            semi_sync_primary_enabled: o.semi_sync.primary_enabled,
            semi_sync_replica_enabled: o.semi_sync.replica_enabled,
            semi_sync_primary_timeout: o.semi_sync.primary_timeout_ms,
            semi_sync_primary_wait_for_replica_count: o.semi_sync.wait_for_replica_count,
            semi_sync_primary_status: o.semi_sync.primary_status,
            semi_sync_primary_clients: o.semi_sync.primary_clients,
            semi_sync_replica_status: o.semi_sync.replica_status,
            last_seen_timestamp: since_seen
                .and_then(|d| wall.checked_sub(d))
                .map(crate::recovery::audit::rfc3339)
                .unwrap_or_default(),
            is_last_check_valid: v.last_check_valid,
            is_up_to_date: t.poll.last_poll_succeeded(),
            is_recently_checked: t
                .poll
                .last_checked
                .is_some_and(|c| now.saturating_duration_since(c) <= poll_time * 5),
            seconds_since_last_seen: NullInt64::of(since_seen.map(|d| d.as_secs() as i64)),
            stalled_disk: t.disk_stalled,
            problems: v.problems.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutating_endpoint_is_admin_so_read_only_refuses_it() {
        for path in [
            "/api/disable-global-recoveries",
            "/api/enable-global-recoveries",
            "/api/ack-recovery",
            "/api/ack-all-recoveries",
        ] {
            assert_eq!(access_level(path), Some("ADMIN"), "{path}");
        }
        for path in ["/api/problems", "/api/recoveries", "/api/config", "/debug/health"] {
            assert_eq!(access_level(path), Some("MONITORING"), "{path}");
        }
        assert_eq!(access_level("/metrics"), None);
    }

    #[test]
    fn go_json_indents_with_one_space_and_escapes_html() {
        #[derive(Serialize)]
        struct S {
            a: Vec<u8>,
            b: &'static str,
        }
        let out = go_json(&S {
            a: vec![1, 2],
            b: "<x> & y",
        })
        .expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "{\n \"a\": [\n  1,\n  2\n ],\n \"b\": \"\\u003cx\\u003e \\u0026 y\"\n}"
        );
        let empty: Vec<u8> = Vec::new();
        assert_eq!(go_list(&empty).expect("encodes"), b"null");
    }

    #[test]
    fn gtid_text_drops_the_flavor() {
        let p = Position::parse("MySQL56/00000000-0000-0000-0000-000000000001:1-5").expect("valid");
        assert_eq!(gtid_text(&p), "00000000-0000-0000-0000-000000000001:1-5");
        assert_eq!(gtid_text(&Position::Empty), "");
    }
}
