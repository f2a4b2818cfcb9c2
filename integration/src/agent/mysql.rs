//! MySQL access for the agent: bounded connections, vttablet's MariaDB
//! flavour statements, and parsing of `SHOW ALL SLAVES STATUS`.
//!
//! Every RPC opens its own connection (loopback connects take a few
//! milliseconds), so session state such as `sql_log_bin` never leaks and a
//! restarted server never hands us a dead pooled connection. Connecting is
//! bounded by the connect timeout and every statement by the statement
//! timeout, so a dead or frozen (SIGSTOP) MariaDB gives a clear
//! `UNAVAILABLE` error quickly; waits that are meant to block
//! (`MASTER_GTID_WAIT`) use [`MysqlConn::first_unbounded`] and are bounded by
//! the caller's deadline instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use vtorc::mysql::position::MariaDbGtidSet;
use vtorc::proto::replicationdata;

use super::error::{AgentError, AgentResult, from_mysql};
use super::position;

/// How long `stop_slave` waits for a killed replication IO thread to show
/// `Killed` before it issues `STOP SLAVE` anyway.
const KILLED_IO_THREAD_EXIT: Duration = Duration::from_millis(250);
/// The pause between a killed IO thread showing `Killed` and `STOP SLAVE`.
const KILLED_IO_THREAD_GRACE: Duration = Duration::from_millis(50);
/// How long a full `stop_slave` lets the SQL thread apply what the IO thread
/// received before it stops it anyway (see `stop_slave`).
const RELAY_LOG_DRAIN: Duration = Duration::from_secs(5);

/// The zero UUID vttablet reports as `source_uuid` on MariaDB.
pub const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// `io_state` / `sql_state` values of `replicationdata.Status`.
pub mod thread_state {
    /// Unknown.
    pub const UNKNOWN: i32 = 0;
    /// Stopped (`No`).
    pub const STOPPED: i32 = 1;
    /// Connecting (`Connecting`).
    pub const CONNECTING: i32 = 2;
    /// Running (`Yes`).
    pub const RUNNING: i32 = 3;
}

/// How to reach one MariaDB server.
#[derive(Clone, Debug)]
pub struct Mysql {
    /// Driver options (TCP, user, password).
    opts: Opts,
    /// `host:port`, for messages.
    addr: String,
    /// Bound on establishing a connection.
    connect_timeout: Duration,
    /// Bound on one ordinary statement.
    statement_timeout: Duration,
    /// When `stop_slave` had the replica side of semi-sync off.
    semi_sync_pauses: Arc<SemiSyncPauses>,
}

/// The windows in which `stop_slave` turns `rpl_semi_sync_slave_enabled`
/// off around a stop (a MariaDB work-around, see `stop_slave`). vttablet on
/// MySQL 8 never changes the variable there, so readers report it as it
/// was: a reading that may overlap a window counts as on.
#[derive(Debug, Default)]
pub struct SemiSyncPauses {
    /// Windows begun (counted before the variable goes off).
    begun: AtomicU64,
    /// Windows ended (counted after the variable is restored, or failed to be).
    ended: AtomicU64,
}

