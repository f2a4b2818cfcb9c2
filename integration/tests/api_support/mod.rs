//! Shared by the `api_*`, `http_*`, `grpcurl_*` and `otel_*` test binaries:
//! vtorc's whole runtime ([`vtorc::runtime::run`]) in the test process with
//! its gRPC and HTTP servers on loopback ports, a small in-memory world for
//! tests that need no MySQL, a raw HTTP/1.1 client, and waits.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use integration::cluster::{Cluster, poll_until};
use integration::process::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use vtorc::config::Config;
use vtorc::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle, DiscoveryTask};
use vtorc::proto::topodata::TabletAlias;
use vtorc::proto::vtorc::v1 as pb;
use vtorc::proto::vtorc::v1::vtorc_client::VtorcClient;
use vtorc::recovery::{RecoveryConfig, RecoveryDeps, RecoveryEngine, RecoveryHandle};
use vtorc::reparent::{ReparentConfig, Reparenter, system_wall_clock};
use vtorc::server::{ApiContext, VtctldService, VtorcApi};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager};
use vtorc::topo::Topo;

/// The keyspace of the test clusters.
pub const KS: &str = "commerce";

/// Alias of tablet `uid` in cell `zone1`.
pub fn alias(uid: u32) -> TabletAlias {
    integration::testkit::zone1(uid)
}

