//! What a cluster is made of: cells, keyspaces, shards and tablets, and the
//! knobs of the harness itself. Plain data, validated once by
//! [`ClusterBuilder::validate`] before anything starts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use vtorc::analysis::durability::Durability;
use vtorc::proto::topodata::TabletType;

/// The global topo root every cluster uses (Vitess's default).
pub const GLOBAL_ROOT: &str = "/vitess/global";

/// One cell: a name and the root of its records in the (shared) etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellSpec {
    /// Cell name (`zone1`).
    pub name: String,
    /// Root of the cell's records, written as `CellInfo.root`
    /// (`/vitess/<name>` unless set).
    pub root: String,
}

/// One tablet of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TabletSpec {
    /// The tablet's cell (must be declared with [`ClusterBuilder::cell`]).
    pub cell: String,
    /// The tablet uid; also the MariaDB `server_id`, so unique in the
    /// cluster and non-zero.
    pub uid: u32,
    /// Start-up type: REPLICA or RDONLY (the bootstrap promotes one REPLICA).
    pub tablet_type: TabletType,
}

impl TabletSpec {
    /// A REPLICA tablet.
    pub fn replica(cell: impl Into<String>, uid: u32) -> TabletSpec {
        TabletSpec {
            cell: cell.into(),
            uid,
            tablet_type: TabletType::Replica,
        }
    }

    /// An RDONLY tablet.
    pub fn rdonly(cell: impl Into<String>, uid: u32) -> TabletSpec {
        TabletSpec {
            cell: cell.into(),
            uid,
            tablet_type: TabletType::Rdonly,
        }
    }
}

/// One shard and its tablets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Shard name (`0`, `-80`, `80-`).
    pub name: String,
    /// Tablets, in every cell.
    pub tablets: Vec<TabletSpec>,
    /// The tablet the bootstrap makes primary; `None` = the first REPLICA.
    pub primary: Option<u32>,
}

impl ShardSpec {
    /// An empty shard.
    pub fn new(name: impl Into<String>) -> ShardSpec {
        ShardSpec {
            name: name.into(),
            tablets: Vec::new(),
            primary: None,
        }
    }

    /// Adds one tablet.
    pub fn tablet(mut self, tablet: TabletSpec) -> ShardSpec {
        self.tablets.push(tablet);
        self
    }

    /// Adds REPLICA tablets with these uids in `cell`.
    pub fn replicas(mut self, cell: &str, uids: impl IntoIterator<Item = u32>) -> ShardSpec {
        self.tablets
            .extend(uids.into_iter().map(|uid| TabletSpec::replica(cell, uid)));
        self
    }

    /// Adds one RDONLY tablet.
    pub fn rdonly(mut self, cell: &str, uid: u32) -> ShardSpec {
        self.tablets.push(TabletSpec::rdonly(cell, uid));
        self
    }

    /// Chooses the tablet the bootstrap makes primary.
    pub fn primary(mut self, uid: u32) -> ShardSpec {
        self.primary = Some(uid);
        self
    }

    /// The uid the bootstrap promotes: the chosen one or the first REPLICA.
    pub fn primary_uid(&self) -> Option<u32> {
        self.primary.or_else(|| {
            self.tablets
                .iter()
                .find(|t| t.tablet_type == TabletType::Replica)
                .map(|t| t.uid)
        })
    }
}

/// One keyspace with its durability policy and shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceSpec {
    /// Keyspace name.
    pub name: String,
    /// Durability policy name as Vitess spells it: `none`, `semi_sync`,
    /// `cross_cell` (written to `Keyspace.durability_policy`).
    pub durability: String,
    /// Shards.
    pub shards: Vec<ShardSpec>,
}

impl KeyspaceSpec {
    /// A keyspace without shards.
    pub fn new(name: impl Into<String>, durability: impl Into<String>) -> KeyspaceSpec {
        KeyspaceSpec {
            name: name.into(),
            durability: durability.into(),
            shards: Vec::new(),
        }
    }

    /// Adds a shard.
    pub fn shard(mut self, shard: ShardSpec) -> KeyspaceSpec {
        self.shards.push(shard);
        self
    }

    /// The parsed durability policy (validated by the builder).
    pub fn policy(&self) -> anyhow::Result<Durability> {
        Durability::from_name(&self.durability)
            .map_err(|e| anyhow::anyhow!("keyspace {}: durability {:?}: {e}", self.name, self.durability))
    }
}

