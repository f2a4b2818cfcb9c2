//! Replication-control RPCs (§4), all under the action lock, plus the
//! semi-sync machinery (§2), the errant-GTID guard and vttablet's start-up
//! replication initialisation (§7 step 8).
//!
//! MariaDB notes (deviations documented here):
//! * Statements are the MariaDB flavour's: `STOP/START SLAVE`,
//!   `RESET SLAVE ALL`, `CHANGE MASTER TO ... MASTER_USE_GTID = current_pos`.
//!   `current_pos` avoids the rejoin trap: a restarted old primary's empty
//!   `gtid_slave_pos` is not used for domains whose last binlog GTID it wrote.
//! * Before `CHANGE MASTER` we stop replication whenever either thread is
//!   not stopped (vttablet stops only if it "was replicating"); MariaDB
//!   refuses `CHANGE MASTER` while an erroring IO thread still retries.
//! * The errant-GTID guard (vttablet parses the parent's empty MariaDB
//!   server_uuid and fails) compares MariaDB positions per domain: GTIDs of
//!   the local relay-log position that the parent's executed position lacks.
//!   Without a server_uuid it cannot skip the parent's own GTIDs.
//! * A parent alias equal to this tablet is refused (MariaDB would try to
//!   replicate from itself).
//! * RestartReplication is not detached from caller cancellation after the
//!   STOP (a mid-2026 vttablet change).

use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Endpoint;
use tracing::info;
use vtorc::mysql::position::MariaDbGtidSet;
use vtorc::proto::replicationdata::{StopReplicationMode, StopReplicationStatus};
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient;
use vtorc::proto::topodata::{Tablet, TabletAlias, TabletType};

use super::Agent;
use super::error::{AgentError, AgentResult};
use super::mysql::{MysqlConn, change_master_sql, is_metadata_init_error, not_a_replica, thread_state};
use super::position;
use super::status::SemiSyncReadings;

/// A StopReplicationAndGetStatus slower than this logs where its time went.
const SLOW_STOP: Duration = Duration::from_millis(500);

/// What a `semiSync` flag turns into (§2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SemiSyncAction {
    /// Leave semi-sync alone.
    None,
    /// Replica side on; primary side on iff the tablet is PRIMARY.
    Set,
    /// Both sides off.
    Unset,
}

impl Agent {
    /// §2.1: converts the flag, checking MariaDB's built-in semi-sync exists.
    pub(super) async fn semi_sync_action(
        &self,
        conn: &mut MysqlConn,
        semi_sync: bool,
    ) -> AgentResult<SemiSyncAction> {
        let rows = conn.rows("SHOW VARIABLES LIKE 'rpl_semi_sync_%_enabled'").await?;
        match (rows.is_empty(), semi_sync) {
            (false, true) => Ok(SemiSyncAction::Set),
            (false, false) => Ok(SemiSyncAction::Unset),
            (true, false) => Ok(SemiSyncAction::None),
            (true, true) => Err(AgentError::FailedPrecondition(
                "VT09013: semi-sync plugins are not loaded".to_string(),
            )),
        }
    }

    /// §2.2: applies an action for a tablet type.
    pub(super) async fn apply_semi_sync(
        &self,
        conn: &mut MysqlConn,
        action: SemiSyncAction,
        tablet_type: TabletType,
    ) -> AgentResult<()> {
        let sql = match action {
            SemiSyncAction::None => return Ok(()),
            SemiSyncAction::Set => format!(
                "SET GLOBAL rpl_semi_sync_master_enabled = {}, GLOBAL rpl_semi_sync_slave_enabled = 1",
                i32::from(tablet_type == TabletType::Primary)
            ),
            SemiSyncAction::Unset => {
                "SET GLOBAL rpl_semi_sync_master_enabled = 0, GLOBAL rpl_semi_sync_slave_enabled = 0"
                    .to_string()
            }
        };
        conn.exec(&sql).await.map_err(|e| {
            AgentError::Internal(format!(
                "can't set semi-sync mode: {e}; make sure plugins are loaded in my.cnf"
            ))
        })
    }

