//! A lightweight in-process tablet simulator, for benchmarks and fast tests
//! of discovery at scale.
//!
//! Each [`SimTablet`] is a tonic server on its own loopback port that answers
//! TabletManager `FullStatus`, `Ping`, `PrimaryStatus`, `PrimaryPosition` and
//! `ReplicationStatus` (every other RPC is `UNIMPLEMENTED`) and streams
//! `Query/StreamHealth`, all from a state the test controls. It is not a
//! vttablet: behaviour that matters for correctness is tested against the
//! real tablet agent over MariaDB (`crate::agent`).
//!
//! Failure modes ([`SimMode`]):
//! - `Down`: the process is gone. The listener closes (connects are refused)
//!   and open connections fail at once, as after `kill -9`.
//! - `Hang`: the process is frozen, as after `SIGSTOP`. Connections are still
//!   accepted (the kernel does that), but nothing is read or answered and open
//!   connections stall without a reset.
//!
//! Every tablet's tasks live in the fleet's [`JoinSet`]; dropping the fleet
//! fails every connection and stops them.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, task::AtomicWaker};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpSocket, TcpStream},
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::server::Connected};
use vtorc::proto::{
    query::{RealtimeStats, StreamHealthRequest, StreamHealthResponse, Target},
    queryservice::query_server::{Query, QueryServer},
    replicationdata::{FullStatus, PrimaryStatus, Status as ReplicationStatus},
    tabletmanagerdata as tm,
    tabletmanagerservice::tablet_manager_server::{TabletManager, TabletManagerServer},
    topodata::{KeyRange, Keyspace, Shard, Tablet, TabletAlias, TabletType},
};
use vtorc::topo::Topo;

/// How a simulated tablet treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimMode {
    /// Accepts connections and answers.
    Serving,
    /// Gone (`kill -9`): connects are refused, open connections fail.
    Down,
    /// Frozen (`SIGSTOP`): connects succeed, nothing is ever answered.
    Hang,
}

impl SimMode {
    fn from_u8(v: u8) -> SimMode {
        match v {
            1 => SimMode::Down,
            2 => SimMode::Hang,
            _ => SimMode::Serving,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            SimMode::Serving => 0,
            SimMode::Down => 1,
            SimMode::Hang => 2,
        }
    }
}

/// A scripted misbehaviour of `FullStatus`.
#[derive(Clone, Debug, PartialEq)]
pub enum SimFault {
    /// Answer with this error status.
    Error(tonic::Code, String),
    /// Answer OK without a status (a corrupt answer).
    EmptyStatus,
}

/// The state a simulated tablet reports. Change it with [`SimTablet::update`].
#[derive(Clone, Debug)]
pub struct SimState {
    /// Current type (PRIMARY, REPLICA, ...), in `FullStatus` and health.
    pub tablet_type: TabletType,
    /// MySQL `server_id`.
    pub server_id: u32,
    /// MySQL `server_uuid`.
    pub server_uuid: String,
    /// Executed position, Vitess text form (`MySQL56/<uuid>:1-<n>`).
    pub position: String,
    /// MySQL `read_only`.
    pub read_only: bool,
    /// Replication source `(host, port, uuid)`; `None` = not a replica.
    pub source: Option<(String, i32, String)>,
    /// Whether the replication IO and SQL threads run.
    pub replicating: bool,
    /// Replication lag in seconds.
    pub lag_seconds: u32,
    /// Health: whether the tablet serves queries.
    pub serving: bool,
    /// Health: error text; empty = healthy.
    pub health_error: String,
    /// Health: primary term start, seconds since the epoch (0 = not primary).
    pub primary_term_start: i64,
    /// `FullStatus` misbehaviour; `None` = answer normally.
    pub fault: Option<SimFault>,
    /// Delay before answering `FullStatus` (a slow tablet).
    pub full_status_delay: Duration,
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The cell of every simulated tablet.
    pub cell: String,
    /// How often a health stream repeats the current health when nothing
    /// changed (vttablet does so on every health check, 20 s by default).
    pub health_interval: Duration,
    /// The first tablet uid; later tablets count up.
    pub first_uid: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            cell: "zone1".into(),
            health_interval: Duration::from_secs(20),
            first_uid: 100,
        }
    }
}

