//! Health: the start-up MySQL check (vttablet's "DBA grants verified" step),
//! the background health checker and the StreamHealth payload (§8).
//!
//! `health_check_interval` is vttablet's `--health-check-interval` (v24
//! default 20 s; Vitess's examples and vitess-operator run 5 s, the
//! cluster harness's default). What vttablet does with it: at each tick its
//! state manager `Broadcast`s: it refreshes replication health from the
//! replication tracker (heartbeat reader, or the poller's `SHOW REPLICA
//! STATUS`) and sends the state to every StreamHealth client, changed or
//! not; every state transition broadcasts at once too. It has no periodic
//! MySQL probe: a query that fails with a connection error triggers
//! `CheckMySQL`, which tests reachability at once and, if MySQL is gone,
//! takes the tablet to "not connected" (not serving).
//!
//! The agent does the same at each tick and on every wake-up: it probes
//! MariaDB (bounded by `health_check_timeout`, so a frozen server is
//! declared down after it), folds the result in, and broadcasts. Its wake-ups
//! stand in for vttablet's `CheckMySQL` triggers: a failed RPC statement
//! path, a failed heartbeat read (replicas) or write (primary; in the test
//! world applications bypass the agent, so nothing else would notice a
//! dead primary MariaDB before the next tick), and every state change.
//! `RunHealthCheck` is `Broadcast` on demand ([`run_health_check`]).
//!
//! Replication health: in heartbeat mode (`heartbeat_enable`) a
//! non-primary's lag and `health_error` come from the heartbeat reader
//! (`repltracker.rs`): lag = seconds since the last heartbeat it read,
//! truncated to whole seconds as vttablet's health streamer does; a reader
//! error is the `health_error` (lag 0). Otherwise (poller mode) a replica
//! probe reads replication status and computes lag and `health_error` as
//! vttablet's poller does (§8.2). A primary probe reads
//! `Rpl_semi_sync_master_wait_sessions` for the semi-sync-blocked flag.
//!
//! Deviation: vttablet's semi-sync monitor writes heartbeat rows while
//! blocked and reports "blocked" after 15 stuck writes; we report
//! `semi_sync_blocked` once commits have been waiting for an ACK without
//! interruption for `semi_sync_blocked_after` (default 15 s), with no
//! heartbeat writes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};
use vtorc::proto::query::{RealtimeStats, StreamHealthResponse, Target};
use vtorc::proto::topodata::TabletType;

use super::error::AgentResult;
use super::mysql::{MysqlConn, NO_REPLICATION_STATUS};
use super::{Agent, AgentConfig, TabletState};

/// Statements that create vttablet's sidecar tables (§6.4). Run with the
/// binlog off on every server at start-up, so the tables exist everywhere
/// without writing GTIDs (vttablet's sidecar init runs on the primary and
/// replicates; doing it locally avoids errant GTIDs on replicas).
const SIDECAR_SCHEMA: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS _vt",
    "CREATE TABLE IF NOT EXISTS _vt.reparent_journal (\
       time_created_ns BIGINT(20) UNSIGNED NOT NULL, \
       action_name VARBINARY(255) NOT NULL, \
       primary_alias VARBINARY(255) NOT NULL, \
       replication_position VARBINARY(64000) DEFAULT NULL, \
       PRIMARY KEY (time_created_ns)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _vt.semisync_heartbeat (\
       ts BIGINT UNSIGNED NOT NULL, PRIMARY KEY (ts)) ENGINE=InnoDB",
    super::repltracker::HEARTBEAT_TABLE,
];

