//! Shared set-up for the tablet-agent tests: one etcd, N MariaDB servers and
//! one in-process agent per server, all on free ports in fresh directories,
//! torn down on drop. Agents are called over real tonic channels.

#![allow(dead_code)]

use std::time::Duration;

use integration::agent::{Agent, AgentConfig, AgentHandle};
use integration::etcd::EtcdServer;
use integration::mariadb::{MariaDbOptions, MariaDbServer};
use mysql_async::prelude::Queryable;
use tonic::transport::Channel;
use vtorc::proto::replicationdata::{StopReplicationMode, StopReplicationStatus};
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient;
use vtorc::proto::topodata::{CellInfo, Keyspace, Shard, Tablet, TabletAlias, TabletType};
use vtorc::topo::{Topo, TopoOptions};

/// The test cell.
pub const CELL: &str = "zone1";
/// The test keyspace.
pub const KEYSPACE: &str = "commerce";
/// The global topo root.
pub const GLOBAL_ROOT: &str = "/vitess/global";

/// One test world. Field order is drop order: agents first, then MariaDB,
/// then etcd, then the directory.
pub struct World {
    /// One agent per server; `None` after [`World::stop_agent`].
    pub agents: Vec<Option<AgentHandle>>,
    /// The servers, same index as the agents.
    pub dbs: Vec<MariaDbServer>,
    /// The topology server.
    pub etcd: EtcdServer,
    /// Typed topo access for assertions.
    pub topo: Topo,
    /// Parent directory of the MariaDB instances.
    pub dir: tempfile::TempDir,
}

/// A fresh parent directory on tmpfs when available.
pub fn temp_dir() -> tempfile::TempDir {
    integration::process::tmpfs_temp_dir("agent-test-").expect("temp dir")
}