impl SemiSyncPauses {
    /// Taken before a reading: compare with [`SemiSyncPauses::overlapped`].
    pub fn before_reading(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    /// True when a window may have overlapped a reading that began after
    /// `ended_before` was taken: one began before now and had not ended
    /// when the reading began.
    pub fn overlapped(&self, ended_before: u64) -> bool {
        self.begun.load(Ordering::SeqCst) > ended_before
    }

    fn begin(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
}

impl Mysql {
    /// Describes a server reached over TCP.
    pub fn new(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Mysql {
        let opts = OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port)
            .user(Some(user.to_string()))
            .pass((!password.is_empty()).then(|| password.to_string()))
            .prefer_socket(false)
            .into();
        Mysql {
            opts,
            addr: format!("{host}:{port}"),
            connect_timeout,
            statement_timeout,
            semi_sync_pauses: Arc::default(),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Opens a connection with the default timeouts.
    pub async fn conn(&self) -> AgentResult<MysqlConn> {
        self.conn_with(self.connect_timeout, self.statement_timeout).await
    }

    /// Opens a connection with explicit timeouts (the health checker uses short ones).
    pub async fn conn_with(&self, connect: Duration, statement: Duration) -> AgentResult<MysqlConn> {
        match tokio::time::timeout(connect, Conn::new(self.opts.clone())).await {
            Ok(Ok(conn)) => Ok(MysqlConn {
                conn: Some(conn),
                addr: self.addr.clone(),
                timeout: statement,
                semi_sync_pauses: Arc::clone(&self.semi_sync_pauses),
            }),
            Ok(Err(e)) => Err(AgentError::MysqlUnreachable(format!(
                "cannot connect to mysql at {}: {e}",
                self.addr
            ))),
            Err(_) => Err(AgentError::MysqlUnreachable(format!(
                "cannot connect to mysql at {}: no answer within {connect:?}",
                self.addr
            ))),
        }
    }
}

/// One open connection. Dropping it closes the socket without a goodbye,
/// which is fine for the server.
#[derive(Debug)]
pub struct MysqlConn {
    /// The connection; `None` after a statement timed out (it is then unusable).
    conn: Option<Conn>,
    /// `host:port`, for messages.
    addr: String,
    /// Bound on one ordinary statement.
    timeout: Duration,
    /// Shared with every connection to this server (see [`SemiSyncPauses`]).
    semi_sync_pauses: Arc<SemiSyncPauses>,
}

impl MysqlConn {
    /// When `stop_slave` had the replica side of semi-sync off.
    pub fn semi_sync_pauses(&self) -> &SemiSyncPauses {
        &self.semi_sync_pauses
    }

    /// Takes the live connection out, or errors if an earlier statement hung.
    fn take(&mut self) -> AgentResult<Conn> {
        self.conn
            .take()
            .ok_or_else(|| AgentError::MysqlUnreachable(format!("mysql at {} stopped answering", self.addr)))
    }

    /// Puts the connection back after a statement that finished in time; a
    /// statement that timed out leaves the connection dropped.
    fn finish<T>(
        &mut self,
        conn: Conn,
        sql: &str,
        result: Result<Result<T, mysql_async::Error>, tokio::time::error::Elapsed>,
    ) -> AgentResult<T> {
        match result {
            Ok(r) => {
                self.conn = Some(conn);
                r.map_err(from_mysql)
            }
            Err(_) => Err(AgentError::MysqlUnreachable(format!(
                "mysql at {} did not answer {sql:?} within {:?}",
                self.addr, self.timeout
            ))),
        }
    }

    /// Runs one statement, discarding any result.
    pub async fn exec(&mut self, sql: &str) -> AgentResult<()> {
        let mut conn = self.take()?;
        let result = tokio::time::timeout(self.timeout, conn.query_drop(sql)).await;
        self.finish(conn, sql, result)
    }

    /// `STOP SLAVE` (or `STOP SLAVE IO_THREAD` when `io_only`), stopping
    /// the way MySQL 8's `STOP REPLICA` does: at once, without contacting
    /// the source.
    ///
    /// Two MariaDB deviations are worked around:
    /// - While its source is frozen or its packets are dropped, MariaDB's
    ///   `STOP SLAVE` does not interrupt the IO thread's blocked read; it
    ///   waits 2 s before signalling the thread again (measured: 2.00 s on
    ///   10.11). MySQL 8 shuts the socket down and returns at once. `KILL
    ///   CONNECTION` of the IO thread (`Slave_IO`, or `Connect` while it is
    ///   still connecting to a source that does not answer) interrupts it at
    ///   once (measured: under 1 ms); `STOP SLAVE` follows once the killed
    ///   thread has got on its way out (issued too early, it waits the 2 s).
    /// - When a semi-sync replica's IO thread ends, MariaDB opens a new
    ///   connection to the source to `KILL` the source's dump thread, bounded
    ///   by `rpl_semi_sync_slave_kill_conn_timeout` (default 5 s; a silent
    ///   source never answers it, so the stop lingers). MySQL 8's semi-sync
    ///   replica plugin does not: on IO thread end it only clears its status
    ///   and closes its own reply connection. MariaDB reads
    ///   `rpl_semi_sync_slave_enabled` at that moment, so it is turned off
    ///   around the stop and restored right after, whatever the stop's
    ///   outcome. It only decides whether the *next* IO thread start is
    ///   semi-sync, and no IO thread runs in between (the agent serialises
    ///   its replication actions); if the agent died in between, the replica
    ///   would come back without the replica side of semi-sync, which vtorc
    ///   reports and repairs (ReplicaSemiSyncMustBeSet). Readings of the
    ///   variable that may overlap the pause report it on, as vttablet on
    ///   MySQL 8 would (see [`SemiSyncPauses`]); vtorc once saw the pause
    ///   as a ReplicaSemiSyncMustBeSet problem.
    ///
    /// A third one concerns the relay log. MySQL 8 keeps it across `STOP
    /// REPLICA` / `START REPLICA` (auto-positioning asks the source only for
    /// what is neither executed nor retrieved), so events a replica received
    /// (and acknowledged, under semi-sync) but had not applied yet survive a
    /// restart, even if the source dies right after. MariaDB with GTID
    /// discards the relay log when replication starts again with both threads
    /// stopped (and on `CHANGE MASTER`), and fetches again from
    /// `gtid_slave_pos`: if the source is gone by then, those acknowledged
    /// events exist nowhere else (measured on 10.11: three received, unapplied
    /// rows gone after `STOP SLAVE; START SLAVE` with the source killed; kept
    /// when only the IO thread restarted while the SQL thread ran). So a full
    /// stop stops the IO thread first and lets a running SQL thread apply what
    /// was received (at most [`RELAY_LOG_DRAIN`]) before stopping it; the
    /// relay-log position reported afterwards is the same as without the wait.
    pub async fn stop_slave(&mut self, io_only: bool) -> AgentResult<()> {
        let semi_sync_replica = self.text("SELECT @@GLOBAL.rpl_semi_sync_slave_enabled").await? == "1";
        let stopped = if semi_sync_replica {
            let pauses = Arc::clone(&self.semi_sync_pauses);
            pauses.begin();
            let stopped = self.stop_io_thread_with_semi_sync_paused().await;
            pauses.end();
            stopped
        } else {
            self.kill_io_thread_and_stop().await
        };
        stopped?;
        if io_only {
            return Ok(());
        }
        self.drain_relay_log(RELAY_LOG_DRAIN).await?;
        self.exec("STOP SLAVE").await
    }

    /// [`MysqlConn::kill_io_thread_and_stop`] with the replica side of
    /// semi-sync off, restored whatever the stop's outcome.
    async fn stop_io_thread_with_semi_sync_paused(&mut self) -> AgentResult<()> {
        self.exec("SET GLOBAL rpl_semi_sync_slave_enabled = OFF").await?;
        let stopped = self.kill_io_thread_and_stop().await;
        self.exec("SET GLOBAL rpl_semi_sync_slave_enabled = ON").await?;
        stopped
    }

    /// With the IO thread stopped, waits up to `bound` for a running SQL
    /// thread to apply everything the IO thread received (`Gtid_IO_Pos`).
    async fn drain_relay_log(&mut self, bound: Duration) -> AgentResult<()> {
        let Some(status) = self.replication_status().await? else {
            return Ok(());
        };
        if status.status.sql_state != thread_state::RUNNING || status.io_pos.is_empty() {
            return Ok(());
        }
        let target = status.io_pos.to_string();
        let sql = format!(
            "SELECT MASTER_GTID_WAIT({}, {:.3})",
            quote(&target),
            bound.as_secs_f64()
        );
        let mut conn = self.take()?;
        let waited = tokio::time::timeout(
            bound + Duration::from_secs(1),
            conn.query_first::<Option<i64>, _>(sql.as_str()),
        )
        .await;
        let result = self.finish(conn, &sql, waited)?;
        if result.flatten() != Some(0) {
            tracing::warn!(
                target_position = %target,
                "the SQL thread did not apply the received relay log within {bound:?}; \
                 stopping it anyway (MariaDB fetches the rest again from the source)"
            );
        }
        Ok(())
    }

    /// Stops the IO thread (see `stop_slave`).
    async fn kill_io_thread_and_stop(&mut self) -> AgentResult<()> {
        // Only an IO thread that may be blocked on a silent source: reading
        // (`Waiting for master to send event`) or connecting. One that waits
        // to reconnect (its source refused or reset the connection) sleeps
        // interruptibly, and a plain `STOP SLAVE` ends it at once.
        let ids: Vec<Row> = self
            .rows(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE (COMMAND = 'Slave_IO' OR (USER = 'system user' AND COMMAND = 'Connect')) \
                 AND (STATE LIKE 'Waiting for master to send event%' OR STATE LIKE 'Connecting to master%')",
            )
            .await?;
        let mut killed = Vec::new();
        for row in ids {
            if let Some(Ok(id)) = row.get_opt::<u64, _>(0) {
                // The thread may end by itself meanwhile: ignore "unknown thread".
                if self.exec(&format!("KILL CONNECTION {id}")).await.is_ok() {
                    killed.push(id);
                }
            }
        }
        // A `STOP SLAVE` issued while the killed thread is still on its way
        // out may miss its exit and wait 2 s more (MariaDB 10.11, measured
        // on a cut-off source: in 1 of 10 tries when issued as soon as the
        // thread shows `Killed`, in about a third right after the KILL; none
        // in 14 tries with 30 ms between `Killed` and the stop). So: wait
        // until the killed thread shows `Killed` (or is gone), then a short
        // grace. A thread that does not get there in time is stopped anyway.
        let started = std::time::Instant::now();
        let list = killed.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        while !killed.is_empty() && started.elapsed() < KILLED_IO_THREAD_EXIT {
            let running: Option<u64> = self
                .first(&format!(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE ID IN ({list}) AND COMMAND <> 'Killed'"
                ))
                .await?;
            if running.unwrap_or(0) == 0 {
                tokio::time::sleep(KILLED_IO_THREAD_GRACE).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.exec("STOP SLAVE IO_THREAD").await
    }

    /// Runs a query and returns all rows.
    pub async fn rows(&mut self, sql: &str) -> AgentResult<Vec<Row>> {
        let mut conn = self.take()?;
        let result = tokio::time::timeout(self.timeout, conn.query::<Row, _>(sql)).await;
        self.finish(conn, sql, result)
    }

    /// Runs a query and returns the first row as `T`.
    pub async fn first<T: FromRow + Send + 'static>(&mut self, sql: &str) -> AgentResult<Option<T>> {
        let mut conn = self.take()?;
        let result = tokio::time::timeout(self.timeout, conn.query_first::<T, _>(sql)).await;
        self.finish(conn, sql, result)
    }

    /// Runs a query with no statement bound (the caller bounds it; if the
    /// caller gives up, the connection is dropped with the future).
    pub async fn first_unbounded<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> AgentResult<Option<T>> {
        let mut conn = self.take()?;
        let result = conn.query_first::<T, _>(sql).await;
        self.finish(conn, sql, Ok(result))
    }

    /// Runs one statement with no statement bound and returns the rows it
    /// affected (the caller bounds it; see `first_unbounded`).
    pub async fn exec_unbounded(&mut self, sql: &str) -> AgentResult<u64> {
        let mut conn = self.take()?;
        let result = conn.query_drop(sql).await.map(|()| conn.affected_rows());
        self.finish(conn, sql, Ok(result))
    }

    /// The server's id of this connection (`CONNECTION_ID()`), `None` once
    /// the connection was lost.
    pub fn id(&self) -> Option<u32> {
        self.conn.as_ref().map(Conn::id)
    }

    /// Reads one global variable or expression as text (NULL → empty).
    pub async fn text(&mut self, sql: &str) -> AgentResult<String> {
        let value: Option<Option<String>> = self.first(sql).await?;
        Ok(value.flatten().unwrap_or_default())
    }

    /// `SELECT @@GLOBAL.gtid_binlog_pos`: the executed position.
    pub async fn executed_position(&mut self) -> AgentResult<MariaDbGtidSet> {
        let text = self.text("SELECT @@GLOBAL.gtid_binlog_pos").await?;
        MariaDbGtidSet::parse(&text)
            .map_err(|e| AgentError::Internal(format!("bad gtid_binlog_pos {text:?}: {e}")))
    }

    /// `SHOW VARIABLES LIKE 'read_only'` is `ON`.
    pub async fn read_only(&mut self) -> AgentResult<bool> {
        let row: Option<(String, String)> = self.first("SHOW VARIABLES LIKE 'read_only'").await?;
        Ok(row.is_some_and(|(_, v)| v.eq_ignore_ascii_case("ON")))
    }

    /// One status variable from `SHOW GLOBAL STATUS` (None if absent).
    pub async fn status_var(&mut self, name: &str) -> AgentResult<Option<String>> {
        let row: Option<(String, String)> = self
            .first(&format!("SHOW GLOBAL STATUS LIKE {}", quote(name)))
            .await?;
        Ok(row.map(|(_, v)| v))
    }

    /// One system variable from `SHOW GLOBAL VARIABLES` (None if absent).
    pub async fn variable(&mut self, name: &str) -> AgentResult<Option<String>> {
        let row: Option<(String, String)> = self
            .first(&format!("SHOW GLOBAL VARIABLES LIKE {}", quote(name)))
            .await?;
        Ok(row.map(|(_, v)| v))
    }

    /// The default connection's row of `SHOW ALL SLAVES STATUS`, parsed;
    /// `None` when the server is not a replica.
    pub async fn replication_status(&mut self) -> AgentResult<Option<ReplicationStatus>> {
        let rows = self.rows("SHOW ALL SLAVES STATUS").await?;
        Ok(rows
            .iter()
            .find(|row| col(row, "Connection_name").is_empty())
            .map(ReplicationStatus::from_row))
    }

    /// The binlog coordinates and `gtid_binlog_pos`; `None` when binary
    /// logging is off.
    ///
    /// Deviation: vttablet reads `SHOW MASTER STATUS`. On MariaDB that
    /// statement (like `SHOW BINARY LOGS`) waits for the binlog lock, which
    /// a group-commit leader holds while an AFTER_SYNC commit waits for its
    /// semi-sync ACK; a blocked primary would then fail FullStatus and look
    /// unreachable instead of semi-sync-blocked (on MySQL it answers). The
    /// `Binlog_snapshot_file`/`_position` status variables give the same
    /// coordinates as of the last commit without that lock.
    pub async fn primary_status(&mut self) -> AgentResult<Option<replicationdata::PrimaryStatus>> {
        let rows = self
            .rows("SHOW GLOBAL STATUS WHERE Variable_name IN ('Binlog_snapshot_file', 'Binlog_snapshot_position')")
            .await?;
        let value = |name: &str| {
            rows.iter()
                .find(|r| col(r, "Variable_name").eq_ignore_ascii_case(name))
                .map(|r| col(r, "Value"))
                .unwrap_or_default()
        };
        let file = value("Binlog_snapshot_file");
        if file.is_empty() {
            return Ok(None);
        }
        let file_position = format!("FilePos/{file}:{}", value("Binlog_snapshot_position"));
        let position = self.executed_position().await?;
        Ok(Some(replicationdata::PrimaryStatus {
            position: position::encode(&position),
            file_position,
            server_uuid: String::new(),
        }))
    }

    /// Closes the connection politely (best effort).
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), conn.disconnect()).await;
        }
    }
}

/// Quotes `text` as an SQL string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A column as text; NULL or a missing column reads as empty.
pub fn col(row: &Row, name: &str) -> String {
    row.get_opt::<Option<String>, _>(name)
        .and_then(Result::ok)
        .flatten()
        .unwrap_or_default()
}

/// The column at `index` as text; NULL, missing or non-text reads as empty.
pub fn cell(row: &Row, index: usize) -> String {
    row.get_opt::<Option<String>, _>(index)
        .and_then(Result::ok)
        .flatten()
        .unwrap_or_default()
}

/// A numeric column; NULL, missing or unparsable reads as `None`.
pub fn col_u64(row: &Row, name: &str) -> Option<u64> {
    col(row, name).trim().parse().ok()
}

/// One parsed row of `SHOW ALL SLAVES STATUS`.
#[derive(Clone, Debug)]
pub struct ReplicationStatus {
    /// The row as vttablet reports it.
    pub status: replicationdata::Status,
    /// `Gtid_Slave_Pos`: what the SQL thread applied.
    pub slave_pos: MariaDbGtidSet,
    /// `Gtid_IO_Pos`: what the IO thread received.
    pub io_pos: MariaDbGtidSet,
    /// `Slave_heartbeat_period` in seconds.
    pub heartbeat_period: f64,
}

impl ReplicationStatus {
    /// Parses one row (unparsable GTID columns read as empty).
    pub fn from_row(row: &Row) -> ReplicationStatus {
        let slave_pos = MariaDbGtidSet::parse(&col(row, "Gtid_Slave_Pos")).unwrap_or_default();
        let io_pos = MariaDbGtidSet::parse(&col(row, "Gtid_IO_Pos")).unwrap_or_default();
        let lag = col_u64(row, "Seconds_Behind_Master");
        let thread = |name: &str| match col(row, name).as_str() {
            "Yes" => thread_state::RUNNING,
            "Connecting" => thread_state::CONNECTING,
            "No" => thread_state::STOPPED,
            _ => thread_state::UNKNOWN,
        };
        let using_gtid = !matches!(col(row, "Using_Gtid").as_str(), "" | "No");
        let filters = [
            "Replicate_Do_DB",
            "Replicate_Ignore_DB",
            "Replicate_Do_Table",
            "Replicate_Ignore_Table",
            "Replicate_Wild_Do_Table",
            "Replicate_Wild_Ignore_Table",
            "Replicate_Do_Domain_Ids",
            "Replicate_Ignore_Domain_Ids",
        ];
        let status = replicationdata::Status {
            position: position::encode(&slave_pos),
            replication_lag_seconds: lag.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
            replication_lag_unknown: lag.is_none(),
            source_host: col(row, "Master_Host"),
            source_port: col_u64(row, "Master_Port")
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            connect_retry: col_u64(row, "Connect_Retry")
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            relay_log_position: position::encode(&relay_log_pos(&slave_pos, &io_pos)),
            file_position: format!(
                "FilePos/{}:{}",
                col(row, "Relay_Master_Log_File"),
                col(row, "Exec_Master_Log_Pos")
            ),
            relay_log_source_binlog_equivalent_position: format!(
                "FilePos/{}:{}",
                col(row, "Master_Log_File"),
                col(row, "Read_Master_Log_Pos")
            ),
            relay_log_file_position: format!(
                "FilePos/{}:{}",
                col(row, "Relay_Log_File"),
                col(row, "Relay_Log_Pos")
            ),
            source_server_id: col_u64(row, "Master_Server_Id")
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            source_uuid: ZERO_UUID.to_string(),
            io_state: thread("Slave_IO_Running"),
            last_io_error: col(row, "Last_IO_Error"),
            sql_state: thread("Slave_SQL_Running"),
            last_sql_error: col(row, "Last_SQL_Error"),
            source_user: col(row, "Master_User"),
            sql_delay: col_u64(row, "SQL_Delay")
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            auto_position: using_gtid,
            using_gtid,
            has_replication_filters: filters.iter().any(|f| !col(row, f).is_empty()),
            ssl_allowed: col(row, "Master_SSL_Allowed") == "Yes",
            ..Default::default()
        };
        let heartbeat_period = col(row, "Slave_heartbeat_period").trim().parse().unwrap_or(0.0);
        ReplicationStatus {
            status,
            slave_pos,
            io_pos,
            heartbeat_period,
        }
    }

