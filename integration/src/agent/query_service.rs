//! The query service's effect on applications, reproduced on MariaDB.
//!
//! In Vitess, applications reach MySQL only through vttablet's query
//! service. When DemotePrimary takes it out of serving (§DemotePrimary step
//! 3), no application statement can start, and in-flight transactions end
//! without an answer. Only then does a forced demotion turn the primary side
//! of semi-sync off so commits stuck waiting for an ACK finish: they become
//! errant transactions on the old primary, never acknowledged to anyone.
//!
//! The test world's applications (the workload writer) connect to MariaDB
//! directly as the application user (vttablet's `--db_app_user`). So the
//! agent gives "not serving" the same effect on the server itself: it locks
//! that account (no new sessions), lets statements in flight finish for a
//! bounded grace (none for a forced demotion), then kills its sessions (a
//! statement still in flight, e.g. a commit waiting for a semi-sync ACK,
//! returns no answer). Serving again unlocks the account. Both run with the
//! binlog off: they describe this server's serving state and must not
//! replicate. The health checker reconciles the account with the serving
//! state ([`reconcile`]), so an interrupted transition cannot leave a
//! serving tablet shut to applications.
//!
//! Without this, the gap between "semi-sync off" and "read_only on" in a
//! forced demotion would let a direct client's commit be acknowledged with
//! no replica holding it, a loss vttablet's gate rules out.

use std::time::Duration;

use tokio::time::Instant;

use super::error::AgentResult;
use super::mysql::{MysqlConn, quote};

/// How long a planned demotion lets application statements in flight
/// finish before ending them (vttablet waits for in-flight transactions up
/// to its transaction timeout; the test world's are single statements).
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Closes the application's access: locks `user` on every host it is
/// defined for, waits up to `grace` (and `deadline`) for its statements in
/// flight, then kills its sessions. An unknown user is not an error.
pub(super) async fn close(
    conn: &mut MysqlConn,
    user: &str,
    grace: Duration,
    deadline: Option<Instant>,
) -> AgentResult<()> {
    set_account_lock(conn, user, true).await?;
    let until = Instant::now() + grace;
    let until = deadline.map_or(until, |d| d.min(until));
    while Instant::now() < until && !sessions(conn, user, true).await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in sessions(conn, user, false).await? {
        // The session may end on its own meanwhile ("Unknown thread id").
        let _ = conn.exec(&format!("KILL CONNECTION {id}")).await;
    }
    Ok(())
}

/// Ids of `user`'s sessions (only those running a statement when `busy`).
async fn sessions(conn: &mut MysqlConn, user: &str, busy: bool) -> AgentResult<Vec<u64>> {
    let filter = if busy { " AND command <> 'Sleep'" } else { "" };
    let rows = conn
        .rows(&format!(
            "SELECT id AS id FROM information_schema.processlist WHERE user = {}{filter}",
            quote(user)
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| super::mysql::col_u64(row, "id"))
        .collect())
}

/// Makes the application's access match the serving state: unlocked when
/// `serving`, and (only to undo an interrupted transition) nothing else.
/// Returns whether it had to unlock the account.
pub(super) async fn reconcile(conn: &mut MysqlConn, user: &str, serving: bool) -> AgentResult<bool> {
    if !serving || !is_locked(conn, user).await? {
        return Ok(false);
    }
    open(conn, user).await?;
    Ok(true)
}

/// Whether any host's `user` account is locked.
async fn is_locked(conn: &mut MysqlConn, user: &str) -> AgentResult<bool> {
    let rows = conn
        .rows(&format!(
            "SELECT JSON_VALUE(priv, '$.account_locked') AS locked FROM mysql.global_priv WHERE user = {}",
            quote(user)
        ))
        .await?;
    Ok(rows
        .iter()
        .any(|row| matches!(super::mysql::col(row, "locked").as_str(), "true" | "1")))
}

/// Opens the application's access again (unlocks `user`).
pub(super) async fn open(conn: &mut MysqlConn, user: &str) -> AgentResult<()> {
    set_account_lock(conn, user, false).await
}

/// `ALTER USER ... ACCOUNT [UN]LOCK` for every host of `user`, binlog off.
async fn set_account_lock(conn: &mut MysqlConn, user: &str, lock: bool) -> AgentResult<()> {
    let hosts = conn
        .rows(&format!(
            "SELECT host AS host FROM mysql.user WHERE user = {}",
            quote(user)
        ))
        .await?;
    if hosts.is_empty() {
        return Ok(());
    }
    conn.exec("SET SESSION sql_log_bin = 0").await?;
    let verb = if lock { "LOCK" } else { "UNLOCK" };
    let mut result = Ok(());
    for row in &hosts {
        let host = super::mysql::col(row, "host");
        let sql = format!("ALTER USER {}@{} ACCOUNT {verb}", quote(user), quote(&host));
        if let Err(e) = conn.exec(&sql).await {
            result = Err(e);
            break;
        }
    }
    // Binary logging back on for whatever this connection runs next.
    let restored = conn.exec("SET SESSION sql_log_bin = 1").await;
    result.and(restored)
}
