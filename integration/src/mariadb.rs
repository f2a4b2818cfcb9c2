//! A real MariaDB 10.11 server for tests, owned by the test process.
//!
//! [`MariaDbServer::start`] makes a fresh instance directory under a parent
//! directory the caller owns (put it on tmpfs, e.g. under `/dev/shm`, for
//! speed), writes a `my.cnf` following the recipe in
//! `shared/reference/integration-world.md` §3 (GTID binlog with
//! `log_slave_updates`, row format, strict GTID mode, `read_only=ON`,
//! semi-sync built in with the primary side off and the replica side on),
//! runs `mariadb-install-db` and starts `mariadbd` as an owned child. It
//! returns only once the server answers queries over TCP; if it cannot start
//! the error carries the reason and the tail of the server's error log, so
//! the calling test fails loudly.
//!
//! Users: `root` has no password over TCP (`--auth-root-authentication-method=normal`
//! creates `root@127.0.0.1`); the replication user [`REPL_USER`] /
//! [`REPL_PASSWORD`] is created with the binlog off, so a fresh server has an
//! empty `gtid_binlog_pos` and no errant GTIDs.
//!
//! Faults: [`MariaDbServer::kill`] (SIGKILL), [`MariaDbServer::pause`] /
//! [`MariaDbServer::resume`] (SIGSTOP / SIGCONT), [`MariaDbServer::stop`]
//! (graceful), [`MariaDbServer::restart`] (same datadir and port). Dropping
//! the server SIGKILLs and reaps the process; the directory is left to the
//! parent directory's owner.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use nix::sys::signal::Signal;

use crate::process::{ChildGuard, free_port, log_tail, looks_like_port_clash};

/// The MariaDB server binary; `VTORC_MARIADBD_BIN` overrides it.
pub const DEFAULT_MARIADBD_BIN: &str = "/usr/sbin/mariadbd";

/// The data-directory initialiser; `VTORC_MARIADB_INSTALL_DB_BIN` overrides it.
pub const DEFAULT_INSTALL_DB_BIN: &str = "/usr/bin/mariadb-install-db";

/// The replication user every server gets (host `127.0.0.1`).
pub const REPL_USER: &str = "repl";

/// The replication user's password.
pub const REPL_PASSWORD: &str = "replpw";

/// The replication password the servers of this process get: random per
/// process. Test processes run side by side on one machine, and a replica
/// whose source went away (killed, frozen, stopped) keeps reconnecting to its
/// port; if another process's server takes that port, a shared password
/// would let the stray replica in, and its semi-sync ACKs would acknowledge
/// that server's commits (seen: `agent_gray`'s fencing tests failed while
/// another suite ran). Within a process ports are never handed out twice.
pub fn repl_password() -> &'static str {
    static PASSWORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PASSWORD.get_or_init(|| format!("repl-{:016x}", rand::random::<u64>()))
}

/// Vitess's `rpl_semi_sync_master_timeout` (config/mycnf/mariadb10.cnf), ms.
pub const VITESS_SEMI_SYNC_TIMEOUT_MS: u64 = 1_000_000_000_000_000_000;

/// How many times to retry with a fresh port after a port clash.
const START_ATTEMPTS: usize = 3;

/// Lines of error log included in start-up errors.
const LOG_TAIL_LINES: usize = 40;

/// How a server is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    /// As configured: TCP on its port, replication started at boot.
    None,
    /// `--skip-networking --skip-slave-start`: UNIX socket only.
    SocketOnly,
}