/// Retries the start-up MySQL check until it passes, runs vttablet's
/// replication initialisation (§7 step 8), then opens the grants gate.
///
/// vttablet initialises replication before its grants gate opens (§7 steps
/// 8 and 9), so no RPC acts before it. Opening the gate first let an
/// `InitReplica` or a test's `STOP SLAVE IO_THREAD` run before a late
/// start-up initialisation that then restarted replication behind their
/// back (a stopped replica reconnecting to a frozen primary and
/// acknowledging its waiting commit; `CHANGE MASTER` discarding a relay
/// log that ERS was waiting to apply).
pub(super) async fn run_grants_check(agent: Arc<Agent>) {
    loop {
        match grants_check(&agent).await {
            Ok(()) => break,
            Err(e) => {
                *agent.grants_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                debug!(tablet = %agent.alias, "grants check failed: {e}");
            }
        }
        tokio::select! {
            _ = agent.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    info!(tablet = %agent.alias, "mysql ready, sidecar schema present");
    if let Err(e) = super::replication::init_replication_at_startup(&agent).await {
        tracing::warn!(tablet = %agent.alias, "failed to initialise replication at start-up: {e}");
    }
    agent.grants_ready.send_replace(true);
    agent.health_wake.notify_one();
}

/// Connects, creates the sidecar schema and opens the application's access
/// (a starting tablet serves, as a restarted vttablet does).
async fn grants_check(agent: &Agent) -> AgentResult<()> {
    let mut conn = agent.mysql.conn().await?;
    conn.exec("SET SESSION sql_log_bin = 0").await?;
    for sql in SIDECAR_SCHEMA {
        conn.exec(sql).await?;
    }
    // A non-primary never leaves MariaDB writable (see `Agent::fence`).
    if agent.tablet_type() != TabletType::Primary && !conn.read_only().await? {
        agent.fence_at_startup(&mut conn).await?;
    }
    // A restarted vttablet serves again; so does the application's account
    // (an agent stopped mid-demotion may have left it locked).
    super::query_service::open(&mut conn, &agent.config.app_user).await?;
    conn.close().await;
    Ok(())
}

/// What one probe found.
enum Probe {
    /// MySQL answered as a primary; `blocked` is true when commits wait for a semi-sync ACK.
    Primary { blocked: bool },
    /// MySQL answered as a non-primary: replication status, `None` if not a replica.
    Replica(Option<(bool, Option<u32>)>),
}

/// How often the checker reconciles the application's access with the
/// serving state.
const SERVING_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// The health-checker loop.
pub(super) async fn run_checker(agent: Arc<Agent>) {
    let mut conn: Option<MysqlConn> = None;
    let mut last_reconcile: Option<Instant> = None;
    loop {
        let result = probe(&agent, &mut conn).await;
        if result.is_err() {
            conn = None;
        }
        apply(&agent, result);
        if let Some(c) = conn.as_mut()
            && last_reconcile.is_none_or(|at| at.elapsed() >= SERVING_RECONCILE_INTERVAL)
        {
            last_reconcile = Some(Instant::now());
            if let Err(e) = reconcile_serving(&agent, c).await {
                debug!(tablet = %agent.alias, "serving reconciliation failed: {e}");
                conn = None;
            }
        }
        tokio::select! {
            _ = agent.cancel.cancelled() => return,
            _ = tokio::time::sleep(agent.config.health_check_interval) => {}
            _ = agent.health_wake.notified() => {}
        }
    }
}

/// Makes the application's access follow the serving state, when no
/// action runs (an action owns the transition it is making): a serving
/// tablet whose application account is locked (a transition that failed
/// half-way, or a lock put on behind the agent's back) gets it unlocked. A
/// tablet still marked demoted stays shut: reopening writes is for the
/// reparent that owns it (UndoDemotePrimary, a type change).
async fn reconcile_serving(agent: &Agent, conn: &mut MysqlConn) -> AgentResult<()> {
    let Ok(_permit) = agent.action_lock.try_acquire() else {
        return Ok(());
    };
    let (tablet_type, demoted) = {
        let state = agent.state();
        (
            TabletType::try_from(state.tablet.r#type).unwrap_or(TabletType::Unknown),
            state.demoted,
        )
    };
    let serving = serving_type(tablet_type) && !demoted;
    if super::query_service::reconcile(conn, &agent.config.app_user, serving).await? {
        info!(tablet = %agent.alias, "the application's account was locked on a serving tablet: unlocked");
    }
    Ok(())
}

/// One probe over the cached connection (opened if needed).
async fn probe(agent: &Agent, cached: &mut Option<MysqlConn>) -> AgentResult<Probe> {
    let timeout = agent.config.health_check_timeout;
    let conn = match cached {
        Some(conn) => conn,
        None => cached.insert(agent.mysql.conn_with(timeout, timeout).await?),
    };
    if agent.tablet_type() == TabletType::Primary {
        let waits = conn.status_var("Rpl_semi_sync_master_wait_sessions").await?;
        let blocked = waits.and_then(|w| w.parse::<u64>().ok()).is_some_and(|w| w > 0);
        return Ok(Probe::Primary { blocked });
    }
    let status = conn.replication_status().await?;
    Ok(Probe::Replica(status.map(|s| {
        let lag = (!s.status.replication_lag_unknown).then_some(s.status.replication_lag_seconds);
        (s.healthy(), lag)
    })))
}

/// Folds a probe result into the state and republishes health.
fn apply(agent: &Agent, result: AgentResult<Probe>) {
    let now = Instant::now();
    {
        let mut state = agent.state();
        let is_primary = state.tablet.r#type == TabletType::Primary as i32;
        match result {
            Err(e) => {
                if state.mysql_reachable != Some(false) {
                    info!(tablet = %agent.alias, "mysql unreachable: {e}");
                }
                state.mysql_reachable = Some(false);
                // vttablet: a primary's lag errors are ignored, so its
                // health_error stays empty; a replica's lag probe fails with
                // the connection error (in heartbeat mode the reader's
                // error says so, `refresh_repl_health`).
                if !agent.tracker.enabled() || is_primary {
                    state.health_error = if is_primary { String::new() } else { e.to_string() };
                }
            }
            Ok(Probe::Primary { blocked }) => {
                state.mysql_reachable = Some(true);
                state.health_error.clear();
                state.lag_seconds = 0;
                let mut since = agent
                    .semi_sync_blocked_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match (blocked, *since) {
                    (true, None) => *since = Some(now),
                    (false, _) => *since = None,
                    (true, Some(_)) => {}
                }
            }
            Ok(Probe::Replica(_)) if agent.tracker.enabled() => {
                // Heartbeat mode: lag and health_error come from the
                // tracker (`refresh_repl_health`).
                state.mysql_reachable = Some(true);
                *agent
                    .semi_sync_blocked_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
            }
            Ok(Probe::Replica(status)) => {
                state.mysql_reachable = Some(true);
                *agent
                    .semi_sync_blocked_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                match status {
                    None => state.health_error = NO_REPLICATION_STATUS.to_string(),
                    Some((true, Some(lag))) => {
                        state.health_error.clear();
                        state.lag_seconds = lag;
                        state.last_lag = Some((lag, now));
                    }
                    Some(_) => match state.last_lag {
                        Some((lag, at)) => {
                            let elapsed = u32::try_from(now.duration_since(at).as_secs()).unwrap_or(u32::MAX);
                            state.health_error.clear();
                            state.lag_seconds = lag.saturating_add(elapsed);
                        }
                        None => state.health_error = "replication is not running".to_string(),
                    },
                }
            }
        }
    }
    agent.broadcast();
}

/// vttablet's `refreshReplHealthLocked` in heartbeat mode: a non-primary's
/// lag and health error from the heartbeat reader (lag truncated to whole
/// seconds; an error reports lag 0). No-op in poller mode or on a primary.
pub(super) fn refresh_repl_health(agent: &Agent, state: &mut TabletState) {
    if !agent.tracker.enabled() || state.tablet.r#type == TabletType::Primary as i32 {
        return;
    }
    match agent.tracker.status() {
        Ok(lag) => {
            state.health_error.clear();
            state.lag_seconds = u32::try_from(lag.as_secs()).unwrap_or(u32::MAX);
        }
        Err(e) => {
            state.health_error = e;
            state.lag_seconds = 0;
        }
    }
}

/// RunHealthCheck (vttablet's `BroadcastHealth`): refreshes replication
/// health and sends the state to every StreamHealth client. In heartbeat
/// mode the reader's last result is used (at most one heartbeat interval
/// old); in poller mode a fresh probe runs first (bounded by the
/// health-check timeout).
pub(super) async fn run_health_check(agent: &Agent) {
    if agent.tracker.enabled() {
        agent.broadcast();
        return;
    }
    let mut conn = None;
    let result = probe(agent, &mut conn).await;
    apply(agent, result);
}

/// True when semi-sync commits have been blocked for long enough (§2.4).
pub(super) fn semi_sync_blocked(agent: &Agent) -> bool {
    let since = *agent
        .semi_sync_blocked_since
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    since.is_some_and(|s| s.elapsed() >= agent.config.semi_sync_blocked_after)
}

/// Types whose query service runs (vttablet's "serving types").
pub(super) fn serving_type(t: TabletType) -> bool {
    matches!(
        t,
        TabletType::Primary
            | TabletType::Replica
            | TabletType::Rdonly
            | TabletType::Experimental
            | TabletType::Drained
    )
}

/// The StreamHealth payload for a state.
pub(super) fn response(config: &AgentConfig, state: &TabletState) -> StreamHealthResponse {
    let tablet = &state.tablet;
    let tablet_type = TabletType::try_from(tablet.r#type).unwrap_or(TabletType::Unknown);
    let is_primary = tablet_type == TabletType::Primary;
    let lag = if is_primary { 0 } else { state.lag_seconds };
    let replication_healthy = is_primary
        || (state.health_error.is_empty()
            && Duration::from_secs(u64::from(lag)) <= config.unhealthy_threshold);
    let serving = serving_type(tablet_type)
        && state.mysql_reachable == Some(true)
        && !state.demoted
        && replication_healthy;
    let term = if is_primary {
        tablet.primary_term_start_time.as_ref().map_or(0, |t| t.seconds)
    } else {
        0
    };
    StreamHealthResponse {
        target: Some(Target {
            keyspace: tablet.keyspace.clone(),
            shard: tablet.shard.clone(),
            tablet_type: tablet.r#type,
            cell: config.cell.clone(),
        }),
        serving,
        primary_term_start_timestamp: term,
        realtime_stats: Some(RealtimeStats {
            health_error: if is_primary && state.mysql_reachable.is_some() {
                String::new()
            } else {
                state.health_error.clone()
            },
            replication_lag_seconds: lag,
            ..Default::default()
        }),
        tablet_alias: tablet.alias.clone(),
    }
}
