//! The cluster harness: a whole Vitess-shaped test world on one machine.
//!
//! [`ClusterBuilder`] declares cells (sharing one etcd under different
//! roots, e.g. `/vitess/zone1`, `/vitess/zone2`, each written as a
//! `CellInfo` in the global topo), keyspaces with a durability policy,
//! shards and tablets. [`ClusterBuilder::start`]:
//!
//! 1. makes one temporary directory (on tmpfs when `/dev/shm` exists);
//! 2. starts etcd and one MariaDB per tablet, all concurrently, on free
//!    ports (`server_id` = tablet uid; primary-side semi-sync off, replica
//!    side on, `rpl_semi_sync_master_wait_point=AFTER_SYNC`, Vitess's
//!    semi-sync timeout (never fall back to async) and MySQL 8's
//!    `replica_net_timeout = 8` as `slave_net_timeout` unless told
//!    otherwise; see [`ClusterBuilder`]);
//! 3. creates the application user [`APP_USER`] on every server (binlog off,
//!    no `SUPER` / `READ ONLY ADMIN`, so `read_only` stops it as it stops
//!    an application);
//! 4. writes every `CellInfo` and `Keyspace` (durability policy, sidecar
//!    `_vt`) into the global topo;
//! 5. starts one tablet agent per MariaDB, concurrently ([`AgentMode`]:
//!    in-process by default, or `tablet-agent` child processes), each
//!    registering its tablet record, shard and `ShardReplication` node;
//!    agents run vttablet's replication heartbeats every 250 ms (StreamHealth
//!    lag from them) and a 5 s `--health-check-interval` unless told
//!    otherwise;
//! 6. unless `bootstrap(false)`, elects a primary per shard through the
//!    agents' RPCs (see `bootstrap.rs`).
//!
//! Dropping a [`Cluster`] kills every agent, MariaDB and etcd by PID
//! (SIGKILL, which also ends SIGSTOPped processes), reaps them, and deletes
//! the temporary directories; it runs on panics too, so a failing test
//! leaves nothing behind. If start-up fails, whatever had started is
//! dropped the same way and the error carries the failing service's log
//! tail.
//!
//! Faults are methods in [`crate::faults`]; the workload writer is
//! [`crate::workload`].
//!
//! Decision on agent mode: in-process is the default because it needs no
//! binary and starts fastest; its "kill" (drop the handle) stops every task
//! without touching the topo, like `kill -9`. Tests that must SIGSTOP an
//! agent, or want the kill to be a real process death, use
//! [`AgentMode::Process`].

mod bootstrap;
mod spec;
mod tablet;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tempfile::TempDir;
use tokio::time::Instant;
use vtorc::proto::replicationdata::FullStatus;
use vtorc::proto::topodata::{CellInfo, Keyspace, Tablet, TabletAlias};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager, TabletManagerExt};
use vtorc::topo::{Topo, TopoOptions};

pub use self::bootstrap::{BOOTSTRAP_ACTION, now_ns};
pub use self::spec::{
    AgentMode, CellSpec, ClusterBuilder, DEFAULT_HEALTH_CHECK_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_SLAVE_NET_TIMEOUT, GLOBAL_ROOT, KeyspaceSpec, ShardSpec, TabletSpec, VITESS_SEMI_SYNC_TIMEOUT,
};
pub use self::tablet::ClusterTablet;
/// The application user every server gets; defined by the agent (its
/// default `app_user`), created here.
pub use crate::agent::{APP_PASSWORD, APP_USER};
use crate::etcd::{EtcdServer, EtcdTls};
use crate::mariadb::{MariaDbOptions, MariaDbServer};
use crate::pki::TestPki;
pub use crate::testkit::poll_until;

/// Bound on RPCs the harness itself sends (FullStatus, ...).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on an agent's start-up (MySQL check, replication initialisation).
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running test world. See the module docs.
pub struct Cluster {
    /// Tablets in declaration order (keyspace, shard, tablet).
    tablets: Vec<ClusterTablet>,
    /// The declared layout.
    spec: ClusterBuilder,
    /// The etcd server holding the global and every cell topo.
    etcd: EtcdServer,
    /// Topo client on the global root.
    topo: Topo,
    /// TabletManager client for the harness's own calls.
    tmc: GrpcTabletManager,
    /// How long [`ClusterBuilder::start`] took.
    startup_time: Duration,
    /// The test CA when the cluster runs TLS ([`ClusterBuilder::tls`]).
    pki: Option<TestPki>,
    /// Temporary directory holding the MariaDB instances; removed on drop
    /// after every process is gone.
    dir: TempDir,
}

