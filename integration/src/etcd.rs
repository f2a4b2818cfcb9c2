//! A real etcd server for tests: `/usr/bin/etcd` (Debian `etcd-server`
//! 3.4) on free loopback ports, in a fresh temporary directory (on tmpfs
//! when `/dev/shm` exists), with the fast election flags.
//!
//! [`EtcdServer::start`] returns only once the server answers a `status`
//! call. If etcd cannot start (binary missing, start-up timeout, port
//! clash three times in a row) it returns an error that carries the reason
//! and the tail of the etcd log, so the calling test fails loudly; it never
//! skips. Dropping the server SIGKILLs it by PID and waits for it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let etcd = integration::etcd::EtcdServer::start().await?;
//! let mut client = etcd.client().await?;
//! client.put("/k", "v", None).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use tempfile::TempDir;

use crate::process::{ChildGuard, free_port, log_tail, looks_like_port_clash};

/// The etcd binary; `VTORC_ETCD_BIN` overrides it.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// How long to wait for a fresh etcd to become healthy (it takes ~50 ms).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times to retry with fresh ports after a port clash.
const START_ATTEMPTS: usize = 3;

/// Lines of etcd log included in start-up errors.
const LOG_TAIL_LINES: usize = 40;

/// One single-node etcd server owned by a test.
#[derive(Debug)]
pub struct EtcdServer {
    /// The running etcd process; `None` after [`EtcdServer::kill`].
    child: Option<ChildGuard>,
    /// Port for client (gRPC) traffic on 127.0.0.1.
    client_port: u16,
    /// Port for peer (raft) traffic on 127.0.0.1.
    peer_port: u16,
    /// `<dir>/etcd.log`, etcd's zap log.
    log_path: PathBuf,
    /// `<dir>/data`, etcd's data directory (kept across [`EtcdServer::restart`]).
    data_dir: PathBuf,
    /// TLS settings; `None` = plaintext.
    tls: Option<EtcdTls>,
    /// The temporary directory; deleted on drop, after the process is gone.
    dir: TempDir,
}

/// TLS of a test etcd (etcd 3.4's `--cert-file --key-file
/// --trusted-ca-file --client-cert-auth`).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The server's certificate and key.
    pub server: crate::pki::CertFiles,
    /// CA of client certificates (`--trusted-ca-file`).
    pub ca: PathBuf,
    /// Whether clients must present a certificate (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// What the harness's own clients use (`--topo-etcd-tls-*` form).
    pub client: vtorc::config::TlsFiles,
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until it answers `status`.
    pub async fn start() -> anyhow::Result<EtcdServer> {
        Self::start_with(None).await
    }

    /// [`EtcdServer::start`] serving clients over TLS (`https://`) when
    /// `tls` is given.
    pub async fn start_with(tls: Option<EtcdTls>) -> anyhow::Result<EtcdServer> {
        let dir = temp_dir()?;
        let mut server = EtcdServer {
            tls,
            child: None,
            client_port: free_port().context("no free port for etcd")?,
            peer_port: free_port().context("no free port for etcd")?,
            log_path: dir.path().join("etcd.log"),
            data_dir: dir.path().join("data"),
            dir,
        };
        let mut attempt = 1;
        loop {
            let Err(e) = server.launch().await else {
                return Ok(server);
            };
            let tail = server.log_tail(LOG_TAIL_LINES);
            if attempt >= START_ATTEMPTS || !looks_like_port_clash(&tail) {
                return Err(e.context(format!(
                    "etcd did not start (attempt {attempt}, dir {}); etcd log tail:\n{tail}",
                    server.dir.path().display()
                )));
            }
            // Another process took a port between our probe and etcd's bind: retry afresh.
            attempt += 1;
            server.client_port = free_port().context("no free port for etcd")?;
            server.peer_port = free_port().context("no free port for etcd")?;
            let _ = std::fs::remove_dir_all(&server.data_dir);
            let _ = std::fs::remove_file(&server.log_path);
        }
    }

    /// Spawns the etcd process with this server's ports and directories and
    /// waits until it is healthy.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let bin = std::env::var("VTORC_ETCD_BIN").unwrap_or_else(|_| DEFAULT_ETCD_BIN.to_string());
        if !Path::new(&bin).exists() {
            bail!("etcd binary {bin} not found (install Debian package etcd-server)");
        }
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let out = std::fs::File::create(self.dir.path().join("etcd.out")).context("create etcd.out")?;
        let err = out.try_clone().context("dup etcd.out")?;
        let mut command = Command::new(&bin);
        command
            .arg("--name=itest")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=itest={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .args(self.tls.iter().flat_map(|tls| {
                let mut args = vec![
                    format!("--cert-file={}", tls.server.cert.display()),
                    format!("--key-file={}", tls.server.key.display()),
                    format!("--trusted-ca-file={}", tls.ca.display()),
                ];
                if tls.client_cert_auth {
                    args.push("--client-cert-auth".to_string());
                }
                args
            }))
            .arg("--logger=zap")
            .arg(format!("--log-outputs={}", self.log_path.display()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = ChildGuard::spawn("etcd", &mut command, Some(self.log_path.clone()))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_exit().context("etcd try_wait")? {
                bail!("etcd exited during start-up with {status}");
            }
            let last = match self.status_once().await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("etcd not healthy after {START_TIMEOUT:?} (last status error: {last})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// One `status` round trip with a short timeout.
    async fn status_once(&self) -> anyhow::Result<()> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        let options = self.with_client_tls(options)?;
        let mut client = Client::connect([self.endpoint()], Some(options)).await?;
        client.status().await?;
        Ok(())
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS), for etcd clients.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The TLS settings, if etcd serves TLS.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// What clients of this server set as `--topo-etcd-tls-*` (all unset
    /// without TLS).
    pub fn client_tls_files(&self) -> vtorc::config::TlsFiles {
        self.tls.as_ref().map(|t| t.client.clone()).unwrap_or_default()
    }

    fn with_client_tls(&self, options: ConnectOptions) -> anyhow::Result<ConnectOptions> {
        Ok(match vtorc::tls::etcd_tls_options(&self.client_tls_files())? {
            Some(tls) => options.with_tls(tls),
            None => options,
        })
    }

    /// `127.0.0.1:<client port>`, the form Vitess puts in
    /// `--topo-global-server-address` and `CellInfo.server_address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The etcd process id, `None` after [`EtcdServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildGuard::pid)
    }

    /// A new client connected to this server.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let options =
            self.with_client_tls(ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)))?;
        Client::connect([self.endpoint()], Some(options))
            .await
            .with_context(|| format!("connect to etcd at {}", self.endpoint()))
    }

    /// The temporary directory holding the data dir and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the etcd log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// SIGKILLs etcd and waits for it ("etcd gone"). The data dir stays, so
    /// [`EtcdServer::restart`] brings the same cluster back.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill_and_wait().context("kill etcd")?;
        }
        Ok(())
    }

    /// Starts etcd again on the same ports and data dir after
    /// [`EtcdServer::kill`]; waits until healthy.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.launch().await.with_context(|| {
            format!(
                "etcd restart failed; log tail:\n{}",
                self.log_tail(LOG_TAIL_LINES)
            )
        })
    }

    /// [`EtcdServer::restart`] serving with `tls` from now on (a rotation
    /// of its certificate or of the CA it trusts).
    pub async fn restart_with_tls(&mut self, tls: Option<EtcdTls>) -> anyhow::Result<()> {
        self.kill()?;
        self.tls = tls;
        self.launch().await.with_context(|| {
            format!(
                "etcd restart with new TLS settings failed; log tail:\n{}",
                self.log_tail(LOG_TAIL_LINES)
            )
        })
    }
}

