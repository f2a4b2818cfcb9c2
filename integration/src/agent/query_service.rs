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
//! that account (no new sessions) and kills its sessions (a statement in
//! flight, including a commit waiting for a semi-sync ACK, returns no
//! answer). Serving again unlocks the account. Both run with the binlog off:
//! they describe this server's serving state and must not replicate.
//!
//! Without this, the gap between "semi-sync off" and "read_only on" in a
//! forced demotion would let a direct client's commit be acknowledged with
//! no replica holding it, a loss vttablet's gate rules out.

use super::error::AgentResult;
use super::mysql::{MysqlConn, quote};

/// Closes the application's access: locks `user` on every host it is
/// defined for and kills its sessions. An unknown user is not an error.
pub(super) async fn close(conn: &mut MysqlConn, user: &str) -> AgentResult<()> {
    set_account_lock(conn, user, true).await?;
    let ids = conn
        .rows(&format!(
            "SELECT id AS id FROM information_schema.processlist WHERE user = {}",
            quote(user)
        ))
        .await?;
    for row in &ids {
        let id = super::mysql::col(row, "id");
        if id.is_empty() {
            continue;
        }
        // The session may end on its own meanwhile ("Unknown thread id").
        let _ = conn.exec(&format!("KILL CONNECTION {id}")).await;
    }
    Ok(())
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
    // The connection may be pooled: restore binary logging for its next user.
    let restored = conn.exec("SET SESSION sql_log_bin = 1").await;
    result.and(restored)
}
