//! One tablet of a [`super::Cluster`]: its MariaDB server and its agent
//! (in this process or as a `tablet-agent` child), with start, kill, pause
//! and restart of each half.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use mysql_async::Conn;
use nix::sys::signal::Signal;
use vtorc::proto::topodata::{Tablet, TabletAlias, TabletType};
use vtorc::tablet::{GrpcTabletManager, TabletManager, TabletManagerExt};

use super::spec::{AgentMode, TabletSpec};
use crate::agent::{Agent, AgentConfig, AgentHandle};
use crate::mariadb::MariaDbServer;
use crate::process::{ChildGuard, free_port, looks_like_port_clash};

/// How long an agent may take to answer its first Ping.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Start attempts of a child agent whose port was taken meanwhile.
const AGENT_START_ATTEMPTS: u32 = 5;

/// Lines of agent log in start-up errors.
const LOG_TAIL_LINES: usize = 40;

/// The agent half of a tablet.
#[derive(Debug)]
pub(crate) enum AgentRunner {
    /// Running in this process.
    InProcess(AgentHandle),
    /// Running as a child process.
    Process(ChildGuard),
    /// Not running (killed, or not started yet).
    Down,
}

/// One tablet: a MariaDB server and the agent that manages it.
#[derive(Debug)]
pub struct ClusterTablet {
    /// `<cell>-<uid>`.
    alias: TabletAlias,
    /// The tablet's keyspace.
    keyspace: String,
    /// The tablet's shard.
    shard: String,
    /// What the tablet was declared as.
    spec: TabletSpec,
    /// The MariaDB server (owned: killed and reaped on drop).
    pub(crate) mysql: MariaDbServer,
    /// The agent's configuration; `grpc_port` is fixed after the first start
    /// so restarts keep the address.
    agent_config: AgentConfig,
    /// How the agent runs.
    agent_mode: AgentMode,
    /// The running agent, if any.
    pub(crate) agent: AgentRunner,
    /// The agent answered once: its address is known, so it is kept.
    started_once: bool,
    /// Directory for the agent's log (child mode).
    dir: PathBuf,
}

impl ClusterTablet {
    /// Wraps a started MariaDB server; the agent is not started yet.
    pub(crate) fn new(
        keyspace: &str,
        shard: &str,
        spec: TabletSpec,
        mysql: MariaDbServer,
        topo_address: &str,
        global_root: &str,
        agent_mode: AgentMode,
    ) -> anyhow::Result<ClusterTablet> {
        let mut config = AgentConfig::new(
            topo_address,
            global_root,
            spec.cell.clone(),
            spec.uid,
            keyspace,
            shard,
            mysql.port(),
        );
        config.init_tablet_type = spec.tablet_type;
        config.grpc_port = free_port().context("no free port for the agent's gRPC")?;
        // A shorter topo bound than vttablet's 15 s keeps a test's failure prompt.
        config.remote_operation_timeout = Duration::from_secs(10);
        let dir = mysql.dir().to_path_buf();
        Ok(ClusterTablet {
            alias: TabletAlias::new(spec.cell.clone(), spec.uid),
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            spec,
            mysql,
            agent_config: config,
            agent_mode,
            agent: AgentRunner::Down,
            started_once: false,
            dir,
        })
    }

    /// The tablet alias.
    pub fn alias(&self) -> &TabletAlias {
        &self.alias
    }

    /// The keyspace.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The shard.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The cell.
    pub fn cell(&self) -> &str {
        &self.alias.cell
    }

    /// The uid (also the MariaDB `server_id`).
    pub fn uid(&self) -> u32 {
        self.alias.uid
    }

    /// The declared start-up type.
    pub fn declared_type(&self) -> TabletType {
        self.spec.tablet_type
    }

    /// The agent's gRPC port (stable across agent restarts).
    pub fn grpc_port(&self) -> u16 {
        self.agent_config.grpc_port
    }