    /// What the relay log holds: see [`relay_log_pos`].
    pub fn relay_log_pos(&self) -> MariaDbGtidSet {
        relay_log_pos(&self.slave_pos, &self.io_pos)
    }

    /// IO thread running, or connecting without an error.
    pub fn io_healthy(&self) -> bool {
        self.status.io_state == thread_state::RUNNING
            || (self.status.io_state == thread_state::CONNECTING && self.status.last_io_error.is_empty())
    }

    /// SQL thread running.
    pub fn sql_healthy(&self) -> bool {
        self.status.sql_state == thread_state::RUNNING
    }

    /// Both threads healthy.
    pub fn healthy(&self) -> bool {
        self.io_healthy() && self.sql_healthy()
    }

    /// A source is configured (a non-empty host).
    pub fn has_source(&self) -> bool {
        !self.status.source_host.is_empty()
    }
}

/// What a MariaDB replica's relay log holds, as its `relay_log_position`:
/// MariaDB has no retrieved-GTID set, so it is everything applied
/// (`Gtid_Slave_Pos`) plus everything the IO thread received (`Gtid_IO_Pos`).
/// Per domain the higher sequence wins; on equal sequences the applied GTID
/// is kept (plain [`MariaDbGtidSet::union`] would keep the higher server id).
pub fn relay_log_pos(applied: &MariaDbGtidSet, received: &MariaDbGtidSet) -> MariaDbGtidSet {
    applied.union(&received.subtract(applied))
}

/// Vitess's "not a replica" error text.
pub const NO_REPLICATION_STATUS: &str = "no replication status";

/// The error for a server with no replication configured.
pub fn not_a_replica() -> AgentError {
    AgentError::Mysql(format!("{NO_REPLICATION_STATUS} (errno 2002) (sqlstate HY000)"))
}

/// True when `e` is the "not a replica" error.
pub fn is_not_a_replica(e: &AgentError) -> bool {
    e.message().contains(NO_REPLICATION_STATUS)
}

/// The `CHANGE MASTER TO` of vttablet's MariaDB flavour.
pub fn change_master_sql(
    host: &str,
    port: i32,
    user: &str,
    password: &str,
    connect_retry: Duration,
    heartbeat_interval: f64,
) -> String {
    let mut sql = format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, MASTER_PASSWORD = {}, \
         MASTER_CONNECT_RETRY = {}",
        quote(host),
        quote(user),
        quote(password),
        connect_retry.as_secs().max(1),
    );
    if heartbeat_interval > 0.0 {
        sql.push_str(&format!(", MASTER_HEARTBEAT_PERIOD = {heartbeat_interval}"));
    }
    sql.push_str(", MASTER_USE_GTID = current_pos");
    sql
}

