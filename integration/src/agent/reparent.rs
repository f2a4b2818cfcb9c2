//! Reparent RPCs (§5) and the reparent journal, all but
//! PopulateReparentJournal under the action lock.
//!
//! MariaDB 10.11 has no `super_read_only`; `read_only` takes its role
//! (it blocks every user without `READ ONLY ADMIN`, including replication
//! users, while the replication SQL thread keeps applying). So where
//! vttablet turns `super_read_only` on (DemotePrimary) we turn `read_only`
//! on, and where it turns both off we turn `read_only` off. vttablet's own
//! MariaDB path silently leaves a demoted primary writable; we do not.
//! The semi-sync "blocked" probe reads `Rpl_semi_sync_master_wait_sessions`
//! from `SHOW GLOBAL STATUS` (no performance_schema needed).
//!
//! # Fencing
//!
//! Every path that takes a tablet out of PRIMARY fences it first, in this
//! order ([`Agent::demote`]): (1) not serving: the application's account
//! locked and its sessions killed (`query_service.rs`), so a commit waiting
//! for a semi-sync ACK ends without an answer; (2) the heartbeat writer
//! stopped (its write in flight killed); (3) `read_only = ON`; (4) only
//! then the primary side of semi-sync off. The paths: DemotePrimary,
//! SetReplicationSource / InitReplica / ChangeType / ReplicaWasRestarted on
//! a PRIMARY, the shard sync ending a stale term (`topo_sync.rs`) and
//! start-up as a non-primary over a writable MariaDB
//! ([`Agent::fence_at_startup`]).
//!
//! Deviations: vttablet changes a PRIMARY's type in SetReplicationSource,
//! InitReplica, ChangeType and ReplicaWasRestarted with `read_only`
//! untouched and turns semi-sync's primary side off while its query
//! service is still transitioning. A stale RPC (one that sat in the socket
//! of a frozen primary and runs after the failover) would then release a
//! commit waiting for an ACK, acknowledged with no replica holding it. The
//! agent runs the forced demotion's fence first on all these paths (no
//! grace for statements in flight: a planned demotion already ran
//! DemotePrimary, which drains). A forced demotion turns semi-sync off
//! before `read_only` only when sessions other than the application's and
//! the heartbeat writer's still wait for an ACK after those were ended
//! (vttablet's order; `read_only = ON` would wait for them).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use vtorc::proto::replicationdata::PrimaryStatus;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::TabletType;

use super::Agent;
use super::error::{AgentError, AgentResult};
use super::mysql::{MysqlConn, quote};
use super::position;
use super::query_service;
use super::replication::SemiSyncAction;

/// How long a forced demotion waits for killed sessions to leave the
/// semi-sync ACK wait before it turns semi-sync off ahead of `read_only`.
const KILLED_WAITERS_GRACE: Duration = Duration::from_secs(1);

/// Longest text stored in `replication_position`.
const MAX_JOURNAL_POSITION: usize = 64_000;

impl Agent {
    /// InitPrimary(semiSync) → position.
    pub(super) async fn init_primary(
        &self,
        req: tm::InitPrimaryRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::InitPrimaryResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        // One binlog event, so the new primary's position is not empty.
        conn.exec("CREATE DATABASE IF NOT EXISTS _vt").await?;
        let position = conn.executed_position().await?;
        self.set_type(TabletType::Primary, true).await?;
        self.apply_semi_sync(&mut conn, action, TabletType::Primary)
            .await?;
        let encoded = position::encode(&position);
        info!(tablet = %self.alias, position = %encoded, "initialised as primary");
        Ok(tm::InitPrimaryResponse { position: encoded })
    }

    /// InitReplica(parent, position, time_created_ns, semiSync).
    pub(super) async fn init_replica(
        &self,
        req: tm::InitReplicaRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::InitReplicaResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        if self.tablet_type() == TabletType::Primary {
            self.fence(deadline).await?;
            self.set_type(TabletType::Replica, false).await?;
        }
        let position = position::decode(&req.replication_position)?;
        let parent = self.parent_tablet(req.parent.as_ref()).await?;
        self.apply_semi_sync(&mut conn, action, self.tablet_type())
            .await?;
        conn.stop_slave(false).await?;
        let pos = quote(&position.to_string());
        for sql in [
            "RESET MASTER".to_string(),
            format!("SET GLOBAL gtid_slave_pos = {pos}"),
            format!("SET GLOBAL gtid_binlog_state = {pos}"),
        ] {
            conn.exec(&sql).await?;
        }
        self.change_master(&mut conn, &parent, 0.0).await?;
        conn.exec("START SLAVE").await?;
        self.health_wake.notify_one();
        if req.time_created_ns != 0 {
            self.wait_for_journal(&mut conn, req.time_created_ns, deadline)
                .await?;
        }
        Ok(tm::InitReplicaResponse {})
    }