/// Vitess's `rpl_semi_sync_master_timeout` (config/mycnf/mariadb10.cnf:
/// 10^18 ms): a semi-sync primary never falls back to async.
pub const VITESS_SEMI_SYNC_TIMEOUT: Duration = Duration::from_millis(1_000_000_000_000_000_000);

/// The world's `slave_net_timeout` (Vitess's MySQL 8 `replica_net_timeout`).
pub const DEFAULT_SLAVE_NET_TIMEOUT: Duration = Duration::from_secs(8);

/// The world's `--health-check-interval`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The world's `--heartbeat-interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// How tablet agents run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// In this process, through [`crate::agent::Agent::start`]. Fast, no
    /// binary needed. "Killing" an agent drops its handle, which aborts
    /// its tasks without touching the topo; it cannot be paused.
    #[default]
    InProcess,
    /// One `tablet-agent` child process per tablet (the binary at this
    /// path). Needed to SIGSTOP an agent; kill is a real SIGKILL. In this
    /// crate's tests the path is `env!("CARGO_BIN_EXE_tablet-agent")`.
    Process(PathBuf),
}

/// Settings of the whole cluster; built by [`ClusterBuilder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    /// Cells, in declaration order.
    pub(crate) cells: Vec<CellSpec>,
    /// Keyspaces, in declaration order.
    pub(crate) keyspaces: Vec<KeyspaceSpec>,
    /// Whether [`ClusterBuilder::start`] elects a primary per shard.
    pub(crate) bootstrap: bool,
    /// How agents run.
    pub(crate) agent_mode: AgentMode,
    /// `rpl_semi_sync_master_timeout` on every server.
    pub(crate) semi_sync_timeout: Duration,
    /// `slave_net_timeout` on every server.
    pub(crate) slave_net_timeout: Duration,
    /// Every agent's `--health-check-interval`.
    pub(crate) health_check_interval: Duration,
    /// Every agent's heartbeat interval; `None`: heartbeats off (poller mode).
    pub(crate) heartbeat: Option<Duration>,
    /// Whether servers use `rpl_semi_sync_master_wait_point=AFTER_SYNC`.
    pub(crate) after_sync: bool,
    /// Bound on the whole start-up.
    pub(crate) start_timeout: Duration,
    /// Every agent's `semi_sync_blocked_after` (`None`: the agent default).
    pub(crate) semi_sync_blocked_after: Option<Duration>,
    /// Every agent's disk-health monitor: `(interval, timeout)`, writing
    /// into `<tablet dir>/disk`; `None`: no monitor.
    pub(crate) disk_health: Option<(Duration, Duration)>,
    /// Whether etcd and the agents serve mutual TLS (see [`ClusterBuilder::tls`]).
    pub(crate) tls: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder::new()
    }
}

impl ClusterBuilder {
    /// An empty cluster: bootstrap on, agents in-process, Vitess's
    /// semi-sync timeout ([`VITESS_SEMI_SYNC_TIMEOUT`]: never fall back to
    /// async), `slave_net_timeout` 8 s, wait point AFTER_SYNC, heartbeats
    /// every 250 ms, health checks every 5 s, 60 s start-up bound.
    pub fn new() -> ClusterBuilder {
        ClusterBuilder {
            cells: Vec::new(),
            keyspaces: Vec::new(),
            bootstrap: true,
            agent_mode: AgentMode::InProcess,
            semi_sync_timeout: VITESS_SEMI_SYNC_TIMEOUT,
            slave_net_timeout: DEFAULT_SLAVE_NET_TIMEOUT,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            heartbeat: Some(DEFAULT_HEARTBEAT_INTERVAL),
            after_sync: true,
            start_timeout: Duration::from_secs(60),
            semi_sync_blocked_after: None,
            disk_health: None,
            tls: false,
        }
    }

    /// The common case: cell `zone1`, keyspace `keyspace` with
    /// `durability`, shard `0`, REPLICA tablets 100, 101, 102.
    pub fn three_tablets(keyspace: &str, durability: &str) -> ClusterBuilder {
        ClusterBuilder::new().cell("zone1").keyspace(
            KeyspaceSpec::new(keyspace, durability)
                .shard(ShardSpec::new("0").replicas("zone1", [100, 101, 102])),
        )
    }