impl ClusterBuilder {
    /// [`ClusterBuilder::start`] for a test: a cluster that cannot start
    /// fails the test with the reason.
    pub async fn started(self) -> Cluster {
        self.start().await.expect("cluster starts")
    }

    /// Starts the cluster (see the module docs). Fails, leaving nothing
    /// running, if any service cannot start within the start-up bound.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        self.validate()?;
        let started = Instant::now();
        let bound = self.start_timeout;
        let mut cluster = tokio::time::timeout(bound, start_cluster(self))
            .await
            .with_context(|| format!("cluster did not start within {bound:?}"))??;
        cluster.startup_time = started.elapsed();
        Ok(cluster)
    }
}

/// The body of [`ClusterBuilder::start`].
async fn start_cluster(spec: ClusterBuilder) -> anyhow::Result<Cluster> {
    let dir = temp_dir()?;
    let mut servers = Vec::new();
    let mut placements = Vec::new();
    for ks in &spec.keyspaces {
        for shard in &ks.shards {
            for t in &shard.tablets {
                let mut options = MariaDbOptions::new(t.uid);
                options.semi_sync_master_timeout_ms =
                    u64::try_from(spec.semi_sync_timeout.as_millis()).unwrap_or(u64::MAX);
                options.slave_net_timeout_secs = spec.slave_net_timeout.as_secs().max(1);
                if spec.after_sync {
                    options
                        .extra_config
                        .push("rpl_semi_sync_master_wait_point=AFTER_SYNC".to_string());
                }
                servers.push((format!("{}-{:010}", t.cell, t.uid), options));
                placements.push((ks.name.clone(), shard.name.clone(), t.clone()));
            }
        }
    }
    let pki = if spec.tls {
        Some(TestPki::new(&dir.path().join("pki"), "cluster")?)
    } else {
        None
    };
    let harness_tls = match &pki {
        Some(pki) => Some(pki.tls_files(&pki.issue("harness")?)),
        None => None,
    };
    let etcd_tls = match (&pki, &harness_tls) {
        (Some(pki), Some(client)) => Some(EtcdTls {
            server: pki.issue("etcd")?,
            ca: pki.ca_path(),
            client_cert_auth: true,
            client: client.clone(),
        }),
        _ => None,
    };
    let (etcd, mysqls) = tokio::join!(
        EtcdServer::start_with(etcd_tls),
        MariaDbServer::start_many(dir.path(), servers)
    );
    let etcd = etcd.context("start etcd")?;
    let mysqls = mysqls.context("start MariaDB")?;
    futures::future::try_join_all(mysqls.iter().map(create_app_user)).await?;

    let topo = Topo::connect_etcd(
        &etcd.address(),
        GLOBAL_ROOT,
        TopoOptions {
            remote_operation_timeout: Duration::from_secs(10),
            etcd_tls: etcd.client_tls_files(),
            ..TopoOptions::default()
        },
    )
    .await
    .context("connect to the topo")?;
    for cell in &spec.cells {
        let info = CellInfo {
            server_address: etcd.address(),
            root: cell.root.clone(),
        };
        topo.create_cell_info(&cell.name, &info)
            .await
            .with_context(|| format!("create CellInfo {}", cell.name))?;
    }
    for ks in &spec.keyspaces {
        let record = Keyspace {
            durability_policy: ks.durability.clone(),
            sidecar_db_name: "_vt".to_string(),
            ..Default::default()
        };
        topo.create_keyspace(&ks.name, &record)
            .await
            .with_context(|| format!("create keyspace {}", ks.name))?;
    }

    let mut tablets = Vec::new();
    for ((keyspace, shard, t), mysql) in placements.into_iter().zip(mysqls) {
        let mut tablet = ClusterTablet::new(
            &keyspace,
            &shard,
            t,
            mysql,
            &etcd.address(),
            GLOBAL_ROOT,
            spec.agent_mode.clone(),
        )?;
        apply_agent_options(&spec, &mut tablet)?;
        if let Some(pki) = &pki {
            let config = tablet.agent_config_mut();
            let own = pki.issue(&format!("tablet-{}", config.uid))?;
            config.grpc_tls = pki.tls_files(&own);
            config.tablet_manager_tls = pki.tls_files(&own);
            config.topo_etcd_tls = etcd.client_tls_files();
        }
        tablets.push(tablet);
    }
    let client_tls = match &harness_tls {
        Some(files) => vtorc::tls::ClientTls::from_files(files, "tablet-manager-grpc-")?,
        None => None,
    };
    let tmc = GrpcTabletManager::new(TabletClientConfig {
        remote_operation_timeout: RPC_TIMEOUT,
        connect_timeout: Duration::from_secs(2),
        tablet_manager_tls: client_tls.clone(),
        health_tls: client_tls,
        ..TabletClientConfig::default()
    });
    futures::future::try_join_all(tablets.iter_mut().map(|t| t.start_agent(&tmc))).await?;

    let cluster = Cluster {
        tablets,
        spec,
        etcd,
        topo,
        tmc,
        startup_time: Duration::ZERO,
        pki,
        dir,
    };
    if cluster.spec.bootstrap {
        // As an operator runs InitShardPrimary once its tablets are up: an
        // agent still starting would initialise its replication from the
        // shard record after the bootstrap has set it up (or before, and
        // have InitReplica's reset replay what it had applied).
        cluster.wait_agents_started().await?;
        let mut inits = Vec::new();
        for ks in &cluster.spec.keyspaces {
            let policy = ks.policy()?;
            for shard in &ks.shards {
                let primary = shard.primary_uid().context("validated: a shard has a REPLICA")?;
                inits.push(bootstrap::init_shard_primary(
                    &cluster,
                    &ks.name,
                    &shard.name,
                    primary,
                    policy,
                ));
            }
        }
        if let Err(e) = futures::future::try_join_all(inits).await {
            let diagnostics = cluster.diagnostics();
            return Err(e.context(format!("bootstrap replication failed; {diagnostics}")));
        }
    }
    Ok(cluster)
}

