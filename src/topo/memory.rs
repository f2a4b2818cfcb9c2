//! An in-memory [`TopoStore`] that behaves like one etcd server: a
//! store-wide revision, per-key create/mod revisions, leases that expire
//! after their TTL and delete their keys, watches that replay history from
//! a start revision, and compaction.
//!
//! Meant for unit tests of modules that use the topology; the conformance
//! suite (`integration::topo_conformance`) runs the same checks against it
//! and against real etcd. Test hooks: [`MemoryStore::compact`],
//! [`MemoryStore::break_watches`] (as after a reconnect),
//! [`MemoryStore::set_unavailable`] (as when etcd is gone) and
//! [`MemoryStore::put_raw`] (seeding without an async context).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{TopoError, TopoResult};
use super::store::{
    AbortOnDrop, KeyValue, LeaseId, LeaseKeepAlive, Listing, StoreWatch, TopoStore, Version, WatchBatch,
    WatchEvent,
};

/// Revisions of history kept for watches that start in the past; older
/// revisions count as compacted.
const HISTORY_LIMIT: usize = 10_000;

/// Batches buffered per watch; a consumer further behind loses its watch
/// (it ends) and must re-list, like an etcd watcher that fell too far behind.
const WATCH_BUFFER: usize = 4096;

/// One stored key.
#[derive(Clone, Debug)]
struct Entry {
    /// Raw value.
    value: Vec<u8>,
    /// Revision that created the key.
    create_revision: i64,
    /// Revision of the last write.
    mod_revision: i64,
    /// Lease the key is attached to (0 = none).
    lease: LeaseId,
}

/// One granted lease.
#[derive(Debug)]
struct Lease {
    /// Granted TTL.
    ttl: Duration,
    /// When it expires unless kept alive.
    expires_at: Instant,
    /// Keys attached to it.
    keys: BTreeSet<String>,
    /// Fired when the lease is revoked or expires, or the store goes
    /// unavailable; shared with keep-alive handles.
    lost: CancellationToken,
}

/// One registered watch.
#[derive(Debug)]
struct Watcher {
    /// Watched key, or prefix when `prefix`.
    key: String,
    /// Whether `key` is a prefix.
    prefix: bool,
    /// Where batches go; dropping it ends the watch.
    tx: mpsc::Sender<TopoResult<WatchBatch>>,
}

impl Watcher {
    fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key
        }
    }
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    /// Current store revision (0 = nothing written yet).
    revision: i64,
    /// Revisions `<=` this are compacted: a watch cannot start there.
    compacted: i64,
    /// The keys.
    data: BTreeMap<String, Entry>,
    /// Live leases by id.
    leases: HashMap<LeaseId, Lease>,
    /// Last lease id handed out.
    last_lease: LeaseId,
    /// Events of recent revisions, oldest first, for watches that start in
    /// the past.
    history: VecDeque<(i64, Vec<WatchEvent>)>,
    /// Live watches.
    watchers: Vec<Watcher>,
    /// The task that expires leases; runs while leases exist.
    reaper: Option<AbortOnDrop>,
    /// Test hook: while true every operation fails with `Unavailable`.
    unavailable: bool,
}

impl State {
    fn check_available(&self) -> TopoResult<()> {
        if self.unavailable {
            Err(TopoError::Unavailable("memory store is unavailable".into()))
        } else {
            Ok(())
        }
    }