    /// `127.0.0.1:<grpc port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port())
    }

    /// The MariaDB port on 127.0.0.1.
    pub fn mysql_port(&self) -> u16 {
        self.mysql.port()
    }

    /// The MariaDB process id while it runs.
    pub fn mysql_pid(&self) -> Option<u32> {
        self.mysql.pid()
    }

    /// The MariaDB server.
    pub fn mysql(&self) -> &MariaDbServer {
        &self.mysql
    }

    /// A new `root` connection to this tablet's MariaDB (bounded by 5 s).
    pub async fn mysql_conn(&self) -> anyhow::Result<Conn> {
        self.mysql.connect().await
    }

    /// The agent's configuration (its `grpc_port` is the real one).
    pub fn agent_config(&self) -> &AgentConfig {
        &self.agent_config
    }

    /// The file the agent's disk-health monitor writes (`None` without
    /// [`super::ClusterBuilder::disk_health_check`]).
    pub fn disk_check_file(&self) -> Option<PathBuf> {
        self.agent_config
            .disk_write_dir
            .as_ref()
            .map(|dir| dir.join(crate::agent::disk::DISK_CHECK_FILE))
    }

    /// The agent's configuration, to adjust before the agent starts.
    pub(crate) fn agent_config_mut(&mut self) -> &mut AgentConfig {
        &mut self.agent_config
    }

    /// The in-process agent's handle (`None` in child mode or while down).
    pub fn agent_handle(&self) -> Option<&AgentHandle> {
        match &self.agent {
            AgentRunner::InProcess(handle) => Some(handle),
            _ => None,
        }
    }

    /// The agent's process id (child mode, while it runs).
    pub fn agent_pid(&self) -> Option<u32> {
        match &self.agent {
            AgentRunner::Process(child) => child.pid(),
            _ => None,
        }
    }

    /// Whether the agent was started and not killed since.
    pub fn agent_running(&self) -> bool {
        !matches!(self.agent, AgentRunner::Down)
    }

    /// The agent's log file (child mode).
    pub fn agent_log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// A tablet record good for addressing RPCs to this tablet's agent
    /// (alias, host, grpc port, keyspace, shard), independent of what the
    /// topo holds (the record may have been deleted by a fault).
    pub fn rpc_tablet(&self) -> Tablet {
        Tablet {
            alias: Some(self.alias.clone()),
            hostname: "127.0.0.1".to_string(),
            port_map: [("grpc".to_string(), i32::from(self.grpc_port()))]
                .into_iter()
                .collect(),
            keyspace: self.keyspace.clone(),
            shard: self.shard.clone(),
            mysql_hostname: "127.0.0.1".to_string(),
            mysql_port: i32::from(self.mysql_port()),
            ..Default::default()
        }
    }

    /// Starts the agent (in-process or as a child) and waits until it
    /// answers Ping. In-process restarts retry the bind while the previous
    /// listener is being torn down.
    pub(crate) async fn start_agent(&mut self, tmc: &GrpcTabletManager) -> anyhow::Result<()> {
        if self.agent_running() {
            bail!("agent of {} already runs", self.alias);
        }
        let deadline = tokio::time::Instant::now() + AGENT_START_TIMEOUT;
        match self.agent_mode.clone() {
            AgentMode::InProcess => loop {
                match Agent::start(self.agent_config.clone()).await {
                    Ok(handle) => {
                        self.agent = AgentRunner::InProcess(handle);
                        break;
                    }
                    Err(e) if is_addr_in_use(&e) && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.context(format!("start agent of {}", self.alias))),
                }
            },
            AgentMode::Process(binary) => {
                // The port was free when picked, not reserved: another
                // process (a parallel test) may have bound it since. A first
                // start moves to a fresh port (nothing knows the address
                // yet); a restart keeps its address and waits for it.
                let mut attempt = 1;
                loop {
                    let child = self.spawn_agent_process(&binary)?;
                    self.agent = AgentRunner::Process(child);
                    match self.wait_agent_answers(tmc, deadline).await {
                        Err(e)
                            if looks_like_port_clash(&format!("{e:#}"))
                                && attempt < AGENT_START_ATTEMPTS
                                && tokio::time::Instant::now() < deadline =>
                        {
                            attempt += 1;
                            if self.started_once {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            } else {
                                self.agent_config.grpc_port =
                                    free_port().context("no free port for the agent's gRPC")?;
                            }
                        }
                        other => {
                            self.started_once |= other.is_ok();
                            return other;
                        }
                    }
                }
            }
        }
        let answered = self.wait_agent_answers(tmc, deadline).await;
        self.started_once |= answered.is_ok();
        answered
    }

    /// Spawns `tablet-agent` with this tablet's configuration.
    fn spawn_agent_process(&self, binary: &Path) -> anyhow::Result<ChildGuard> {
        if !binary.exists() {
            bail!(
                "tablet-agent binary {} not found (cargo build -p integration --bin tablet-agent)",
                binary.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log_path())
            .context("open agent.log")?;
        let err = log.try_clone().context("dup agent.log")?;
        let mut command = Command::new(binary);
        command
            .args(agent_args(&self.agent_config))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        ChildGuard::spawn(
            &format!("tablet-agent {}", self.alias),
            &mut command,
            Some(self.agent_log_path()),
        )
    }

    /// Polls Ping until the agent answers or `deadline`; a child that exits
    /// meanwhile fails at once with its log tail.
    async fn wait_agent_answers(
        &mut self,
        tmc: &GrpcTabletManager,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let tablet = self.rpc_tablet();
        loop {
            if let AgentRunner::Process(child) = &mut self.agent
                && let Some(status) = child.try_exit().context("agent try_wait")?
            {
                let tail = child.log_tail(LOG_TAIL_LINES);
                self.agent = AgentRunner::Down;
                bail!(
                    "agent of {} exited during start-up with {status}; log tail:\n{tail}",
                    self.alias
                );
            }
            let last = match tmc.with_timeout(Duration::from_millis(500)).ping(&tablet).await {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                let tail = match &self.agent {
                    AgentRunner::Process(child) => child.log_tail(LOG_TAIL_LINES),
                    _ => "(in-process agent: see the test's log output)".to_string(),
                };
                bail!(
                    "agent of {} did not answer Ping within {AGENT_START_TIMEOUT:?} (last error: {last}); log tail:\n{tail}",
                    self.alias
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the agent abruptly: SIGKILL and reap (child), or drop the
    /// handle, which aborts every task without touching the topo
    /// (in-process). Idempotent.
    pub(crate) fn kill_agent(&mut self) -> anyhow::Result<()> {
        match std::mem::replace(&mut self.agent, AgentRunner::Down) {
            AgentRunner::Process(mut child) => {
                child.kill_and_wait().context("kill tablet-agent")?;
            }
            AgentRunner::InProcess(handle) => drop(handle),
            AgentRunner::Down => {}
        }
        Ok(())
    }

    /// Sends SIGSTOP / SIGCONT to a child agent; in-process agents cannot
    /// be paused.
    pub(crate) fn signal_agent(&self, signal: Signal) -> anyhow::Result<()> {
        match &self.agent {
            AgentRunner::Process(child) => child.signal(signal),
            AgentRunner::InProcess(_) => bail!(
                "agent of {} runs in-process and cannot receive {signal}; use AgentMode::Process",
                self.alias
            ),
            AgentRunner::Down => bail!("agent of {} is not running", self.alias),
        }
    }

    /// Stops the agent gracefully (vttablet's `Close`: the record keeps its
    /// type, loses its addresses and gets `tablet_shutdown_time`).
    pub(crate) async fn shutdown_agent(&mut self) -> anyhow::Result<()> {
        match std::mem::replace(&mut self.agent, AgentRunner::Down) {
            AgentRunner::Process(mut child) => {
                let _ = child.signal(Signal::SIGCONT);
                child.terminate(Duration::from_secs(10)).await?;
            }
            AgentRunner::InProcess(handle) => handle.shutdown().await?,
            AgentRunner::Down => {}
        }
        Ok(())
    }

    /// Kills agent and MariaDB at once (used by the cluster's drop).
    pub(crate) fn kill_all(&mut self) {
        let _ = self.kill_agent();
        // SIGKILL also ends a SIGSTOPped server.
        let _ = self.mysql.kill();
    }
}

/// True when an error chain says the port is still taken.
fn is_addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
            || c.to_string().contains("Address already in use")
    })
}

/// The `tablet-agent` command line for a configuration (every setting the
/// binary takes, so child and in-process agents behave alike).
fn agent_args(c: &AgentConfig) -> Vec<String> {
    let d = |d: Duration| format!("{}ms", d.as_millis());
    let mut args = vec![
        format!("--topo-global-server-address={}", c.topo_global_server_address),
        format!("--topo-global-root={}", c.topo_global_root),
        format!("--cell={}", c.cell),
        format!("--uid={}", c.uid),
        format!("--keyspace={}", c.keyspace),
        format!("--shard={}", c.shard),
        format!("--tablet-type={}", c.init_tablet_type.as_str_name()),
        format!("--tablet-hostname={}", c.hostname),
        format!("--grpc-port={}", c.grpc_port),
        format!("--mysql-host={}", c.mysql_host),
        format!("--mysql-port={}", c.mysql_port),
        format!("--mysql-user={}", c.mysql_user),
        format!("--mysql-password={}", c.mysql_password),
        format!("--db-name={}", c.db_name),
        format!("--db-app-user={}", c.app_user),
        format!("--db-repl-user={}", c.replication_user),
        format!("--db-repl-password={}", c.replication_password),
        format!("--replication-connect-retry={}", d(c.replication_connect_retry)),
        format!("--health-check-interval={}", d(c.health_check_interval)),
        format!("--health-check-timeout={}", d(c.health_check_timeout)),
        format!("--health-stream-interval={}", d(c.health_stream_interval)),
        format!("--mysql-connect-timeout={}", d(c.mysql_connect_timeout)),
        format!("--remote-operation-timeout={}", d(c.remote_operation_timeout)),
        format!("--shard-sync-interval={}", d(c.shard_sync_interval)),
    ];
    if c.disable_active_reparents {
        args.push("--disable-active-reparents".to_string());
    }
    if c.heartbeat_enable {
        args.push("--heartbeat-enable".to_string());
    }
    args.push(format!("--heartbeat-interval={}", d(c.heartbeat_interval)));
    args.push(format!(
        "--semi-sync-blocked-after={}",
        d(c.semi_sync_blocked_after)
    ));
    if let Some(dir) = &c.disk_write_dir {
        args.push(format!("--disk-write-dir={}", dir.display()));
    }
    args.push(format!("--disk-write-interval={}", d(c.disk_write_interval)));
    args.push(format!("--disk-write-timeout={}", d(c.disk_write_timeout)));
    for (flag, path) in [
        ("grpc-cert", &c.grpc_tls.cert),
        ("grpc-key", &c.grpc_tls.key),
        ("grpc-ca", &c.grpc_tls.ca),
        ("grpc-crl", &c.grpc_tls.crl),
        ("tablet-manager-grpc-ca", &c.tablet_manager_tls.ca),
        ("tablet-manager-grpc-cert", &c.tablet_manager_tls.cert),
        ("tablet-manager-grpc-key", &c.tablet_manager_tls.key),
        ("topo-etcd-tls-ca", &c.topo_etcd_tls.ca),
        ("topo-etcd-tls-cert", &c.topo_etcd_tls.cert),
        ("topo-etcd-tls-key", &c.topo_etcd_tls.key),
    ] {
        if let Some(path) = path {
            args.push(format!("--{flag}={}", path.display()));
        }
    }
    args
}