    /// §2.3: for non-primary types, applies the action and restarts
    /// replication if the replica's ACK behaviour must change.
    pub(super) async fn fix_semi_sync_and_replication(
        &self,
        conn: &mut MysqlConn,
        action: SemiSyncAction,
        tablet_type: TabletType,
    ) -> AgentResult<()> {
        if tablet_type == TabletType::Primary || action == SemiSyncAction::None {
            return Ok(());
        }
        self.apply_semi_sync(conn, action, tablet_type).await?;
        let Some(status) = conn.replication_status().await? else {
            return Ok(());
        };
        if !status.has_source() || !status.io_healthy() {
            return Ok(());
        }
        let should_ack = matches!(tablet_type, TabletType::Primary | TabletType::Replica);
        let acking = conn
            .status_var("Rpl_semi_sync_slave_status")
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"));
        if should_ack != acking {
            conn.stop_slave(false).await?;
            conn.exec("START SLAVE").await?;
        }
        Ok(())
    }

    /// `START SLAVE`, repairing unusable replica metadata the way vttablet does.
    async fn start_slave(&self, conn: &mut MysqlConn) -> AgentResult<()> {
        match conn.exec("START SLAVE").await {
            Err(e) if is_metadata_init_error(&e) => {
                conn.stop_slave(false).await?;
                conn.exec("RESET SLAVE").await?;
                conn.exec("START SLAVE").await
            }
            other => other,
        }
    }

    /// StopReplication: `STOP SLAVE`.
    pub(super) async fn stop_replication(
        &self,
        _req: tm::StopReplicationRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::StopReplicationResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        conn.stop_slave(false).await?;
        self.health_wake.notify_one();
        Ok(tm::StopReplicationResponse {})
    }

    /// StopReplicationMinimum: wait for the position (timeout in ns), stop,
    /// return the executed position.
    pub(super) async fn stop_replication_minimum(
        &self,
        req: tm::StopReplicationMinimumRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::StopReplicationMinimumResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let target = position::decode(&req.position)?;
        let wait = Duration::from_nanos(u64::try_from(req.wait_timeout).unwrap_or(0));
        let wait_deadline = Instant::now() + wait;
        let bound = deadline.map_or(wait_deadline, |d| d.min(wait_deadline));
        self.wait_position(&target, Some(bound)).await?;
        let mut conn = self.mysql.conn().await?;
        conn.stop_slave(false).await?;
        let position = conn.executed_position().await?;
        self.health_wake.notify_one();
        Ok(tm::StopReplicationMinimumResponse {
            position: position::encode(&position),
        })
    }

    /// StartReplication(semiSync).
    pub(super) async fn start_replication(
        &self,
        req: tm::StartReplicationRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::StartReplicationResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        self.apply_semi_sync(&mut conn, action, self.tablet_type())
            .await?;
        self.start_slave(&mut conn).await?;
        self.health_wake.notify_one();
        Ok(tm::StartReplicationResponse {})
    }

    /// RestartReplication(semiSync): stop, apply semi-sync, start, under one lock.
    pub(super) async fn restart_replication(
        &self,
        req: tm::RestartReplicationRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::RestartReplicationResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        conn.stop_slave(false).await?;
        self.apply_semi_sync(&mut conn, action, self.tablet_type())
            .await?;
        self.start_slave(&mut conn).await?;
        self.health_wake.notify_one();
        Ok(tm::RestartReplicationResponse {})
    }

