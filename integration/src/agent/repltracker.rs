//! vttablet's replication tracker in heartbeat mode (`--heartbeat-enable`,
//! `--heartbeat-interval`; vttablet's `repltracker` package).
//!
//! * Writer: while the tablet is a serving PRIMARY, every interval it
//!   upserts this shard's row of `_vt.heartbeat` (`ts` = now in ns,
//!   `tabletUid`, `keyspaceShard` = `<keyspace>:<shard>`) on its own
//!   connection. Writes run one at a time: a write blocked (e.g. waiting for
//!   a semi-sync ACK) delays the next tick instead of piling up, and blocks
//!   nothing else. Connecting is bounded by the interval (vttablet bounds
//!   taking a pooled connection the same way); the statement itself is not
//!   bounded, but stopping the writer kills its connection (`KILL`, retried
//!   every 100 ms until the write returned), as vttablet does.
//! * Reader: on non-primaries, every interval it reads `ts` of this
//!   shard's row (bounded by the interval); lag = now − ts. Its status is
//!   the last read's error if it failed, "no heartbeat received in over 2x
//!   the heartbeat interval" when no read succeeded for two intervals,
//!   else the last lag.
//!
//! The interval is capped at 1 s, as vttablet caps it.
//!
//! Deviations:
//! * The agent writes as its own MariaDB user (vttablet uses the app
//!   user). That user bypasses `read_only`, so the upsert is guarded with
//!   `WHERE @@global.read_only = 0` and writing no row counts as a failed
//!   write: like vttablet's app-user write under `super_read_only`, a
//!   read-only server gets no heartbeat.
//! * vttablet keeps the writer open while a PRIMARY is not serving
//!   (`unservePrimary`) and its writes fail once `super_read_only` is on.
//!   Here the writer stops as soon as the primary stops serving, before
//!   `read_only` goes on (see `reparent.rs`, fencing), so no heartbeat can
//!   land on a demoted primary between "not serving" and "read-only".
//! * A failed write on the primary triggers the health checker's
//!   reachability probe, as a failed read does on replicas (vttablet's
//!   read pool reports connection errors to `CheckMySQL`): in the test
//!   world no application query goes through the agent to notice a dead
//!   MariaDB first.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Agent;
use super::error::{AgentError, AgentResult};
use super::mysql::{MysqlConn, quote};

/// vttablet's `_vt.heartbeat` (sidecar schema `heartbeat.sql`).
pub(super) const HEARTBEAT_TABLE: &str = "CREATE TABLE IF NOT EXISTS _vt.heartbeat (\
       keyspaceShard VARBINARY(256) NOT NULL, \
       tabletUid INT UNSIGNED NOT NULL, \
       ts BIGINT UNSIGNED NOT NULL, \
       PRIMARY KEY (keyspaceShard)) ENGINE=InnoDB CHARSET=utf8mb4";

/// vttablet's cap on `--heartbeat-interval`.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// vttablet's default `--heartbeat-interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long stopping the writer keeps killing an outstanding write.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// What the tracker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Neither writing nor reading (heartbeats off, or a PRIMARY that is
    /// not serving).
    Idle,
    /// Writing heartbeats (serving PRIMARY).
    Writing,
    /// Reading heartbeats (non-primary).
    Reading,
}

/// The writer's gate: whether a write may start, and the connection of the
/// write in flight.
#[derive(Debug, Default)]
struct WriterSlot {
    /// A write may start.
    open: bool,
    /// Connection id of the write in flight.
    in_flight: Option<u32>,
}

/// What the reader last saw.
#[derive(Debug, Default)]
struct ReaderState {
    /// Lag measured by the last successful read.
    lag: Duration,
    /// When the last read succeeded (or the reader opened).
    at: Option<Instant>,
    /// The last read's error, cleared by a successful read.
    error: Option<String>,
}

/// The tracker's shared state.
#[derive(Debug)]
pub(super) struct ReplTracker {
    /// `--heartbeat-enable`.
    enabled: bool,
    /// `--heartbeat-interval`, capped.
    interval: Duration,
    /// `<keyspace>:<shard>`.
    keyspace_shard: String,
    /// This tablet's uid.
    uid: u32,
    /// The current mode; the tasks follow it.
    mode: watch::Sender<Mode>,
    /// The writer's gate.
    writer: Mutex<WriterSlot>,
    /// The reader's last result.
    reader: Mutex<ReaderState>,
}

/// Locks a mutex, ignoring poisoning (every update is a plain assignment).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now in nanoseconds since the epoch.
fn now_ns() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

