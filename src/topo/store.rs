//! The key-value store under the topology: the operations Vitess's etcd2
//! topo uses, with etcd's meaning, and nothing else.
//!
//! Keys are full paths (root included), values are bytes. A key's
//! [`Version`] is its etcd mod revision; store-wide revisions are `i64`
//! etcd header revisions. Two implementations: [`super::etcd::EtcdStore`]
//! and [`super::memory::MemoryStore`]; `integration::topo_conformance`
//! checks that they behave alike.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::error::{TopoError, TopoResult};

/// The version of one key: its etcd mod revision (the store revision of
/// the last write to it). Vitess compares these in conditional updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An etcd lease id. `0` means "no lease".
pub type LeaseId = i64;

/// One stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key.
    pub key: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
    /// Mod revision of the key.
    pub version: Version,
    /// Create revision of the key.
    pub create_revision: i64,
    /// Lease the key is attached to; `0` for a permanent key. Lock keys
    /// carry their holder's lease.
    pub lease: LeaseId,
}

/// The result of a prefix read: the keys and the store revision they were
/// read at (start a watch at `revision + 1` to miss nothing).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Matching keys in key order.
    pub entries: Vec<KeyValue>,
    /// Store revision of the read.
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or overwritten; `kv.version` is the write's
    /// revision.
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry) at `revision`.
    Delete {
        /// Full key.
        key: String,
        /// Revision of the deletion.
        revision: i64,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// The events of one store revision (or one etcd watch response), in
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// Highest revision covered by this batch.
    pub revision: i64,
    /// The changes, oldest first.
    pub events: Vec<WatchEvent>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running watch. Dropping it stops it.
///
/// [`StoreWatch::next`] yields batches in revision order. An `Err` is final:
/// the watch has ended (compaction, stream error, reconnect, or a consumer
/// too slow for the memory store's buffer) and the caller must re-list.
#[derive(Debug)]
pub struct StoreWatch {
    /// Batches from the task (or the store) feeding this watch.
    rx: mpsc::Receiver<TopoResult<WatchBatch>>,
    /// The task feeding `rx`, if any; aborted on drop.
    _task: Option<AbortOnDrop>,
    /// Set once a final error has been returned.
    ended: bool,
}

impl StoreWatch {
    /// Wraps a channel fed by `task` (or by the store itself when `None`).
    pub fn new(rx: mpsc::Receiver<TopoResult<WatchBatch>>, task: Option<AbortOnDrop>) -> Self {
        StoreWatch {
            rx,
            _task: task,
            ended: false,
        }
    }

    /// The next batch; `Err` when the watch has ended (then `None` forever).
    pub async fn next(&mut self) -> Option<TopoResult<WatchBatch>> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(Ok(batch)) => Some(Ok(batch)),
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                Some(Err(TopoError::Unavailable("watch ended".into())))
            }
        }
    }
}

/// Keeps a lease alive in the background. Dropping it stops the
/// keep-alives (the lease then expires after its TTL unless revoked).
#[derive(Debug)]
pub struct LeaseKeepAlive {
    /// Fires as soon as the lease is known lost: a keep-alive failed, the
    /// lease was revoked or expired, or the store became unreachable.
    pub lost: CancellationToken,
    /// The keep-alive task; aborted on drop.
    pub _task: Option<AbortOnDrop>,
}

impl LeaseKeepAlive {
    /// The keep-alives `task` runs, which fires `lost` when the lease is
    /// gone; the task is aborted when this is dropped.
    pub fn of_task(lost: CancellationToken, task: &tokio::task::JoinHandle<()>) -> Self {
        LeaseKeepAlive {
            lost,
            _task: Some(AbortOnDrop(task.abort_handle())),
        }
    }
}

/// The store operations the topology needs: Vitess etcd2 file semantics,
/// prefix reads, watches and leases.
///
/// Conditional writes follow Vitess: `create` fails with `NodeExists` if the
/// key exists; `update`/`delete` with `Some(version)` fail with `BadVersion`
/// if the key's mod revision differs (`delete` of a missing key is `NoNode`).
#[async_trait]
pub trait TopoStore: Send + Sync + fmt::Debug {
    /// Reads one key; `NoNode` if missing.
    async fn get(&self, key: &str) -> TopoResult<KeyValue>;

    /// Reads every key starting with `prefix` (give a trailing `/` for a
    /// directory). Missing prefix → empty listing, not an error.
    async fn list(&self, prefix: &str) -> TopoResult<Listing>;

    /// Names of the direct children of directory `dir` (without trailing
    /// `/`), sorted and deduplicated. `NoNode` if nothing is under it, as in
    /// Vitess's etcd2 `ListDir`.
    async fn list_dir(&self, dir: &str) -> TopoResult<Vec<String>>;

    /// Creates `key` if absent (txn `version == 0`); returns the new version.
    /// With `lease != 0` the key is attached to that lease.
    async fn create(&self, key: &str, value: &[u8], lease: LeaseId) -> TopoResult<Version>;

    /// Writes `key`. With `Some(version)` only if its mod revision equals
    /// `version` (else `BadVersion`, also when the key is missing, as in
    /// Vitess); with `None` unconditionally (creating it if needed).
    /// Returns the new version.
    async fn update(&self, key: &str, value: &[u8], version: Option<Version>) -> TopoResult<Version>;

    /// Writes `key` only if its mod revision equals `version` (else
    /// `BadVersion`, also when the key is missing), keeping it attached to
    /// `lease` (a plain `update` would detach it). `NoNode` if the lease is
    /// gone. Returns the new version.
    async fn update_leased(
        &self,
        key: &str,
        value: &[u8],
        version: Version,
        lease: LeaseId,
    ) -> TopoResult<Version>;

    /// Deletes `key`, conditionally on `version` when given. `NoNode` if
    /// missing, `BadVersion` on a version mismatch.
    async fn delete(&self, key: &str, version: Option<Version>) -> TopoResult<()>;

    /// The key under `prefix` with the highest mod revision `<=
    /// max_mod_revision`, or `None` (etcd `WithLastRev` + `WithMaxModRev`).
    async fn last_below(&self, prefix: &str, max_mod_revision: i64) -> TopoResult<Option<KeyValue>>;

    /// Watches `key` (or every key under it when `prefix`), starting at
    /// store revision `from_revision` (`0` = from now). A start revision
    /// that was compacted away ends the watch with `Compacted`.
    async fn watch(&self, key: &str, prefix: bool, from_revision: i64) -> TopoResult<StoreWatch>;

    /// Grants a lease with `ttl` (whole seconds, at least 1).
    async fn lease_grant(&self, ttl: Duration) -> TopoResult<LeaseId>;

    /// Starts keeping `lease` alive (every TTL/3) until the returned handle
    /// is dropped; its token fires when the lease is lost.
    async fn lease_keep_alive(&self, lease: LeaseId, ttl: Duration) -> TopoResult<LeaseKeepAlive>;

    /// One keep-alive round trip (etcd `KeepAliveOnce`): `Ok` while the lease
    /// lives, `NoNode` once it has expired or been revoked.
    async fn lease_keep_alive_once(&self, lease: LeaseId) -> TopoResult<()>;

    /// Revokes `lease`, deleting every key attached to it. Revoking an
    /// unknown lease is `NoNode`.
    async fn lease_revoke(&self, lease: LeaseId) -> TopoResult<()>;
}