impl World {
    /// Starts etcd and `n` MariaDB servers concurrently, writes the cell and
    /// a keyspace with `durability`, and starts one REPLICA agent per server
    /// (uids 100, 101, ...).
    pub async fn start(n: u32, durability: &str) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let dir = temp_dir();
        let servers = (0..n)
            .map(|i| (format!("m{i}"), MariaDbOptions::new(100 + i)))
            .collect();
        let (etcd, dbs) = tokio::join!(
            EtcdServer::start(),
            MariaDbServer::start_many(dir.path(), servers)
        );
        let etcd = etcd.expect("etcd starts");
        let dbs = dbs.expect("MariaDB servers start");
        let topo = Topo::connect_etcd(&etcd.address(), GLOBAL_ROOT, TopoOptions::default())
            .await
            .expect("topo connects");
        topo.create_cell_info(
            CELL,
            &CellInfo {
                server_address: etcd.address(),
                root: format!("/vitess/{CELL}"),
            },
        )
        .await
        .expect("create cell");
        topo.create_keyspace(KEYSPACE, &Keyspace::with_durability(durability))
            .await
            .expect("create keyspace");
        let mut world = World {
            agents: Vec::new(),
            dbs,
            etcd,
            topo,
            dir,
        };
        for i in 0..n {
            let agent = Agent::start(world.config(i)).await.expect("agent starts");
            world.agents.push(Some(agent));
        }
        world
    }

    /// The agent configuration of tablet `i`.
    pub fn config(&self, i: u32) -> AgentConfig {
        let mut config = AgentConfig::new(
            self.etcd.address(),
            GLOBAL_ROOT,
            CELL,
            100 + i,
            KEYSPACE,
            "0",
            self.dbs[i as usize].port(),
        );
        config.health_check_interval = Duration::from_millis(100);
        config.health_check_timeout = Duration::from_millis(300);
        config.health_stream_interval = Duration::from_millis(500);
        config.mysql_connect_timeout = Duration::from_secs(1);
        config.shard_sync_interval = Duration::from_millis(200);
        config.semi_sync_blocked_after = Duration::from_secs(1);
        config
    }

    /// Tablet `i`'s alias.
    pub fn alias(&self, i: usize) -> TabletAlias {
        World::alias_of(i)
    }

    /// Tablet `i`'s alias, without a world at hand.
    pub fn alias_of(i: usize) -> TabletAlias {
        TabletAlias::new(CELL, 100 + i as u32)
    }

    /// Tablet `i`'s agent.
    pub fn agent(&self, i: usize) -> &AgentHandle {
        self.agents[i].as_ref().expect("agent running")
    }

    /// A connected loopback channel to tablet `i`'s gRPC port (both its
    /// TabletManager and its Query service answer there).
    pub async fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(self.agent(i).grpc_url())
            .expect("url")
            .connect()
            .await
            .expect("connect to agent")
    }

    /// A TabletManager client for tablet `i` over a real loopback channel.
    pub async fn client(&self, i: usize) -> TabletManagerClient<Channel> {
        TabletManagerClient::new(self.channel(i).await)
    }

    /// A root connection to server `i`.
    pub async fn sql(&self, i: usize) -> mysql_async::Conn {
        self.dbs[i].connect().await.expect("connect to MariaDB")
    }

    /// One value from server `i`.
    pub async fn query_one<T: mysql_async::prelude::FromValue + Send + 'static>(
        &self,
        i: usize,
        sql: &str,
    ) -> T {
        let mut conn = self.sql(i).await;
        let row: Option<T> = conn.query_first(sql).await.expect("query");
        row.expect("one row")
    }

    /// The integer global variable `name` of server `i` (`@@read_only`,
    /// `@@rpl_semi_sync_master_enabled`, ...).
    pub async fn global(&self, i: usize, name: &str) -> i64 {
        self.query_one(i, &format!("SELECT @@{name}")).await
    }

    /// Tablet `i`'s record in the topo.
    pub async fn tablet_record(&self, i: usize) -> Tablet {
        self.topo
            .get_tablet(&self.alias(i))
            .await
            .expect("tablet record")
            .value
    }

    /// The shard record.
    pub async fn shard_record(&self) -> Shard {
        self.topo
            .get_shard(KEYSPACE, "0")
            .await
            .expect("shard record")
            .value
    }

    /// Waits (up to 10 s) until every agent has opened its grants gate,
    /// i.e. answers PrimaryPosition.
    pub async fn wait_ready(&self) {
        for i in 0..self.agents.len() {
            let mut client = self.client(i).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match client.primary_position(tm::PrimaryPositionRequest {}).await {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("agent {i} never became ready: {e}"),
                }
            }
        }
    }

    /// Makes tablet `primary` the primary (InitPrimary) and points every
    /// other tablet at it (SetReplicationSource, force start), all through
    /// the agents' RPCs. Returns InitPrimary's position.
    pub async fn bootstrap(&self, primary: usize, semi_sync: bool) -> String {
        self.wait_ready().await;
        let position = self
            .client(primary)
            .await
            .init_primary(tm::InitPrimaryRequest { semi_sync })
            .await
            .expect("InitPrimary")
            .into_inner()
            .position;
        for i in 0..self.agents.len() {
            if i == primary {
                continue;
            }
            self.client(i)
                .await
                .set_replication_source(tm::SetReplicationSourceRequest {
                    parent: Some(self.alias(primary)),
                    force_start_replication: true,
                    semi_sync,
                    ..Default::default()
                })
                .await
                .expect("SetReplicationSource");
        }
        position
    }

    /// Creates `demo.t` on tablet `i` (must be writable) and inserts `rows` rows.
    pub async fn write_rows(&self, i: usize, rows: usize) {
        let mut conn = self.sql(i).await;
        conn.query_drop("CREATE DATABASE IF NOT EXISTS demo")
            .await
            .expect("create db");
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS demo.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64))",
        )
        .await
        .expect("create table");
        for n in 0..rows {
            conn.query_drop(format!("INSERT INTO demo.t (v) VALUES ('row {n}')"))
                .await
                .expect("insert");
        }
    }

    /// Rows in `demo.t` on server `i` (0 if the table does not exist).
    pub async fn row_count(&self, i: usize) -> i64 {
        let mut conn = self.sql(i).await;
        let count: Result<Option<i64>, _> = conn.query_first("SELECT COUNT(*) FROM demo.t").await;
        count.ok().flatten().unwrap_or(0)
    }

    /// PrimaryPosition of tablet `i`.
    pub async fn position(&self, i: usize) -> String {
        self.client(i)
            .await
            .primary_position(tm::PrimaryPositionRequest {})
            .await
            .expect("PrimaryPosition")
            .into_inner()
            .position
    }

    /// Waits (WaitForPosition on tablet `i`'s agent, 10 s deadline) until
    /// its MariaDB has applied `position`; fails the test naming `what`.
    pub async fn wait_applied(&self, i: usize, position: &str, what: &str) {
        self.client(i)
            .await
            .wait_for_position(with_timeout(
                tm::WaitForPositionRequest {
                    position: position.to_string(),
                },
                Duration::from_secs(10),
            ))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }

    /// StopReplicationAndGetStatus on tablet `i` in `mode`: the replication
    /// status before and after it stopped; fails the test naming `what`.
    pub async fn stop_replication_and_get_status(
        &self,
        i: usize,
        mode: StopReplicationMode,
        what: &str,
    ) -> StopReplicationStatus {
        self.client(i)
            .await
            .stop_replication_and_get_status(tm::StopReplicationAndGetStatusRequest {
                stop_replication_mode: mode as i32,
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
            .into_inner()
            .status
            .expect("status")
    }

    /// Stops agent `i` gracefully.
    pub async fn stop_agent(&mut self, i: usize) {
        if let Some(agent) = self.agents[i].take() {
            agent.shutdown().await.expect("graceful agent shutdown");
        }
    }
}

/// A request with a deadline (`grpc-timeout`).
pub fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tablet type of a record.
pub fn type_of(tablet: &Tablet) -> TabletType {
    TabletType::try_from(tablet.r#type).unwrap_or(TabletType::Unknown)
}