/// Settings for one MariaDB instance.
#[derive(Clone, Debug)]
pub struct MariaDbOptions {
    /// `server_id`; must differ between servers that replicate together.
    pub server_id: u32,
    /// `rpl_semi_sync_master_timeout` in milliseconds: how long a semi-sync
    /// primary waits for an ACK before falling back to async. Vitess
    /// configures a practically infinite value (10^18, the default here).
    pub semi_sync_master_timeout_ms: u64,
    /// `slave_net_timeout` in seconds (default 8: Vitess's MySQL 8
    /// `replica_net_timeout`).
    pub slave_net_timeout_secs: u64,
    /// `innodb_buffer_pool_size` (e.g. `32M`).
    pub buffer_pool_size: String,
    /// Extra `key=value` lines appended to the `[mariadbd]` section.
    pub extra_config: Vec<String>,
    /// How long start-up (initialisation excluded) may take before it is an error.
    pub start_timeout: Duration,
}

impl MariaDbOptions {
    /// Defaults for `server_id`: Vitess's semi-sync timeout (10^18 ms),
    /// `slave_net_timeout` 8 s, a 32 MiB buffer pool and a 30 s start-up
    /// timeout.
    pub fn new(server_id: u32) -> Self {
        MariaDbOptions {
            server_id,
            semi_sync_master_timeout_ms: VITESS_SEMI_SYNC_TIMEOUT_MS,
            slave_net_timeout_secs: 8,
            buffer_pool_size: "32M".to_string(),
            extra_config: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// One MariaDB server owned by a test.
#[derive(Debug)]
pub struct MariaDbServer {
    /// The instance name (the directory's last component).
    name: String,
    /// The instance directory: `my.cnf`, `data/`, `error.log`, `stdout.log`.
    dir: PathBuf,
    /// TCP port on 127.0.0.1.
    port: u16,
    /// Settings the server was created with.
    options: MariaDbOptions,
    /// The running `mariadbd`; `None` while stopped or killed.
    child: Option<ChildGuard>,
}

impl MariaDbServer {
    /// Creates `<parent>/<name>` (removing any leftover), initialises a data
    /// directory, starts the server and creates the replication user.
    pub async fn start(parent: &Path, name: &str, options: MariaDbOptions) -> anyhow::Result<Self> {
        let dir = parent.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove old {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("tmp")).with_context(|| format!("create {}", dir.display()))?;
        let mut server = MariaDbServer {
            name: name.to_string(),
            dir,
            port: free_port().context("no free port for MariaDB")?,
            options,
            child: None,
        };
        server.write_config()?;
        server.install_db().await?;
        let mut attempt = 1;
        loop {
            let Err(e) = server.launch(Isolation::None).await else {
                break;
            };
            let tail = server.log_tail(LOG_TAIL_LINES);
            if attempt >= START_ATTEMPTS || !looks_like_port_clash(&tail) {
                return Err(e.context(format!(
                    "MariaDB {} did not start (attempt {attempt}, dir {}); error log tail:\n{tail}",
                    server.name,
                    server.dir.display()
                )));
            }
            attempt += 1;
            server.port = free_port().context("no free port for MariaDB")?;
            server.write_config()?;
        }
        server.create_users().await.with_context(|| {
            format!(
                "MariaDB {} started but user set-up failed; error log tail:\n{}",
                server.name,
                server.log_tail(LOG_TAIL_LINES)
            )
        })?;
        Ok(server)
    }

    /// Starts several servers concurrently, each `(name, options)` under
    /// `parent`. Fails if any fails (the others are then killed on drop).
    pub async fn start_many(
        parent: &Path,
        servers: Vec<(String, MariaDbOptions)>,
    ) -> anyhow::Result<Vec<MariaDbServer>> {
        let starts = servers
            .into_iter()
            .map(|(name, options)| async move { MariaDbServer::start(parent, &name, options).await });
        futures::future::join_all(starts).await.into_iter().collect()
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's `server_id`.
    pub fn server_id(&self) -> u32 {
        self.options.server_id
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildGuard::pid)
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The last `lines` lines of the error log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.error_log_path(), lines)
    }

    /// Connection options for `root` over TCP (no default database).
    pub fn root_opts(&self) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false)
            .into()
    }