/// vtorc's flags for `cluster` (quicker than Go's defaults) with its servers
/// on `grpc_port` and `http_port`, plus `extra`.
pub fn config(cluster: &Cluster, grpc_port: u16, http_port: u16, extra: &[&str]) -> Config {
    let mut args = integration::testkit::vtorc_flags(cluster);
    args.extend([
        "--bind-address=127.0.0.1".to_string(),
        format!("--grpc-port={grpc_port}"),
        format!("--port={http_port}"),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::load(args).expect("test flags are valid")
}

/// `runtime::run` in the test process.
pub struct RunningVtorc {
    /// The gRPC server (`--grpc-port`).
    pub grpc: SocketAddr,
    /// The HTTP server (`--port`).
    pub http: SocketAddr,
    /// Stops the runtime.
    shutdown: CancellationToken,
    /// The runtime.
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningVtorc {
    /// Starts vtorc for `cluster` with `extra` flags and waits until both
    /// servers answer and discovery is ready.
    pub async fn start(cluster: &Cluster, extra: &[&str]) -> RunningVtorc {
        let grpc_port = free_port().expect("a free port");
        let http_port = free_port().expect("a free port");
        let config = config(cluster, grpc_port, http_port, extra);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(vtorc::runtime::run(config, shutdown.clone()));
        let vtorc = RunningVtorc {
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            shutdown,
            task: Some(task),
        };
        let mut client = None;
        for _ in 0..200 {
            if let Ok(c) = VtorcClient::connect(format!("http://{}", vtorc.grpc)).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut client = client.expect("the gRPC server listens within 10 s");
        poll_until(Duration::from_secs(30), "vtorc ready", || {
            let mut c = client.clone();
            async move {
                let h = c.get_health(pb::GetHealthRequest {}).await?.into_inner();
                Ok(h.ready.then_some(()))
            }
        })
        .await
        .expect("vtorc becomes ready");
        client.get_health(pb::GetHealthRequest {}).await.expect("health");
        vtorc
    }

    /// A client of the VTOrc API over a real channel.
    pub async fn client(&self) -> VtorcClient<Channel> {
        VtorcClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect to the VTOrc API")
    }

    /// Stops vtorc gracefully and checks it stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("vtorc stops within 30 s")
                .expect("the runtime task does not panic");
            result.expect("vtorc stops cleanly");
        }
    }
}

impl Drop for RunningVtorc {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A vtorc without MySQL: in-memory topology, discovery (spawned or not),
/// a recovery engine that is never started (its handle answers the API).
pub struct MemoryWorld {
    /// The API's handles.
    pub ctx: ApiContext,
    /// Discovery before it runs (`None` once spawned).
    discovery: Option<Discovery>,
    /// Discovery once spawned.
    discovery_task: Option<DiscoveryTask>,
    /// The topology.
    pub topo: Topo,
    /// For the Vtctld service.
    tmc: Arc<dyn TabletManager>,
    /// For the Vtctld service.
    reparenter: Arc<Reparenter>,
}

impl MemoryWorld {
    /// Builds the world; discovery is not running yet (so not ready).
    pub fn new() -> MemoryWorld {
        let config = Config::load([
            "vtorc",
            "--topo-global-server-address=memory:0",
            "--topo-global-root=/vitess/global",
            "--instance-poll-time=1s",
        ])
        .expect("valid flags");
        let (topo, _store) = Topo::in_memory(&["zone1"]);
        let grpc = GrpcTabletManager::new(
            TabletClientConfig::from_config(&config).expect("tablet client TLS settings"),
        );
        let tmc: Arc<dyn TabletManager> = Arc::new(grpc.clone());
        let (discovery, handle): (Discovery, DiscoveryHandle) = Discovery::new(
            DiscoveryConfig::from_config(&config),
            topo.clone(),
            Arc::clone(&tmc),
            Arc::new(grpc),
        );
        let reparenter = Arc::new(Reparenter::new(
            topo.clone(),
            Arc::clone(&tmc),
            ReparentConfig::from_config(&config),
        ));
        let (_engine, recovery): (_, RecoveryHandle) = RecoveryEngine::new(
            RecoveryConfig::from_config(&config, "memory-world"),
            RecoveryDeps {
                topo: topo.clone(),
                tmc: Arc::clone(&tmc),
                cluster: Arc::new(handle.clone()),
                reparenter: Arc::clone(&reparenter),
                clock: system_wall_clock,
            },
        )
        .expect("no audit file");
        let metrics = vtorc::runtime::metrics_registry(
            &handle,
            config.discovery_workers,
            &recovery,
            &reparenter.metrics(),
        )
        .expect("metrics registered once");
        let ctx = ApiContext {
            discovery: handle,
            recovery,
            topo: topo.clone(),
            live: vtorc::config::dynamic::LiveConfig::fixed(config.clone()),
            config: Arc::new(config),
            metrics,
            hostname: "memory-world".into(),
            clock: system_wall_clock,
            shutdown: CancellationToken::new(),
            sharing: None,
        };
        MemoryWorld {
            ctx,
            discovery: Some(discovery),
            discovery_task: None,
            topo,
            tmc,
            reparenter,
        }
    }

    /// Starts discovery (the empty topology makes it ready at once).
    pub fn start_discovery(&mut self) {
        if let Some(d) = self.discovery.take() {
            self.discovery_task = Some(d.spawn());
        }
    }

    /// Serves the HTTP API on a loopback port; returns its address.
    pub async fn serve_http(&self) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(vtorc::server::http::serve(listener, self.ctx.clone()));
        (addr, task)
    }

    /// Serves gRPC (Vtctld, VTOrc API, health, reflection) on a loopback
    /// port; returns its address.
    pub async fn serve_grpc(
        &self,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Result<(), vtorc::server::ServerError>>,
    ) {
        self.serve_grpc_tls(None).await
    }

    /// [`MemoryWorld::serve_grpc`] over TLS when `tls` is given.
    pub async fn serve_grpc_tls(
        &self,
        tls: Option<vtorc::tls::ServerTls>,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Result<(), vtorc::server::ServerError>>,
    ) {
        self.serve_grpc_guarded(tls, None).await
    }

    /// [`MemoryWorld::serve_grpc_tls`] with an access policy.
    pub async fn serve_grpc_guarded(
        &self,
        tls: Option<vtorc::tls::ServerTls>,
        access: Option<Arc<vtorc::server::auth::GrpcAccess>>,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Result<(), vtorc::server::ServerError>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let vtctld = VtctldService::new(
            self.topo.clone(),
            Arc::clone(&self.tmc),
            Arc::clone(&self.reparenter),
            Arc::clone(self.ctx.recovery.audit()),
            self.ctx.shutdown.clone(),
        );
        let api = VtorcApi::new(self.ctx.clone());
        let task = tokio::spawn(vtorc::server::serve_grpc_guarded(
            listener,
            vtctld,
            Some(api),
            tls,
            access,
            self.ctx.shutdown.clone(),
        ));
        (addr, task)
    }

    /// Stops the servers and discovery.
    pub async fn stop(mut self) {
        self.ctx.shutdown.cancel();
        if let Some(t) = self.discovery_task.take() {
            t.shutdown().await;
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes as text.
    pub body: String,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("HTTP answer within 10 s")??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()
        .context("status code")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).context("body is UTF-8")?,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A GET that must answer 200; returns the body.
pub async fn get_ok(addr: SocketAddr, path: &str) -> String {
    let r = http(addr, "GET", path).await.expect("HTTP request");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}
