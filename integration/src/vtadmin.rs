//! VTAdmin against vtorc-rs: a real Vitess 24 `vtgate` and `vtadmin` (API)
//! over a [`Cluster`], VTAdmin's web UI served with its API on one origin.
//!
//! VTAdmin discovers, per cluster, *vtctlds* (here: vtorc-rs's gRPC port,
//! which serves `vtctlservice.Vtctld`) and *vtgates* (a real vtgate on the
//! cluster's topology, which lists tablets for `SHOW vitess_tablets` from its
//! health check, i.e. from the agents' `StreamHealth`). The discovery file
//! ([`discovery_json`]) names both.
//!
//! The Vitess binaries and the web UI are built outside the repository by
//! `scripts/build-vitess-tool.sh` and `scripts/build-vtadmin-web.sh` (cached
//! under `~/.cache/vtorc-rs`); [`VitessPieces::build`] runs them and fails,
//! with the scripts' output, when they cannot build.
//!
//! vtgate refuses to run as root (servenv); when this process is root, vtgate
//! and vtadmin run as `nobody` (uid/gid 65534). Their files (discovery file,
//! logs) live in a directory of their own that `nobody` can read.
//!
//! vtgate runs with `--schema-change-signal=false`: its schema tracker calls
//! `queryservice.Query/GetSchema`, which the agents do not serve (they serve
//! `StreamHealth` only); listing tablets and their types, all VTAdmin needs
//! from it here, does not involve the tracker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, GLOBAL_ROOT};
use crate::process::{ChildGuard, free_port};

/// The Vitess version of the binaries and the UI.
pub const VITESS_VERSION: &str = "v0.24.4";

/// `nobody`'s uid and gid (Debian).
const NOBODY: u32 = 65_534;

/// The built Vitess pieces.
#[derive(Clone, Debug)]
pub struct VitessPieces {
    /// The `vtgate` binary.
    pub vtgate: PathBuf,
    /// The `vtadmin` (API) binary.
    pub vtadmin: PathBuf,
    /// The built web UI (`index.html`, `assets/`, `config/`).
    pub web: PathBuf,
}

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Runs a build script and returns the path it prints last; the error
/// carries the script's output.
fn run_build_script(script: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
    let path = scripts_dir().join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}\n{}",
            path.display(),
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let printed = stdout.lines().last().unwrap_or_default().trim();
    let built = PathBuf::from(printed);
    if printed.is_empty() || !built.exists() {
        bail!("{} printed {printed:?}, which does not exist", path.display());
    }
    Ok(built)
}

impl VitessPieces {
    /// Builds (or finds in the cache) vtgate, vtadmin and the web UI.
    /// `VTGATE`, `VTADMIN` and `VTADMIN_WEB` override each with a path.
    pub fn build() -> anyhow::Result<VitessPieces> {
        let pick = |var: &str, script: &str, args: &[&str]| -> anyhow::Result<PathBuf> {
            match std::env::var_os(var) {
                Some(p) => {
                    let p = PathBuf::from(p);
                    if !p.exists() {
                        bail!("{var}={} does not exist", p.display());
                    }
                    Ok(p)
                }
                None => run_build_script(script, args),
            }
        };
        Ok(VitessPieces {
            vtgate: pick("VTGATE", "build-vitess-tool.sh", &["vtgate"])?,
            vtadmin: pick("VTADMIN", "build-vitess-tool.sh", &["vtadmin"])?,
            web: pick("VTADMIN_WEB", "build-vtadmin-web.sh", &[])?,
        })
    }
}

/// VTAdmin's static discovery file for one cluster: one vtctld (vtorc-rs's
/// gRPC address, its HTTP address as the FQDN shown) and one vtgate.
pub fn discovery_json(vtctld_grpc: &str, vtctld_http: &str, vtgate_grpc: &str, vtgate_http: &str) -> String {
    serde_json::json!({
        "vtctlds": [{"host": {"fqdn": vtctld_http, "hostname": vtctld_grpc}}],
        "vtgates": [{"host": {"fqdn": vtgate_http, "hostname": vtgate_grpc}}],
    })
    .to_string()
}

/// Where vtorc-rs serves (what VTAdmin's discovery names as the vtctld).
#[derive(Clone, Debug)]
pub struct VtctldEndpoint {
    /// `host:port` of the gRPC server (`vtctlservice.Vtctld`).
    pub grpc: String,
    /// `host:port` of the HTTP server (shown by VTAdmin as the FQDN).
    pub http: String,
}

