//! The workload writer: proves that no acknowledged write was lost.
//!
//! [`Workload::start`] creates `<database>.<table>` through the shard's
//! current primary, then runs `writers` tasks that insert rows with unique
//! ids (`INSERT ... VALUES (<id>, ...)`, autocommit) as [`APP_USER`], which
//! `read_only` stops like an application. Every insert ends in one of
//! three outcomes:
//!
//! - **acknowledged**: the commit returned OK. Under semi-sync that means a
//!   replica had received the transaction first, so the row must survive
//!   any failover. Recorded with the primary it went to.
//! - **rejected**: the server answered with an error (e.g. read-only): the
//!   row certainly was not written.
//! - **unknown**: the connection broke, the statement timed out, or the
//!   server ended it without a verdict (session killed, statement
//!   interrupted, shutdown): the row may or may not exist.
//!
//! Where writes go: the primary named by the shard record's
//! `primary_alias`, resolved through the tablet record's MySQL address. It
//! is re-resolved after every failed insert (after `retry_interval`) and
//! every `refresh_interval` while writes succeed, so the writer follows a
//! failover like an application behind vtgate would. [`Workload::stop`]
//! lets in-flight inserts finish (bounded by `statement_timeout`) and
//! returns the [`WorkloadReport`]; [`check_acknowledged`] then reads the
//! table on the final primary and reports every acknowledged id that is
//! missing (and every rejected id that is present, which would mean the
//! bookkeeping is wrong).
//!
//! Semi-sync and losslessness: MariaDB's default wait point is
//! AFTER_COMMIT (the row is committed and visible to others before the
//! replica's ACK; the client's OK still waits for it). The harness sets
//! `rpl_semi_sync_master_wait_point=AFTER_SYNC` (MySQL's default, which
//! Vitess assumes): the primary waits for the ACK before committing, so no
//! reader sees a row that a failover could lose. Either way an
//! acknowledged row exists on a replica, provided the primary did not fall
//! back to async: the harness's semi-sync timeout is an hour (Vitess
//! configures "never"), so it does not within a test.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vtorc::proto::topodata::TabletAlias;
use vtorc::topo::Topo;

use crate::cluster::{APP_PASSWORD, APP_USER, Cluster, poll_until};

/// Settings of a [`Workload`].
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Keyspace whose primary takes the writes.
    pub keyspace: String,
    /// Shard whose primary takes the writes.
    pub shard: String,
    /// Database of the table (`vt_<keyspace>`, Vitess's default name).
    pub database: String,
    /// Table the rows go to.
    pub table: String,
    /// Concurrent writer tasks, each with its own connection.
    pub writers: usize,
    /// Pause between two inserts of one writer.
    pub pace: Duration,
    /// Bound on connecting and on one insert; a timeout is an "unknown" outcome.
    pub statement_timeout: Duration,
    /// Pause before re-resolving the primary after a failure.
    pub retry_interval: Duration,
    /// How often the primary is re-resolved while writes succeed.
    pub refresh_interval: Duration,
}

impl WorkloadConfig {
    /// Two writers on `keyspace/shard`, table `vt_<keyspace>.workload`, a
    /// 2 ms pace, 10 s statement timeout, 50 ms retry, 1 s refresh.
    pub fn new(keyspace: &str, shard: &str) -> WorkloadConfig {
        WorkloadConfig {
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            database: format!("vt_{keyspace}"),
            table: "workload".to_string(),
            writers: 2,
            pace: Duration::from_millis(2),
            statement_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_millis(50),
            refresh_interval: Duration::from_secs(1),
        }
    }

    /// `` `db`.`table` ``.
    pub fn qualified_table(&self) -> String {
        format!("`{}`.`{}`", self.database, self.table)
    }
}

/// One acknowledged insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedWrite {
    /// The row id.
    pub id: u64,
    /// The primary that acknowledged it.
    pub primary: TabletAlias,
    /// When the acknowledgement arrived, since the workload started.
    pub at: Duration,
}