/// Applies the builder's agent settings to one tablet's agent configuration.
fn apply_agent_options(spec: &ClusterBuilder, tablet: &mut ClusterTablet) -> anyhow::Result<()> {
    let disk_dir = tablet.mysql().dir().join("disk");
    let config = tablet.agent_config_mut();
    config.health_check_interval = spec.health_check_interval;
    config.heartbeat_enable = spec.heartbeat.is_some();
    if let Some(interval) = spec.heartbeat {
        config.heartbeat_interval = interval;
    }
    if let Some(after) = spec.semi_sync_blocked_after {
        config.semi_sync_blocked_after = after;
    }
    if let Some((interval, timeout)) = spec.disk_health {
        std::fs::create_dir_all(&disk_dir)
            .with_context(|| format!("create the disk-health directory {}", disk_dir.display()))?;
        config.disk_write_dir = Some(disk_dir);
        config.disk_write_interval = interval;
        config.disk_write_timeout = timeout;
    }
    Ok(())
}

/// Creates [`APP_USER`] on one server without writing the binlog.
async fn create_app_user(server: &MariaDbServer) -> anyhow::Result<()> {
    let mut conn = server.connect().await?;
    conn.query_drop("SET SESSION sql_log_bin = 0").await?;
    conn.query_drop(format!(
        "CREATE USER IF NOT EXISTS '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}'"
    ))
    .await?;
    conn.query_drop(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON *.* TO '{APP_USER}'@'127.0.0.1'"
    ))
    .await?;
    conn.disconnect().await?;
    Ok(())
}

/// A fresh temporary directory for one cluster, on tmpfs when available.
fn temp_dir() -> anyhow::Result<TempDir> {
    crate::process::tmpfs_temp_dir("vtorc-cluster-").context("create temp dir for the cluster")
}

impl Cluster {
    /// The test CA of a TLS cluster ([`ClusterBuilder::tls`]): issue vtorc's
    /// certificates with it.
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    /// Shorthand for [`ClusterBuilder::new`].
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// How long start-up took (etcd, MariaDB, topo records, agents, bootstrap).
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The declared layout.
    pub fn spec(&self) -> &ClusterBuilder {
        &self.spec
    }

    /// The topo client (global root [`GLOBAL_ROOT`]).
    pub fn topo(&self) -> &Topo {
        &self.topo
    }