    fn kv(key: &str, e: &Entry) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: e.value.clone(),
            version: Version(e.mod_revision),
            create_revision: e.create_revision,
            lease: e.lease,
        }
    }

    /// Records the events of a new revision and delivers them.
    fn commit(&mut self, events: Vec<WatchEvent>) {
        let revision = self.revision;
        self.watchers.retain(|w| {
            let mine: Vec<WatchEvent> = events.iter().filter(|e| w.matches(e.key())).cloned().collect();
            if mine.is_empty() {
                return !w.tx.is_closed();
            }
            // A full buffer ends the watch: the consumer must re-list.
            w.tx.try_send(Ok(WatchBatch {
                revision,
                events: mine,
            }))
            .is_ok()
        });
        self.history.push_back((revision, events));
        while self.history.len() > HISTORY_LIMIT {
            if let Some((rev, _)) = self.history.pop_front() {
                self.compacted = self.compacted.max(rev);
            }
        }
    }

    /// Writes `key` at a new revision.
    fn put(&mut self, key: &str, value: &[u8], lease: LeaseId) -> Version {
        self.revision += 1;
        let revision = self.revision;
        let create_revision = self.data.get(key).map_or(revision, |e| e.create_revision);
        if let Some(old) = self.data.get(key)
            && old.lease != 0
            && old.lease != lease
            && let Some(l) = self.leases.get_mut(&old.lease)
        {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
        let entry = Entry {
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
            lease,
        };
        let event = WatchEvent::Put(Self::kv(key, &entry));
        self.data.insert(key.to_string(), entry);
        self.commit(vec![event]);
        Version(revision)
    }

    /// Deletes `keys` (those present) in one new revision.
    fn remove(&mut self, keys: &[String]) {
        let present: Vec<&String> = keys.iter().filter(|k| self.data.contains_key(*k)).collect();
        if present.is_empty() {
            return;
        }
        self.revision += 1;
        let revision = self.revision;
        let mut events = Vec::new();
        for key in present {
            if let Some(e) = self.data.remove(key)
                && e.lease != 0
                && let Some(l) = self.leases.get_mut(&e.lease)
            {
                l.keys.remove(key);
            }
            events.push(WatchEvent::Delete {
                key: key.clone(),
                revision,
            });
        }
        self.commit(events);
    }

    /// Revokes a lease: deletes its keys, fires its token.
    fn revoke(&mut self, lease: LeaseId) -> bool {
        let Some(l) = self.leases.remove(&lease) else {
            return false;
        };
        l.lost.cancel();
        let keys: Vec<String> = l.keys.into_iter().collect();
        self.remove(&keys);
        true
    }

    /// Expires every lease past its deadline; returns the next deadline.
    fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.revoke(id);
        }
        self.leases.values().map(|l| l.expires_at).min()
    }
}

/// An in-memory etcd look-alike. Cheap to clone (shared state).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// All state. A `std::sync::Mutex`: it is never held across an `.await`.
    state: Arc<Mutex<State>>,
    /// Wakes the lease reaper when a lease with an earlier deadline appears.
    reaper_wake: Arc<Notify>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a
        // way that matters to tests; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `key` unconditionally (for seeding tests from sync code).
    pub fn put_raw(&self, key: &str, value: &[u8]) -> Version {
        self.lock().put(key, value, 0)
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// Compacts history up to `revision`: watches can no longer start at
    /// or before it. Running watches are not affected (as in etcd).
    pub fn compact(&self, revision: i64) {
        let mut s = self.lock();
        s.compacted = s.compacted.max(revision);
        while s.history.front().is_some_and(|(rev, _)| *rev <= revision) {
            s.history.pop_front();
        }
    }

    /// Ends every running watch, as a client reconnect does.
    pub fn break_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Simulates losing (true) or regaining (false) the store: while
    /// unavailable, every call fails with `Unavailable`, watches end and
    /// lease keep-alive tokens fire. Leases themselves keep their deadline.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut s = self.lock();
        s.unavailable = unavailable;
        if unavailable {
            s.watchers.clear();
            for l in s.leases.values() {
                l.lost.cancel();
            }
        }
    }

    /// Starts the lease reaper if it is not running. Called with the lock
    /// held, inside a tokio runtime.
    fn ensure_reaper(&self, s: &mut State) {
        if s.reaper.is_some() {
            self.reaper_wake.notify_one();
            return;
        }
        let weak: Weak<Mutex<State>> = Arc::downgrade(&self.state);
        let wake = self.reaper_wake.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = {
                    let Some(state) = weak.upgrade() else { return };
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    let next = s.sweep(crate::clock::now());
                    if next.is_none() {
                        s.reaper = None;
                        return;
                    }
                    next
                };
                if let Some(at) = next {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = wake.notified() => {}
                    }
                }
            }
        });
        s.reaper = Some(AbortOnDrop(task.abort_handle()));
    }
}

