//! What the end-to-end tests and benchmarks share: polling, tablet
//! aliases, the flags of a test vtorc (and of a `--sharing` member), the
//! common worlds, an etcd topology with cell `zone1`, discovery settings and
//! snapshot waits, and building `vtorc` and the Vitess tools. The
//! `tests/*_support` modules build on it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use vtorc::discovery::{DiscoveryConfig, DiscoveryHandle, ScheduleConfig};
use vtorc::model::ClusterSnapshot;
use vtorc::proto::topodata::{CellInfo, TabletAlias};
use vtorc::topo::{Topo, TopoError, TopoOptions};

use crate::cluster::{AgentMode, Cluster, ClusterBuilder, GLOBAL_ROOT};
use crate::etcd::EtcdServer;

/// Polls `check` until it yields `Some`, or fails after `timeout` with the
/// last error. `check` returning `Err` counts as "not yet".
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining.max(Duration::from_millis(100)), check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => "condition not met".to_string(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "check timed out".to_string(),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The world most end-to-end tests start from, started: cell `zone1`,
/// keyspace `commerce` (`semi_sync`), shard `0`, tablets 100 (primary), 101
/// and 102. A harness that cannot start fails the test with its reason.
pub async fn semi_sync_commerce() -> Cluster {
    ClusterBuilder::three_tablets("commerce", "semi_sync")
        .start()
        .await
        .expect("cluster starts")
}

/// [`semi_sync_commerce`] with no primary elected: every tablet waits as
/// a replica with replication unconfigured and the shard record has no
/// primary (a fresh shard, as before vtorc's first PRS).
pub async fn semi_sync_commerce_without_primary() -> Cluster {
    ClusterBuilder::three_tablets("commerce", "semi_sync")
        .bootstrap(false)
        .started()
        .await
}

/// [`semi_sync_commerce`] with every tablet agent run as a process of
/// `binary` (the `tablet-agent` binary, which only tests and benches can
/// name: `env!("CARGO_BIN_EXE_tablet-agent")`).
pub async fn semi_sync_commerce_in_processes(binary: PathBuf) -> Cluster {
    ClusterBuilder::three_tablets("commerce", "semi_sync")
        .agent_mode(AgentMode::Process(binary))
        .start()
        .await
        .expect("cluster starts")
}

/// Waits (up to 10 s) until `replica`'s MariaDB has applied everything
/// `primary`'s has written (`MASTER_GTID_WAIT`).
pub async fn wait_caught_up(cluster: &Cluster, primary: &TabletAlias, replica: &TabletAlias) {
    let mut source = cluster.mysql_conn(primary).await.expect("connect to the primary");
    let pos: String = source
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("read the primary's position")
        .expect("a position row");
    let mut conn = cluster.mysql_conn(replica).await.expect("connect to the replica");
    let reached: Option<i64> = conn
        .exec_first("SELECT MASTER_GTID_WAIT(?, 10)", (pos.clone(),))
        .await
        .expect("MASTER_GTID_WAIT");
    assert_eq!(reached, Some(0), "{replica} did not reach {pos}");
}

/// Go's real `vtctldclient`: `$VTCTLDCLIENT`, else what
/// `scripts/build-vtctldclient.sh` builds (cached). `None` when neither
/// gives one, with "`leg` DID NOT RUN" and the reason printed; with `CI`
/// set that is a failure instead.
pub fn vtctldclient(leg: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var("VTCTLDCLIENT") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "VTCTLDCLIENT={} is not a file", path.display());
        return Some(path);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-vtctldclient.sh");
    let found = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.is_file());
    if found.is_none() {
        let msg = format!(
            "{leg} DID NOT RUN: no VTCTLDCLIENT and scripts/build-vtctldclient.sh could not build it (Go missing?)"
        );
        eprintln!("{msg}");
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg} (CI is set, so this is a failure)"
        );
    }
    found
}