impl ReplTracker {
    /// A tracker for one tablet; `interval` is capped at 1 s (0 means the default).
    pub(super) fn new(enabled: bool, interval: Duration, keyspace: &str, shard: &str, uid: u32) -> Self {
        let interval = if interval.is_zero() {
            DEFAULT_HEARTBEAT_INTERVAL
        } else {
            interval.min(MAX_HEARTBEAT_INTERVAL)
        };
        let (mode, _) = watch::channel(Mode::Idle);
        ReplTracker {
            enabled,
            interval,
            keyspace_shard: format!("{keyspace}:{shard}"),
            uid,
            mode,
            writer: Mutex::new(WriterSlot::default()),
            reader: Mutex::new(ReaderState::default()),
        }
    }

    /// Whether heartbeat mode is on (else StreamHealth lag comes from the poller).
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Switches mode: `primary` (and `serving`) opens the writer, a
    /// non-primary opens the reader. Closing the writer here only stops new
    /// writes; [`ReplTracker::stop_writer`] also ends the one in flight.
    pub(super) fn set_mode(&self, primary: bool, serving: bool) {
        let mode = match (self.enabled, primary, serving) {
            (false, _, _) => Mode::Idle,
            (true, true, true) => Mode::Writing,
            (true, true, false) => Mode::Idle,
            (true, false, _) => Mode::Reading,
        };
        locked(&self.writer).open = mode == Mode::Writing;
        self.mode.send_if_modified(|m| {
            if *m == mode {
                return false;
            }
            if mode == Mode::Reading {
                // vttablet's reader Open: the staleness clock restarts.
                let mut r = locked(&self.reader);
                r.at = Some(Instant::now());
            }
            *m = mode;
            true
        });
    }

    /// The reader's status (vttablet's `heartbeatReader.Status`): the lag,
    /// or why there is none.
    pub(super) fn status(&self) -> Result<Duration, String> {
        let r = locked(&self.reader);
        if let Some(e) = &r.error {
            return Err(e.clone());
        }
        if r.at.is_some_and(|at| at.elapsed() > 2 * self.interval) {
            return Err("no heartbeat received in over 2x the heartbeat interval".to_string());
        }
        Ok(r.lag)
    }