/// What a workload did, returned by [`Workload::stop`].
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    /// Acknowledged inserts, by id.
    pub acked: Vec<AckedWrite>,
    /// Ids the server refused (certainly not written).
    pub rejected: Vec<u64>,
    /// Ids whose outcome is unknown (connection lost, timeout).
    pub unknown: Vec<u64>,
    /// Failures (resolve, connect, insert), counted.
    pub errors: usize,
    /// The first few distinct failure messages, for test output.
    pub sample_errors: Vec<String>,
    /// Primaries written to, in the order they were first used.
    pub primaries: Vec<TabletAlias>,
    /// How long the workload ran.
    pub duration: Duration,
}

impl WorkloadReport {
    /// Acknowledged ids, ascending.
    pub fn acked_ids(&self) -> Vec<u64> {
        self.acked.iter().map(|w| w.id).collect()
    }

    /// How many writes `primary` acknowledged.
    pub fn acked_on(&self, primary: &TabletAlias) -> usize {
        self.acked.iter().filter(|w| &w.primary == primary).count()
    }
}

/// Result of [`check_acknowledged`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossCheck {
    /// Acknowledged ids checked.
    pub checked: usize,
    /// Rows in the table.
    pub rows: usize,
    /// Acknowledged ids missing from the table: lost writes.
    pub missing: Vec<u64>,
    /// Rejected ids present in the table (must be empty).
    pub rejected_present: Vec<u64>,
    /// Unknown-outcome ids that did commit (informational).
    pub unknown_present: usize,
}

impl LossCheck {
    /// No acknowledged write lost and no rejected write present.
    pub fn is_lossless(&self) -> bool {
        self.missing.is_empty() && self.rejected_present.is_empty()
    }
}

/// Progress counters shared with the writer tasks.
#[derive(Debug, Default)]
struct Progress {
    /// Acknowledged inserts so far.
    acked: AtomicU64,
    /// Refused inserts so far.
    rejected: AtomicU64,
    /// Acknowledged inserts per primary. A `std::sync::Mutex`: one map
    /// update per insert, never held across an `.await`.
    per_primary: std::sync::Mutex<HashMap<TabletAlias, u64>>,
    /// Every acknowledged insert so far, in acknowledgement order (for
    /// checks while the workload runs; same lock discipline).
    acked_log: std::sync::Mutex<Vec<AckedWrite>>,
}

/// What one writer task did.
#[derive(Debug, Default)]
struct WriterLog {
    /// Acknowledged inserts.
    acked: Vec<AckedWrite>,
    /// Refused inserts.
    rejected: Vec<u64>,
    /// Inserts with unknown outcome.
    unknown: Vec<u64>,
    /// Failure count.
    errors: usize,
    /// First distinct failure messages.
    sample_errors: Vec<String>,
    /// Primaries used, in order.
    primaries: Vec<TabletAlias>,
}

impl WriterLog {
    /// Counts a failure, keeping the first few distinct messages.
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.sample_errors.len() < 10 && !self.sample_errors.contains(&message) {
            self.sample_errors.push(message);
        }
    }
}

/// A running workload; dropping it cancels the writers without a report.
#[derive(Debug)]
pub struct Workload {
    /// Stops the writers.
    cancel: CancellationToken,
    /// The writer tasks; aborted on drop.
    tasks: JoinSet<WriterLog>,
    /// Shared progress.
    progress: Arc<Progress>,
    /// The settings.
    config: WorkloadConfig,
    /// When the writers started.
    started: Instant,
}

