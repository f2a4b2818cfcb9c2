//! The tablet agent: a stand-in for vttablet's tablet-management side over
//! one real MariaDB 10.11 server.
//!
//! It serves `tabletmanagerservice.TabletManager` and
//! `queryservice.Query/StreamHealth` with vttablet's semantics as written
//! down in `shared/reference/vttablet-behaviour.md` (the specification), and
//! registers itself in the etcd topology the way vttablet does.
//!
//! Layout:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`AgentConfig`], [`Agent::start`], [`AgentHandle`]; the shared state, action lock, grants gate, type changes |
//! | `service.rs` | the two gRPC services: deadlines, panics, errors → statuses |
//! | `status.rs` | read-only RPCs (FullStatus, ReplicationStatus, positions, WaitForPosition, journal, status vars) |
//! | `replication.rs` | replication control (Stop/Start/Restart, StopReplicationAndGetStatus, SetReplicationSource, resets) |
//! | `reparent.rs` | InitPrimary/InitReplica, Demote/Undo/Promote, ReplicaWas*, SetReadOnly/Write, ChangeType, RefreshState |
//! | `health.rs` | the MySQL health checker and the StreamHealth payload |
//! | `repltracker.rs` | vttablet's replication heartbeat: writer on the primary, reader (StreamHealth lag) on the others |
//! | `query_service.rs` | "not serving" for applications that reach MariaDB directly: the app account locked, its sessions killed |
//! | `disk.rs` | the disk-health monitor (`--disk-write-dir`): FullStatus `disk_stalled` |
//! | `topo_sync.rs` | tablet record, ShardReplication, shard record sync |
//! | `mysql.rs`, `position.rs`, `error.rs` | MySQL access, MariaDB positions, errors |
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo(etcd_address: String, mysql_port: u16) -> anyhow::Result<()> {
//! use integration::agent::{Agent, AgentConfig};
//! // The cell's CellInfo must exist in the global topo; the keyspace and
//! // shard records are created if missing (write the keyspace first to set
//! // its durability policy).
//! let config = AgentConfig::new(etcd_address, "/vitess/global", "zone1", 100, "commerce", "0", mysql_port);
//! let agent = Agent::start(config).await?; // gRPC on a free port, record published
//! let url = agent.grpc_url(); // for TabletManagerClient / QueryClient
//! # let _ = url;
//! agent.shutdown().await?; // or drop it: like kill -9, the record is left as is
//! # Ok(()) }
//! ```
//!
//! The agent opens its "grants gate" once MariaDB answers and the sidecar
//! tables (`_vt.reparent_journal`, `_vt.semisync_heartbeat`) exist; gated
//! RPCs wait for it (bounded). If the shard already has a primary, a
//! starting non-primary agent points its MariaDB at it before the gate
//! opens, so no RPC acts before it (vttablet's start-up replication set-up;
//! off with `disable_active_reparents`). If its
//! tablet record is deleted, the agent stops itself at its next publish
//! ([`AgentHandle::is_stopped`]).
//!
//! Deliberate deviations from vttablet on MariaDB (each because vttablet's
//! MariaDB path is broken or MariaDB lacks the MySQL feature) are listed in
//! the module docs where they happen; the main ones: `read_only` plays the
//! role of `super_read_only`; `relay_log_position` is filled from
//! `Gtid_IO_Pos ∪ Gtid_Slave_Pos`; the errant-GTID guard compares MariaDB
//! positions per domain; status variables come from `SHOW GLOBAL STATUS`;
//! `auto_position` mirrors `Using_Gtid` (MariaDB's equivalent of GTID
//! auto-positioning); `semi_sync_blocked` is derived from
//! `Rpl_semi_sync_master_wait_sessions` without heartbeat writes; binlog
//! coordinates come from `Binlog_snapshot_file`/`_position` (MariaDB's
//! `SHOW MASTER STATUS` blocks while an AFTER_SYNC commit waits for an
//! ACK). Because the test world's applications connect to MariaDB
//! directly, the query service's "not serving" is given its effect on them
//! (`query_service.rs`).

pub mod disk;
pub mod error;
mod health;
pub mod mysql;
pub mod position;
mod query_service;
mod reparent;
mod replication;
pub mod repltracker;
mod service;
mod status;
mod topo_sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vtorc::proto::query::StreamHealthResponse;
use vtorc::proto::topodata::{Tablet, TabletAlias, TabletType};
use vtorc::proto::vttime;
use vtorc::{config::TlsFiles, tls::ServerTls};

use self::error::{AgentError, AgentResult};
use self::mysql::Mysql;
pub use self::service::{QueryService, TabletManagerService};
use self::topo_sync::TabletTopo;

/// The application user (vttablet's `--db_app_user` default here; the
/// cluster harness creates it on every server, host `127.0.0.1`): DML and
/// DDL, but neither `SUPER` nor `READ ONLY ADMIN`, so `read_only=ON` refuses
/// its writes. The workload writer uses it.
pub const APP_USER: &str = "app";

/// The application user's password.
pub const APP_PASSWORD: &str = "apppw";

/// Everything one agent needs. [`AgentConfig::new`] fills the defaults.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Global topo server address(es), comma-separated etcd endpoints.
    pub topo_global_server_address: String,
    /// Global topo root (e.g. `/vitess/global`).
    pub topo_global_root: String,
    /// This tablet's cell (its `CellInfo` must exist in the global topo).
    pub cell: String,
    /// This tablet's uid (the alias is `<cell>-<uid:010>`).
    pub uid: u32,
    /// Keyspace.
    pub keyspace: String,
    /// Shard name (`0`, `-80`, ...).
    pub shard: String,
    /// Type at start-up unless the topo says this tablet is the primary
    /// (REPLICA, RDONLY, EXPERIMENTAL, SPARE, DRAINED or PRIMARY).
    pub init_tablet_type: TabletType,
    /// Host name published in the tablet record and used to bind gRPC.
    pub hostname: String,
    /// gRPC port; 0 picks a free one (the record carries the real one).
    pub grpc_port: u16,
    /// MariaDB host.
    pub mysql_host: String,
    /// MariaDB TCP port.
    pub mysql_port: u16,
    /// MariaDB user with all privileges.
    pub mysql_user: String,
    /// Its password (empty for none).
    pub mysql_password: String,
    /// `db_name_override` for the tablet record (empty: `vt_<keyspace>`).
    pub db_name: String,
    /// The application's MariaDB user (vttablet's `--db_app_user`): the
    /// account "not serving" shuts out (see `query_service`).
    pub app_user: String,
    /// Replication user other tablets use to replicate from this one.
    pub replication_user: String,
    /// Its password.
    pub replication_password: String,
    /// `MASTER_CONNECT_RETRY` (vttablet's `--replication_connect_retry`, 10 s).
    pub replication_connect_retry: Duration,
    /// Bound on connecting to MariaDB for an RPC.
    pub mysql_connect_timeout: Duration,
    /// Bound on one ordinary statement.
    pub mysql_statement_timeout: Duration,
    /// vttablet's `--health-check-interval`: how often the health checker
    /// probes MariaDB and broadcasts the StreamHealth state (see `health.rs`).
    pub health_check_interval: Duration,
    /// Bound on one health probe (a hung server is declared down after it).
    pub health_check_timeout: Duration,
    /// StreamHealth sends the current state at least this often (an agent
    /// extra; vttablet sends at each health-check tick and on changes).
    pub health_stream_interval: Duration,
    /// vttablet's `--heartbeat-enable`: replication heartbeats (writer on
    /// the primary, reader on the others; StreamHealth lag comes from them).
    pub heartbeat_enable: bool,
    /// vttablet's `--heartbeat-interval` (capped at 1 s, as vttablet does).
    pub heartbeat_interval: Duration,
    /// A replica with more lag than this is not serving (vttablet's `--unhealthy_threshold`).
    pub unhealthy_threshold: Duration,
    /// How often the shard-sync loop re-reads the shard record (vttablet
    /// watches it and retries every 30 s).
    pub shard_sync_interval: Duration,
    /// Bound on topo calls and tablet-to-tablet calls (`--remote_operation_timeout`).
    pub remote_operation_timeout: Duration,
    /// vttablet's `--disable_active_reparents`: no replication set-up at
    /// start-up, and ending a primary term only changes the type.
    pub disable_active_reparents: bool,
    /// How long semi-sync may be blocked (writes waiting for an ACK) before
    /// FullStatus reports `semi_sync_blocked`.
    pub semi_sync_blocked_after: Duration,
    /// vttablet's `--disk-write-dir`: the directory the disk-health monitor
    /// writes [`disk::DISK_CHECK_FILE`] into; `None` = no monitor, the disk
    /// never counts as stalled.
    pub disk_write_dir: Option<PathBuf>,
    /// vttablet's `--disk-write-interval`: how often the monitor writes.
    pub disk_write_interval: Duration,
    /// vttablet's `--disk-write-timeout`: a write outstanding this long
    /// means the disk is stalled.
    pub disk_write_timeout: Duration,
    /// vttablet's `--grpc-cert/--grpc-key/--grpc-ca/--grpc-crl`: TLS of
    /// the gRPC server (cert and key); a CA makes client certificates
    /// mandatory. All unset = plaintext.
    pub grpc_tls: TlsFiles,
    /// vttablet's `--topo-etcd-tls-*`: TLS towards etcd. All unset = plaintext.
    pub topo_etcd_tls: TlsFiles,
    /// vttablet's `--tablet-manager-grpc-*`: TLS of this tablet's calls to
    /// other tablets (PrimaryStatus of the new source). All unset = plaintext.
    pub tablet_manager_tls: TlsFiles,
}

