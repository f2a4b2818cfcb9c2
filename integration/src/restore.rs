//! Rebuilding a tablet's MariaDB from a consistent copy of another server,
//! the way an operator brings back a crashed primary: vttablet restores the
//! newest backup and then replicates from the shard primary.
//!
//! A primary killed under semi-sync writes may come back with transactions
//! it binlogged and crash-recovered but no replica acknowledged. Those are
//! errant: no other server has them, so the old data cannot simply rejoin
//! (MariaDB's strict GTID mode refuses the new primary's stream, and rows
//! written by the lost transactions can collide). A restore replaces them.
//!
//! Here the "backup" is taken at restore time: one
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` on the source reads every
//! non-system table together with the binlog coordinates of that snapshot
//! (`binlog_snapshot_file`/`_position`, turned into a GTID position with
//! `BINLOG_GTID_POS`), so the data and the position agree without locking
//! the source. The target runs isolated meanwhile (UNIX socket only, see
//! [`crate::mariadb::MariaDbServer::restart_isolated`]), so neither its
//! agent nor VTOrc sees it half-restored. It gets the data with the binlog
//! off, then the replication position the way vttablet's MariaDB flavour
//! sets one (`RESET MASTER`, `gtid_slave_pos`, `gtid_binlog_state`) and a
//! `CHANGE MASTER` to the source; restarted normally, it replicates from
//! there. Its tablet record and agent are not touched: the agent reconnects
//! to MariaDB on its own, and VTOrc repairs whatever the tablet reports.

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use vtorc::proto::topodata::TabletAlias;

use crate::agent::mysql::quote;
use crate::cluster::Cluster;
use crate::mariadb::{REPL_USER, repl_password};

/// Schemas every server has of its own; never copied or dropped.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Rows per multi-row `INSERT` while loading.
const INSERT_BATCH: usize = 500;

/// One table read from the source.
struct TableCopy {
    schema: String,
    name: String,
    create: String,
    rows: Vec<Row>,
}

/// A consistent copy of the source's user data and its GTID position.
struct Snapshot {
    /// `CREATE DATABASE` statement per schema.
    schemas: Vec<(String, String)>,
    tables: Vec<TableCopy>,
    /// MariaDB GTID list of the snapshot (e.g. `0-101-8780`).
    gtid_position: String,
}

impl Cluster {
    /// Replaces `target`'s MariaDB data with a consistent copy of
    /// `source`'s and makes it a replica of `source` at the copy's GTID
    /// position. The target is stopped (or found dead), rebuilt while
    /// isolated, and started again normally. Returns the GTID position it
    /// was restored at.
    pub async fn restore_mysql_from(
        &mut self,
        target: &TabletAlias,
        source: &TabletAlias,
    ) -> anyhow::Result<String> {
        if target == source {
            bail!("cannot restore {target} from itself");
        }
        let (source_port, snapshot) = {
            let source_tablet = self.tablet(source)?;
            let mut conn = source_tablet.mysql_conn().await?;
            let snapshot = read_snapshot(&mut conn)
                .await
                .with_context(|| format!("take a consistent copy of {source}"))?;
            conn.disconnect().await.ok();
            (source_tablet.mysql_port(), snapshot)
        };
        let server = &mut self.tablet_mut(target)?.mysql;
        server.restart_isolated().await?;
        let loaded = async {
            let mut conn = Conn::new(server.socket_opts())
                .await
                .with_context(|| format!("connect to isolated MariaDB of {target}"))?;
            load_snapshot(&mut conn, &snapshot, source_port)
                .await
                .with_context(|| format!("restore {target} from {source}"))?;
            conn.disconnect().await.ok();
            anyhow::Ok(())
        }
        .await;
        // Back on the network either way, so a failed restore leaves a
        // server that can be inspected rather than an isolated one.
        let restarted = server.restart().await;
        loaded?;
        restarted?;
        Ok(snapshot.gtid_position)
    }
}

/// Reads all user schemas in one consistent snapshot.
async fn read_snapshot(conn: &mut Conn) -> anyhow::Result<Snapshot> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let file = status_var(conn, "binlog_snapshot_file").await?;
    let position = status_var(conn, "binlog_snapshot_position").await?;
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), position.clone()))
        .await?;
    let gtid_position = gtid
        .flatten()
        .with_context(|| format!("BINLOG_GTID_POS({file}, {position}) returned NULL"))?;
    let mut schemas = Vec::new();
    let mut tables = Vec::new();
    for schema in user_schemas(conn).await? {
        let create: Option<(String, String)> = conn
            .query_first(format!("SHOW CREATE DATABASE {}", ident(&schema)))
            .await?;
        let (_, create) = create.with_context(|| format!("no CREATE DATABASE for {schema}"))?;
        let names: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY table_name",
                (schema.clone(),),
            )
            .await?;
        for name in names {
            let qualified = format!("{}.{}", ident(&schema), ident(&name));
            let shown: Option<(String, String)> =
                conn.query_first(format!("SHOW CREATE TABLE {qualified}")).await?;
            let (_, create) = shown.with_context(|| format!("no CREATE TABLE for {qualified}"))?;
            let rows: Vec<Row> = conn.query(format!("SELECT * FROM {qualified}")).await?;
            tables.push(TableCopy {
                schema: schema.clone(),
                name,
                create,
                rows,
            });
        }
        schemas.push((schema, create));
    }
    conn.query_drop("COMMIT").await?;
    Ok(Snapshot {
        schemas,
        tables,
        gtid_position,
    })
}

/// Loads `snapshot` with the binlog off and points replication at the source.
async fn load_snapshot(conn: &mut Conn, snapshot: &Snapshot, source_port: u16) -> anyhow::Result<()> {
    conn.query_drop("SET SESSION sql_log_bin = 0").await?;
    conn.query_drop("STOP SLAVE").await?;
    conn.query_drop("RESET SLAVE ALL").await?;
    for schema in user_schemas(conn).await? {
        conn.query_drop(format!("DROP DATABASE {}", ident(&schema)))
            .await?;
    }
    for (_, create) in &snapshot.schemas {
        conn.query_drop(create).await?;
    }
    for table in &snapshot.tables {
        conn.query_drop(format!("USE {}", ident(&table.schema))).await?;
        conn.query_drop(&table.create).await?;
        let qualified = format!("{}.{}", ident(&table.schema), ident(&table.name));
        for batch in table.rows.chunks(INSERT_BATCH) {
            let values: Vec<String> = batch.iter().map(row_literal).collect();
            conn.query_drop(format!("INSERT INTO {qualified} VALUES {}", values.join(", ")))
                .await
                .with_context(|| format!("load {qualified}"))?;
        }
    }
    let position = quote(&snapshot.gtid_position);
    for sql in [
        "RESET MASTER".to_string(),
        format!("SET GLOBAL gtid_slave_pos = {position}"),
        format!("SET GLOBAL gtid_binlog_state = {position}"),
        format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {source_port}, \
             MASTER_USER = '{REPL_USER}', MASTER_PASSWORD = '{}', \
             MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos",
            repl_password()
        ),
    ] {
        conn.query_drop(&sql).await.with_context(|| sql.clone())?;
    }
    Ok(())
}

/// The non-system schemas, by name.
async fn user_schemas(conn: &mut Conn) -> anyhow::Result<Vec<String>> {
    let all: Vec<String> = conn
        .query("SELECT schema_name FROM information_schema.schemata ORDER BY schema_name")
        .await?;
    Ok(all
        .into_iter()
        .filter(|s| !SYSTEM_SCHEMAS.contains(&s.as_str()))
        .collect())
}

/// One session status variable (`SHOW STATUS LIKE`).
async fn status_var(conn: &mut Conn, name: &str) -> anyhow::Result<String> {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW STATUS LIKE {}", quote(name)))
        .await?;
    row.map(|(_, v)| v)
        .with_context(|| format!("status variable {name} missing"))
}

/// `(v1, v2, ...)` with every value as an SQL literal.
fn row_literal(row: &Row) -> String {
    let values: Vec<String> = (0..row.len())
        .map(|i| row.as_ref(i).unwrap_or(&Value::NULL).as_sql(false))
        .collect();
    format!("({})", values.join(", "))
}

/// A backquoted identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
