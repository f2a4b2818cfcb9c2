//! Read-only RPCs (§3): no action lock; all but Ping and
//! GetGlobalStatusVars pass the grants gate.
//!
//! MariaDB notes (deviations documented here):
//! * FullStatus reads each value with its own statement (vttablet's
//!   per-query path), using MariaDB's names (`log_slave_updates`,
//!   `rpl_semi_sync_master_*`). `server_uuid`, `gtid_purged` and `gtid_mode`
//!   are empty (MariaDB has none of them). `super_read_only` reports
//!   `read_only`, which on 10.11 blocks every user without `READ ONLY ADMIN`.
//!   `semi_sync_wait_for_replica_count` is 1: MariaDB has no such variable
//!   and always waits for exactly one ACK.
//! * GetGlobalStatusVars reads `information_schema.GLOBAL_STATUS`
//!   (the test servers run with `performance_schema=OFF`).
//! * WaitForPosition uses `MASTER_GTID_WAIT`, which tracks only replicated
//!   transactions (`gtid_slave_pos`); the "already contains" check against
//!   the executed position comes first, as in vttablet.

use std::collections::BTreeMap;

use tokio::time::Instant;
use vtorc::mysql::position::MariaDbGtidSet;
use vtorc::proto::replicationdata::{self, Configuration, FullStatus};
use vtorc::proto::tabletmanagerdata as tm;

use super::error::{AgentError, AgentResult};
use super::mysql::{MysqlConn, not_a_replica, quote};
use super::position;
use super::{Agent, health};

impl Agent {
    /// Ping: echoes the payload.
    pub(super) async fn ping(
        &self,
        req: tm::PingRequest,
        _deadline: Option<Instant>,
    ) -> AgentResult<tm::PingResponse> {
        Ok(tm::PingResponse { payload: req.payload })
    }