impl AgentConfig {
    /// A configuration with vttablet-like defaults, tuned for tests where
    /// vttablet's are minutes (health every 200 ms, stream every 1 s,
    /// connect retry 1 s).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topo_global_server_address: impl Into<String>,
        topo_global_root: impl Into<String>,
        cell: impl Into<String>,
        uid: u32,
        keyspace: impl Into<String>,
        shard: impl Into<String>,
        mysql_port: u16,
    ) -> AgentConfig {
        AgentConfig {
            topo_global_server_address: topo_global_server_address.into(),
            topo_global_root: topo_global_root.into(),
            cell: cell.into(),
            uid,
            keyspace: keyspace.into(),
            shard: shard.into(),
            init_tablet_type: TabletType::Replica,
            hostname: "127.0.0.1".to_string(),
            grpc_port: 0,
            mysql_host: "127.0.0.1".to_string(),
            mysql_port,
            mysql_user: "root".to_string(),
            mysql_password: String::new(),
            db_name: String::new(),
            app_user: APP_USER.to_string(),
            replication_user: crate::mariadb::REPL_USER.to_string(),
            replication_password: crate::mariadb::repl_password().to_string(),
            replication_connect_retry: Duration::from_secs(1),
            mysql_connect_timeout: Duration::from_secs(2),
            mysql_statement_timeout: Duration::from_secs(15),
            health_check_interval: Duration::from_millis(200),
            health_check_timeout: Duration::from_millis(500),
            health_stream_interval: Duration::from_secs(1),
            heartbeat_enable: false,
            heartbeat_interval: repltracker::DEFAULT_HEARTBEAT_INTERVAL,
            unhealthy_threshold: Duration::from_secs(2 * 3600),
            shard_sync_interval: Duration::from_secs(1),
            remote_operation_timeout: Duration::from_secs(15),
            semi_sync_blocked_after: Duration::from_secs(15),
            disable_active_reparents: false,
            disk_write_dir: None,
            disk_write_interval: Duration::from_secs(5),
            disk_write_timeout: Duration::from_secs(30),
            grpc_tls: TlsFiles::default(),
            topo_etcd_tls: TlsFiles::default(),
            tablet_manager_tls: TlsFiles::default(),
        }
    }

    /// This tablet's alias.
    pub fn alias(&self) -> TabletAlias {
        TabletAlias::new(self.cell.clone(), self.uid)
    }
}