    /// The server's UNIX socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("mysql.sock")
    }

    /// Connection options for `root` over the UNIX socket: the only way in
    /// while the server runs isolated ([`MariaDbServer::restart_isolated`]).
    pub fn socket_opts(&self) -> Opts {
        OptsBuilder::default()
            .socket(Some(self.socket_path().display().to_string()))
            .user(Some("root"))
            .into()
    }

    /// A `mysql://` URL for `root` over TCP.
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// Opens a new `root` connection (bounded by 5 s).
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        tokio::time::timeout(Duration::from_secs(5), Conn::new(self.root_opts()))
            .await
            .with_context(|| format!("connect to MariaDB {} timed out", self.name))?
            .with_context(|| format!("connect to MariaDB {}", self.name))
    }

    /// True while the process runs (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_exit(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the server and waits for it to die (like `kill -9`).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill_and_wait().context("kill mariadbd")?;
        }
        Ok(())
    }

    /// Freezes the server with SIGSTOP: connections hang, nothing errors.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Thaws a server frozen by [`MariaDbServer::pause`] (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Sends `signal` to the running server.
    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        match &self.child {
            Some(child) => child.signal(signal),
            None => bail!("MariaDB {} is not running", self.name),
        }
    }

    /// Shuts the server down gracefully (SIGTERM, up to 30 s, then SIGKILL).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // A paused server cannot act on SIGTERM.
            let _ = child.signal(Signal::SIGCONT);
            child
                .terminate(Duration::from_secs(30))
                .await
                .context("stop mariadbd")?;
        }
        Ok(())
    }

    /// Starts the server again on the same datadir and port; stops it
    /// gracefully first if it runs. Crash recovery runs as usual.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.relaunch(Isolation::None, "restart").await
    }

    /// Starts the server (stopping it gracefully first if it runs) with
    /// networking off and replication not started: only the UNIX socket
    /// ([`MariaDbServer::socket_opts`]) reaches it, so neither its agent nor
    /// anything else can touch it while it is being rebuilt (a maintenance
    /// start, like a vttablet restore that keeps the tablet out of service).
    pub async fn restart_isolated(&mut self) -> anyhow::Result<()> {
        self.relaunch(Isolation::SocketOnly, "start isolated").await
    }

    /// Stops the server (gracefully, if it runs) and launches it again with
    /// `isolation`; an error says it `did not {what}`.
    async fn relaunch(&mut self, isolation: Isolation, what: &str) -> anyhow::Result<()> {
        self.stop().await?;
        self.launch(isolation).await.with_context(|| {
            format!(
                "MariaDB {} did not {what}; error log tail:\n{}",
                self.name,
                self.log_tail(LOG_TAIL_LINES)
            )
        })
    }

    /// Writes `my.cnf` for the current port.
    fn write_config(&self) -> anyhow::Result<()> {
        let d = self.dir.display();
        let o = &self.options;
        let mut text = format!(
            "[mariadbd]\n\
             user=root\n\
             datadir={d}/data\n\
             socket={d}/mysql.sock\n\
             pid-file={d}/mysqld.pid\n\
             tmpdir={d}/tmp\n\
             port={port}\n\
             bind-address=127.0.0.1\n\
             log-error={d}/error.log\n\
             server_id={id}\n\
             log_bin={d}/data/mysql-bin\n\
             relay_log={d}/data/relay-bin\n\
             log_slave_updates=ON\n\
             binlog_format=ROW\n\
             gtid_strict_mode=ON\n\
             gtid_domain_id=0\n\
             read_only=ON\n\
             skip_name_resolve=ON\n\
             report_host=127.0.0.1\n\
             report_port={port}\n\
             rpl_semi_sync_master_enabled=OFF\n\
             rpl_semi_sync_slave_enabled=ON\n\
             rpl_semi_sync_master_timeout={timeout}\n\
             rpl_semi_sync_master_wait_no_slave=ON\n\
             slave_net_timeout={net_timeout}\n\
             innodb_buffer_pool_size={pool}\n\
             innodb_log_file_size=48M\n\
             innodb_flush_log_at_trx_commit=2\n\
             sync_binlog=0\n\
             performance_schema=OFF\n\
             max_connections=200\n",
            port = self.port,
            id = o.server_id,
            timeout = o.semi_sync_master_timeout_ms,
            net_timeout = o.slave_net_timeout_secs,
            pool = o.buffer_pool_size,
        );
        for line in &o.extra_config {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!(
            "[client]\nsocket={d}/mysql.sock\nport={}\nuser=root\n",
            self.port
        ));
        std::fs::write(self.config_path(), text).context("write my.cnf")
    }

    /// `<dir>/my.cnf`.
    fn config_path(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// Runs `mariadb-install-db` on the instance directory.
    async fn install_db(&self) -> anyhow::Result<()> {
        let bin = std::env::var("VTORC_MARIADB_INSTALL_DB_BIN")
            .unwrap_or_else(|_| DEFAULT_INSTALL_DB_BIN.to_string());
        if !Path::new(&bin).exists() {
            bail!("{bin} not found (install the Debian package mariadb-server)");
        }
        let output = tokio::process::Command::new(&bin)
            // --defaults-file must come first.
            .arg(format!("--defaults-file={}", self.config_path().display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("run {bin}"))?;
        if !output.status.success() {
            bail!(
                "{bin} failed for MariaDB {} ({}):\n{}\n{}\nerror log tail:\n{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Spawns `mariadbd` and waits until it answers `SELECT 1` over TCP.
    async fn launch(&mut self, isolation: Isolation) -> anyhow::Result<()> {
        let bin = std::env::var("VTORC_MARIADBD_BIN").unwrap_or_else(|_| DEFAULT_MARIADBD_BIN.to_string());
        if !Path::new(&bin).exists() {
            bail!("{bin} not found (install the Debian package mariadb-server)");
        }
        let out = std::fs::File::create(self.dir.join("stdout.log")).context("create stdout.log")?;
        let err = out.try_clone().context("dup stdout.log")?;
        let mut command = Command::new(&bin);
        command
            .arg(format!("--defaults-file={}", self.config_path().display()))
            .args(match isolation {
                Isolation::None => &[][..],
                Isolation::SocketOnly => &["--skip-networking", "--skip-slave-start"][..],
            })
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let name = format!("mariadbd {}", self.name);
        let mut child = ChildGuard::spawn(&name, &mut command, Some(self.error_log_path()))?;
        let deadline = tokio::time::Instant::now() + self.options.start_timeout;
        loop {
            if let Some(status) = child.try_exit().context("mariadbd try_wait")? {
                bail!("mariadbd exited during start-up with {status}");
            }
            let last = match self.ping(isolation).await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "MariaDB not ready after {:?} (last error: {last})",
                    self.options.start_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// One connect + `SELECT 1`, bounded by 1 s.
    async fn ping(&self, isolation: Isolation) -> anyhow::Result<()> {
        let opts = match isolation {
            Isolation::None => self.root_opts(),
            Isolation::SocketOnly => self.socket_opts(),
        };
        let attempt = async {
            let mut conn = Conn::new(opts).await?;
            conn.query_drop("SELECT 1").await?;
            conn.disconnect().await?;
            Ok::<(), mysql_async::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .context("ping timed out")?
            .context("ping failed")
    }

    /// Creates the replication user without writing the binlog.
    async fn create_users(&self) -> anyhow::Result<()> {
        let mut conn = self.connect().await?;
        conn.query_drop("SET SESSION sql_log_bin = 0").await?;
        conn.query_drop(format!(
            "CREATE USER IF NOT EXISTS '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY '{}'",
            repl_password()
        ))
        .await?;
        conn.query_drop(format!(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO '{REPL_USER}'@'127.0.0.1'"
        ))
        .await?;
        conn.disconnect().await?;
        Ok(())
    }
}