/// Alias of tablet `uid` in cell `zone1` (the harness's default cell).
pub fn zone1(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// The flags of a test vtorc watching `cluster` (quicker than Go's defaults
/// so tests are quick), starting with the program name; each test adds
/// its own.
pub fn vtorc_flags(cluster: &Cluster) -> Vec<String> {
    vec![
        "vtorc".to_string(),
        format!("--topo-global-server-address={}", cluster.topo_address()),
        format!("--topo-global-root={GLOBAL_ROOT}"),
        "--cell=zone1".to_string(),
        "--instance-poll-time=1s".to_string(),
        "--recovery-poll-duration=500ms".to_string(),
        "--wait-replicas-timeout=10s".to_string(),
        "--remote-operation-timeout=5s".to_string(),
        "--topo-etcd-lease-ttl=5".to_string(),
        "--lock-timeout=10s".to_string(),
        "--shutdown-wait-time=10s".to_string(),
    ]
}

/// A topology client on `etcd` with the global root `/vitess/global` and
/// cell `zone1` (root `/vitess/zone1`, same server) created.
pub async fn etcd_topo(etcd: &EtcdServer) -> Topo {
    zone1_topo(&etcd.address())
        .await
        .expect("connect to etcd and create cell zone1")
}

/// [`etcd_topo`] for the etcd at `server_address`, with its error.
pub async fn zone1_topo(server_address: &str) -> Result<Topo, TopoError> {
    let topo = Topo::connect_etcd(server_address, "/vitess/global", TopoOptions::default()).await?;
    topo.create_cell_info(
        "zone1",
        &CellInfo {
            server_address: server_address.to_string(),
            root: "/vitess/zone1".into(),
        },
    )
    .await?;
    Ok(topo)
}

/// Runs `cargo build -p vtorc --bin vtorc` of the root package with
/// `extra` arguments (e.g. `--quiet`, `--release`) and returns what cargo
/// printed; the integration crate cannot name another package's binary.
pub fn cargo_build_vtorc(extra: &[&str]) -> std::io::Result<std::process::Output> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    Command::new(cargo)
        .arg("build")
        .args(extra)
        .args(["-p", "vtorc", "--bin", "vtorc", "--manifest-path"])
        .arg(&manifest)
        .output()
}

/// A command that runs `binary`, as user and group `uid` when given
/// (`setpriv`, supplementary groups cleared).
pub fn command_as(binary: &Path, uid: Option<u32>) -> Command {
    match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(binary);
            c
        }
        None => Command::new(binary),
    }
}

/// Waits until `check` holds on a snapshot discovery publishes; returns how
/// long it took, or `None` when it did not hold within `within`.
pub async fn snapshot_until(
    handle: &DiscoveryHandle,
    within: Duration,
    check: impl Fn(&ClusterSnapshot) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    let mut rx = handle.watch_snapshots();
    loop {
        if check(&rx.borrow_and_update()) {
            return Some(started.elapsed());
        }
        let left = within.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, rx.changed()).await.is_err() {
            return None;
        }
    }
}

/// A test world watching the snapshots a discovery publishes.
// Only tests implement and call it, on their own runtime: no caller needs a
// `Send` bound on the future.
#[allow(async_fn_in_trait)]
pub trait SnapshotWatch {
    /// The discovery whose snapshots are watched.
    fn discovery(&self) -> &DiscoveryHandle;

    /// What a failed wait prints of the latest snapshot, after its reason
    /// (nothing unless the world says more).
    fn describe(&self, _snapshot: &ClusterSnapshot) -> String {
        String::new()
    }

    /// Waits until `check` holds on a published snapshot; returns how long
    /// it took. Fails the test naming `what` when it does not hold within
    /// `within`.
    async fn until(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&ClusterSnapshot) -> bool,
    ) -> Duration {
        let Some(took) = snapshot_until(self.discovery(), within, check).await else {
            let described = self.describe(&self.discovery().snapshot());
            panic!("{what}: not within {within:?}{described}");
        };
        took
    }
}

/// A discovery configuration for tests: polls every `poll` with `workers`
/// workers and a `timeout` per poll, polls slower than 200 ms logged, the
/// topology re-listed every 15 s.
pub fn discovery_config(poll: Duration, timeout: Duration, workers: usize) -> DiscoveryConfig {
    DiscoveryConfig {
        schedule: ScheduleConfig {
            poll_interval: poll,
            workers,
            slow_after: Duration::from_millis(200),
            ..ScheduleConfig::default()
        },
        poll_timeout: timeout,
        topo_refresh_interval: Duration::from_secs(15),
        ..DiscoveryConfig::default()
    }
}

/// The flags of a `vtorc --sharing` member in a test or benchmark: the
/// topology at `etcd` (root `/vitess/global`), recoveries off, HTTP on
/// `port`, member lease `ttl`, advertised as 127.0.0.1, audit file `audit`,
/// info logs. Callers add their poll intervals.
pub fn sharing_member_flags(etcd: &str, port: u16, ttl: Duration, audit: &Path) -> Vec<String> {
    vec![
        format!("--topo-global-server-address={etcd}"),
        "--topo-global-root=/vitess/global".to_string(),
        "--allow-recovery=false".to_string(),
        format!("--port={port}"),
        "--sharing".to_string(),
        format!("--sharing-lease-ttl={}s", ttl.as_secs()),
        "--sharing-advertise-host=127.0.0.1".to_string(),
        format!("--audit-file-location={}", audit.display()),
        "--log-level=info".to_string(),
    ]
}

/// Runs `scripts/build-vitess-tool.sh <tool>` (builds Vitess 24's `tool`
/// into the tool cache, or finds it there) and returns what it printed: the
/// binary's path on stdout when it succeeded.
pub fn build_vitess_tool(tool: &str) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-vitess-tool.sh");
    Command::new("bash")
        .arg(&script)
        .arg(tool)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/build-vitess-tool.sh {tool}: {e}"))
}