/// The current primary of a shard: its alias and MySQL address.
async fn resolve_primary(
    topo: &Topo,
    keyspace: &str,
    shard: &str,
) -> anyhow::Result<(TabletAlias, String, u16)> {
    let record = topo
        .get_shard(keyspace, shard)
        .await
        .context("read shard record")?;
    let alias = record
        .value
        .primary_alias
        .with_context(|| format!("shard {keyspace}/{shard} has no primary"))?;
    let tablet = topo
        .get_tablet(&alias)
        .await
        .with_context(|| format!("read tablet record {alias}"))?
        .value;
    let port = u16::try_from(tablet.mysql_port)
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("tablet {alias} has no valid mysql_port ({})", tablet.mysql_port))?;
    if tablet.mysql_hostname.is_empty() {
        bail!("tablet {alias} has no mysql_hostname");
    }
    Ok((alias, tablet.mysql_hostname, port))
}

/// Connects as [`APP_USER`] within `timeout`.
async fn connect_app(host: &str, port: u16, timeout: Duration) -> anyhow::Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false);
    tokio::time::timeout(timeout, Conn::new(opts))
        .await
        .with_context(|| format!("connect to {host}:{port} timed out"))?
        .with_context(|| format!("connect to {host}:{port}"))
}

impl Workload {
    /// Creates the table through the current primary (waiting up to 30 s
    /// for the shard to have a reachable, writable one) and starts the
    /// writers. Ids continue after the table's largest id.
    pub async fn start(topo: Topo, config: WorkloadConfig) -> anyhow::Result<Workload> {
        if config.writers == 0 {
            bail!("a workload needs at least one writer");
        }
        let first_id = poll_until(
            Duration::from_secs(30),
            &format!("a writable primary of {}/{}", config.keyspace, config.shard),
            || async {
                let (_, host, port) = resolve_primary(&topo, &config.keyspace, &config.shard).await?;
                let mut conn = connect_app(&host, port, config.statement_timeout).await?;
                conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}`", config.database))
                    .await?;
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {} (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, \
                     writer INT UNSIGNED NOT NULL, primary_uid INT UNSIGNED NOT NULL, \
                     created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
                    config.qualified_table()
                ))
                .await?;
                let max: Option<u64> = conn
                    .query_first(format!(
                        "SELECT COALESCE(MAX(id), 0) FROM {}",
                        config.qualified_table()
                    ))
                    .await?;
                conn.disconnect().await.ok();
                Ok(Some(max.unwrap_or(0) + 1))
            },
        )
        .await?;
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        let started = Instant::now();
        let next_id = Arc::new(AtomicU64::new(first_id));
        let mut tasks = JoinSet::new();
        for writer in 0..config.writers {
            tasks.spawn(run_writer(
                writer,
                topo.clone(),
                config.clone(),
                next_id.clone(),
                progress.clone(),
                cancel.clone(),
                started,
            ));
        }
        Ok(Workload {
            cancel,
            tasks,
            progress,
            config,
            started,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Acknowledged inserts so far.
    pub fn acked_count(&self) -> u64 {
        self.progress.acked.load(Ordering::Relaxed)
    }

    /// Inserts the server refused so far.
    pub fn rejected_count(&self) -> u64 {
        self.progress.rejected.load(Ordering::Relaxed)
    }

    /// Waits until at least `count` inserts were refused.
    pub async fn wait_for_rejections(&self, count: u64, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("{count} refused writes");
        poll_until(timeout, &what, || async {
            Ok((self.rejected_count() >= count).then_some(()))
        })
        .await
    }

    /// Acknowledged inserts so far on one primary.
    pub fn acked_count_on(&self, primary: &TabletAlias) -> u64 {
        let map = self
            .progress
            .per_primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(primary).copied().unwrap_or(0)
    }

    /// [`Workload::start`] on `cluster`, then [`Workload::wait_for_acks_on`]:
    /// the workload runs and `primary` has acknowledged `count` writes
    /// (within [`ACK_WAIT`]).
    pub async fn start_acked(
        cluster: &Cluster,
        config: &WorkloadConfig,
        primary: &TabletAlias,
        count: u64,
    ) -> anyhow::Result<Workload> {
        let workload = Workload::start(cluster.topo().clone(), config.clone()).await?;
        workload.wait_for_acks_on(primary, count, ACK_WAIT).await?;
        Ok(workload)
    }

    /// Every insert acknowledged so far, in acknowledgement order.
    pub fn acked_so_far(&self) -> Vec<AckedWrite> {
        self.progress
            .acked_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How long the workload has run (the clock of [`AckedWrite::at`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until `primary` has acknowledged at least `count` inserts.
    pub async fn wait_for_acks_on(
        &self,
        primary: &TabletAlias,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("{count} acknowledged writes on {primary}");
        poll_until(timeout, &what, || async {
            Ok((self.acked_count_on(primary) >= count).then_some(()))
        })
        .await
    }

    /// After a failover to `primary`: waits (up to `timeout`) until it has
    /// acknowledged `count` inserts, stops the writers and checks every
    /// acknowledged write on it ([`check_acknowledged_on`]).
    pub async fn finish_on(
        self,
        cluster: &Cluster,
        primary: &TabletAlias,
        count: u64,
        timeout: Duration,
    ) -> (WorkloadReport, LossCheck) {
        self.wait_for_acks_on(primary, count, timeout)
            .await
            .expect("writes resume on the new primary");
        let config = self.config().clone();
        let report = self.stop().await.expect("the workload stops");
        let check = check_acknowledged_on(cluster, primary, &config, &report)
            .await
            .expect("read the workload table");
        (report, check)
    }

    /// Stops the writers, letting in-flight inserts finish, and returns
    /// what they did.
    pub async fn stop(mut self) -> anyhow::Result<WorkloadReport> {
        self.cancel.cancel();
        let mut report = WorkloadReport {
            duration: self.started.elapsed(),
            ..WorkloadReport::default()
        };
        while let Some(joined) = self.tasks.join_next().await {
            let log = joined.context("a writer task panicked")?;
            report.acked.extend(log.acked);
            report.rejected.extend(log.rejected);
            report.unknown.extend(log.unknown);
            report.errors += log.errors;
            for e in log.sample_errors {
                if report.sample_errors.len() < 10 && !report.sample_errors.contains(&e) {
                    report.sample_errors.push(e);
                }
            }
            for p in log.primaries {
                if !report.primaries.contains(&p) {
                    report.primaries.push(p);
                }
            }
        }
        report.acked.sort_by_key(|w| w.id);
        report.rejected.sort_unstable();
        report.unknown.sort_unstable();
        Ok(report)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
    }
}

/// Server errors that end a statement without saying whether it committed:
/// the session was killed (`ER_CONNECTION_KILLED`, e.g. by a demotion that
/// shuts applications out while a commit waits for a semi-sync ACK), the
/// statement interrupted (`ER_QUERY_INTERRUPTED`) or the server shutting
/// down (`ER_SERVER_SHUTDOWN`). An autocommit insert may have committed.
fn interrupted(code: u16) -> bool {
    matches!(code, 1053 | 1317 | 1927)
}

/// Sleeps `d` unless cancelled first; returns false when cancelled.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One writer: resolve, connect, insert, record; repeat until cancelled.
async fn run_writer(
    writer: usize,
    topo: Topo,
    config: WorkloadConfig,
    next_id: Arc<AtomicU64>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    started: Instant,
) -> WriterLog {
    let mut log = WriterLog::default();
    // The primary in use: alias, connection, when it was resolved.
    let mut target: Option<(TabletAlias, Conn, Instant)> = None;
    while !cancel.is_cancelled() {
        if target
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= config.refresh_interval)
        {
            // Follow a primary change even while the old primary still answers.
            match resolve_primary(&topo, &config.keyspace, &config.shard).await {
                Ok((alias, _, _)) if target.as_ref().is_some_and(|(a, _, _)| *a == alias) => {
                    if let Some(t) = target.as_mut() {
                        t.2 = Instant::now();
                    }
                }
                _ => target = None,
            }
        }
        if target.is_none() {
            let resolved = async {
                let (alias, host, port) = resolve_primary(&topo, &config.keyspace, &config.shard).await?;
                let conn = connect_app(&host, port, config.statement_timeout).await?;
                anyhow::Ok((alias, conn))
            }
            .await;
            match resolved {
                Ok((alias, conn)) => {
                    if !log.primaries.contains(&alias) {
                        log.primaries.push(alias.clone());
                    }
                    target = Some((alias, conn, Instant::now()));
                }
                Err(e) => {
                    log.error(format!("resolve/connect: {e:#}"));
                    if !pause(&cancel, config.retry_interval).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some((alias, conn, _)) = target.as_mut() else {
            continue;
        };
        let alias = alias.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let sql = format!(
            "INSERT INTO {} (id, writer, primary_uid) VALUES ({id}, {writer}, {})",
            config.qualified_table(),
            alias.uid
        );
        // Not raced against `cancel`: an in-flight insert's outcome must be known.
        match tokio::time::timeout(config.statement_timeout, conn.query_drop(sql)).await {
            Ok(Ok(())) => {
                progress.acked.fetch_add(1, Ordering::Relaxed);
                {
                    let mut map = progress
                        .per_primary
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    *map.entry(alias.clone()).or_default() += 1;
                }
                let write = AckedWrite {
                    id,
                    primary: alias,
                    at: started.elapsed(),
                };
                progress
                    .acked_log
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(write.clone());
                log.acked.push(write);
                if !pause(&cancel, config.pace).await {
                    break;
                }
            }
            Ok(Err(mysql_async::Error::Server(e))) if !interrupted(e.code) => {
                progress.rejected.fetch_add(1, Ordering::Relaxed);
                log.rejected.push(id);
                log.error(format!("insert on {alias} refused: {e}"));
                target = None;
                if !pause(&cancel, config.retry_interval).await {
                    break;
                }
            }
            Ok(Err(e)) => {
                log.unknown.push(id);
                log.error(format!("insert on {alias} failed: {e}"));
                target = None;
                if !pause(&cancel, config.retry_interval).await {
                    break;
                }
            }
            Err(_) => {
                log.unknown.push(id);
                log.error(format!(
                    "insert on {alias} timed out after {:?}",
                    config.statement_timeout
                ));
                target = None;
                if !pause(&cancel, config.retry_interval).await {
                    break;
                }
            }
        }
    }
    log
}

/// How long [`Workload::start_acked`] waits for the first acknowledged
/// writes (a bound for a failing test, not a pace).
pub const ACK_WAIT: Duration = Duration::from_secs(60);

/// [`check_acknowledged`] on the MySQL of `tablet` (a connection of its
/// own, closed after).
pub async fn check_acknowledged_on(
    cluster: &Cluster,
    tablet: &TabletAlias,
    config: &WorkloadConfig,
    report: &WorkloadReport,
) -> anyhow::Result<LossCheck> {
    let mut conn = cluster.mysql_conn(tablet).await?;
    let check = check_acknowledged(&mut conn, config, report).await;
    conn.disconnect().await.ok();
    check
}

/// Reads the workload table through `conn` (normally the final primary)
/// and checks every acknowledged id is there and no rejected id is.
pub async fn check_acknowledged(
    conn: &mut Conn,
    config: &WorkloadConfig,
    report: &WorkloadReport,
) -> anyhow::Result<LossCheck> {
    let ids: Vec<u64> = conn
        .query(format!("SELECT id FROM {}", config.qualified_table()))
        .await
        .context("read the workload table")?;
    let present: BTreeSet<u64> = ids.into_iter().collect();
    let missing = report
        .acked
        .iter()
        .map(|w| w.id)
        .filter(|id| !present.contains(id))
        .collect();
    let rejected_present = report
        .rejected
        .iter()
        .copied()
        .filter(|id| present.contains(id))
        .collect();
    let unknown_present = report.unknown.iter().filter(|id| present.contains(id)).count();
    Ok(LossCheck {
        checked: report.acked.len(),
        rows: present.len(),
        missing,
        rejected_present,
        unknown_present,
    })
}