/// vtgate + vtadmin API + the web UI, running; everything stops on drop.
pub struct VtadminStack {
    /// The web UI (and `/api`), e.g. `http://127.0.0.1:PORT`.
    pub web_url: String,
    /// The VTAdmin API, `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// vtgate's MySQL port.
    pub vtgate_mysql_port: u16,
    /// vtgate's gRPC address.
    pub vtgate_grpc: String,
    /// The directory of the logs and the discovery file.
    pub dir: PathBuf,
    vtgate: ChildGuard,
    vtadmin: ChildGuard,
    web_stop: CancellationToken,
    _tempdir: tempfile::TempDir,
}

impl std::fmt::Debug for VtadminStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VtadminStack")
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Drop for VtadminStack {
    fn drop(&mut self) {
        self.web_stop.cancel();
        let _ = self.vtadmin.kill_and_wait();
        let _ = self.vtgate.kill_and_wait();
    }
}

/// A command that runs with `nobody`'s uid when we are root (vtgate's
/// servenv refuses uid 0). Through util-linux's `setpriv`, which changes the
/// real and effective ids only: the binaries stay readable under a 0700
/// `/root` cache.
fn unprivileged(bin: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<(std::fs::File, std::fs::File, PathBuf)> {
    let path = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let err = out.try_clone().context("dup log file")?;
    Ok((out, err, path))
}

impl VtadminStack {
    /// Starts vtgate on the cluster's topology (cell `cell`), vtadmin with a
    /// discovery file naming `vtctld` and that vtgate, and the web UI; waits
    /// until VTAdmin lists the cluster's tablets (up to `timeout`).
    pub async fn start(
        pieces: &VitessPieces,
        cluster: &Cluster,
        cell: &str,
        vtctld: &VtctldEndpoint,
        timeout: Duration,
    ) -> anyhow::Result<VtadminStack> {
        let tempdir = tempfile::Builder::new()
            .prefix("vtorc-vtadmin-")
            .tempdir()
            .context("create the vtadmin directory")?;
        let dir = tempdir.path().to_path_buf();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .context("chmod the vtadmin directory")?;

        let cluster_topo = cluster.topo_address();
        let (vtgate, (grpc, http, mysql)) = spawn_listening("vtgate", &dir, 3, |out, err| {
            let grpc = free_port().context("free port")?;
            let http = free_port().context("free port")?;
            let mysql = free_port().context("free port")?;
            let mut cmd = unprivileged(&pieces.vtgate);
            cmd.arg("--topo-implementation=etcd2")
                .arg(format!("--topo-global-server-address={cluster_topo}"))
                .arg(format!("--topo-global-root={GLOBAL_ROOT}"))
                .arg(format!("--cell={cell}"))
                .arg(format!("--cells-to-watch={cell}"))
                .arg("--tablet-types-to-wait=PRIMARY,REPLICA")
                .arg("--tablet-refresh-interval=2s")
                .arg("--service-map=grpc-vtgateservice")
                .arg("--schema-change-signal=false")
                .arg("--mysql-auth-server-impl=none")
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--grpc-port={grpc}"))
                .arg(format!("--port={http}"))
                .arg(format!("--mysql-server-port={mysql}"))
                .arg("--mysql-server-bind-address=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            Ok((cmd, vec![grpc, http, mysql], (grpc, http, mysql)))
        })
        .await?;
        let vtgate_grpc = format!("127.0.0.1:{grpc}");

        let discovery = dir.join("discovery.json");
        std::fs::write(
            &discovery,
            discovery_json(
                &vtctld.grpc,
                &vtctld.http,
                &vtgate_grpc,
                &format!("127.0.0.1:{http}"),
            ),
        )
        .context("write discovery.json")?;
        std::fs::set_permissions(&discovery, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .context("chmod discovery.json")?;

        let (vtadmin, api) = spawn_listening("vtadmin", &dir, 3, |out, err| {
            let api = free_port().context("free port")?;
            let mut cmd = unprivileged(&pieces.vtadmin);
            cmd.arg(format!("--addr=127.0.0.1:{api}"))
                .arg("--no-rbac")
                .arg(format!(
                    "--cluster=id=local,name=local,discovery=staticfile,discovery-staticfile-path={}",
                    discovery.display()
                ))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            Ok((cmd, vec![api], api))
        })
        .await?;
        let api_addr: SocketAddr = ([127, 0, 0, 1], api).into();

        let web_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the web UI")?;
        let web_addr = web_listener.local_addr().context("web address")?;
        let web_stop = CancellationToken::new();
        tokio::spawn(serve_web(
            web_listener,
            pieces.web.clone(),
            api_addr,
            web_stop.clone(),
        ));

        let mut stack = VtadminStack {
            web_url: format!("http://{web_addr}"),
            api_url: format!("http://{api_addr}"),
            vtgate_mysql_port: mysql,
            vtgate_grpc,
            dir,
            vtgate,
            vtadmin,
            web_stop,
            _tempdir: tempdir,
        };
        let expected = cluster.tablets().len();
        stack.wait_ready(expected, timeout).await?;
        Ok(stack)
    }

    /// Fails with the log tail if vtgate or vtadmin exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for child in [&mut self.vtgate, &mut self.vtadmin] {
            if let Some(status) = child.try_exit().context("try_wait")? {
                bail!(
                    "{} exited with {status}; log tail:\n{}",
                    child.name(),
                    child.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// Waits until VTAdmin's `/api/tablets` lists `expected` tablets.
    async fn wait_ready(&mut self, expected: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_running()?;
            let last = match http_get(&self.api_url, "/api/tablets").await {
                Ok((200, body)) => {
                    let n = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["result"]["tablets"].as_array().map(Vec::len))
                        .unwrap_or(0);
                    if n >= expected {
                        return Ok(());
                    }
                    body
                }
                Ok((code, body)) => format!("HTTP {code}: {body}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "VTAdmin did not list {expected} tablets within {timeout:?}; last answer: {last}\n\
                     vtgate log:\n{}\nvtadmin log:\n{}",
                    self.vtgate.log_tail(20),
                    self.vtadmin.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Spawns a server made by `make` (a command, the ports it must listen on,
/// a value to return) with its output in `<dir>/<name>.log`, and waits
/// until it accepts on every port. When it exits at start-up because a port
/// was taken meanwhile (free ports are only probably free), tries again
/// with fresh ports, up to `attempts` times.
async fn spawn_listening<T, F>(
    name: &str,
    dir: &Path,
    attempts: usize,
    mut make: F,
) -> anyhow::Result<(ChildGuard, T)>
where
    F: FnMut(std::fs::File, std::fs::File) -> anyhow::Result<(Command, Vec<u16>, T)>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (out, err, log) = log_file(dir, name)?;
        let (mut cmd, ports, value) = make(out, err)?;
        let mut child = ChildGuard::spawn(name, &mut cmd, Some(log.clone()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_exit().context("try_wait")? {
                let tail = child.log_tail(40);
                if crate::process::looks_like_port_clash(&tail) && attempt < attempts {
                    tracing::warn!("{name}: a port was taken, retrying with fresh ports");
                    break;
                }
                bail!("{name} exited at start-up with {status}; log tail:\n{tail}");
            }
            let mut all = true;
            for port in &ports {
                if tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .is_err()
                {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok((child, value));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{name} does not listen on {ports:?} after 30 s; log tail:\n{}",
                    child.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One HTTP/1.1 GET to `base` (`http://host:port`) + `path`: status and body.
pub async fn http_get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(base, "GET", path, None).await
}

/// One HTTP/1.1 request with an optional JSON body: status and body.
pub async fn http_request(
    base: &str,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {base}"))?
        .trim_end_matches('/');
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(authority))
        .await
        .with_context(|| format!("connect {authority}: timed out"))?
        .with_context(|| format!("connect {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(conn);
    let body = match json {
        Some(v) => Body::from(v.to_string()),
        None => Body::empty(),
    };
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .context("build request")?;
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .with_context(|| format!("{method} {path}: no answer within 120 s"))?
        .with_context(|| format!("{method} {path}"))?;
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 20)
        .await
        .context("read body")?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

struct Web {
    root: PathBuf,
    api: SocketAddr,
}

/// Serves the built UI from `root` and proxies `/api/...` to the API at
/// `api` (the UI was built to call its own origin).
pub async fn serve_web(
    listener: tokio::net::TcpListener,
    root: PathBuf,
    api: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let state = Arc::new(Web { root, api });
    let app = axum::Router::new().fallback(handle).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("web server")
}

async fn handle(State(web): State<Arc<Web>>, req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        return match proxy(web.api, req).await {
            Ok(r) => r,
            Err(e) => (StatusCode::BAD_GATEWAY, format!("vtadmin API: {e:#}")).into_response(),
        };
    }
    static_file(&web.root, req.uri().path()).await
}

async fn proxy(api: SocketAddr, req: Request) -> anyhow::Result<Response> {
    let stream = tokio::net::TcpStream::connect(api).await.context("connect")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts
        .headers
        .insert(header::HOST, api.to_string().parse().context("host header")?);
    let resp = sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await
        .context("request")?;
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

async fn static_file(root: &Path, path: &str) -> Response {
    let rel = path.trim_start_matches('/');
    let safe = !rel.split('/').any(|c| c == ".." || c.starts_with('.'));
    let candidate = root.join(rel);
    // Client-side routes (/keyspaces, /shard/...) get index.html.
    let file = if safe && !rel.is_empty() && candidate.is_file() {
        candidate
    } else {
        root.join("index.html")
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{}: {e}", file.display())).into_response(),
    }
}