    /// Adds a cell with root `/vitess/<name>` in the shared etcd.
    pub fn cell(self, name: &str) -> ClusterBuilder {
        let root = format!("/vitess/{name}");
        self.cell_with_root(name, &root)
    }

    /// Adds a cell with an explicit root.
    pub fn cell_with_root(mut self, name: &str, root: &str) -> ClusterBuilder {
        self.cells.push(CellSpec {
            name: name.to_string(),
            root: root.to_string(),
        });
        self
    }

    /// Adds a keyspace.
    pub fn keyspace(mut self, keyspace: KeyspaceSpec) -> ClusterBuilder {
        self.keyspaces.push(keyspace);
        self
    }

    /// Whether to elect a primary per shard at start-up (default true).
    /// Without it every tablet stays REPLICA/RDONLY with no replication,
    /// the state VTOrc's `ClusterHasNoPrimary` repairs.
    pub fn bootstrap(mut self, bootstrap: bool) -> ClusterBuilder {
        self.bootstrap = bootstrap;
        self
    }

    /// How agents run (default in-process).
    pub fn agent_mode(mut self, mode: AgentMode) -> ClusterBuilder {
        self.agent_mode = mode;
        self
    }

    /// `rpl_semi_sync_master_timeout` of every server (default
    /// [`VITESS_SEMI_SYNC_TIMEOUT`]).
    pub fn semi_sync_timeout(mut self, timeout: Duration) -> ClusterBuilder {
        self.semi_sync_timeout = timeout;
        self
    }

    /// `slave_net_timeout` of every server, whole seconds (default 8 s,
    /// Vitess's MySQL 8 `replica_net_timeout`): how long a replica's IO
    /// thread waits for data or a heartbeat from its source before it
    /// reconnects; the source's heartbeat period defaults to half of it.
    pub fn slave_net_timeout(mut self, timeout: Duration) -> ClusterBuilder {
        self.slave_net_timeout = timeout;
        self
    }

    /// Every agent's `--health-check-interval` (default 5 s, as Vitess's
    /// examples and vitess-operator run vttablet): how often it probes
    /// MariaDB and broadcasts StreamHealth (see `agent/health.rs`).
    pub fn health_check_interval(mut self, interval: Duration) -> ClusterBuilder {
        self.health_check_interval = interval;
        self
    }