/// A fresh temporary directory, on tmpfs when available.
fn temp_dir() -> anyhow::Result<TempDir> {
    crate::process::tmpfs_temp_dir("vtorc-etcd-").context("create temp dir for etcd")
}

/// Writes `key` = `contents` attached to `lease` only if the key does not
/// exist yet: the create-if-absent transaction Vitess's etcd2 backend takes
/// a lock with, done with raw etcd operations (independently of
/// `vtorc::topo`). Fails the test unless the key was created; returns the
/// revision of the write.
pub async fn create_leased_key(client: &mut Client, key: &str, contents: &str, lease: i64) -> i64 {
    let txn = Txn::new()
        .when([Compare::version(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            contents,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = client.txn(txn).await.expect("txn");
    assert!(resp.succeeded(), "create the lock key {key}");
    resp.header().expect("header").revision()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn etcd_starts_answers_and_stops_by_pid() {
        let mut etcd = EtcdServer::start().await.expect("etcd must start");
        let mut client = etcd.client().await.expect("client");
        client.put("/smoke", "1", None).await.expect("put");
        let got = client.get("/smoke", None).await.expect("get");
        assert_eq!(
            got.kvs().first().map(|kv| kv.value().to_vec()),
            Some(b"1".to_vec())
        );
        let pid = etcd.pid().expect("pid");
        etcd.kill().expect("kill");
        assert!(
            client.get("/smoke", None).await.is_err(),
            "etcd still answers after kill"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                let s = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !s.contains("etcd")
            }
        );
        etcd.restart().await.expect("restart");
        let mut client = etcd.client().await.expect("client after restart");
        let got = client.get("/smoke", None).await.expect("get after restart");
        assert_eq!(got.kvs().len(), 1, "data survives a restart");
    }

    #[tokio::test]
    async fn two_servers_run_side_by_side() {
        let (a, b) = tokio::join!(EtcdServer::start(), EtcdServer::start());
        let (a, b) = (a.expect("first etcd"), b.expect("second etcd"));
        assert_ne!(a.client_port(), b.client_port());
        a.client()
            .await
            .expect("a")
            .put("/x", "a", None)
            .await
            .expect("put a");
        let got = b.client().await.expect("b").get("/x", None).await.expect("get b");
        assert!(got.kvs().is_empty(), "servers share data");
    }

    #[tokio::test]
    async fn a_taken_port_fails_with_the_reason_in_the_log() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dir = temp_dir().expect("dir");
        let mut server = EtcdServer {
            tls: None,
            child: None,
            client_port: taken.local_addr().expect("addr").port(),
            peer_port: free_port().expect("port"),
            log_path: dir.path().join("etcd.log"),
            data_dir: dir.path().join("data"),
            dir,
        };
        let err = server.launch().await.expect_err("etcd cannot bind a taken port");
        assert!(err.to_string().contains("exited"), "{err:#}");
        assert!(
            looks_like_port_clash(&server.log_tail(40)),
            "{}",
            server.log_tail(40)
        );
    }
}