    /// The etcd server.
    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// `127.0.0.1:<port>` of etcd: the `--topo-global-server-address` value.
    pub fn topo_address(&self) -> String {
        self.etcd.address()
    }

    /// The cluster's temporary directory (MariaDB instances and agent logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every temporary directory the cluster owns (its own and etcd's).
    pub fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.path().to_path_buf(), self.etcd.dir().to_path_buf()]
    }

    /// The harness's TabletManager client.
    pub fn tmc(&self) -> &GrpcTabletManager {
        &self.tmc
    }

    /// Every tablet, in declaration order.
    pub fn tablets(&self) -> &[ClusterTablet] {
        &self.tablets
    }

    /// The tablets of one shard, in declaration order.
    pub fn shard_tablets(&self, keyspace: &str, shard: &str) -> Vec<&ClusterTablet> {
        self.tablets
            .iter()
            .filter(|t| t.keyspace() == keyspace && t.shard() == shard)
            .collect()
    }

    /// The tablet with this alias.
    pub fn tablet(&self, alias: &TabletAlias) -> anyhow::Result<&ClusterTablet> {
        self.tablets
            .iter()
            .find(|t| t.alias() == alias)
            .with_context(|| format!("no tablet {alias} in this cluster"))
    }

    /// The topo record of tablet `alias`, as read now.
    pub async fn tablet_record(&self, alias: &TabletAlias) -> anyhow::Result<Tablet> {
        Ok(self
            .topo
            .get_tablet(alias)
            .await
            .with_context(|| format!("read the record of tablet {alias}"))?
            .value)
    }

    /// The tablet with this alias, mutably (faults).
    pub(crate) fn tablet_mut(&mut self, alias: &TabletAlias) -> anyhow::Result<&mut ClusterTablet> {
        self.tablets
            .iter_mut()
            .find(|t| t.alias() == alias)
            .with_context(|| format!("no tablet {alias} in this cluster"))
    }

    /// The tablet with this uid (uids are unique in a cluster).
    pub fn tablet_by_uid(&self, uid: u32) -> anyhow::Result<&ClusterTablet> {
        self.tablets
            .iter()
            .find(|t| t.uid() == uid)
            .with_context(|| format!("no tablet with uid {uid} in this cluster"))
    }

    /// A new `root` connection to a tablet's MariaDB.
    pub async fn mysql_conn(&self, alias: &TabletAlias) -> anyhow::Result<Conn> {
        self.tablet(alias)?.mysql_conn().await
    }

    /// The shard record's `primary_alias` (`None` if the shard has none).
    pub async fn primary_alias(&self, keyspace: &str, shard: &str) -> anyhow::Result<Option<TabletAlias>> {
        let record = self
            .topo
            .get_shard(keyspace, shard)
            .await
            .with_context(|| format!("read shard {keyspace}/{shard}"))?;
        Ok(record.value.primary_alias)
    }

    /// The tablet the shard record names primary.
    pub async fn primary(&self, keyspace: &str, shard: &str) -> anyhow::Result<&ClusterTablet> {
        let alias = self
            .primary_alias(keyspace, shard)
            .await?
            .with_context(|| format!("shard {keyspace}/{shard} has no primary"))?;
        self.tablet(&alias)
    }

    /// Waits until the shard record names `expected` primary.
    pub async fn wait_for_primary(
        &self,
        keyspace: &str,
        shard: &str,
        expected: &TabletAlias,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("shard record {keyspace}/{shard} to name {expected} primary");
        poll_until(timeout, &what, || async {
            Ok((self.primary_alias(keyspace, shard).await?.as_ref() == Some(expected)).then_some(()))
        })
        .await
    }

    /// `FullStatus` of a tablet, through its agent.
    pub async fn full_status(&self, alias: &TabletAlias) -> anyhow::Result<FullStatus> {
        let tablet = self.tablet(alias)?.rpc_tablet();
        self.tmc
            .with_timeout(RPC_TIMEOUT)
            .full_status(&tablet)
            .await
            .with_context(|| format!("FullStatus of {alias}"))
    }

    /// A report for error messages: each tablet's agent and MariaDB state
    /// and log tails (agent logs in child mode only).
    pub fn diagnostics(&self) -> String {
        let mut out = String::from("cluster state:");
        for t in &self.tablets {
            out.push_str(&format!(
                "\n--- {} (mysql pid {:?}, agent running {}, agent pid {:?})\nMariaDB error log tail:\n{}",
                t.alias(),
                t.mysql_pid(),
                t.agent_running(),
                t.agent_pid(),
                t.mysql().log_tail(10),
            ));
            if t.agent_pid().is_some() {
                out.push_str(&format!(
                    "\nagent log tail:\n{}",
                    crate::process::log_tail(&t.agent_log_path(), 20)
                ));
            }
        }
        out
    }

    /// Waits until every agent has finished starting (its grants gate is
    /// open: FullStatus answers).
    async fn wait_agents_started(&self) -> anyhow::Result<()> {
        let tmc = self.tmc.with_timeout(RPC_TIMEOUT);
        futures::future::try_join_all(self.tablets.iter().map(|t| {
            let tmc = &tmc;
            let what = format!("the agent of {} to finish starting", t.alias());
            async move {
                let target = t.rpc_tablet();
                poll_until(AGENT_READY_TIMEOUT, &what, || async {
                    Ok(tmc.full_status(&target).await.ok().map(|_| ()))
                })
                .await
            }
        }))
        .await?;
        Ok(())
    }

    /// A report for error messages, read straight from each reachable
    /// MariaDB: GTID positions, the replication threads and what every
    /// session is doing (a stuck SQL thread shows its state here).
    pub async fn replication_report(&self) -> String {
        let mut out = String::from("replication state:");
        for t in &self.tablets {
            out.push_str(&format!("\n--- {}", t.alias()));
            match replication_report_of(t).await {
                Ok(text) => out.push_str(&text),
                Err(e) => out.push_str(&format!("\nunreadable: {e:#}")),
            }
        }
        out
    }

    /// The process ids of everything running: etcd, MariaDB servers and
    /// child agents.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.etcd.pid().into_iter().collect();
        for t in &self.tablets {
            pids.extend(t.mysql_pid());
            pids.extend(t.agent_pid());
        }
        pids
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("etcd", &self.etcd.endpoint())
            .field("tablets", &self.tablets)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, so none acts on a dying database; then the
        // databases; then etcd. Every kill is SIGKILL + wait by PID.
        for t in &mut self.tablets {
            let _ = t.kill_agent();
        }
        for t in &mut self.tablets {
            t.kill_all();
        }
        let _ = self.etcd.kill();
        // The TempDirs (ours and etcd's) are removed when the fields drop.
    }
}