/// True for the MariaDB errors that mean the replica metadata cannot be
/// used (MySQL's 1871/1872 family; MariaDB reports 1200 "misconfigured" and
/// 1872 "could not initialize master info structure" for it).
pub fn is_metadata_init_error(e: &AgentError) -> bool {
    let m = e.message();
    m.contains("(errno 1871)") || m.contains("(errno 1872)") || m.contains("(errno 1201)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> MariaDbGtidSet {
        MariaDbGtidSet::parse(text).expect("valid list")
    }

    #[test]
    fn relay_log_position_is_applied_plus_received_keeping_the_applied_gtid_on_a_tie() {
        assert_eq!(
            relay_log_pos(&set("0-100-11,1-5-3"), &set("0-101-12,2-7-1")),
            set("0-101-12,1-5-3,2-7-1")
        );
        assert_eq!(relay_log_pos(&set("0-100-12"), &set("0-101-11")), set("0-100-12"));
        assert_eq!(relay_log_pos(&set("0-100-12"), &set("0-101-12")), set("0-100-12"));
        assert_eq!(relay_log_pos(&set("0-101-12"), &set("0-100-12")), set("0-101-12"));
        assert_eq!(relay_log_pos(&set(""), &set("0-100-3")), set("0-100-3"));
    }

    #[test]
    fn a_reading_that_may_overlap_a_semi_sync_pause_counts_as_paused() {
        let pauses = SemiSyncPauses::default();
        // No pause at all.
        let r = pauses.before_reading();
        assert!(!pauses.overlapped(r));
        // A pause begun during the reading.
        let r = pauses.before_reading();
        pauses.begin();
        assert!(pauses.overlapped(r));
        // A reading begun during that pause, ending after it ended.
        let r = pauses.before_reading();
        pauses.end();
        assert!(pauses.overlapped(r));
        // A reading begun after it ended.
        let r = pauses.before_reading();
        assert!(!pauses.overlapped(r));
    }
}