/// What the agent knows about itself; guarded by a `std::sync::Mutex`
/// that is never held across an `.await`.
#[derive(Clone, Debug)]
struct TabletState {
    /// The in-memory tablet record: what was last published (type, term).
    tablet: Tablet,
    /// DemotePrimary took the query service out of serving; cleared by
    /// UndoDemotePrimary or any type change.
    demoted: bool,
    /// Outcome of the last MySQL probe: `None` before the first one.
    mysql_reachable: Option<bool>,
    /// Last replication-health error (`""` when healthy).
    health_error: String,
    /// Replication lag reported in StreamHealth, seconds.
    lag_seconds: u32,
    /// The last lag actually measured and when, for lag estimates while
    /// replication is broken.
    last_lag: Option<(u32, Instant)>,
}

/// A running agent's shared core. Cloned as `Arc<Agent>` into the gRPC
/// services and background tasks.
#[derive(Debug)]
pub struct Agent {
    /// The configuration it was started with.
    config: AgentConfig,
    /// This tablet's alias.
    alias: TabletAlias,
    /// How to reach MariaDB.
    mysql: Mysql,
    /// Topo access for this tablet's cell and the global topo.
    topo: TabletTopo,
    /// vttablet's action semaphore: one slot, FIFO.
    action_lock: Semaphore,
    /// Opens once the start-up MySQL check ("DBA grants verified") passed.
    grants_ready: watch::Sender<bool>,
    /// Why the grants check has not passed yet (for error messages).
    grants_error: Mutex<String>,
    /// Tablet state.
    state: Mutex<TabletState>,
    /// The current StreamHealth payload; every change is broadcast.
    health: watch::Sender<StreamHealthResponse>,
    /// Wakes the health checker for an immediate probe.
    health_wake: Notify,
    /// Wakes the shard-sync loop.
    shard_sync_wake: Notify,
    /// When semi-sync (as primary) was first seen blocked, if it is.
    semi_sync_blocked_since: Mutex<Option<Instant>>,
    /// The disk-health monitor, when `disk_write_dir` is set.
    disk: Option<Arc<disk::DiskHealth>>,
    /// The replication tracker (heartbeats).
    tracker: repltracker::ReplTracker,
    /// Cancelled on shutdown.
    cancel: CancellationToken,
}