#[async_trait]
impl TopoStore for MemoryStore {
    async fn get(&self, key: &str) -> TopoResult<KeyValue> {
        let s = self.lock();
        s.check_available()?;
        s.data
            .get(key)
            .map(|e| State::kv(key, e))
            .ok_or_else(|| TopoError::NoNode(key.to_string()))
    }

    async fn list(&self, prefix: &str) -> TopoResult<Listing> {
        let s = self.lock();
        s.check_available()?;
        let entries = s
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| State::kv(k, e))
            .collect();
        Ok(Listing {
            entries,
            revision: s.revision,
        })
    }

    async fn list_dir(&self, dir: &str) -> TopoResult<Vec<String>> {
        let s = self.lock();
        s.check_available()?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let names: BTreeSet<String> = s
            .data
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(TopoError::NoNode(dir.to_string()));
        }
        Ok(names.into_iter().collect())
    }

    async fn create(&self, key: &str, value: &[u8], lease: LeaseId) -> TopoResult<Version> {
        let mut s = self.lock();
        s.check_available()?;
        if s.data.contains_key(key) {
            return Err(TopoError::NodeExists(key.to_string()));
        }
        if lease != 0 && !s.leases.contains_key(&lease) {
            return Err(TopoError::NoNode(format!("lease {lease}")));
        }
        Ok(s.put(key, value, lease))
    }

    async fn update_leased(
        &self,
        key: &str,
        value: &[u8],
        version: Version,
        lease: LeaseId,
    ) -> TopoResult<Version> {
        let mut s = self.lock();
        s.check_available()?;
        let current = s.data.get(key).map_or(0, |e| e.mod_revision);
        if current != version.0 {
            return Err(TopoError::BadVersion(key.to_string()));
        }
        if lease != 0 && !s.leases.contains_key(&lease) {
            return Err(TopoError::NoNode(format!("lease {lease}")));
        }
        Ok(s.put(key, value, lease))
    }

    async fn update(&self, key: &str, value: &[u8], version: Option<Version>) -> TopoResult<Version> {
        let mut s = self.lock();
        s.check_available()?;
        if let Some(version) = version {
            let current = s.data.get(key).map_or(0, |e| e.mod_revision);
            if current != version.0 {
                return Err(TopoError::BadVersion(key.to_string()));
            }
        }
        Ok(s.put(key, value, 0))
    }

    async fn delete(&self, key: &str, version: Option<Version>) -> TopoResult<()> {
        let mut s = self.lock();
        s.check_available()?;
        let Some(e) = s.data.get(key) else {
            return Err(TopoError::NoNode(key.to_string()));
        };
        if version.is_some_and(|v| v.0 != e.mod_revision) {
            return Err(TopoError::BadVersion(key.to_string()));
        }
        s.remove(&[key.to_string()]);
        Ok(())
    }

    async fn last_below(&self, prefix: &str, max_mod_revision: i64) -> TopoResult<Option<KeyValue>> {
        let s = self.lock();
        s.check_available()?;
        Ok(s.data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.mod_revision <= max_mod_revision)
            .max_by_key(|(_, e)| e.mod_revision)
            .map(|(k, e)| State::kv(k, e)))
    }

    async fn watch(&self, key: &str, prefix: bool, from_revision: i64) -> TopoResult<StoreWatch> {
        let mut s = self.lock();
        s.check_available()?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let watcher = Watcher {
            key: key.to_string(),
            prefix,
            tx,
        };
        if from_revision > 0 && from_revision <= s.compacted {
            // etcd: created, then cancelled with the compact revision.
            let _ = watcher.tx.try_send(Err(TopoError::Compacted(s.compacted)));
            return Ok(StoreWatch::new(rx, None));
        }
        if from_revision > 0 {
            for (rev, events) in s.history.iter().filter(|(rev, _)| *rev >= from_revision) {
                let mine: Vec<WatchEvent> = events
                    .iter()
                    .filter(|e| watcher.matches(e.key()))
                    .cloned()
                    .collect();
                if !mine.is_empty()
                    && watcher
                        .tx
                        .try_send(Ok(WatchBatch {
                            revision: *rev,
                            events: mine,
                        }))
                        .is_err()
                {
                    return Ok(StoreWatch::new(rx, None));
                }
            }
        }
        s.watchers.push(watcher);
        Ok(StoreWatch::new(rx, None))
    }

    async fn lease_grant(&self, ttl: Duration) -> TopoResult<LeaseId> {
        let mut s = self.lock();
        s.check_available()?;
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        // etcd lease ids are large and unpredictable; ours only need to be unique.
        s.last_lease += 1;
        let id = 0x694d_0000_0000 + s.last_lease;
        s.leases.insert(
            id,
            Lease {
                ttl,
                expires_at: crate::clock::now() + ttl,
                keys: BTreeSet::new(),
                lost: CancellationToken::new(),
            },
        );
        self.ensure_reaper(&mut s);
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId, ttl: Duration) -> TopoResult<LeaseKeepAlive> {
        let lost = {
            let s = self.lock();
            s.check_available()?;
            let l = s
                .leases
                .get(&lease)
                .ok_or_else(|| TopoError::NoNode(format!("lease {lease}")))?;
            l.lost.clone()
        };
        let weak = Arc::downgrade(&self.state);
        let token = lost.clone();
        let period = (ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(period) => {}
                }
                let Some(state) = weak.upgrade() else {
                    token.cancel();
                    return;
                };
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let alive = !s.unavailable
                    && match s.leases.get_mut(&lease) {
                        Some(l) => {
                            l.expires_at = crate::clock::now() + l.ttl;
                            true
                        }
                        None => false,
                    };
                if !alive {
                    token.cancel();
                    return;
                }
            }
        });
        Ok(LeaseKeepAlive::of_task(lost, &task))
    }

    async fn lease_keep_alive_once(&self, lease: LeaseId) -> TopoResult<()> {
        let mut s = self.lock();
        s.check_available()?;
        s.sweep(crate::clock::now());
        let l = s
            .leases
            .get_mut(&lease)
            .ok_or_else(|| TopoError::NoNode(format!("lease {lease}")))?;
        l.expires_at = crate::clock::now() + l.ttl;
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> TopoResult<()> {
        let mut s = self.lock();
        s.check_available()?;
        if s.revoke(lease) {
            Ok(())
        } else {
            Err(TopoError::NoNode(format!("lease {lease}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::topodata::Shard;
    use crate::topo::Topo;

    #[tokio::test(start_paused = true)]
    async fn locks_hold_across_long_pauses_and_expire_without_keep_alive() {
        let (topo, store) = Topo::in_memory(&["zone1"]);
        topo.create_shard("ks", "0", &Shard::default())
            .await
            .expect("shard");
        let lock = topo.try_lock_shard("ks", "0", "test").await.expect("lock");
        // Ten lease TTLs of (paused, auto-advanced) time: keep-alives run.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!lock.is_lost());
        lock.check().await.expect("still held");
        assert!(
            topo.try_lock_shard("ks", "0", "other")
                .await
                .expect_err("held")
                .is_node_exists()
        );
        lock.unlock().await.expect("unlock");

        // A lease nobody keeps alive expires after its TTL.
        let lease = store.lease_grant(Duration::from_secs(30)).await.expect("grant");
        store.create("/x", b"1", lease).await.expect("create");
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(store.get("/x").await.is_ok());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(store.get("/x").await.expect_err("expired").is_no_node());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_cancels_lock_tokens() {
        let (topo, store) = Topo::in_memory(&[]);
        topo.create_shard("ks", "0", &Shard::default())
            .await
            .expect("shard");
        let lock = topo.lock_shard("ks", "0", "test").await.expect("lock");
        store.set_unavailable(true);
        tokio::time::timeout(Duration::from_secs(1), lock.cancellation_token().cancelled())
            .await
            .expect("token fires");
        assert!(topo.get_shard("ks", "0").await.expect_err("down").is_retryable());
        store.set_unavailable(false);
        assert!(lock.check().await.is_err());
    }
}