    /// FullStatus (§3). A stalled disk (see `disk.rs`) answers only
    /// `disk_stalled=true`, without touching MySQL and without an error.
    pub(super) async fn full_status(
        &self,
        _req: tm::FullStatusRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::FullStatusResponse> {
        self.wait_grants(deadline).await?;
        if self.disk_stalled() {
            return Ok(tm::FullStatusResponse {
                status: Some(FullStatus {
                    disk_stalled: true,
                    ..FullStatus::default()
                }),
            });
        }
        let mut conn = self.mysql.conn().await?;
        let status = self.collect_full_status(&mut conn).await?;
        conn.close().await;
        Ok(tm::FullStatusResponse { status: Some(status) })
    }

    /// Gathers every FullStatus field MariaDB can answer.
    async fn collect_full_status(&self, conn: &mut MysqlConn) -> AgentResult<FullStatus> {
        let server_id: Option<u32> = conn.first("SELECT @@global.server_id").await?;
        let replication = conn.replication_status().await?;
        let primary_status = conn.primary_status().await?;
        let (version, version_comment): (String, String) = conn
            .first("SELECT @@global.version, @@global.version_comment")
            .await?
            .unwrap_or_default();
        let read_only = conn.read_only().await?;
        let (binlog_format, log_bin, log_slave_updates, binlog_row_image): (String, i64, i64, String) = conn
            .first(
                "SELECT @@global.binlog_format, @@global.log_bin, @@global.log_slave_updates, \
                 @@global.binlog_row_image",
            )
            .await?
            .unwrap_or_default();
        let semi = SemiSyncReadings::read(conn).await;
        let replica_net_timeout = conn
            .variable("slave_net_timeout")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let replication_configuration =
            replication
                .as_ref()
                .filter(|r| r.has_source())
                .map(|r| Configuration {
                    heartbeat_interval: r.heartbeat_period,
                    replica_net_timeout,
                });
        Ok(FullStatus {
            server_id: server_id.unwrap_or(0),
            server_uuid: String::new(),
            replication_status: replication.map(|r| r.status),
            primary_status,
            gtid_purged: String::new(),
            version: short_version(&version),
            version_comment,
            read_only,
            gtid_mode: String::new(),
            binlog_format,
            binlog_row_image,
            log_bin_enabled: log_bin == 1,
            log_replica_updates: log_slave_updates == 1,
            semi_sync_primary_enabled: semi.primary_enabled,
            semi_sync_replica_enabled: semi.replica_enabled,
            semi_sync_primary_status: semi.primary_status,
            semi_sync_replica_status: semi.replica_status,
            semi_sync_primary_clients: semi.primary_clients,
            semi_sync_primary_timeout: semi.primary_timeout,
            semi_sync_wait_for_replica_count: 1,
            super_read_only: read_only,
            replication_configuration,
            // A stalled disk was answered before any of this was read.
            disk_stalled: false,
            semi_sync_blocked: health::semi_sync_blocked(self),
            tablet_type: self.tablet().r#type,
        })
    }

    /// ReplicationStatus: `SHOW ALL SLAVES STATUS`; not a replica → error.
    pub(super) async fn replication_status(
        &self,
        _req: tm::ReplicationStatusRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ReplicationStatusResponse> {
        self.wait_grants(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let status = conn.replication_status().await?.ok_or_else(not_a_replica)?;
        Ok(tm::ReplicationStatusResponse {
            status: Some(status.status),
        })
    }

    /// PrimaryStatus: binlog status + executed position; works on replicas too.
    pub(super) async fn primary_status(
        &self,
        _req: tm::PrimaryStatusRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::PrimaryStatusResponse> {
        self.wait_grants(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let status = conn
            .primary_status()
            .await?
            .ok_or_else(|| AgentError::Mysql("no master status (errno 2002) (sqlstate HY000)".to_string()))?;
        Ok(tm::PrimaryStatusResponse { status: Some(status) })
    }

    /// PrimaryPosition: the executed position (`gtid_binlog_pos`).
    pub(super) async fn primary_position(
        &self,
        _req: tm::PrimaryPositionRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::PrimaryPositionResponse> {
        self.wait_grants(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let position = conn.executed_position().await?;
        Ok(tm::PrimaryPositionResponse {
            position: position::encode(&position),
        })
    }

    /// WaitForPosition: success at once if the executed position contains
    /// the target, else `MASTER_GTID_WAIT` bounded by the deadline.
    pub(super) async fn wait_for_position(
        &self,
        req: tm::WaitForPositionRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::WaitForPositionResponse> {
        self.wait_grants(deadline).await?;
        let target = position::decode(&req.position)?;
        self.wait_position(&target, deadline).await?;
        Ok(tm::WaitForPositionResponse {})
    }

    /// Waits until this server has applied `target` or `deadline` passes.
    pub(super) async fn wait_position(
        &self,
        target: &MariaDbGtidSet,
        deadline: Option<Instant>,
    ) -> AgentResult<()> {
        let mut conn = self.mysql.conn().await?;
        if conn.executed_position().await?.contains(target) {
            return Ok(());
        }
        let timed_out = || {
            AgentError::DeadlineExceeded(format!(
                "timed out waiting for position {}",
                position::encode(target)
            ))
        };
        let sql = match deadline {
            Some(d) => {
                let remaining = d.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(timed_out());
                }
                format!(
                    "SELECT MASTER_GTID_WAIT({}, {:.3})",
                    quote(&target.to_string()),
                    remaining.as_secs_f64()
                )
            }
            None => format!("SELECT MASTER_GTID_WAIT({})", quote(&target.to_string())),
        };
        let wait = conn.first_unbounded::<Option<i64>>(&sql);
        let result = match deadline {
            // A little slack past the server-side timeout: the server returns -1 first.
            Some(d) => tokio::time::timeout_at(d + std::time::Duration::from_millis(20), wait)
                .await
                .map_err(|_| timed_out())?,
            None => wait.await,
        };
        match result.map_err(|e| e.wrap("WaitSourcePos failed"))? {
            Some(Some(0)) => Ok(()),
            Some(Some(-1)) => Err(timed_out()),
            other => Err(AgentError::Internal(format!(
                "WaitSourcePos failed: MASTER_GTID_WAIT returned {other:?}"
            ))),
        }
    }

    /// GetGlobalStatusVars: all status variables, or the named ones.
    pub(super) async fn get_global_status_vars(
        &self,
        req: tm::GetGlobalStatusVarsRequest,
        _deadline: Option<Instant>,
    ) -> AgentResult<tm::GetGlobalStatusVarsResponse> {
        let mut conn = self.mysql.conn().await?;
        let mut sql =
            "SELECT variable_name, variable_value FROM information_schema.global_status".to_string();
        if !req.variables.is_empty() {
            let names: Vec<String> = req.variables.iter().map(|v| quote(v)).collect();
            sql.push_str(&format!(" WHERE variable_name IN ({})", names.join(", ")));
        }
        let rows = conn.rows(&sql).await?;
        let mut status_values = BTreeMap::new();
        for row in &rows {
            let name = super::mysql::col(row, "variable_name");
            let value = super::mysql::col(row, "variable_value");
            // MariaDB upper-cases the names; match what the caller asked for.
            let key = req
                .variables
                .iter()
                .find(|v| v.eq_ignore_ascii_case(&name))
                .cloned()
                .unwrap_or(name);
            status_values.insert(key, value);
        }
        Ok(tm::GetGlobalStatusVarsResponse {
            status_values: status_values.into_iter().collect(),
        })
    }

    /// ReadReparentJournalInfo: the number of journal rows.
    pub(super) async fn read_reparent_journal_info(
        &self,
        _req: tm::ReadReparentJournalInfoRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ReadReparentJournalInfoResponse> {
        self.wait_grants(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let rows = conn.rows("SELECT COUNT(*) FROM _vt.reparent_journal").await?;
        if rows.len() != 1 {
            return Err(AgentError::Internal(format!(
                "unexpected rows when reading reparent journal, got {}",
                rows.len()
            )));
        }
        let count: i64 = super::mysql::cell(&rows[0], 0).parse().unwrap_or(0);
        Ok(tm::ReadReparentJournalInfoResponse {
            length: i32::try_from(count).unwrap_or(i32::MAX),
        })
    }
}

/// Semi-sync variables and status; read errors count as off/0, as in vttablet.
#[derive(Debug, Default)]
pub(super) struct SemiSyncReadings {
    /// `rpl_semi_sync_master_enabled`.
    pub primary_enabled: bool,
    /// `rpl_semi_sync_slave_enabled`.
    pub replica_enabled: bool,
    /// `Rpl_semi_sync_master_status`.
    pub primary_status: bool,
    /// `Rpl_semi_sync_slave_status`.
    pub replica_status: bool,
    /// `Rpl_semi_sync_master_clients`.
    pub primary_clients: u32,
    /// `rpl_semi_sync_master_timeout` (ms).
    pub primary_timeout: u64,
}

impl SemiSyncReadings {
    /// Reads them all.
    pub async fn read(conn: &mut MysqlConn) -> SemiSyncReadings {
        let ended_before = conn.semi_sync_pauses().before_reading();
        let vars = conn
            .rows("SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%'")
            .await
            .unwrap_or_default();
        let paused = conn.semi_sync_pauses().overlapped(ended_before);
        let status = conn
            .rows("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%'")
            .await
            .unwrap_or_default();
        let lookup = |rows: &[mysql_async::Row], name: &str| {
            rows.iter()
                .find(|r| super::mysql::cell(r, 0).eq_ignore_ascii_case(name))
                .map(|r| super::mysql::cell(r, 1))
                .unwrap_or_default()
        };
        let on = |v: String| v.eq_ignore_ascii_case("ON") || v == "1";
        SemiSyncReadings {
            primary_enabled: on(lookup(&vars, "rpl_semi_sync_master_enabled")),
            replica_enabled: paused || on(lookup(&vars, "rpl_semi_sync_slave_enabled")),
            primary_status: on(lookup(&status, "Rpl_semi_sync_master_status")),
            replica_status: on(lookup(&status, "Rpl_semi_sync_slave_status")),
            primary_clients: lookup(&status, "Rpl_semi_sync_master_clients")
                .parse()
                .unwrap_or(0),
            primary_timeout: lookup(&vars, "rpl_semi_sync_master_timeout").parse().unwrap_or(0),
        }
    }

    /// Copies the flags into a replication status (newest vttablet does this
    /// for StopReplicationAndGetStatus's `before`).
    pub fn fill(&self, status: &mut replicationdata::Status) {
        status.semi_sync_primary_enabled = self.primary_enabled;
        status.semi_sync_replica_enabled = self.replica_enabled;
        status.semi_sync_primary_status = self.primary_status;
        status.semi_sync_replica_status = self.replica_status;
    }
}

/// `10.11.19-MariaDB-0+deb12u1-log` → `10.11.19`.
fn short_version(full: &str) -> String {
    let numeric: String = full
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    numeric.split('.').take(3).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_reduced_to_major_minor_patch() {
        assert_eq!(short_version("10.11.19-MariaDB-0+deb12u1-log"), "10.11.19");
        assert_eq!(short_version("8.0.40"), "8.0.40");
        assert_eq!(short_version(""), "");
    }
}