/// A running agent: its gRPC server and background tasks. Dropping it stops
/// everything at once without touching the topo (like a killed process);
/// [`AgentHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct AgentHandle {
    /// The shared core.
    agent: Arc<Agent>,
    /// Where gRPC listens.
    addr: SocketAddr,
    /// The gRPC server task; aborted on drop.
    server: Option<tokio::task::JoinHandle<()>>,
    /// The background tasks; aborted on drop.
    tasks: JoinSet<()>,
}

impl Agent {
    /// Starts an agent in this process: registers the tablet in the topo
    /// (vttablet's start-up steps 1–5, §7), serves gRPC on the configured
    /// port, and starts the health checker, the grants check and the shard
    /// sync. Returns once gRPC listens and the tablet record is published.
    pub async fn start(config: AgentConfig) -> anyhow::Result<AgentHandle> {
        let alias = config.alias();
        validate_init_type(config.init_tablet_type)?;
        validate_app_user(&config)?;
        let tls = ServerTls::from_files(&config.grpc_tls, "grpc-")
            .with_context(|| format!("tablet {alias}: gRPC TLS"))?;
        let listener = tokio::net::TcpListener::bind((config.hostname.as_str(), config.grpc_port))
            .await
            .with_context(|| format!("bind gRPC on {}:{}", config.hostname, config.grpc_port))?;
        let addr = listener.local_addr().context("gRPC listener address")?;
        let topo = TabletTopo::connect(&config)
            .await
            .with_context(|| format!("tablet {alias}: connect to the topo"))?;
        let tablet = topo_sync::initial_tablet(&config, &topo, addr.port())
            .await
            .with_context(|| format!("tablet {alias}: start-up topo steps"))?;
        let mysql = Mysql::new(
            &config.mysql_host,
            config.mysql_port,
            &config.mysql_user,
            &config.mysql_password,
            config.mysql_connect_timeout,
            config.mysql_statement_timeout,
        );
        let state = TabletState {
            tablet,
            demoted: false,
            mysql_reachable: None,
            health_error: "tabletserver uninitialized".to_string(),
            lag_seconds: 0,
            last_lag: None,
        };
        let (grants_ready, _) = watch::channel(false);
        let (health, _) = watch::channel(StreamHealthResponse::default());
        let disk = config
            .disk_write_dir
            .as_deref()
            .map(|dir| disk::DiskHealth::new(dir, config.disk_write_timeout, &alias.to_string()));
        let tracker = repltracker::ReplTracker::new(
            config.heartbeat_enable,
            config.heartbeat_interval,
            &config.keyspace,
            &config.shard,
            config.uid,
        );
        let agent = Arc::new(Agent {
            config,
            alias: alias.clone(),
            mysql,
            topo,
            action_lock: Semaphore::new(1),
            grants_ready,
            grants_error: Mutex::new("not checked yet".to_string()),
            state: Mutex::new(state),
            health,
            health_wake: Notify::new(),
            shard_sync_wake: Notify::new(),
            semi_sync_blocked_since: Mutex::new(None),
            disk,
            tracker,
            cancel: CancellationToken::new(),
        });
        agent.publish_health();
        agent
            .publish_tablet()
            .await
            .map_err(|e| anyhow::anyhow!("tablet {alias}: publish tablet record: {e}"))?;

        let server = tokio::spawn(service::serve(agent.clone(), listener, tls));
        let mut tasks = JoinSet::new();
        tasks.spawn(health::run_checker(agent.clone()));
        tasks.spawn(health::run_grants_check(agent.clone()));
        tasks.spawn(topo_sync::run_shard_sync(agent.clone()));
        tasks.spawn(repltracker::run_writer(agent.clone()));
        tasks.spawn(repltracker::run_reader(agent.clone()));
        if let Some(monitor) = agent.disk.clone() {
            tasks.spawn(disk::run(
                monitor,
                agent.config.disk_write_interval,
                agent.cancel.clone(),
            ));
        }
        info!(tablet = %alias, %addr, "tablet agent started");
        Ok(AgentHandle {
            agent,
            addr,
            server: Some(server),
            tasks,
        })
    }