    /// PopulateReparentJournal: one row in `_vt.reparent_journal` (not locked).
    pub(super) async fn populate_reparent_journal(
        &self,
        req: tm::PopulateReparentJournalRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::PopulateReparentJournalResponse> {
        self.wait_grants(deadline).await?;
        let position = position::decode(&req.replication_position)?;
        let alias = req
            .primary_alias
            .as_ref()
            .map(ToString::to_string)
            .ok_or_else(|| AgentError::InvalidArgument("primary_alias is required".to_string()))?;
        let mut encoded = position::encode(&position);
        encoded.truncate(MAX_JOURNAL_POSITION);
        let sql = format!(
            "INSERT INTO _vt.reparent_journal (time_created_ns, action_name, primary_alias, replication_position) \
             VALUES ({}, {}, {}, {})",
            req.time_created_ns,
            quote(&req.action_name),
            quote(&alias),
            quote(&encoded)
        );
        let mut conn = self.mysql.conn().await?;
        // On a semi-sync primary this waits for an ACK; bound it by the caller only.
        let insert = conn.first_unbounded::<mysql_async::Row>(&sql);
        match deadline {
            Some(d) => tokio::time::timeout_at(d, insert)
                .await
                .map_err(|_| AgentError::DeadlineExceeded("context deadline exceeded".to_string()))??,
            None => insert.await?,
        };
        Ok(tm::PopulateReparentJournalResponse {})
    }

    /// DemotePrimary(force) → PrimaryStatus.
    pub(super) async fn demote_primary(
        &self,
        req: tm::DemotePrimaryRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::DemotePrimaryResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        // Deviation: vttablet reverts a failed demotion even when forced.
        // A forced demotion comes from ERS, which is replacing this primary;
        // reverting would reopen writes on it, and MariaDB re-enables the
        // primary side of semi-sync in async mode until a semi-sync replica
        // connects, so those writes would be acknowledged with no replica
        // holding them. A failed forced demotion leaves whatever it reached
        // (not serving, read-only); VTOrc repairs a primary that stays.
        let status = self.demote(req.force, !req.force, deadline).await?;
        Ok(tm::DemotePrimaryResponse {
            primary_status: Some(status),
        })
    }

    /// DemotePrimary's body (caller holds the lock): stop serving, settle
    /// semi-sync, read-only on, primary semi-sync off, return the final
    /// PrimaryStatus. The type stays PRIMARY. With `revert`, a failure
    /// restores what was changed.
    pub(super) async fn demote(
        &self,
        force: bool,
        revert: bool,
        deadline: Option<Instant>,
    ) -> AgentResult<PrimaryStatus> {
        let mut conn = self.mysql.conn().await?;
        let was_primary = self.tablet_type() == TabletType::Primary;
        let was_read_only = conn.read_only().await?;
        let was_demoted = self.state().demoted;
        let was_serving = was_primary && !was_read_only;
        if was_serving {
            self.set_demoted(true);
        }
        let mut primary_semi_sync_was_on = false;
        let result = async {
            if was_serving {
                // Not serving (see `query_service`): no new application
                // session; a planned demotion lets statements in flight
                // finish first (bounded), a forced one ends them at once.
                let grace = if force {
                    Duration::ZERO
                } else {
                    query_service::DRAIN_GRACE
                };
                query_service::close(&mut conn, &self.config.app_user, grace, deadline).await?;
            }
            // The heartbeat writer is the other writer on a primary.
            self.tracker.stop_writer(self).await?;
            let mut blocked = semi_sync_blocked_now(&mut conn).await?;
            if blocked && force {
                // Sessions just killed leave the ACK wait within moments.
                let soon = Instant::now() + KILLED_WAITERS_GRACE;
                let soon = deadline.map_or(soon, |d| d.min(soon));
                blocked = wait_semi_sync_unblocked(&mut conn, Some(soon)).await.is_err();
            }
            if blocked {
                if force {
                    primary_semi_sync_was_on |= self.primary_semi_sync_off(&mut conn).await?;
                } else {
                    wait_semi_sync_unblocked(&mut conn, deadline).await?;
                }
            }
            conn.exec("SET GLOBAL read_only = ON").await?;
            primary_semi_sync_was_on |= self.primary_semi_sync_off(&mut conn).await?;
            conn.primary_status().await?.ok_or_else(|| {
                AgentError::Mysql("no master status (errno 2002) (sqlstate HY000)".to_string())
            })
        }
        .await;
        match result {
            Ok(status) => {
                info!(tablet = %self.alias, position = %status.position, "primary demoted");
                Ok(status)
            }
            Err(e) if revert => {
                // On a new connection: the failed statement may have broken
                // the one in use (a timed-out statement leaves it unusable).
                let reverted = async {
                    let mut conn = self.mysql.conn().await?;
                    if was_primary && primary_semi_sync_was_on {
                        self.apply_semi_sync(&mut conn, SemiSyncAction::Set, TabletType::Primary)
                            .await?;
                    }
                    if !was_read_only {
                        conn.exec("SET GLOBAL read_only = OFF").await?;
                    }
                    if was_serving {
                        query_service::open(&mut conn, &self.config.app_user).await?;
                    }
                    AgentResult::Ok(())
                }
                .await;
                if let Err(revert_error) = reverted {
                    // The health checker's serving reconciliation retries
                    // the application's access.
                    warn!(tablet = %self.alias, "could not fully revert a failed demotion: {revert_error}");
                }
                self.set_demoted(was_demoted);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Fences a PRIMARY before its type changes away from PRIMARY (see the
    /// module docs): a forced demotion, not reverted. No-op otherwise.
    pub(super) async fn fence(&self, deadline: Option<Instant>) -> AgentResult<()> {
        if self.tablet_type() != TabletType::Primary {
            return Ok(());
        }
        self.demote(true, false, deadline)
            .await
            .map(|_| ())
            .map_err(|e| e.wrap("fencing the primary failed"))
    }

    /// Start-up as a non-primary over a writable MariaDB (e.g. an old
    /// primary whose agent restarted after a failover, the shard naming a
    /// newer primary): the same fence before the application's access opens.
    /// Deviation: vttablet relies on mysqld starting `read-only` (its
    /// my.cnf); a MariaDB that outlived its agent keeps whatever it had.
    pub(super) async fn fence_at_startup(&self, conn: &mut MysqlConn) -> AgentResult<()> {
        warn!(tablet = %self.alias, "starting as a non-primary over a writable MariaDB: fencing it");
        query_service::close(conn, &self.config.app_user, Duration::ZERO, None).await?;
        self.tracker.stop_writer(self).await?;
        let soon = Instant::now() + KILLED_WAITERS_GRACE;
        if wait_semi_sync_unblocked(conn, Some(soon)).await.is_err() {
            conn.exec("SET GLOBAL rpl_semi_sync_master_enabled = 0").await?;
        }
        conn.exec("SET GLOBAL read_only = ON").await?;
        if conn
            .variable("rpl_semi_sync_master_enabled")
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"))
        {
            conn.exec("SET GLOBAL rpl_semi_sync_master_enabled = 0").await?;
        }
        Ok(())
    }

    /// Turns the primary side of semi-sync off if it is on (§2.2 Set as
    /// REPLICA); returns whether it was on.
    async fn primary_semi_sync_off(&self, conn: &mut MysqlConn) -> AgentResult<bool> {
        let on = conn
            .variable("rpl_semi_sync_master_enabled")
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"));
        if on {
            self.apply_semi_sync(conn, SemiSyncAction::Set, TabletType::Replica)
                .await?;
        }
        Ok(on)
    }

    /// UndoDemotePrimary(semiSync).
    pub(super) async fn undo_demote_primary(
        &self,
        req: tm::UndoDemotePrimaryRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::UndoDemotePrimaryResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        self.apply_semi_sync(&mut conn, action, TabletType::Primary)
            .await?;
        if self.tablet_type() != TabletType::Primary {
            let record = self.topo.get_tablet(&self.alias).await?;
            if record.r#type == TabletType::Primary as i32 {
                self.adopt_primary(record.primary_term_start_time).await?;
                conn.exec("SET GLOBAL read_only = OFF").await?;
                query_service::open(&mut conn, &self.config.app_user).await?;
                return Ok(tm::UndoDemotePrimaryResponse {});
            }
        }
        conn.exec("SET GLOBAL read_only = OFF")
            .await
            .map_err(|e| e.wrap("SetServingType(serving=true) failed"))?;
        query_service::open(&mut conn, &self.config.app_user)
            .await
            .map_err(|e| e.wrap("SetServingType(serving=true) failed"))?;
        self.set_demoted(false);
        Ok(tm::UndoDemotePrimaryResponse {})
    }

    /// PromoteReplica(semiSync) → position.
    pub(super) async fn promote_replica(
        &self,
        req: tm::PromoteReplicaRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::PromoteReplicaResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        conn.stop_slave(false).await?;
        for sql in ["RESET SLAVE ALL", "FLUSH BINARY LOGS"] {
            conn.exec(sql).await?;
        }
        let position = conn.executed_position().await?;
        self.apply_semi_sync(&mut conn, action, TabletType::Primary)
            .await?;
        self.set_type(TabletType::Primary, true).await?;
        let encoded = position::encode(&position);
        info!(tablet = %self.alias, position = %encoded, "replica promoted");
        Ok(tm::PromoteReplicaResponse { position: encoded })
    }

    /// ReplicaWasPromoted: type PRIMARY, MySQL untouched.
    pub(super) async fn replica_was_promoted(
        &self,
        _req: tm::ReplicaWasPromotedRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ReplicaWasPromotedResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        self.set_type(TabletType::Primary, false).await?;
        Ok(tm::ReplicaWasPromotedResponse {})
    }

    /// ReplicaWasRestarted: a PRIMARY becomes REPLICA; otherwise a no-op.
    pub(super) async fn replica_was_restarted(
        &self,
        _req: tm::ReplicaWasRestartedRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ReplicaWasRestartedResponse> {
        self.wait_grants(deadline).await?;
        let _lock = self.lock(deadline).await?;
        if self.tablet_type() == TabletType::Primary {
            self.fence(deadline).await?;
            self.set_type(TabletType::Replica, false).await?;
        }
        Ok(tm::ReplicaWasRestartedResponse {})
    }

    /// SetReadOnly: `read_only = ON` (no grants wait, locked).
    pub(super) async fn set_read_only(
        &self,
        _req: tm::SetReadOnlyRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::SetReadOnlyResponse> {
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        conn.exec("SET GLOBAL read_only = ON").await?;
        Ok(tm::SetReadOnlyResponse {})
    }

    /// SetReadWrite: `read_only = OFF` (no grants wait, locked).
    pub(super) async fn set_read_write(
        &self,
        _req: tm::SetReadWriteRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::SetReadWriteResponse> {
        let _lock = self.lock(deadline).await?;
        let mut conn = self.mysql.conn().await?;
        conn.exec("SET GLOBAL read_only = OFF").await?;
        Ok(tm::SetReadWriteResponse {})
    }

    /// ChangeType(type, semiSync): topo write with no MySQL action, then
    /// §2.3 for the new type.
    pub(super) async fn change_type(
        &self,
        req: tm::ChangeTypeRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::ChangeTypeResponse> {
        let _lock = self.lock(deadline).await?;
        let new_type = TabletType::try_from(req.tablet_type)
            .ok()
            .filter(|t| *t != TabletType::Unknown)
            .ok_or_else(|| AgentError::InvalidArgument(format!("invalid tablet type {}", req.tablet_type)))?;
        let mut conn = self.mysql.conn().await?;
        let action = self.semi_sync_action(&mut conn, req.semi_sync).await?;
        if new_type == TabletType::Drained && self.tablet_type() == TabletType::Drained {
            return Err(AgentError::FailedPrecondition(format!(
                "Tablet: {}, is already drained",
                self.alias
            )));
        }
        if self.tablet_type() == TabletType::Primary && new_type != TabletType::Primary {
            self.fence(deadline).await?;
        }
        self.set_type(new_type, false).await?;
        self.fix_semi_sync_and_replication(&mut conn, action, new_type)
            .await?;
        Ok(tm::ChangeTypeResponse {})
    }

    /// RefreshState: re-reads the Shard record and re-applies serving state
    /// (we have no tablet controls, so it only checks the shard and republishes).
    pub(super) async fn refresh_state(
        &self,
        _req: tm::RefreshStateRequest,
        deadline: Option<Instant>,
    ) -> AgentResult<tm::RefreshStateResponse> {
        let _lock = self.lock(deadline).await?;
        self.topo.get_shard().await?;
        self.publish_health();
        self.shard_sync_wake.notify_one();
        Ok(tm::RefreshStateResponse {})
    }
}

/// True when commits are waiting for a semi-sync ACK right now.
async fn semi_sync_blocked_now(conn: &mut MysqlConn) -> AgentResult<bool> {
    let waits = conn.status_var("Rpl_semi_sync_master_wait_sessions").await?;
    Ok(waits.and_then(|w| w.parse::<u64>().ok()).is_some_and(|w| w > 0))
}

/// Polls until no commit waits for an ACK, or the deadline passes.
async fn wait_semi_sync_unblocked(conn: &mut MysqlConn, deadline: Option<Instant>) -> AgentResult<()> {
    loop {
        if !semi_sync_blocked_now(conn).await? {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() + Duration::from_millis(100) >= d) {
            return Err(AgentError::DeadlineExceeded(
                "context deadline exceeded waiting for semi-sync to unblock".to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