    /// Stops the writer: no new write starts, and a write in flight is
    /// killed (its connection, retried every 100 ms) until it returned.
    /// Fails if it is still in flight after a bound.
    pub(super) async fn stop_writer(&self, agent: &Agent) -> AgentResult<()> {
        locked(&self.writer).open = false;
        let until = Instant::now() + STOP_BOUND;
        let mut killer: Option<MysqlConn> = None;
        loop {
            let Some(id) = locked(&self.writer).in_flight else {
                return Ok(());
            };
            if Instant::now() >= until {
                return Err(AgentError::Internal(format!(
                    "the heartbeat write on connection {id} did not end within {STOP_BOUND:?}"
                )));
            }
            let conn = match killer.as_mut() {
                Some(c) => c,
                None => killer.insert(agent.mysql.conn().await?),
            };
            // "Unknown thread id": the write ended meanwhile.
            if let Err(e) = conn.exec(&format!("KILL CONNECTION {id}")).await {
                debug!(tablet = %agent.alias, "kill heartbeat write {id}: {e}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One write (the caller checked the gate and registered the connection).
    fn upsert_sql(&self) -> String {
        format!(
            "INSERT INTO _vt.heartbeat (ts, tabletUid, keyspaceShard) \
             SELECT {ts}, {uid}, {ks} FROM DUAL WHERE @@global.read_only = 0 \
             ON DUPLICATE KEY UPDATE ts=VALUES(ts), tabletUid=VALUES(tabletUid)",
            ts = now_ns(),
            uid = self.uid,
            ks = quote(&self.keyspace_shard),
        )
    }

    /// vttablet's fetch of the most recent heartbeat.
    fn fetch_sql(&self) -> String {
        format!(
            "SELECT ts FROM _vt.heartbeat WHERE keyspaceShard={}",
            quote(&self.keyspace_shard)
        )
    }
}

/// The pace of the writer and the reader: waits until the mode is `want`,
/// then for each tick of the tracker's interval (the first at once) while
/// it stays `want`; a change of mode drops the ticks (`ticks` keeps them
/// between calls) and waits for `want` again. `false` once the agent stops
/// or the mode's sender is gone.
async fn next_tick(
    agent: &Agent,
    mode: &mut watch::Receiver<Mode>,
    want: Mode,
    ticks: &mut Option<tokio::time::Interval>,
) -> bool {
    loop {
        let interval = match ticks {
            Some(interval) => interval,
            None => {
                tokio::select! {
                    _ = agent.cancel.cancelled() => return false,
                    r = mode.wait_for(|m| *m == want) => if r.is_err() { return false },
                }
                let mut interval = tokio::time::interval(agent.tracker.interval);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.insert(interval)
            }
        };
        tokio::select! {
            _ = agent.cancel.cancelled() => return false,
            _ = interval.tick() => {}
        }
        if *mode.borrow() == want {
            return true;
        }
        *ticks = None;
    }
}

/// The writer task: writes while the mode is `Writing`.
pub(super) async fn run_writer(agent: std::sync::Arc<Agent>) {
    let tracker = &agent.tracker;
    let mut mode = tracker.mode.subscribe();
    let mut conn: Option<MysqlConn> = None;
    let mut failing = false;
    let mut ticks = None;
    while next_tick(&agent, &mut mode, Mode::Writing, &mut ticks).await {
        match write_once(&agent, &mut conn).await {
            Ok(true) => {
                if failing {
                    info!(tablet = %agent.alias, "heartbeat writes succeed again");
                }
                failing = false;
            }
            Ok(false) => {}
            Err(e) => {
                if !failing {
                    warn!(tablet = %agent.alias, "heartbeat write failed: {e}");
                }
                failing = true;
                if e.is_mysql_unreachable() {
                    conn = None;
                    agent.health_wake.notify_one();
                }
            }
        }
    }
}

/// One heartbeat write; `Ok(false)` when the gate was closed.
async fn write_once(agent: &Agent, cached: &mut Option<MysqlConn>) -> AgentResult<bool> {
    let tracker = &agent.tracker;
    let interval = tracker.interval;
    let conn = match cached {
        Some(c) => c,
        None => cached.insert(
            agent
                .mysql
                .conn_with(interval, agent.config.mysql_statement_timeout)
                .await?,
        ),
    };
    let Some(id) = conn.id() else {
        return Err(AgentError::MysqlUnreachable(
            "heartbeat connection lost".to_string(),
        ));
    };
    {
        let mut slot = locked(&tracker.writer);
        if !slot.open {
            return Ok(false);
        }
        slot.in_flight = Some(id);
    }
    let result = conn.exec_unbounded(&tracker.upsert_sql()).await;
    locked(&tracker.writer).in_flight = None;
    match result {
        Ok(0) => Err(AgentError::FailedPrecondition(
            "heartbeat not written: the server is read-only (read_only=ON)".to_string(),
        )),
        Ok(_) => Ok(true),
        Err(e) => Err(e.wrap(&format!(
            "heartbeatWriter failed to execute fetch on connection {id}"
        ))),
    }
}

/// The reader task: reads while the mode is `Reading`.
pub(super) async fn run_reader(agent: std::sync::Arc<Agent>) {
    let tracker = &agent.tracker;
    let mut mode = tracker.mode.subscribe();
    let mut conn: Option<MysqlConn> = None;
    let mut ticks = None;
    while next_tick(&agent, &mut mode, Mode::Reading, &mut ticks).await {
        let result = read_once(&agent, &mut conn).await;
        let mut r = locked(&tracker.reader);
        match result {
            Ok(lag) => {
                r.lag = lag;
                r.at = Some(Instant::now());
                r.error = None;
            }
            Err((e, reachability)) => {
                if r.error.is_none() {
                    debug!(tablet = %agent.alias, "heartbeat read failed: {e}");
                }
                r.error = Some(e);
                if reachability {
                    conn = None;
                    agent.health_wake.notify_one();
                }
            }
        }
    }
}

/// One read: the lag, or the error text and whether it was a connection
/// problem (which triggers a reachability check).
async fn read_once(agent: &Agent, cached: &mut Option<MysqlConn>) -> Result<Duration, (String, bool)> {
    let tracker = &agent.tracker;
    let interval = tracker.interval;
    let fetched = async {
        let conn = match cached {
            Some(c) => c,
            None => cached.insert(agent.mysql.conn_with(interval, interval).await?),
        };
        conn.rows(&tracker.fetch_sql()).await
    }
    .await;
    let rows = fetched.map_err(|e| {
        let connection = e.is_mysql_unreachable();
        (format!("failed to read most recent heartbeat: {e}"), connection)
    })?;
    if rows.len() != 1 {
        return Err((
            format!(
                "failed to parse heartbeat result: failed to read heartbeat: writer query did not result in 1 row. Got {}",
                rows.len()
            ),
            false,
        ));
    }
    let ts = super::mysql::col_u64(&rows[0], "ts").ok_or_else(|| {
        (
            "failed to parse heartbeat result: ts is not a number".to_string(),
            false,
        )
    })?;
    Ok(Duration::from_nanos(now_ns().saturating_sub(ts)))
}