    /// This tablet's alias.
    pub fn alias(&self) -> &TabletAlias {
        &self.alias
    }

    /// Locks the state (poisoning cannot leave it inconsistent: every
    /// update is a plain assignment).
    fn state(&self) -> MutexGuard<'_, TabletState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current tablet type.
    fn tablet_type(&self) -> TabletType {
        TabletType::try_from(self.state().tablet.r#type).unwrap_or(TabletType::Unknown)
    }

    /// A copy of the in-memory tablet record.
    pub fn tablet(&self) -> Tablet {
        self.state().tablet.clone()
    }

    /// Whether the disk-health monitor finds the disk stalled (false
    /// without a monitor).
    fn disk_stalled(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.is_stalled())
    }

    /// Takes the action lock, waiting at most until `deadline`.
    async fn lock(&self, deadline: Option<Instant>) -> AgentResult<SemaphorePermit<'_>> {
        let acquire = self.action_lock.acquire();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d, acquire)
                .await
                .map_err(|_| AgentError::DeadlineExceeded("context deadline exceeded".to_string()))?,
            None => acquire.await,
        };
        permit.map_err(|_| AgentError::Unavailable("tablet agent is shutting down".to_string()))
    }

    /// The grants gate (§1): waits until the start-up MySQL check passed.
    /// Bounded by the caller's deadline and, deviating from vttablet (which
    /// waits for the caller's deadline only), by the MySQL connect timeout,
    /// so an unreachable MariaDB gives a clear error quickly.
    async fn wait_grants(&self, deadline: Option<Instant>) -> AgentResult<()> {
        let mut rx = self.grants_ready.subscribe();
        let bound = Instant::now() + self.config.mysql_connect_timeout * 2;
        let until = deadline.map_or(bound, |d| d.min(bound));
        match tokio::time::timeout_at(until, rx.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(AgentError::Unavailable(
                "tablet agent is shutting down".to_string(),
            )),
            Err(_) if deadline.is_some_and(|d| d <= until) => Err(AgentError::DeadlineExceeded(
                "context deadline exceeded".to_string(),
            )),
            Err(_) => {
                let why = self
                    .grants_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Err(AgentError::MysqlUnreachable(format!(
                    "mysql at {} is not ready (DBA grants not verified): {why}",
                    self.mysql.addr()
                )))
            }
        }
    }

    /// Changes the tablet type (§6.1). To PRIMARY: a new term start time is
    /// written to the topo first, then (with `read_write`) MariaDB is made
    /// writable. Away from PRIMARY the term is cleared. The record is
    /// published, StreamHealth updated and the shard sync woken.
    async fn set_type(&self, new_type: TabletType, read_write: bool) -> AgentResult<()> {
        let mut tablet = self.tablet();
        tablet.r#type = new_type as i32;
        tablet.primary_term_start_time = (new_type == TabletType::Primary).then(now_time);
        self.publish(&tablet).await?;
        if read_write {
            let mut conn = self.mysql.conn().await?;
            conn.exec("SET GLOBAL read_only = OFF").await?;
            query_service::open(&mut conn, &self.config.app_user).await?;
        }
        // A non-writable serving type (e.g. a demoted primary turned
        // REPLICA) gets the application's access back from the health
        // checker's serving reconciliation once `demoted` is cleared below.
        {
            let mut state = self.state();
            state.tablet = tablet;
            state.demoted = false;
        }
        info!(tablet = %self.alias, r#type = ?new_type, "tablet type changed");
        self.publish_health();
        self.health_wake.notify_one();
        self.shard_sync_wake.notify_one();
        Ok(())
    }

    /// Adopts PRIMARY with a given term (UndoDemotePrimary adopting the topo).
    async fn adopt_primary(&self, term: Option<vttime::Time>) -> AgentResult<()> {
        let mut tablet = self.tablet();
        tablet.r#type = TabletType::Primary as i32;
        tablet.primary_term_start_time = term.or_else(|| Some(now_time()));
        self.publish(&tablet).await?;
        {
            let mut state = self.state();
            state.tablet = tablet;
            state.demoted = false;
        }
        self.publish_health();
        self.shard_sync_wake.notify_one();
        Ok(())
    }

    /// Writes the in-memory record to the topo.
    async fn publish_tablet(&self) -> AgentResult<()> {
        let tablet = self.tablet();
        self.publish(&tablet).await
    }

    /// Overwrites the tablet record with `tablet`. If the record was
    /// deleted, the agent shuts itself down, as vttablet does (it sends
    /// itself SIGTERM): a deleted tablet must stay deleted.
    async fn publish(&self, tablet: &Tablet) -> AgentResult<()> {
        match self.topo.write_tablet(tablet).await {
            Err(AgentError::NotFound(m)) => {
                warn!(tablet = %self.alias, "tablet record was deleted from the topo; shutting down: {m}");
                self.cancel.cancel();
                self.action_lock.close();
                Err(AgentError::Unavailable(format!(
                    "tablet record {} was deleted from the topo; the tablet is shutting down",
                    self.alias
                )))
            }
            other => other,
        }
    }

    /// RunHealthCheck: broadcasts the state with replication health
    /// refreshed (`health::run_health_check`); neither locked nor gated, as
    /// in vttablet.
    async fn run_health_check(
        &self,
        _req: vtorc::proto::tabletmanagerdata::RunHealthCheckRequest,
        _deadline: Option<Instant>,
    ) -> AgentResult<vtorc::proto::tabletmanagerdata::RunHealthCheckResponse> {
        health::run_health_check(self).await;
        Ok(vtorc::proto::tabletmanagerdata::RunHealthCheckResponse {})
    }

    /// Marks the query service not serving for a demotion (or back).
    fn set_demoted(&self, demoted: bool) {
        self.state().demoted = demoted;
        self.publish_health();
    }

    /// Recomputes the StreamHealth payload and broadcasts it if it changed;
    /// the replication tracker follows the type and serving state.
    fn publish_health(&self) {
        self.publish_health_with(false);
    }

    /// vttablet's `Broadcast`: refreshes replication health from the
    /// tracker (heartbeat mode) and sends the state to every stream, changed
    /// or not.
    fn broadcast(&self) {
        self.publish_health_with(true);
    }

    /// The body of [`Agent::publish_health`] and [`Agent::broadcast`].
    fn publish_health_with(&self, always: bool) {
        let response = {
            let mut state = self.state();
            let primary = state.tablet.r#type == TabletType::Primary as i32;
            self.tracker.set_mode(primary, !state.demoted);
            if always {
                health::refresh_repl_health(self, &mut state);
            }
            health::response(&self.config, &state)
        };
        self.health.send_if_modified(|current| {
            if *current == response && !always {
                false
            } else {
                *current = response;
                true
            }
        });
    }
}