/// A `PROCESSLIST` row: id, user, command, state, seconds, statement.
type SessionRow = (u64, String, String, Option<String>, i64, Option<String>);

/// One tablet's part of [`Cluster::replication_report`].
async fn replication_report_of(t: &ClusterTablet) -> anyhow::Result<String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(2), t.mysql_conn())
        .await
        .context("connect timed out")??;
    let mut out = String::new();
    let vars: Option<(String, String, String, String)> = conn
        .query_first("SELECT @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos, @@read_only")
        .await?;
    if let Some((binlog, slave, current, read_only)) = vars {
        out.push_str(&format!(
            "\ngtid_binlog_pos={binlog} gtid_slave_pos={slave} gtid_current_pos={current} read_only={read_only}"
        ));
    }
    let rows: Vec<mysql_async::Row> = conn.query("SHOW ALL SLAVES STATUS").await?;
    const FIELDS: [&str; 10] = [
        "Master_Port",
        "Slave_IO_Running",
        "Slave_SQL_Running",
        "Slave_SQL_Running_State",
        "Gtid_IO_Pos",
        "Gtid_Slave_Pos",
        "Last_IO_Error",
        "Last_SQL_Error",
        "Relay_Log_File",
        "Relay_Log_Pos",
    ];
    for row in &rows {
        let mut line = String::from("\nslave status:");
        for name in FIELDS {
            let value = row
                .get_opt::<Option<String>, _>(name)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default();
            line.push_str(&format!(" {name}={value:?}"));
        }
        out.push_str(&line);
    }
    let sessions: Vec<SessionRow> = conn
        .query(
            "SELECT ID, USER, COMMAND, STATE, TIME, LEFT(INFO, 200) FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() ORDER BY ID",
        )
        .await?;
    for (id, user, command, state, time, info) in sessions {
        out.push_str(&format!(
            "\nsession {id} {user} {command} {time}s state={:?} info={:?}",
            state.unwrap_or_default(),
            info.unwrap_or_default()
        ));
    }
    conn.disconnect().await.ok();
    Ok(out)
}
