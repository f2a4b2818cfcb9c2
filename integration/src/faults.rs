//! Fault injection on a running [`Cluster`]: the failures VTOrc detects
//! and repairs, produced the way they happen in production.
//!
//! | fault | method | how |
//! |---|---|---|
//! | MariaDB crash | [`Cluster::kill_mysql`] | SIGKILL by PID, reaped |
//! | MariaDB hang | [`Cluster::pause_mysql`] / [`Cluster::resume_mysql`] | SIGSTOP / SIGCONT |
//! | MariaDB back | [`Cluster::restart_mysql`] | same datadir and port; crash recovery runs |
//! | agent crash | [`Cluster::kill_agent`] | SIGKILL (child) or handle dropped (in-process) |
//! | agent hang | [`Cluster::pause_agent`] / [`Cluster::resume_agent`] | SIGSTOP / SIGCONT (child mode only) |
//! | agent back | [`Cluster::restart_agent`] | same gRPC port |
//! | replication stopped | [`Cluster::stop_replication`], [`Cluster::stop_replication_io_thread`] | `STOP SLAVE [IO_THREAD]` behind the agent's back |
//! | writable replica | [`Cluster::set_writable`] | `read_only=OFF` |
//! | errant GTID | [`Cluster::write_errant_transaction`] | `read_only=OFF`, then a local write |
//! | read-only primary | [`Cluster::set_read_only`] | `read_only=ON` |
//! | semi-sync misconfigured | [`Cluster::set_semi_sync`] | either side on or off |
//! | tablet record gone | [`Cluster::delete_tablet_record`] | topo delete (and ShardReplication) |
//! | ReplicaMisconfigured | [`Cluster::set_replication_timeouts`] | `slave_net_timeout`, `MASTER_HEARTBEAT_PERIOD` |
//! | wrong source | [`Cluster::point_replica_at`] | `CHANGE MASTER TO` another tablet |
//!
//! SQL faults go straight to MariaDB as `root` (not through the agent),
//! as an operator or a bug would cause them.

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use vtorc::proto::topodata::TabletAlias;

use crate::cluster::Cluster;
use crate::mariadb::{REPL_USER, repl_password};

/// Which side of MariaDB's semi-sync to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemiSyncSide {
    /// `rpl_semi_sync_master_enabled`: this server waits for ACKs.
    Primary,
    /// `rpl_semi_sync_slave_enabled`: this server ACKs (the IO thread is
    /// restarted so the change takes effect).
    Replica,
}

impl Cluster {
    /// Runs statements on a tablet's MariaDB as `root`, in order.
    async fn exec_sql(&self, alias: &TabletAlias, statements: &[String]) -> anyhow::Result<()> {
        let mut conn = self.mysql_conn(alias).await?;
        for sql in statements {
            conn.query_drop(sql)
                .await
                .with_context(|| format!("{alias}: {sql}"))?;
        }
        conn.disconnect().await.ok();
        Ok(())
    }

    /// `kill -9` of a tablet's MariaDB; returns the PID that was killed.
    pub fn kill_mysql(&mut self, alias: &TabletAlias) -> anyhow::Result<u32> {
        let tablet = self.tablet_mut(alias)?;
        let pid = tablet
            .mysql_pid()
            .with_context(|| format!("MariaDB of {alias} is not running"))?;
        tablet.mysql.kill()?;
        Ok(pid)
    }

    /// SIGSTOP of a tablet's MariaDB: connections hang, nothing errors.
    pub fn pause_mysql(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet(alias)?.mysql.pause()
    }

    /// SIGCONT of a MariaDB paused by [`Cluster::pause_mysql`].
    pub fn resume_mysql(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet(alias)?.mysql.resume()
    }

    /// Starts a tablet's MariaDB again (after a kill, or gracefully
    /// restarting a running one) on the same datadir and port. It comes
    /// back `read_only=ON` with primary-side semi-sync off (the `my.cnf`),
    /// and a replica resumes replicating from its configured source.
    pub async fn restart_mysql(&mut self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet_mut(alias)?.mysql.restart().await
    }

    /// Kills a tablet's agent abruptly (see [`crate::cluster::AgentMode`]).
    pub fn kill_agent(&mut self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet_mut(alias)?.kill_agent()
    }

    /// SIGSTOP of a child agent: its gRPC port accepts connections but
    /// nothing answers. Fails for in-process agents.
    pub fn pause_agent(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet(alias)?.signal_agent(Signal::SIGSTOP)
    }

    /// SIGCONT of an agent paused by [`Cluster::pause_agent`].
    pub fn resume_agent(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet(alias)?.signal_agent(Signal::SIGCONT)
    }

    /// Starts a tablet's agent again (after [`Cluster::kill_agent`] or
    /// [`Cluster::shutdown_agent`]) on the same gRPC port; it re-registers
    /// the tablet like a restarted vttablet. Waits until it answers Ping.
    pub async fn restart_agent(&mut self, alias: &TabletAlias) -> anyhow::Result<()> {
        let tmc = self.tmc().clone();
        self.tablet_mut(alias)?.start_agent(&tmc).await
    }

    /// Stops a tablet's agent gracefully (vttablet's shutdown: the record
    /// loses its addresses and gets `tablet_shutdown_time`).
    pub async fn shutdown_agent(&mut self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.tablet_mut(alias)?.shutdown_agent().await
    }