impl AgentHandle {
    /// The tablet alias.
    pub fn alias(&self) -> &TabletAlias {
        self.agent.alias()
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for tonic clients.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The in-memory tablet record.
    pub fn tablet(&self) -> Tablet {
        self.agent.tablet()
    }

    /// True once the agent stopped itself (its tablet record was deleted)
    /// or began shutting down.
    pub fn is_stopped(&self) -> bool {
        self.agent.cancel.is_cancelled()
    }

    /// The latest StreamHealth payload.
    pub fn health(&self) -> StreamHealthResponse {
        self.agent.health.borrow().clone()
    }

    /// The disk-health monitor (`None` without `disk_write_dir`).
    pub fn disk_health(&self) -> Option<Arc<disk::DiskHealth>> {
        self.agent.disk.clone()
    }

    /// Stops gracefully, like vttablet's `Close`: stops serving, then
    /// clears the address fields of the tablet record and stamps
    /// `tablet_shutdown_time` (the record is kept, the type unchanged).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.agent.cancel.cancel();
        self.agent.action_lock.close();
        let deadline = Duration::from_secs(5);
        while tokio::time::timeout(deadline, self.tasks.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
        self.tasks.abort_all();
        let mut tablet = self.agent.tablet();
        tablet.hostname.clear();
        tablet.mysql_hostname.clear();
        tablet.port_map.clear();
        tablet.tablet_start_time = None;
        tablet.tablet_shutdown_time = Some(now_time());
        let result = tokio::time::timeout(
            self.agent.config.remote_operation_timeout,
            self.agent.topo.write_tablet(&tablet),
        )
        .await;
        match result {
            // A deleted record stays deleted.
            Ok(Ok(())) | Ok(Err(AgentError::NotFound(_))) => Ok(()),
            Ok(Err(e)) => {
                warn!(tablet = %self.agent.alias, "failed to stamp shutdown time: {e}");
                Err(anyhow::anyhow!("stamp tablet_shutdown_time: {e}"))
            }
            Err(_) => Err(anyhow::anyhow!("stamp tablet_shutdown_time: topo timed out")),
        }
    }

    /// Waits until the gRPC server stops (it fails, normally never); used
    /// by the binary.
    pub async fn wait(&mut self) {
        match self.server.as_mut() {
            Some(server) => {
                let _ = server.await;
                self.server = None;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.agent.cancel.cancel();
        self.agent.action_lock.close();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.tasks.abort_all();
    }
}

/// Start-up types vttablet accepts, plus PRIMARY and DRAINED for harness convenience.
fn validate_init_type(t: TabletType) -> anyhow::Result<()> {
    match t {
        TabletType::Replica
        | TabletType::Rdonly
        | TabletType::Experimental
        | TabletType::Spare
        | TabletType::Drained
        | TabletType::Primary => Ok(()),
        other => anyhow::bail!("invalid init tablet type {}", other.as_str_name()),
    }
}

/// The application user is shut out while the tablet is not serving, so it
/// must be neither the agent's own MariaDB user nor the replication user.
fn validate_app_user(config: &AgentConfig) -> anyhow::Result<()> {
    let user = &config.app_user;
    if user.is_empty() || *user == config.mysql_user || *user == config.replication_user {
        anyhow::bail!(
            "the application user {user:?} must be set and differ from the MySQL user {:?} and the replication user {:?}",
            config.mysql_user,
            config.replication_user
        );
    }
    Ok(())
}

/// Now as a `vttime.Time`.
pub(crate) fn now_time() -> vttime::Time {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    vttime::Time {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanoseconds: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of
/// `H M S m u n`).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