    /// StopReplicationAndGetStatus(mode) (§4).
    pub(super) async fn stop_replication_and_get_status(
        &self,
        req: tm::StopReplicationAndGetStatusRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::StopReplicationAndGetStatusResponse> {
        let started = Instant::now();
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let locked = started.elapsed();
        let mut conn = self.mysql.conn().await?;
        let before = conn
            .replication_status()
            .await
            .and_then(|s| s.ok_or_else(not_a_replica))
            .map_err(|e| e.wrap("before status failed"))?;
        let read = started.elapsed();
        let mut before_status = before.status.clone();
        SemiSyncReadings::read(&mut conn).await.fill(&mut before_status);
        let io_only = req.stop_replication_mode == StopReplicationMode::Iothreadonly as i32;
        let (healthy, failure) = if io_only {
            (before.io_healthy(), "stop io thread failed")
        } else {
            (before.healthy(), "stop replication failed")
        };
        if !healthy {
            return Ok(tm::StopReplicationAndGetStatusResponse {
                status: Some(StopReplicationStatus {
                    before: Some(before_status.clone()),
                    after: Some(before_status),
                }),
            });
        }
        conn.stop_slave(io_only).await.map_err(|e| e.wrap(failure))?;
        let stopped = started.elapsed();
        self.health_wake.notify_one();
        let after = conn
            .replication_status()
            .await
            .and_then(|s| s.ok_or_else(not_a_replica))
            .map_err(|e| e.wrap("acquiring replication status failed"))?;
        if started.elapsed() > SLOW_STOP {
            info!(
                tablet = %self.alias,
                "slow StopReplicationAndGetStatus: {:?} (action lock after {locked:?}, status read after {read:?}, stopped after {stopped:?})",
                started.elapsed()
            );
        }
        Ok(tm::StopReplicationAndGetStatusResponse {
            status: Some(StopReplicationStatus {
                before: Some(before_status),
                after: Some(after.status),
            }),
        })
    }

    /// SetReplicationSource (§4), steps 1–7.
    pub(super) async fn set_replication_source(
        &self,
        req: tm::SetReplicationSourceRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::SetReplicationSourceResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let action = {
            let mut conn = self.mysql.conn().await?;
            self.semi_sync_action(&mut conn, req.semi_sync).await?
        };
        self.set_source_locked(
            req.parent.as_ref(),
            req.time_created_ns,
            &req.wait_position,
            req.force_start_replication,
            action,
            req.heartbeat_interval,
            deadline,
        )
        .await?;
        Ok(tm::SetReplicationSourceResponse {})
    }

    /// SetReplicationSource's body; the caller holds the action lock.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_source_locked(
        &self,
        parent: Option<&TabletAlias>,
        time_created_ns: i64,
        wait_position: &str,
        force_start: bool,
        action: SemiSyncAction,
        heartbeat_interval: f64,
        deadline: Option<Instant>,
    ) -> AgentResult<()> {
        let mut conn = self.mysql.conn().await?;
        // 1. A PRIMARY becomes REPLICA first, fenced before (deviation:
        // vttablet leaves read_only untouched; see `reparent.rs`, Fencing).
        if self.tablet_type() == TabletType::Primary {
            self.fence(deadline).await?;
            self.set_type(TabletType::Replica, false).await?;
        }
        // 2. Current replication state.
        let status = conn.replication_status().await?;
        let (was_replicating, any_thread_running, local_position) = match &status {
            None => (false, false, conn.executed_position().await?),
            Some(s) => (
                s.io_healthy() || s.sql_healthy(),
                s.status.io_state != thread_state::STOPPED || s.status.sql_state != thread_state::STOPPED,
                s.relay_log_pos(),
            ),
        };
        let should_replicate = status.is_none() || was_replicating || force_start;
        // 3. Semi-sync for the (now non-primary) type.
        self.apply_semi_sync(&mut conn, action, self.tablet_type())
            .await?;
        // 4. The parent.
        let parent = self.parent_tablet(parent).await?;
        // 5. Errant-GTID guard.
        self.errant_gtid_guard(&parent, &local_position).await?;
        // 6. Repoint or restart.
        let current_host = status
            .as_ref()
            .map(|s| s.status.source_host.clone())
            .unwrap_or_default();
        let current_port = status.as_ref().map_or(0, |s| s.status.source_port);
        if current_host != parent.mysql_hostname
            || current_port != parent.mysql_port
            || heartbeat_interval != 0.0
        {
            if was_replicating || any_thread_running {
                conn.stop_slave(false).await?;
            }
            self.change_master(&mut conn, &parent, heartbeat_interval).await?;
            if should_replicate {
                self.start_slave(&mut conn).await?;
            }
        } else if should_replicate {
            conn.stop_slave(false).await?;
            self.start_slave(&mut conn).await?;
        }
        self.health_wake.notify_one();
        info!(tablet = %self.alias, parent = %parent_alias_text(&parent), should_replicate, "replication source set");
        // 7. Waits.
        if should_replicate {
            if !wait_position.is_empty() {
                let target = position::decode(wait_position)?;
                self.wait_position(&target, deadline).await?;
            }
            if time_created_ns != 0 {
                self.wait_for_journal(&mut conn, time_created_ns, deadline)
                    .await?;
            }
        }
        conn.close().await;
        Ok(())
    }