    /// `STOP SLAVE` on a replica.
    pub async fn stop_replication(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.exec_sql(alias, &["STOP SLAVE".to_string()]).await
    }

    /// `STOP SLAVE IO_THREAD` on a replica (the SQL thread keeps applying).
    pub async fn stop_replication_io_thread(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.exec_sql(alias, &["STOP SLAVE IO_THREAD".to_string()]).await
    }

    /// `read_only=OFF` on a tablet.
    pub async fn set_writable(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.exec_sql(alias, &["SET GLOBAL read_only = OFF".to_string()])
            .await
    }

    /// `read_only=ON` on a tablet (e.g. a primary that can no longer take writes).
    pub async fn set_read_only(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.exec_sql(alias, &["SET GLOBAL read_only = ON".to_string()])
            .await
    }

    /// Makes a tablet writable and commits one local transaction on it,
    /// creating an errant GTID on a replica; returns that GTID
    /// (`<domain>-<this server_id>-<seq>`). The tablet stays writable.
    pub async fn write_errant_transaction(&self, alias: &TabletAlias) -> anyhow::Result<String> {
        self.set_writable(alias).await?;
        let mut conn = self.mysql_conn(alias).await?;
        conn.query_drop("CREATE DATABASE IF NOT EXISTS errant_writes")
            .await
            .with_context(|| format!("{alias}: create errant_writes"))?;
        let gtid: Option<String> = conn
            .query_first("SELECT @@last_gtid")
            .await
            .with_context(|| format!("{alias}: read @@last_gtid"))?;
        conn.disconnect().await.ok();
        match gtid {
            Some(g) if !g.is_empty() => Ok(g),
            _ => bail!("{alias}: the errant write produced no GTID (is the binlog on?)"),
        }
    }

    /// Turns one side of semi-sync on or off on a tablet, e.g. primary
    /// side on a replica, or replica side off on a replica.
    pub async fn set_semi_sync(
        &self,
        alias: &TabletAlias,
        side: SemiSyncSide,
        on: bool,
    ) -> anyhow::Result<()> {
        let value = if on { "ON" } else { "OFF" };
        let statements = match side {
            SemiSyncSide::Primary => vec![format!("SET GLOBAL rpl_semi_sync_master_enabled = {value}")],
            SemiSyncSide::Replica => {
                let mut s = vec![format!("SET GLOBAL rpl_semi_sync_slave_enabled = {value}")];
                if self.is_replicating_configured(alias).await? {
                    // The replica side only takes effect when the IO thread reconnects.
                    s.push("STOP SLAVE IO_THREAD".to_string());
                    s.push("START SLAVE IO_THREAD".to_string());
                }
                s
            }
        };
        self.exec_sql(alias, &statements).await
    }

    /// Whether a tablet has a replication source configured.
    async fn is_replicating_configured(&self, alias: &TabletAlias) -> anyhow::Result<bool> {
        let mut conn = self.mysql_conn(alias).await?;
        let rows: Vec<mysql_async::Row> = conn.query("SHOW SLAVE STATUS").await?;
        conn.disconnect().await.ok();
        Ok(!rows.is_empty())
    }

    /// Deletes a tablet's record from the topo (and its `ShardReplication`
    /// entry), as `vtctldclient DeleteTablets` would. The agent keeps running.
    pub async fn delete_tablet_record(&self, alias: &TabletAlias) -> anyhow::Result<()> {
        self.topo()
            .delete_tablet(alias)
            .await
            .with_context(|| format!("delete tablet record {alias}"))
    }

    /// Sets `slave_net_timeout` (seconds) and the replication heartbeat
    /// period (seconds) on a replica; VTOrc's `ReplicaMisconfigured` fires
    /// when `round(heartbeat × 2) ≠ net timeout`. Replication is restarted;
    /// fails on a tablet with no replication source.
    pub async fn set_replication_timeouts(
        &self,
        alias: &TabletAlias,
        net_timeout_secs: u32,
        heartbeat_secs: f64,
    ) -> anyhow::Result<()> {
        if !heartbeat_secs.is_finite() || heartbeat_secs < 0.0 {
            bail!("heartbeat period must be a non-negative number of seconds");
        }
        if !self.is_replicating_configured(alias).await? {
            bail!("{alias} has no replication source; nothing to misconfigure");
        }
        let statements = [
            format!("SET GLOBAL slave_net_timeout = {net_timeout_secs}"),
            "STOP SLAVE".to_string(),
            format!("CHANGE MASTER TO MASTER_HEARTBEAT_PERIOD = {heartbeat_secs}"),
            "START SLAVE".to_string(),
        ];
        self.exec_sql(alias, &statements).await
    }

    /// Points a replica's replication at another tablet's MariaDB (GTID
    /// auto-position) and starts it: the "wrong source" fault.
    pub async fn point_replica_at(&self, alias: &TabletAlias, source: &TabletAlias) -> anyhow::Result<()> {
        let port = self.tablet(source)?.mysql_port();
        self.exec_sql(
            alias,
            &[
                "STOP SLAVE".to_string(),
                format!(
                    "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, \
                     MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{}', \
                     MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                    repl_password()
                ),
                "START SLAVE".to_string(),
            ],
        )
        .await
    }
}
