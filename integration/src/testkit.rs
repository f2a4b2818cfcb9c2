//! What the end-to-end tests share: polling, tablet aliases and the flags
//! of a test vtorc. The `tests/*_support` modules build on it.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;
use vtorc::proto::topodata::TabletAlias;

use crate::cluster::{Cluster, GLOBAL_ROOT};

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