    /// vttablet's replication heartbeats on every agent
    /// (`--heartbeat-enable`, `--heartbeat-interval`, capped at 1 s):
    /// `Some(interval)` (default 250 ms) or `None` for poller mode
    /// (StreamHealth lag from `SHOW SLAVE STATUS`). Replicas that stop
    /// hearing heartbeats are the evidence VTOrc's gray-failure detection
    /// uses, so the world's interval is short.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> ClusterBuilder {
        self.heartbeat = interval;
        self
    }

    /// `true` (default): `rpl_semi_sync_master_wait_point=AFTER_SYNC`, the
    /// lossless mode MySQL uses by default and Vitess assumes; `false`:
    /// MariaDB's default AFTER_COMMIT.
    pub fn after_sync(mut self, after_sync: bool) -> ClusterBuilder {
        self.after_sync = after_sync;
        self
    }

    /// Bound on the whole start-up (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> ClusterBuilder {
        self.start_timeout = timeout;
        self
    }

    /// How long commits must wait for a semi-sync ACK before an agent's
    /// FullStatus reports `semi_sync_blocked` (default: the agent's, 15 s).
    pub fn semi_sync_blocked_after(mut self, after: Duration) -> ClusterBuilder {
        self.semi_sync_blocked_after = Some(after);
        self
    }

    /// Runs every agent's disk-health monitor (vttablet's
    /// `--disk-write-dir`), writing every `interval` into the tablet's own
    /// `<tablet dir>/disk` (see [`super::ClusterTablet::disk_check_file`]),
    /// a write outstanding for `timeout` meaning a stalled disk. Off by
    /// default, as in vttablet.
    pub fn disk_health_check(mut self, interval: Duration, timeout: Duration) -> ClusterBuilder {
        self.disk_health = Some((interval, timeout));
        self
    }

    /// `true`: a test CA ([`crate::pki::TestPki`], in `<cluster dir>/pki`)
    /// issues certificates; etcd serves `https://` and requires client
    /// certificates (`--client-cert-auth`), every agent serves gRPC over
    /// TLS and requires client certificates (`--grpc-ca`), and the
    /// harness's own clients use the `harness` certificate.
    /// [`Cluster::pki`] gives the CA to issue more (e.g. for vtorc).
    pub fn tls(mut self, tls: bool) -> ClusterBuilder {
        self.tls = tls;
        self
    }

    /// Checks names, uids and policies before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.cells.is_empty(), "a cluster needs at least one cell");
        let mut cells = HashSet::new();
        for cell in &self.cells {
            ensure!(
                vtorc::topo::paths::valid_component(&cell.name),
                "bad cell name {:?}",
                cell.name
            );
            ensure!(
                cells.insert(cell.name.as_str()),
                "cell {} declared twice",
                cell.name
            );
            ensure!(
                cell.root.starts_with('/'),
                "cell root {:?} must be absolute",
                cell.root
            );
        }
        let mut uids = HashSet::new();
        let mut keyspaces = HashSet::new();
        for ks in &self.keyspaces {
            ensure!(
                keyspaces.insert(ks.name.as_str()),
                "keyspace {} declared twice",
                ks.name
            );
            ks.policy()?;
            ensure!(!ks.shards.is_empty(), "keyspace {} has no shard", ks.name);
            let mut shards = HashSet::new();
            for shard in &ks.shards {
                ensure!(
                    shards.insert(shard.name.as_str()),
                    "shard {}/{} declared twice",
                    ks.name,
                    shard.name
                );
                ensure!(
                    !shard.tablets.is_empty(),
                    "shard {}/{} has no tablet",
                    ks.name,
                    shard.name
                );
                for t in &shard.tablets {
                    ensure!(t.uid != 0, "uid 0 cannot be a MariaDB server_id");
                    ensure!(
                        uids.insert(t.uid),
                        "uid {} used twice (uids are server_ids)",
                        t.uid
                    );
                    ensure!(
                        cells.contains(t.cell.as_str()),
                        "tablet {} in undeclared cell {}",
                        t.uid,
                        t.cell
                    );
                    if !matches!(t.tablet_type, TabletType::Replica | TabletType::Rdonly) {
                        bail!("tablet {}: start-up type must be REPLICA or RDONLY", t.uid);
                    }
                }
                if self.bootstrap {
                    let Some(primary) = shard.primary_uid() else {
                        bail!(
                            "shard {}/{} has no REPLICA to bootstrap as primary",
                            ks.name,
                            shard.name
                        );
                    };
                    let found = shard.tablets.iter().find(|t| t.uid == primary);
                    ensure!(
                        found.is_some_and(|t| t.tablet_type == TabletType::Replica),
                        "shard {}/{}: primary {primary} is not a REPLICA of the shard",
                        ks.name,
                        shard.name
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_tablet_cluster_is_valid() {
        let b = ClusterBuilder::three_tablets("commerce", "semi_sync");
        b.validate().expect("valid");
        assert_eq!(b.keyspaces[0].shards[0].primary_uid(), Some(100));
    }

    #[test]
    fn duplicate_uids_unknown_cells_and_bad_policies_are_refused() {
        let dup = ClusterBuilder::new()
            .cell("zone1")
            .keyspace(KeyspaceSpec::new("ks", "none").shard(ShardSpec::new("0").replicas("zone1", [1, 1])));
        assert!(dup.validate().is_err());
        let cell = ClusterBuilder::new()
            .cell("zone1")
            .keyspace(KeyspaceSpec::new("ks", "none").shard(ShardSpec::new("0").replicas("zone2", [1])));
        assert!(cell.validate().is_err());
        let policy = ClusterBuilder::new()
            .cell("zone1")
            .keyspace(KeyspaceSpec::new("ks", "bogus").shard(ShardSpec::new("0").replicas("zone1", [1])));
        assert!(policy.validate().is_err());
        let rdonly_only = ClusterBuilder::new()
            .cell("zone1")
            .keyspace(KeyspaceSpec::new("ks", "none").shard(ShardSpec::new("0").rdonly("zone1", 1)));
        assert!(rdonly_only.validate().is_err());
        assert!(rdonly_only.bootstrap(false).validate().is_ok());
    }
}