/// Shared control block of one simulated tablet.
struct Ctl {
    /// The tablet's alias.
    alias: TabletAlias,
    /// Keyspace.
    keyspace: String,
    /// Shard name.
    shard: String,
    /// Loopback port it listens on (fixed for its life, rebound after `Down`).
    port: u16,
    /// Current [`SimMode`] as `u8`.
    mode: AtomicU8,
    /// Wakes the listener task on a mode change.
    mode_tx: watch::Sender<SimMode>,
    /// Wakers of open connections' stalled reads/writes (woken on a mode
    /// change so they re-check it). Dead entries are pruned on accept.
    conns: Mutex<Vec<Weak<AtomicWaker>>>,
    /// The reported state. A std mutex: held for field copies only, never
    /// across an `.await`.
    state: Mutex<SimState>,
    /// Bumped on every state change; health streams watch it.
    changed: watch::Sender<u64>,
    /// `FullStatus` calls answered or failed (not counting hung ones).
    full_status_calls: AtomicU64,
    /// `Ping` calls.
    ping_calls: AtomicU64,
    /// `StreamHealth` streams opened.
    health_streams: AtomicU64,
    /// Health interval.
    health_interval: Duration,
}

impl Ctl {
    fn mode(&self) -> SimMode {
        SimMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> StreamHealthResponse {
        let s = self.state();
        StreamHealthResponse {
            target: Some(Target {
                keyspace: self.keyspace.clone(),
                shard: self.shard.clone(),
                tablet_type: s.tablet_type as i32,
                cell: self.alias.cell.clone(),
            }),
            serving: s.serving,
            primary_term_start_timestamp: s.primary_term_start,
            realtime_stats: Some(RealtimeStats {
                health_error: s.health_error.clone(),
                replication_lag_seconds: s.lag_seconds,
                ..Default::default()
            }),
            tablet_alias: Some(self.alias.clone()),
        }
    }

    fn replication_status(s: &SimState) -> Option<ReplicationStatus> {
        let (host, port, uuid) = s.source.as_ref()?;
        // replicationdata thread states: 1 = stopped, 3 = running.
        let thread = if s.replicating { 3 } else { 1 };
        Some(ReplicationStatus {
            position: s.position.clone(),
            relay_log_position: s.position.clone(),
            replication_lag_seconds: s.lag_seconds,
            source_host: host.clone(),
            source_port: *port,
            source_uuid: uuid.clone(),
            connect_retry: 10,
            io_state: thread,
            sql_state: thread,
            auto_position: true,
            using_gtid: true,
            source_user: "vt_repl".into(),
            ..Default::default()
        })
    }

    fn full_status(&self) -> Result<FullStatus, SimFault> {
        let s = self.state();
        if let Some(fault) = &s.fault {
            return Err(fault.clone());
        }
        Ok(FullStatus {
            server_id: s.server_id,
            server_uuid: s.server_uuid.clone(),
            replication_status: Self::replication_status(&s),
            primary_status: Some(PrimaryStatus {
                position: s.position.clone(),
                file_position: "FilePos/binlog.000001:4".into(),
                server_uuid: s.server_uuid.clone(),
            }),
            gtid_purged: "MySQL56/".into(),
            version: "8.0.40".into(),
            version_comment: "vtorc-rs tablet simulator".into(),
            read_only: s.read_only,
            super_read_only: s.read_only,
            gtid_mode: "ON".into(),
            binlog_format: "ROW".into(),
            binlog_row_image: "FULL".into(),
            log_bin_enabled: true,
            log_replica_updates: true,
            tablet_type: s.tablet_type as i32,
            ..Default::default()
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Handle of one simulated tablet (cheap to clone).
#[derive(Clone)]
pub struct SimTablet {
    /// Its control block.
    ctl: Arc<Ctl>,
}

impl SimTablet {
    /// The alias.
    pub fn alias(&self) -> &TabletAlias {
        &self.ctl.alias
    }

    /// The loopback port of its gRPC server.
    pub fn port(&self) -> u16 {
        self.ctl.port
    }

    /// The tablet record to put in the topology (type from the current state).
    pub fn record(&self) -> Tablet {
        let tablet_type = self.ctl.state().tablet_type;
        let mut port_map = BTreeMap::new();
        port_map.insert("grpc".to_string(), i32::from(self.ctl.port));
        port_map.insert("vt".to_string(), 0);
        Tablet {
            alias: Some(self.ctl.alias.clone()),
            hostname: "127.0.0.1".into(),
            port_map,
            keyspace: self.ctl.keyspace.clone(),
            shard: self.ctl.shard.clone(),
            key_range: shard_key_range(&self.ctl.shard),
            r#type: tablet_type as i32,
            mysql_hostname: "127.0.0.1".into(),
            mysql_port: 3306,
            ..Default::default()
        }
    }

    /// Current mode.
    pub fn mode(&self) -> SimMode {
        self.ctl.mode()
    }

    /// Switches mode; takes effect on open connections at once.
    pub fn set_mode(&self, mode: SimMode) {
        self.ctl.mode.store(mode.as_u8(), Ordering::Release);
        self.ctl.mode_tx.send_replace(mode);
        let conns = self.ctl.conns.lock().unwrap_or_else(|p| p.into_inner());
        for waker in conns.iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
    }

    /// A copy of the reported state.
    pub fn state(&self) -> SimState {
        self.ctl.state().clone()
    }

    /// Changes the reported state; health streams send the new health at once.
    pub fn update(&self, change: impl FnOnce(&mut SimState)) {
        change(&mut self.ctl.state());
        self.ctl.bump();
    }

    /// Reports serving (or not) with `health_error` (empty = healthy).
    pub fn set_health(&self, serving: bool, health_error: &str) {
        self.update(|s| {
            s.serving = serving;
            s.health_error = health_error.to_string();
        });
    }

    /// Makes `FullStatus` misbehave (`None` = answer normally).
    pub fn set_fault(&self, fault: Option<SimFault>) {
        self.update(|s| s.fault = fault);
    }

    /// `FullStatus` calls answered so far (hung ones not counted).
    pub fn full_status_calls(&self) -> u64 {
        self.ctl.full_status_calls.load(Ordering::Relaxed)
    }

    /// `Ping` calls answered so far.
    pub fn ping_calls(&self) -> u64 {
        self.ctl.ping_calls.load(Ordering::Relaxed)
    }

    /// `StreamHealth` streams opened so far.
    pub fn health_streams_opened(&self) -> u64 {
        self.ctl.health_streams.load(Ordering::Relaxed)
    }
}

/// The key range a shard name stands for (`-80` → `[, 0x80)`); `None` for
/// unsharded names such as `0`.
fn shard_key_range(shard: &str) -> Option<KeyRange> {
    let (start, end) = shard.split_once('-')?;
    let hex = |s: &str| -> Option<Vec<u8>> {
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect()
    };
    Some(KeyRange {
        start: hex(start)?,
        end: hex(end)?,
    })
}

/// A set of simulated tablets.
pub struct SimFleet {
    /// Settings.
    config: SimConfig,
    /// The tablets, in creation order.
    tablets: Vec<SimTablet>,
    /// Next uid to hand out.
    next_uid: u32,
    /// Stops every task.
    cancel: CancellationToken,
    /// Listener and server tasks of every tablet.
    tasks: JoinSet<()>,
}

impl SimFleet {
    /// An empty fleet.
    pub fn new(config: SimConfig) -> Self {
        let next_uid = config.first_uid;
        SimFleet {
            config,
            tablets: Vec::new(),
            next_uid,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// A fleet of `shards.len()` shards of `keyspace` with `per_shard`
    /// tablets each: the first a primary, the others replicas of it.
    pub async fn start(
        config: SimConfig,
        keyspace: &str,
        shards: &[&str],
        per_shard: usize,
    ) -> io::Result<Self> {
        let mut fleet = SimFleet::new(config);
        for shard in shards {
            let primary = fleet
                .add_tablet(keyspace, shard, TabletType::Primary, None)
                .await?;
            for _ in 1..per_shard {
                fleet
                    .add_tablet(keyspace, shard, TabletType::Replica, Some(&primary))
                    .await?;
            }
        }
        Ok(fleet)
    }

    /// Writes the fleet into `topo`: its keyspaces (with `durability`),
    /// their shards (primary from the `PRIMARY` tablets) and the tablet
    /// records.
    pub async fn register(&self, topo: &Topo, durability: &str) {
        let mut keyspaces = std::collections::BTreeSet::new();
        let mut shards = BTreeMap::new();
        for t in self.tablets() {
            let r = t.record();
            keyspaces.insert(r.keyspace.clone());
            let primary = shards
                .entry((r.keyspace.clone(), r.shard.clone()))
                .or_insert(None);
            if r.r#type == TabletType::Primary as i32 {
                *primary = r.alias.clone();
            }
        }
        for ks in keyspaces {
            topo.create_keyspace(&ks, &Keyspace::with_durability(durability))
                .await
                .expect("create keyspace");
        }
        for ((ks, shard), primary) in shards {
            topo.create_shard(&ks, &shard, &Shard::with_primary(primary))
                .await
                .expect("create shard");
        }
        for t in self.tablets() {
            topo.create_tablet(&t.record()).await.expect("create tablet");
        }
    }

    /// The tablets, in creation order.
    pub fn tablets(&self) -> &[SimTablet] {
        &self.tablets
    }

    /// The tablet with this alias.
    pub fn get(&self, alias: &TabletAlias) -> Option<&SimTablet> {
        self.tablets.iter().find(|t| t.alias() == alias)
    }

    /// Starts one more tablet. A replica's state points at `primary`.
    pub async fn add_tablet(
        &mut self,
        keyspace: &str,
        shard: &str,
        tablet_type: TabletType,
        primary: Option<&SimTablet>,
    ) -> io::Result<SimTablet> {
        let uid = self.next_uid;
        self.next_uid += 1;
        let listener = bind(0)?;
        let port = listener.local_addr()?.port();
        let server_uuid = format!("00000000-0000-0000-0000-{uid:012}");
        let is_primary = tablet_type == TabletType::Primary;
        let source = primary.map(|p| {
            (
                "127.0.0.1".to_string(),
                i32::from(p.port()),
                p.state().server_uuid,
            )
        });
        let primary_uuid = primary.map_or(server_uuid.clone(), |p| p.state().server_uuid);
        let state = SimState {
            tablet_type,
            server_id: uid,
            server_uuid: server_uuid.clone(),
            position: format!("MySQL56/{primary_uuid}:1-100"),
            read_only: !is_primary,
            source: if is_primary { None } else { source },
            replicating: !is_primary,
            lag_seconds: 0,
            serving: true,
            health_error: String::new(),
            primary_term_start: if is_primary { 1_700_000_000 } else { 0 },
            fault: None,
            full_status_delay: Duration::ZERO,
        };
        let (mode_tx, mode_rx) = watch::channel(SimMode::Serving);
        let ctl = Arc::new(Ctl {
            alias: TabletAlias {
                cell: self.config.cell.clone(),
                uid,
            },
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            port,
            mode: AtomicU8::new(SimMode::Serving.as_u8()),
            mode_tx,
            conns: Mutex::new(Vec::new()),
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            full_status_calls: AtomicU64::new(0),
            ping_calls: AtomicU64::new(0),
            health_streams: AtomicU64::new(0),
            health_interval: self.config.health_interval,
        });
        let (conn_tx, conn_rx) = mpsc::channel::<io::Result<SimConn>>(64);
        self.tasks.spawn(listen(
            Arc::clone(&ctl),
            listener,
            mode_rx,
            conn_tx,
            self.cancel.clone(),
        ));
        let service = SimService {
            ctl: Arc::clone(&ctl),
        };
        let incoming = receiver_stream(conn_rx);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let server = tonic::transport::Server::builder()
                .add_service(TabletManagerServer::new(service.clone()))
                .add_service(QueryServer::new(service))
                .serve_with_incoming(incoming);
            tokio::select! {
                () = cancel.cancelled() => {}
                result = server => {
                    if let Err(e) = result {
                        tracing::warn!("simulated tablet server stopped: {e}");
                    }
                }
            }
        });
        let tablet = SimTablet { ctl };
        self.tablets.push(tablet.clone());
        Ok(tablet)
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        // Fail every open connection (tonic runs them in its own tasks), then
        // stop the listeners and servers; the JoinSet aborts what is left.
        for t in &self.tablets {
            t.set_mode(SimMode::Down);
        }
        self.cancel.cancel();
    }
}

fn bind(port: u16) -> io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Rebinding the same port after `Down` must not fail on TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

fn receiver_stream<T>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Accepts connections while serving or hung; closes the listener while down.
async fn listen(
    ctl: Arc<Ctl>,
    listener: tokio::net::TcpListener,
    mut mode_rx: watch::Receiver<SimMode>,
    conns: mpsc::Sender<io::Result<SimConn>>,
    cancel: CancellationToken,
) {
    let mut listener = Some(listener);
    loop {
        let mode = *mode_rx.borrow_and_update();
        if mode == SimMode::Down {
            listener = None;
        } else if listener.is_none() {
            match bind(ctl.port) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(port = ctl.port, "simulated tablet cannot rebind: {e}");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = accept(listener.as_ref()) => {
                let Ok((stream, _)) = accepted else { continue };
                let waker = Arc::new(AtomicWaker::new());
                {
                    let mut list = ctl.conns.lock().unwrap_or_else(|p| p.into_inner());
                    list.retain(|w| w.strong_count() > 0);
                    list.push(Arc::downgrade(&waker));
                }
                let _ = stream.set_nodelay(true);
                let conn = SimConn { inner: stream, ctl: Arc::clone(&ctl), waker };
                if conns.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn accept(listener: Option<&tokio::net::TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A server-side connection that obeys the tablet's [`SimMode`].
struct SimConn {
    /// The socket.
    inner: TcpStream,
    /// The tablet (for its mode).
    ctl: Arc<Ctl>,
    /// Woken on a mode change, so a stalled read or write re-checks the mode.
    waker: Arc<AtomicWaker>,
}

impl SimConn {
    /// `Some(result)` when the mode decides the outcome; `None` = go ahead.
    fn gate<T>(&self, cx: &mut Context<'_>) -> Option<Poll<io::Result<T>>> {
        self.waker.register(cx.waker());
        match self.ctl.mode() {
            SimMode::Serving => None,
            SimMode::Hang => Some(Poll::Pending),
            SimMode::Down => Some(Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulated tablet is down",
            )))),
        }
    }
}

impl AsyncRead for SimConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = this.gate(cx) {
            return p;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(p) = this.gate(cx) {
            return p;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = this.gate(cx) {
            return p;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.mode() == SimMode::Hang {
            this.waker.register(cx.waker());
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Connected for SimConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// The gRPC services of one simulated tablet.
#[derive(Clone)]
struct SimService {
    /// The tablet.
    ctl: Arc<Ctl>,
}

macro_rules! unimplemented_rpcs {
    ($($method:ident($req:ident, $resp:ident);)*) => {
        $(
            // Written out as `async_trait` expands an `async fn`: the
            // attribute does not see methods produced by a macro.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<tm::$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<tm::$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(std::future::ready(Err(Status::unimplemented(concat!(
                    "the tablet simulator does not implement ",
                    stringify!($method)
                )))))
            }
        )*
    };
}

#[tonic::async_trait]
impl TabletManager for SimService {
    async fn full_status(
        &self,
        _request: Request<tm::FullStatusRequest>,
    ) -> Result<Response<tm::FullStatusResponse>, Status> {
        let delay = self.ctl.state().full_status_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.ctl.full_status_calls.fetch_add(1, Ordering::Relaxed);
        match self.ctl.full_status() {
            Ok(status) => Ok(Response::new(tm::FullStatusResponse { status: Some(status) })),
            Err(SimFault::EmptyStatus) => Ok(Response::new(tm::FullStatusResponse { status: None })),
            Err(SimFault::Error(code, message)) => Err(Status::new(code, message)),
        }
    }

    async fn ping(&self, request: Request<tm::PingRequest>) -> Result<Response<tm::PingResponse>, Status> {
        self.ctl.ping_calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(tm::PingResponse {
            payload: request.into_inner().payload,
        }))
    }

    async fn run_health_check(
        &self,
        _request: Request<tm::RunHealthCheckRequest>,
    ) -> Result<Response<tm::RunHealthCheckResponse>, Status> {
        // Like vttablet's Broadcast: every open stream sends the current health.
        self.ctl.changed.send_modify(|n| *n += 1);
        Ok(Response::new(tm::RunHealthCheckResponse {}))
    }

    async fn primary_status(
        &self,
        _request: Request<tm::PrimaryStatusRequest>,
    ) -> Result<Response<tm::PrimaryStatusResponse>, Status> {
        let s = self.ctl.state();
        Ok(Response::new(tm::PrimaryStatusResponse {
            status: Some(PrimaryStatus {
                position: s.position.clone(),
                file_position: "FilePos/binlog.000001:4".into(),
                server_uuid: s.server_uuid.clone(),
            }),
        }))
    }

    async fn primary_position(
        &self,
        _request: Request<tm::PrimaryPositionRequest>,
    ) -> Result<Response<tm::PrimaryPositionResponse>, Status> {
        Ok(Response::new(tm::PrimaryPositionResponse {
            position: self.ctl.state().position.clone(),
        }))
    }

    async fn replication_status(
        &self,
        _request: Request<tm::ReplicationStatusRequest>,
    ) -> Result<Response<tm::ReplicationStatusResponse>, Status> {
        let s = self.ctl.state();
        match Ctl::replication_status(&s) {
            Some(status) => Ok(Response::new(tm::ReplicationStatusResponse {
                status: Some(status),
            })),
            None => Err(Status::failed_precondition("not a replica")),
        }
    }

    unimplemented_rpcs! {
        get_global_status_vars(GetGlobalStatusVarsRequest, GetGlobalStatusVarsResponse);
        set_read_only(SetReadOnlyRequest, SetReadOnlyResponse);
        set_read_write(SetReadWriteRequest, SetReadWriteResponse);
        change_type(ChangeTypeRequest, ChangeTypeResponse);
        refresh_state(RefreshStateRequest, RefreshStateResponse);
        wait_for_position(WaitForPositionRequest, WaitForPositionResponse);
        stop_replication(StopReplicationRequest, StopReplicationResponse);
        stop_replication_minimum(StopReplicationMinimumRequest, StopReplicationMinimumResponse);
        start_replication(StartReplicationRequest, StartReplicationResponse);
        restart_replication(RestartReplicationRequest, RestartReplicationResponse);
        reset_replication(ResetReplicationRequest, ResetReplicationResponse);
        init_primary(InitPrimaryRequest, InitPrimaryResponse);
        populate_reparent_journal(PopulateReparentJournalRequest, PopulateReparentJournalResponse);
        read_reparent_journal_info(ReadReparentJournalInfoRequest, ReadReparentJournalInfoResponse);
        init_replica(InitReplicaRequest, InitReplicaResponse);
        demote_primary(DemotePrimaryRequest, DemotePrimaryResponse);
        undo_demote_primary(UndoDemotePrimaryRequest, UndoDemotePrimaryResponse);
        replica_was_promoted(ReplicaWasPromotedRequest, ReplicaWasPromotedResponse);
        reset_replication_parameters(ResetReplicationParametersRequest, ResetReplicationParametersResponse);
        set_replication_source(SetReplicationSourceRequest, SetReplicationSourceResponse);
        replica_was_restarted(ReplicaWasRestartedRequest, ReplicaWasRestartedResponse);
        stop_replication_and_get_status(StopReplicationAndGetStatusRequest, StopReplicationAndGetStatusResponse);
        promote_replica(PromoteReplicaRequest, PromoteReplicaResponse);
    }
}

type HealthStreamBox = Pin<Box<dyn Stream<Item = Result<StreamHealthResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Query for SimService {
    type StreamHealthStream = HealthStreamBox;

    async fn stream_health(
        &self,
        _request: Request<StreamHealthRequest>,
    ) -> Result<Response<Self::StreamHealthStream>, Status> {
        self.ctl.health_streams.fetch_add(1, Ordering::Relaxed);
        let ctl = Arc::clone(&self.ctl);
        let mut changed = ctl.changed.subscribe();
        changed.mark_changed();
        let interval = ctl.health_interval;
        // Sends the current health at once, then on every change, and again
        // every `interval` when nothing changed.
        let stream = futures::stream::unfold((ctl, changed), move |(ctl, mut changed)| async move {
            if !changed.has_changed().unwrap_or(false) {
                // A timeout only means "repeat the current health".
                let _ = tokio::time::timeout(interval, changed.changed()).await;
            }
            changed.borrow_and_update();
            let health = ctl.health();
            Some((Ok(health), (ctl, changed)))
        })
        .boxed();
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_map_to_key_ranges() {
        assert_eq!(shard_key_range("0"), None);
        assert_eq!(
            shard_key_range("-80"),
            Some(KeyRange {
                start: vec![],
                end: vec![0x80]
            })
        );
        assert_eq!(
            shard_key_range("80-c0"),
            Some(KeyRange {
                start: vec![0x80],
                end: vec![0xc0]
            })
        );
        assert_eq!(shard_key_range("8-zz"), None);
    }
}