    /// ResetReplication: forget the source and wipe GTID history; semi-sync off.
    pub(super) async fn reset_replication(
        &self,
        _req: tm::ResetReplicationRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ResetReplicationResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, false).await?;
        self.apply_semi_sync(&mut conn, action, self.tablet_type())
            .await?;
        conn.stop_slave(false).await?;
        for sql in [
            "RESET SLAVE ALL",
            "RESET MASTER",
            "SET GLOBAL gtid_slave_pos = ''",
        ] {
            conn.exec(sql).await?;
        }
        self.health_wake.notify_one();
        Ok(tm::ResetReplicationResponse {})
    }

    /// ResetReplicationParameters: forget the source, keep GTID state.
    pub(super) async fn reset_replication_parameters(
        &self,
        _req: tm::ResetReplicationParametersRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ResetReplicationParametersResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        conn.stop_slave(false).await?;
        conn.exec("RESET SLAVE ALL").await?;
        self.health_wake.notify_one();
        Ok(tm::ResetReplicationParametersResponse {})
    }

    /// Reads the parent's tablet record, with vttablet's checks.
    pub(super) async fn parent_tablet(&self, parent: Option<&TabletAlias>) -> AgentResult<Tablet> {
        let parent =
            parent.ok_or_else(|| AgentError::FailedPrecondition("Shard primaryAlias is nil".to_string()))?;
        if parent == &self.alias {
            return Err(AgentError::FailedPrecondition(format!(
                "tablet {} cannot replicate from itself",
                self.alias
            )));
        }
        let tablet = self.topo.get_tablet(parent).await?;
        if tablet.mysql_hostname.is_empty() {
            return Err(AgentError::FailedPrecondition(
                "Shard primary has empty mysql hostname".to_string(),
            ));
        }
        Ok(tablet)
    }

    /// `CHANGE MASTER TO` the parent.
    pub(super) async fn change_master(
        &self,
        conn: &mut MysqlConn,
        parent: &Tablet,
        heartbeat: f64,
    ) -> AgentResult<()> {
        let sql = change_master_sql(
            &parent.mysql_hostname,
            parent.mysql_port,
            &self.config.replication_user,
            &self.config.replication_password,
            self.config.replication_connect_retry,
            heartbeat,
        );
        conn.exec(&sql).await
    }

    /// Errant-GTID guard: asks the parent tablet for its PrimaryStatus and
    /// refuses if this server holds GTIDs the parent lacks.
    async fn errant_gtid_guard(&self, parent: &Tablet, local: &MariaDbGtidSet) -> AgentResult<()> {
        if local.is_empty() {
            return Ok(());
        }
        let status = self.peer_primary_status(parent).await?;
        let primary = position::decode(&status.position)?;
        let errant = local.subtract(&primary);
        if errant.is_empty() {
            return Ok(());
        }
        Err(AgentError::FailedPrecondition(format!(
            "Errant GTID detected - {errant}; Primary GTID - {primary}, Replica GTID - {local}"
        )))
    }

    /// PrimaryStatus of another tablet over gRPC, bounded by the remote-operation timeout.
    async fn peer_primary_status(
        &self,
        peer: &Tablet,
    ) -> AgentResult<vtorc::proto::replicationdata::PrimaryStatus> {
        let port = peer.port_map.get("grpc").copied().unwrap_or(0);
        let url = format!("http://{}:{port}", peer.hostname);
        let alias = parent_alias_text(peer);
        let unavailable =
            |e: String| AgentError::Unavailable(format!("PrimaryStatus on {alias} ({url}) failed: {e}"));
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(self.config.remote_operation_timeout)
            .timeout(self.config.remote_operation_timeout);
        let tls = vtorc::tls::ClientTls::from_files(&self.config.tablet_manager_tls, "tablet-manager-grpc-")
            .map_err(|e| unavailable(e.to_string()))?;
        let channel = match tls {
            Some(tls) => endpoint
                .connect_with_connector(tls.connector())
                .await
                .map_err(|e| unavailable(format!("{e}: {}", source_chain(&e))))?,
            None => endpoint.connect().await.map_err(|e| unavailable(e.to_string()))?,
        };
        let mut client = TabletManagerClient::new(channel);
        let response = client
            .primary_status(tm::PrimaryStatusRequest {})
            .await
            .map_err(|s| unavailable(s.message().to_string()))?;
        response
            .into_inner()
            .status
            .ok_or_else(|| unavailable("empty PrimaryStatus response".to_string()))
    }

    /// Polls the reparent journal every 100 ms for the row of `time_created_ns`.
    pub(super) async fn wait_for_journal(
        &self,
        conn: &mut MysqlConn,
        time_created_ns: i64,
        deadline: Option<Instant>,
    ) -> AgentResult<()> {
        let sql = format!(
            "SELECT action_name, primary_alias, replication_position FROM _vt.reparent_journal \
             WHERE time_created_ns = {time_created_ns}"
        );
        loop {
            if !conn.rows(&sql).await?.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() + Duration::from_millis(100) >= d) {
                return Err(AgentError::DeadlineExceeded(format!(
                    "context deadline exceeded waiting for reparent journal entry {time_created_ns}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A tablet's alias as text (or `<no alias>`).
fn parent_alias_text(t: &Tablet) -> String {
    t.alias
        .as_ref()
        .map_or_else(|| "<no alias>".to_string(), ToString::to_string)
}

/// vttablet's start-up replication initialisation (§7 step 8): if the shard
/// has another primary, point MariaDB at it (semi-sync per the keyspace's
/// durability policy, errant-GTID guard first) and start replicating.
pub(super) async fn init_replication_at_startup(agent: &Agent) -> AgentResult<()> {
    if agent.config.disable_active_reparents || agent.tablet_type() == TabletType::Primary {
        return Ok(());
    }
    let shard = agent.topo.get_shard().await?;
    let Some(primary_alias) = shard.primary_alias.filter(|a| a != &agent.alias) else {
        return Ok(());
    };
    let primary = agent.topo.get_tablet(&primary_alias).await?;
    if primary.mysql_hostname.is_empty() {
        return Ok(());
    }
    let semi_sync = agent.topo.replica_semi_sync(&agent.tablet(), &primary).await?;
    let _lock = agent.lock(None).await?;
    let mut conn = agent.mysql.conn().await?;
    let action = agent.semi_sync_action(&mut conn, semi_sync).await?;
    agent
        .apply_semi_sync(&mut conn, action, agent.tablet_type())
        .await?;
    let local = match conn.replication_status().await? {
        Some(s) => s.relay_log_pos(),
        None => conn.executed_position().await?,
    };
    agent.errant_gtid_guard(&primary, &local).await?;
    conn.stop_slave(false).await?;
    agent.change_master(&mut conn, &primary, 0.0).await?;
    agent.start_slave(&mut conn).await?;
    info!(tablet = %agent.alias, primary = %primary_alias, "replication initialised at start-up");
    agent.health_wake.notify_one();
    Ok(())
}

/// The causes of an error, joined (tonic's transport errors say little
/// in their own message).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}
