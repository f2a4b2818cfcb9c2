//! One conformance suite for every [`TopoStore`]: the same checks run
//! against the in-memory store and against a real etcd started by the test
//! (see `integration/tests/topo_conformance.rs`). A backend that cannot be
//! started fails the test; nothing here is skipped.
//!
//! Each check is an `async fn(&Backend)` that panics (asserts) on a
//! difference. Store-level checks pin down the etcd semantics Vitess relies
//! on; lock checks run Vitess's lock protocol ([`TopoLock`]); typed checks
//! go through [`Topo`].

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::time::{Instant, timeout};
use vtorc::proto::topodata::{CellInfo, Keyspace, Shard, Tablet, TabletAlias, TabletType};
use vtorc::topo::{EtcdOptions, EtcdStore};
use vtorc::topo::{
    LockMode, LockOptions, MemoryConnector, MemoryStore, Topo, TopoError, TopoEvent, TopoLock, TopoOptions,
    TopoStore, Version, WatchEvent,
};

use crate::etcd::EtcdServer;

/// Global root used by the typed checks.
pub const GLOBAL_ROOT: &str = "/vitess/global";

/// The store under test.
#[allow(clippy::large_enum_variant)] // one per test; size does not matter
pub enum Backend {
    /// The in-memory store.
    Memory {
        /// The store (shared by every handle).
        store: MemoryStore,
        /// Connector the typed topology uses for cells.
        connector: Arc<MemoryConnector>,
    },
    /// A real etcd server.
    Etcd {
        /// The server; behind a mutex so a check can restart it.
        server: tokio::sync::Mutex<EtcdServer>,
        /// `127.0.0.1:<port>`.
        address: String,
        /// Our client.
        store: EtcdStore,
    },
}

/// Options used by typed checks: a short lease so expiry tests stay fast.
pub fn test_topo_options() -> TopoOptions {
    TopoOptions {
        lock: LockOptions {
            lease_ttl: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(10),
            remote_operation_timeout: Duration::from_secs(5),
        },
        remote_operation_timeout: Duration::from_secs(5),
        read_concurrency: 32,
        etcd_tls: Default::default(),
    }
}

impl Backend {
    /// A fresh in-memory store.
    pub fn memory() -> Backend {
        let connector = Arc::new(MemoryConnector::default());
        let store = connector.store("memory");
        Backend::Memory { store, connector }
    }

    /// A fresh etcd server and a client to it. Fails (with the etcd log
    /// tail) if etcd does not start.
    pub async fn etcd() -> anyhow::Result<Backend> {
        let server = EtcdServer::start().await?;
        let address = server.address();
        let store = EtcdStore::connect(std::slice::from_ref(&address), &etcd_options()).await?;
        Ok(Backend::Etcd {
            server: tokio::sync::Mutex::new(server),
            address,
            store,
        })
    }

    /// The store under test.
    pub fn store(&self) -> Arc<dyn TopoStore> {
        match self {
            Backend::Memory { store, .. } => Arc::new(store.clone()),
            Backend::Etcd { store, .. } => Arc::new(store.clone()),
        }
    }

    /// An independent handle on the same data (a second etcd client; for
    /// memory, the same store).
    pub async fn second_store(&self) -> Arc<dyn TopoStore> {
        match self {
            Backend::Memory { store, .. } => Arc::new(store.clone()),
            Backend::Etcd { address, .. } => Arc::new(
                EtcdStore::connect(std::slice::from_ref(address), &etcd_options())
                    .await
                    .expect("second etcd client"),
            ),
        }
    }

    /// Compacts the store's history up to `revision`.
    pub async fn compact(&self, revision: i64) {
        match self {
            Backend::Memory { store, .. } => store.compact(revision),
            Backend::Etcd { store, .. } => {
                store
                    .client()
                    .compact(revision, None)
                    .await
                    .expect("etcd compact");
            }
        }
    }

    /// Ends every running watch the way a reconnect does: the memory store
    /// drops them; etcd is killed and restarted on the same data.
    pub async fn interrupt(&self) {
        match self {
            Backend::Memory { store, .. } => store.break_watches(),
            Backend::Etcd { server, .. } => server.lock().await.restart().await.expect("etcd restart"),
        }
    }

    /// The address cells on this backend carry in `CellInfo`.
    pub fn address(&self) -> String {
        match self {
            Backend::Memory { .. } => "memory".to_string(),
            Backend::Etcd { address, .. } => address.clone(),
        }
    }

    /// A typed topology rooted at [`GLOBAL_ROOT`], with cells `cells` (root
    /// `/vitess/<cell>`) on the same backend.
    pub async fn topo(&self, cells: &[&str]) -> Topo {
        let topo = match self {
            Backend::Memory { store, connector } => Topo::new(
                Arc::new(store.clone()),
                "memory",
                GLOBAL_ROOT,
                connector.clone(),
                test_topo_options(),
            ),
            Backend::Etcd { address, .. } => Topo::connect_etcd(address, GLOBAL_ROOT, test_topo_options())
                .await
                .expect("connect topo"),
        };
        for cell in cells {
            let info = CellInfo {
                server_address: self.address(),
                root: format!("/vitess/{cell}"),
            };
            match topo.create_cell_info(cell, &info).await {
                Ok(_) | Err(TopoError::NodeExists(_)) => {}
                Err(e) => panic!("create cell {cell}: {e}"),
            }
        }
        topo
    }
}

fn etcd_options() -> EtcdOptions {
    EtcdOptions {
        operation_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        tls: Default::default(),
    }
}

fn lock_options(lock_timeout: Duration) -> LockOptions {
    LockOptions {
        lease_ttl: Duration::from_secs(3),
        lock_timeout,
        remote_operation_timeout: Duration::from_secs(5),
    }
}

/// Waits until `check` returns true, polling every 20 ms, for at most
/// `within`; returns whether it did.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------
// Store semantics
// ------------------------------------------------------------------

/// create / get / update(version) / delete(version) behave like Vitess's
/// etcd2 files: NodeExists, NoNode, BadVersion, versions = mod revisions.
pub async fn create_get_update_delete_follow_vitess_semantics(b: &Backend) {
    let s = b.store();
    let key = "/t/file";
    assert!(matches!(s.get(key).await, Err(TopoError::NoNode(k)) if k == key));
    let v1 = s.create(key, b"one", 0).await.expect("create");
    assert!(v1.0 > 0);
    assert!(matches!(
        s.create(key, b"again", 0).await,
        Err(TopoError::NodeExists(_))
    ));
    let got = s.get(key).await.expect("get");
    assert_eq!((got.value.as_slice(), got.version), (b"one".as_slice(), v1));
    assert_eq!(got.lease, 0);

    let v2 = s
        .update(key, b"two", Some(v1))
        .await
        .expect("update at current version");
    assert!(v2 > v1, "versions increase: {v1} then {v2}");
    assert!(matches!(
        s.update(key, b"stale", Some(v1)).await,
        Err(TopoError::BadVersion(_))
    ));
    assert_eq!(s.get(key).await.expect("get").value, b"two");
    let v3 = s.update(key, b"three", None).await.expect("unconditional update");
    assert!(v3 > v2);
    let v4 = s
        .update("/t/new", b"x", None)
        .await
        .expect("unconditional update creates");
    assert_eq!(s.get("/t/new").await.expect("created by update").version, v4);
    assert!(matches!(
        s.update("/t/missing", b"x", Some(v1)).await,
        Err(TopoError::BadVersion(_))
    ));

    assert!(matches!(
        s.delete(key, Some(v2)).await,
        Err(TopoError::BadVersion(_))
    ));
    s.delete(key, Some(v3)).await.expect("delete at current version");
    assert!(matches!(s.delete(key, Some(v3)).await, Err(TopoError::NoNode(_))));
    assert!(matches!(s.delete(key, None).await, Err(TopoError::NoNode(_))));
    s.delete("/t/new", None).await.expect("unconditional delete");
    assert!(s.get("/t/new").await.expect_err("deleted").is_no_node());
}

/// Prefix lists return keys in order with their versions; list_dir returns
/// child names and NoNode for an empty directory.
pub async fn list_and_list_dir_read_directories(b: &Backend) {
    let s = b.store();
    for key in ["/d/a/x", "/d/a/y", "/d/b/z", "/d/c", "/dd/no"] {
        s.create(key, key.as_bytes(), 0).await.expect("create");
    }
    let listing = s.list("/d/").await.expect("list");
    let keys: Vec<&str> = listing.entries.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/d/a/x", "/d/a/y", "/d/b/z", "/d/c"]);
    assert!(listing.entries.iter().all(|kv| kv.value == kv.key.as_bytes()));
    assert!(listing.revision >= listing.entries.iter().map(|kv| kv.version.0).max().unwrap_or(0));
    assert!(s.list("/nothing/").await.expect("empty list").entries.is_empty());
    assert_eq!(s.list_dir("/d").await.expect("list_dir"), ["a", "b", "c"]);
    assert_eq!(s.list_dir("/d/a/").await.expect("list_dir"), ["x", "y"]);
    assert!(s.list_dir("/nothing").await.expect_err("empty dir").is_no_node());
}

/// A prefix watch delivers puts (with value and version) and deletes, in
/// order, each within a second.
pub async fn watch_sees_puts_and_deletes_within_a_second(b: &Backend) {
    let s = b.store();
    let writer = b.second_store().await;
    let mut w = s.watch("/w/", true, 0).await.expect("watch");
    let start = Instant::now();
    let v1 = writer.create("/w/k", b"1", 0).await.expect("create");
    let v2 = writer.update("/w/k", b"2", Some(v1)).await.expect("update");
    writer
        .create("/other", b"x", 0)
        .await
        .expect("create outside prefix");
    writer.delete("/w/k", None).await.expect("delete");
    let mut events = Vec::new();
    while events.len() < 3 {
        let batch = timeout(Duration::from_secs(1), w.next())
            .await
            .expect("watch events within a second")
            .expect("watch open")
            .expect("watch healthy");
        events.extend(batch.events);
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    match (&events[0], &events[1], &events[2]) {
        (WatchEvent::Put(a), WatchEvent::Put(c), WatchEvent::Delete { key, revision }) => {
            assert_eq!(
                (a.key.as_str(), a.value.as_slice(), a.version),
                ("/w/k", b"1".as_slice(), v1)
            );
            assert_eq!((c.value.as_slice(), c.version), (b"2".as_slice(), v2));
            assert_eq!(key, "/w/k");
            assert!(*revision > v2.0);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

/// A watch started at a past revision first replays what happened since.
pub async fn watch_from_a_past_revision_replays_history(b: &Backend) {
    let s = b.store();
    let v1 = s.create("/h/a", b"1", 0).await.expect("create");
    s.create("/h/b", b"2", 0).await.expect("create");
    s.delete("/h/a", None).await.expect("delete");
    let mut w = s.watch("/h/", true, v1.0).await.expect("watch");
    let mut keys = Vec::new();
    while keys.len() < 3 {
        let batch = timeout(Duration::from_secs(2), w.next())
            .await
            .expect("replay")
            .expect("open")
            .expect("healthy");
        keys.extend(batch.events.iter().map(|e| match e {
            WatchEvent::Put(kv) => format!("put {}", kv.key),
            WatchEvent::Delete { key, .. } => format!("delete {key}"),
        }));
    }
    assert_eq!(keys, ["put /h/a", "put /h/b", "delete /h/a"]);
}

/// A watch from a compacted revision ends with `Compacted`.
pub async fn watch_from_a_compacted_revision_ends_with_compacted(b: &Backend) {
    let s = b.store();
    let v1 = s.create("/c/a", b"1", 0).await.expect("create");
    let v2 = s.update("/c/a", b"2", None).await.expect("update");
    s.update("/c/a", b"3", None).await.expect("update");
    b.compact(v2.0).await;
    let mut w = s.watch("/c/", true, v1.0).await.expect("watch starts");
    let ended = timeout(Duration::from_secs(2), w.next())
        .await
        .expect("watch answers");
    assert!(
        matches!(ended, Some(Err(TopoError::Compacted(rev))) if rev >= v2.0),
        "{ended:?}"
    );
    assert!(w.next().await.is_none(), "an ended watch stays ended");
}

/// `last_below` finds the key with the newest mod revision at or below a
/// bound (the lock protocol's "WithLastRev + WithMaxModRev").
pub async fn last_below_returns_the_newest_key_at_or_below_a_revision(b: &Backend) {
    let s = b.store();
    let va = s.create("/l/a", b"a", 0).await.expect("create");
    let vb = s.create("/l/b", b"b", 0).await.expect("create");
    let va2 = s.update("/l/a", b"a2", None).await.expect("update");
    s.create("/lx", b"outside", 0).await.expect("create");
    assert_eq!(s.last_below("/l/", va.0 - 1).await.expect("below first"), None);
    assert_eq!(
        s.last_below("/l/", va.0).await.expect("at a").map(|kv| kv.key),
        None,
        "a moved on to {va2}"
    );
    assert_eq!(
        s.last_below("/l/", vb.0).await.expect("at b").map(|kv| kv.key),
        Some("/l/b".into())
    );
    let newest = s
        .last_below("/l/", va2.0 + 100)
        .await
        .expect("newest")
        .expect("some");
    assert_eq!((newest.key.as_str(), newest.version), ("/l/a", va2));
}

/// Keys attached to a lease disappear when it is revoked; keep-alive-once
/// then reports NoNode.
pub async fn revoking_a_lease_deletes_its_keys(b: &Backend) {
    let s = b.store();
    let lease = s.lease_grant(Duration::from_secs(30)).await.expect("grant");
    s.create("/e/1", b"x", lease).await.expect("create with lease");
    assert_eq!(s.get("/e/1").await.expect("get").lease, lease);
    s.lease_keep_alive_once(lease).await.expect("lease alive");
    s.lease_revoke(lease).await.expect("revoke");
    assert!(
        s.get("/e/1")
            .await
            .expect_err("key gone with its lease")
            .is_no_node()
    );
    let gone = s.lease_keep_alive_once(lease).await;
    assert!(matches!(gone, Err(TopoError::NoNode(_))), "{gone:?}");
    assert!(
        s.lease_revoke(lease)
            .await
            .expect_err("revoked twice")
            .is_no_node()
    );
}

/// A lease nobody keeps alive expires after its TTL and takes its keys.
pub async fn an_unrenewed_lease_expires_after_its_ttl(b: &Backend) {
    let s = b.store();
    let lease = s.lease_grant(Duration::from_secs(1)).await.expect("grant");
    s.create("/x/1", b"x", lease).await.expect("create with lease");
    let start = Instant::now();
    let gone = eventually(Duration::from_secs(5), || async { s.get("/x/1").await.is_err() }).await;
    assert!(gone, "key still there {:?} after grant", start.elapsed());
    // etcd may keep a lease a little past its TTL, but not much.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "expired after {:?}",
        start.elapsed()
    );
}

/// A kept-alive lease outlives its TTL.
pub async fn a_kept_alive_lease_outlives_its_ttl(b: &Backend) {
    let s = b.store();
    let lease = s.lease_grant(Duration::from_secs(1)).await.expect("grant");
    s.create("/k/1", b"x", lease).await.expect("create with lease");
    let keep = s
        .lease_keep_alive(lease, Duration::from_secs(1))
        .await
        .expect("keep alive");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(s.get("/k/1").await.is_ok(), "kept-alive lease expired");
    assert!(!keep.lost.is_cancelled());
    drop(keep);
    assert!(eventually(Duration::from_secs(4), || async { s.get("/k/1").await.is_err() }).await);
}

// ------------------------------------------------------------------
// Locks (Vitess etcd2 protocol)
// ------------------------------------------------------------------

const RESOURCE: &str = "/vitess/global/keyspaces/ks/shards/0";

async fn make_resource(s: &dyn TopoStore) {
    match s.create(&format!("{RESOURCE}/Shard"), b"", 0).await {
        Ok(_) | Err(TopoError::NodeExists(_)) => {}
        Err(e) => panic!("create shard: {e}"),
    }
}

/// Two holders exclude each other: the second waits until the first
/// unlocks, then gets the lock.
pub async fn two_lock_holders_exclude_each_other(b: &Backend) {
    let (s1, s2) = (b.store(), b.second_store().await);
    make_resource(s1.as_ref()).await;
    let opts = lock_options(Duration::from_secs(10));
    let first = TopoLock::acquire(s1.clone(), RESOURCE, "first".into(), &opts, LockMode::Blocking)
        .await
        .expect("first lock");
    let waiter = tokio::spawn({
        let s2 = s2.clone();
        let opts = opts.clone();
        async move { TopoLock::acquire(s2, RESOURCE, "second".into(), &opts, LockMode::Blocking).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "second holder got the lock while the first held it"
    );
    let keys = s1.list(&format!("{RESOURCE}/locks/")).await.expect("list locks");
    assert_eq!(keys.entries.len(), 2, "both holders have a key under locks/");
    first.check().await.expect("first still holds");
    let released = Instant::now();
    first.unlock().await.expect("unlock");
    let second = timeout(Duration::from_secs(2), waiter)
        .await
        .expect("second gets the lock soon after the unlock")
        .expect("task")
        .expect("second lock");
    assert!(released.elapsed() < Duration::from_secs(1));
    second.check().await.expect("second holds");
    let keys = s1.list(&format!("{RESOURCE}/locks/")).await.expect("list locks");
    assert_eq!(
        keys.entries.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        [second.key()]
    );
    second.unlock().await.expect("unlock");
    assert!(
        s1.list(&format!("{RESOURCE}/locks/"))
            .await
            .expect("list")
            .entries
            .is_empty()
    );
}

/// A try-lock on a held shard fails at once with NodeExists.
pub async fn try_lock_fails_fast_on_a_held_lock(b: &Backend) {
    let s = b.store();
    make_resource(s.as_ref()).await;
    let opts = lock_options(Duration::from_secs(10));
    let held = TopoLock::acquire(s.clone(), RESOURCE, "held".into(), &opts, LockMode::Try)
        .await
        .expect("try-lock on a free shard");
    let start = Instant::now();
    let err = TopoLock::acquire(
        b.second_store().await,
        RESOURCE,
        "try".into(),
        &opts,
        LockMode::Try,
    )
    .await
    .expect_err("shard is locked");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "try-lock took {:?}",
        start.elapsed()
    );
    assert!(err.is_node_exists(), "{err}");
    assert!(err.to_string().contains("lock already exists at path"), "{err}");
    held.unlock().await.expect("unlock");
    let again = TopoLock::acquire(s, RESOURCE, "again".into(), &opts, LockMode::Try)
        .await
        .expect("free again");
    again.unlock().await.expect("unlock");
}

/// Locking a resource that does not exist is NoNode.
pub async fn lock_on_a_missing_resource_is_no_node(b: &Backend) {
    let opts = lock_options(Duration::from_secs(5));
    let err = TopoLock::acquire(
        b.store(),
        "/vitess/global/keyspaces/nope/shards/0",
        "x".into(),
        &opts,
        LockMode::Blocking,
    )
    .await
    .expect_err("no such shard");
    assert!(err.is_no_node(), "{err}");
}

/// A blocked lock gives up at the lock timeout and leaves no key behind.
pub async fn a_blocked_lock_times_out_and_leaves_no_key(b: &Backend) {
    let s = b.store();
    make_resource(s.as_ref()).await;
    let held = TopoLock::acquire(
        s.clone(),
        RESOURCE,
        "held".into(),
        &lock_options(Duration::from_secs(5)),
        LockMode::Blocking,
    )
    .await
    .expect("lock");
    let start = Instant::now();
    let err = TopoLock::acquire(
        b.second_store().await,
        RESOURCE,
        "late".into(),
        &lock_options(Duration::from_millis(700)),
        LockMode::Blocking,
    )
    .await
    .expect_err("times out");
    assert!(matches!(err, TopoError::Timeout(_)), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(650) && start.elapsed() < Duration::from_secs(3));
    let keys = s.list(&format!("{RESOURCE}/locks/")).await.expect("list");
    assert_eq!(
        keys.entries.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        [held.key()]
    );
    held.unlock().await.expect("unlock");
}

/// Revoking the holder's lease (someone else, or expiry) cancels its token
/// at once, and `check` then reports LockLost.
pub async fn a_revoked_lease_cancels_the_holders_token_at_once(b: &Backend) {
    let s = b.store();
    make_resource(s.as_ref()).await;
    let opts = LockOptions {
        lease_ttl: Duration::from_secs(30),
        ..lock_options(Duration::from_secs(5))
    };
    let lock = TopoLock::acquire(s.clone(), RESOURCE, "x".into(), &opts, LockMode::Blocking)
        .await
        .expect("lock");
    let token = lock.cancellation_token();
    assert!(!token.is_cancelled());
    let start = Instant::now();
    b.second_store()
        .await
        .lease_revoke(lock.lease_id())
        .await
        .expect("third-party revoke");
    timeout(Duration::from_secs(1), token.cancelled())
        .await
        .expect("token fires within a second of the revoke");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(lock.is_lost());
    assert!(matches!(lock.check().await, Err(TopoError::LockLost { .. })));
    assert!(matches!(lock.unlock().await, Err(TopoError::LockLost { .. })));
}

/// Dropping a held lock without unlocking still releases it.
pub async fn dropping_a_lock_releases_it(b: &Backend) {
    let s = b.store();
    make_resource(s.as_ref()).await;
    let opts = lock_options(Duration::from_secs(10));
    let lock = TopoLock::acquire(s.clone(), RESOURCE, "x".into(), &opts, LockMode::Blocking)
        .await
        .expect("lock");
    let token = lock.cancellation_token();
    drop(lock);
    assert!(token.is_cancelled(), "dropping the guard ends the work under it");
    let released = eventually(Duration::from_secs(2), || async {
        s.list(&format!("{RESOURCE}/locks/"))
            .await
            .is_ok_and(|l| l.entries.is_empty())
    })
    .await;
    assert!(released, "lock key still there after drop");
    let again = TopoLock::acquire(s, RESOURCE, "again".into(), &opts, LockMode::Try)
        .await
        .expect("free after drop");
    again.unlock().await.expect("unlock");
}

/// Waiters get the lock in the order they asked (revision order).
pub async fn lock_waiters_are_served_in_order(b: &Backend) {
    let s = b.store();
    make_resource(s.as_ref()).await;
    let opts = lock_options(Duration::from_secs(10));
    let first = TopoLock::acquire(s.clone(), RESOURCE, "0".into(), &opts, LockMode::Blocking)
        .await
        .expect("lock");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 1..=3 {
        let store = b.second_store().await;
        let opts = opts.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let lock = TopoLock::acquire(store, RESOURCE, i.to_string(), &opts, LockMode::Blocking)
                .await
                .expect("waiter lock");
            tx.send(i).expect("send");
            tokio::time::sleep(Duration::from_millis(50)).await;
            lock.unlock().await.expect("unlock");
        }));
        // Make sure waiter i has its key before i+1 asks.
        let n = i + 1;
        assert!(
            eventually(Duration::from_secs(2), || async {
                s.list(&format!("{RESOURCE}/locks/"))
                    .await
                    .is_ok_and(|l| l.entries.len() == n)
            })
            .await
        );
    }
    first.unlock().await.expect("unlock");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(
            timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("waiter done")
                .expect("value"),
        );
    }
    assert_eq!(order, [1, 2, 3]);
    for t in tasks {
        t.await.expect("task");
    }
}

// ------------------------------------------------------------------
// Typed topology
// ------------------------------------------------------------------

/// A tablet record for tests.
pub fn tablet(cell: &str, uid: u32, keyspace: &str, shard: &str, tablet_type: TabletType) -> Tablet {
    Tablet {
        alias: Some(TabletAlias::new(cell, uid)),
        hostname: format!("host-{uid}"),
        keyspace: keyspace.into(),
        shard: shard.into(),
        r#type: tablet_type as i32,
        mysql_hostname: format!("mysql-{uid}"),
        mysql_port: 17000 + i32::try_from(uid).unwrap_or(0),
        ..Default::default()
    }
}

/// Keyspaces, shards, tablets and cells round-trip through the typed API.
pub async fn topo_reads_and_writes_typed_records(b: &Backend) {
    let topo = b.topo(&["zone1", "zone2"]).await;
    assert_eq!(topo.cells().await.expect("cells"), ["zone1", "zone2"]);
    assert_eq!(
        topo.get_cell_info("zone2").await.expect("cell").value.root,
        "/vitess/zone2"
    );
    assert!(topo.keyspaces().await.expect("no keyspaces").is_empty());
    let ks = Keyspace::with_durability("semi_sync");
    topo.create_keyspace("commerce", &ks)
        .await
        .expect("create keyspace");
    assert!(
        topo.create_keyspace("commerce", &ks)
            .await
            .expect_err("twice")
            .is_node_exists()
    );
    topo.create_shard("commerce", "-80", &Shard::default())
        .await
        .expect("shard");
    topo.create_shard("commerce", "80-", &Shard::default())
        .await
        .expect("shard");
    assert_eq!(topo.keyspaces().await.expect("keyspaces"), ["commerce"]);
    assert_eq!(
        topo.shard_names("commerce").await.expect("shards"),
        ["-80", "80-"]
    );
    assert_eq!(topo.get_keyspace("commerce").await.expect("ks").value, ks);
    let shards = topo.shards_of_keyspace("commerce").await.expect("all shards");
    assert_eq!(
        shards.items.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["-80", "80-"]
    );
    assert!(shards.errors.is_empty());

    let t100 = tablet("zone1", 100, "commerce", "-80", TabletType::Primary);
    let t101 = tablet("zone1", 101, "commerce", "-80", TabletType::Replica);
    let t200 = tablet("zone2", 200, "commerce", "-80", TabletType::Rdonly);
    for t in [&t100, &t101, &t200] {
        topo.create_tablet(t).await.expect("create tablet");
    }
    assert!(
        topo.create_tablet(&t100)
            .await
            .expect_err("twice")
            .is_node_exists()
    );
    let got = topo
        .get_tablet(&TabletAlias::new("zone1", 100))
        .await
        .expect("get tablet");
    assert_eq!(got.value, t100);
    let zone1 = topo.tablets_by_cell("zone1").await.expect("by cell");
    assert_eq!(
        zone1.items.iter().map(|t| t.value.clone()).collect::<Vec<_>>(),
        [t100.clone(), t101.clone()]
    );
    assert_eq!(
        topo.tablet_aliases_by_cell("zone1").await.expect("aliases"),
        [TabletAlias::new("zone1", 100), TabletAlias::new("zone1", 101)]
    );
    let by_shard = topo.tablets_by_shard("commerce", "-80").await.expect("by shard");
    let mut uids: Vec<u32> = by_shard
        .items
        .iter()
        .filter_map(|t| t.value.alias.as_ref().map(|a| a.uid))
        .collect();
    uids.sort_unstable();
    assert_eq!(uids, [100, 101, 200], "tablets_by_shard spans cells");

    // Update with version, then a stale update fails.
    let mut changed = got.clone();
    changed.value.r#type = TabletType::Replica as i32;
    let v2 = topo.update_tablet(&changed).await.expect("update");
    assert!(
        topo.update_tablet(&got)
            .await
            .expect_err("stale")
            .is_bad_version()
    );
    let updated = topo
        .update_tablet_fields(&TabletAlias::new("zone1", 100), |t| {
            t.hostname = "moved".into();
            Ok(())
        })
        .await
        .expect("update fields");
    assert!(updated.version > v2);
    assert_eq!(updated.value.r#type, TabletType::Replica as i32);

    // Delete removes the record and the replication node.
    topo.delete_tablet(&TabletAlias::new("zone1", 101))
        .await
        .expect("delete");
    assert!(
        topo.get_tablet(&TabletAlias::new("zone1", 101))
            .await
            .expect_err("gone")
            .is_no_node()
    );
    let sr = topo
        .get_shard_replication("zone1", "commerce", "-80")
        .await
        .expect("sr");
    assert_eq!(sr.value.nodes.len(), 1);
}

/// A tablet record with garbage bytes is reported (naming its key) and
/// skipped; every other tablet still loads.
pub async fn topo_skips_a_corrupt_tablet_and_loads_the_rest(b: &Backend) {
    let topo = b.topo(&["zone1"]).await;
    for uid in [1, 2, 3] {
        topo.create_tablet(&tablet("zone1", uid, "ks", "0", TabletType::Replica))
            .await
            .expect("create");
    }
    let bad_key = "/vitess/zone1/tablets/zone1-0000000002/Tablet";
    b.store()
        .update(bad_key, &[0xff, 0xff, 0xff, 0x01], None)
        .await
        .expect("corrupt it");
    let list = topo.tablets_by_cell("zone1").await.expect("listing still works");
    let uids: Vec<u32> = list
        .items
        .iter()
        .filter_map(|t| t.value.alias.as_ref().map(|a| a.uid))
        .collect();
    assert_eq!(uids, [1, 3]);
    assert_eq!(list.errors.len(), 1);
    assert!(
        matches!(&list.errors[0], TopoError::Corrupt { key, .. } if key == bad_key),
        "{:?}",
        list.errors
    );
    assert!(list.errors[0].to_string().contains(bad_key));
    let err = topo
        .get_tablet(&TabletAlias::new("zone1", 2))
        .await
        .expect_err("corrupt");
    assert!(matches!(err, TopoError::Corrupt { .. }), "{err}");
    let by_shard = topo.tablets_by_shard("ks", "0").await.expect("by shard");
    assert_eq!(by_shard.items.len(), 2);
    assert_eq!(by_shard.errors.len(), 1);
}

/// `update_shard_fields` re-reads and retries when someone else wrote in
/// between, and keeps every field it did not touch. Needs a multi-thread
/// runtime (the interfering write blocks inside the sync closure).
pub async fn topo_update_shard_fields_retries_on_bad_version(b: &Backend) {
    let topo = b.topo(&[]).await;
    let shard = Shard {
        primary_alias: Some(TabletAlias::new("zone1", 100)),
        is_primary_serving: true,
        ..Default::default()
    };
    topo.create_shard("ks", "0", &shard).await.expect("create");
    let other = b.second_store().await;
    let key = topo.global_key("keyspaces/ks/shards/0/Shard");
    let mut calls = 0;
    let updated = topo
        .update_shard_fields("ks", "0", |s| {
            calls += 1;
            if calls == 1 {
                // Someone else writes between our read and our write.
                let mut theirs = s.clone();
                theirs.is_primary_serving = false;
                let bytes = theirs.encode_to_vec();
                let other = other.clone();
                let key = key.clone();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async move {
                        other.update(&key, &bytes, None).await.expect("interfering write")
                    })
                });
            }
            s.primary_alias = Some(TabletAlias::new("zone1", 101));
            Ok(())
        })
        .await
        .expect("update");
    assert_eq!(calls, 2, "one retry after BadVersion");
    assert_eq!(updated.value.primary_alias, Some(TabletAlias::new("zone1", 101)));
    assert!(
        !updated.value.is_primary_serving,
        "the other writer's change is kept"
    );
    let skipped = topo
        .update_shard_fields("ks", "0", |_| Err(TopoError::NoUpdateNeeded))
        .await
        .expect("no update");
    assert_eq!(skipped.version, updated.version);
}

/// The ERS-disable flags of keyspaces and shards are written and read.
pub async fn topo_ers_disabled_flags_round_trip(b: &Backend) {
    let topo = b.topo(&[]).await;
    topo.create_keyspace("ks", &Keyspace::with_durability("none"))
        .await
        .expect("ks");
    topo.create_shard("ks", "0", &Shard::default())
        .await
        .expect("shard");
    assert!(!vtorc::topo::keyspace_ers_disabled(
        &topo.get_keyspace("ks").await.expect("ks").value
    ));
    let k = topo
        .set_keyspace_emergency_reparent_disabled("ks", true)
        .await
        .expect("disable");
    assert!(vtorc::topo::keyspace_ers_disabled(&k.value));
    let read = topo.get_keyspace("ks").await.expect("ks");
    assert!(vtorc::topo::keyspace_ers_disabled(&read.value));
    assert_eq!(read.value.durability_policy, "none", "other fields kept");
    let again = topo
        .set_keyspace_emergency_reparent_disabled("ks", true)
        .await
        .expect("no-op");
    assert_eq!(again.version, read.version, "no write when unchanged");
    let s = topo
        .set_shard_emergency_reparent_disabled("ks", "0", true)
        .await
        .expect("disable shard");
    assert!(vtorc::topo::shard_ers_disabled(&s.value));
    let s = topo
        .set_shard_emergency_reparent_disabled("ks", "0", false)
        .await
        .expect("enable shard");
    assert!(!vtorc::topo::shard_ers_disabled(
        &topo.get_shard("ks", "0").await.expect("shard").value
    ));
    assert_eq!(
        s.value.vtorc_state.map(|v| v.disable_emergency_reparent),
        Some(false)
    );
}

/// ShardReplication nodes are added once and removed.
pub async fn topo_shard_replication_nodes_are_added_and_removed(b: &Backend) {
    let topo = b.topo(&["zone1"]).await;
    let a = TabletAlias::new("zone1", 1);
    let c = TabletAlias::new("zone1", 2);
    topo.add_shard_replication_node("zone1", "ks", "0", &a)
        .await
        .expect("add");
    topo.add_shard_replication_node("zone1", "ks", "0", &c)
        .await
        .expect("add");
    let sr = topo
        .add_shard_replication_node("zone1", "ks", "0", &a)
        .await
        .expect("add again is a no-op");
    assert_eq!(
        sr.value
            .nodes
            .iter()
            .filter_map(|n| n.tablet_alias.clone())
            .collect::<Vec<_>>(),
        [a.clone(), c.clone()]
    );
    topo.remove_shard_replication_node("zone1", "ks", "0", &a)
        .await
        .expect("remove");
    let sr = topo
        .get_shard_replication("zone1", "ks", "0")
        .await
        .expect("read");
    assert_eq!(
        sr.value
            .nodes
            .iter()
            .filter_map(|n| n.tablet_alias.clone())
            .collect::<Vec<_>>(),
        [c]
    );
    assert!(
        topo.remove_shard_replication_node("zone1", "ks", "0", &a)
            .await
            .expect_err("absent")
            .is_no_node()
    );
}

/// Shard locks through the typed API: try-lock conflicts, the lock JSON,
/// and NoNode for a shard that does not exist.
pub async fn topo_shard_locks_follow_the_protocol(b: &Backend) {
    let topo = b.topo(&[]).await;
    topo.create_shard("ks", "0", &Shard::default())
        .await
        .expect("shard");
    let lock = topo
        .try_lock_shard("ks", "0", "RecoverDeadPrimary")
        .await
        .expect("lock");
    assert!(
        lock.key()
            .starts_with("/vitess/global/keyspaces/ks/shards/0/locks/")
    );
    assert_eq!(
        lock.key().rsplit('/').next(),
        Some(lock.lease_id().to_string().as_str())
    );
    let stored = b.store().get(lock.key()).await.expect("lock key");
    let json: serde_json::Value = serde_json::from_slice(&stored.value).expect("lock JSON");
    assert_eq!(json["Action"], "RecoverDeadPrimary");
    assert_eq!(json["Status"], "Running");
    assert_eq!(json["Options"], serde_json::json!({}));
    assert!(json["HostName"].is_string() && json["UserName"].is_string());
    assert!(
        json["Time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert!(String::from_utf8_lossy(&stored.value).starts_with("{\n  \"Action\""));
    assert!(
        topo.try_lock_shard("ks", "0", "x")
            .await
            .expect_err("held")
            .is_node_exists()
    );
    lock.check().await.expect("held");
    lock.unlock().await.expect("unlock");
    assert!(
        topo.lock_shard("ks", "missing", "x")
            .await
            .expect_err("no shard")
            .is_no_node()
    );
}

/// Receives events until one satisfies `want` (or a second passes).
pub async fn next_matching(
    watcher: &mut vtorc::topo::TopoWatcher,
    within: Duration,
    mut want: impl FnMut(&TopoEvent) -> bool,
) -> TopoEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watcher.next()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(other)) => {
                tracing::debug!(?other, "skipping topo event");
                continue;
            }
            Ok(None) => panic!("watcher stopped"),
            Err(_) => panic!("no matching topo event within {within:?}"),
        }
    }
}

/// The watcher sends a snapshot per scope, then each change within a
/// second; a broken watch is followed by a fresh snapshot that reflects
/// changes made meanwhile.
pub async fn topo_watch_sends_snapshots_then_changes(b: &Backend) {
    let topo = b.topo(&["zone1"]).await;
    topo.create_keyspace("ks", &Keyspace::default())
        .await
        .expect("ks");
    topo.create_shard("ks", "0", &Shard::default())
        .await
        .expect("shard");
    topo.create_tablet(&tablet("zone1", 1, "ks", "0", TabletType::Primary))
        .await
        .expect("tablet");
    let mut w = topo.watch();
    let global = next_matching(&mut w, Duration::from_secs(5), |e| {
        matches!(e, TopoEvent::GlobalResync(_))
    })
    .await;
    let TopoEvent::GlobalResync(g) = global else {
        unreachable!("matched above")
    };
    assert_eq!(g.cells.keys().collect::<Vec<_>>(), ["zone1"]);
    assert_eq!(g.keyspaces.keys().collect::<Vec<_>>(), ["ks"]);
    assert_eq!(g.shards.len(), 1);
    let cell = next_matching(&mut w, Duration::from_secs(5), |e| {
        matches!(e, TopoEvent::CellResync(_))
    })
    .await;
    let TopoEvent::CellResync(c) = cell else {
        unreachable!("matched above")
    };
    assert_eq!((c.cell.as_str(), c.tablets.len()), ("zone1", 1));

    // A new tablet reaches us within a second.
    let start = Instant::now();
    topo.create_tablet(&tablet("zone1", 2, "ks", "0", TabletType::Replica))
        .await
        .expect("tablet");
    next_matching(&mut w, Duration::from_secs(1), |e| {
        matches!(e, TopoEvent::TabletChanged { tablet, .. } if tablet.value.alias == Some(TabletAlias::new("zone1", 2)))
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(1));
    topo.update_shard_fields("ks", "0", |s| {
        s.primary_alias = Some(TabletAlias::new("zone1", 1));
        Ok(())
    })
    .await
    .expect("shard update");
    next_matching(
        &mut w,
        Duration::from_secs(1),
        |e| matches!(e, TopoEvent::ShardChanged { shard, .. } if shard.value.primary_alias.is_some()),
    )
    .await;
    topo.create_keyspace("ks2", &Keyspace::default())
        .await
        .expect("ks2");
    next_matching(
        &mut w,
        Duration::from_secs(1),
        |e| matches!(e, TopoEvent::KeyspaceChanged { name, .. } if name == "ks2"),
    )
    .await;
    topo.delete_tablet(&TabletAlias::new("zone1", 2))
        .await
        .expect("delete");
    next_matching(
        &mut w,
        Duration::from_secs(1),
        |e| matches!(e, TopoEvent::TabletDeleted { alias, .. } if *alias == TabletAlias::new("zone1", 2)),
    )
    .await;
    // A corrupt record is reported, not fatal.
    b.store()
        .update(
            "/vitess/zone1/tablets/zone1-0000000009/Tablet",
            &[0xff, 0xff],
            None,
        )
        .await
        .expect("write garbage");
    next_matching(&mut w, Duration::from_secs(1), |e| {
        matches!(e, TopoEvent::Corrupt(TopoError::Corrupt { key, .. }) if key.contains("zone1-0000000009"))
    })
    .await;

    // Break the watches. The consumer's view (resync replaces, changes
    // apply) must converge to the truth, and a resync must follow. On the
    // memory store the write lands before the watcher re-lists (it waits
    // 100 ms), so the resync itself must carry it.
    let mut view: std::collections::BTreeMap<String, Tablet> = std::collections::BTreeMap::new();
    b.interrupt().await;
    topo.create_tablet(&tablet("zone1", 3, "ks", "0", TabletType::Replica))
        .await
        .expect("tablet after interrupt");
    let truth: Vec<Tablet> = topo
        .tablets_by_cell("zone1")
        .await
        .expect("truth")
        .items
        .into_iter()
        .map(|t| t.value)
        .collect();
    let (mut cell_resync, mut global_resync) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cell_resync.is_none() || !global_resync || view.values().cloned().collect::<Vec<_>>() != truth {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = timeout(left, w.next())
            .await
            .unwrap_or_else(|_| panic!("no resync / convergence within 10 s; view {:?}", view.keys()))
            .expect("watcher open");
        match event {
            TopoEvent::GlobalResync(_) => global_resync = true,
            TopoEvent::CellResync(c) => {
                view = c
                    .tablets
                    .iter()
                    .map(|t| {
                        (
                            t.value.alias.clone().map(|a| a.to_string()).unwrap_or_default(),
                            t.value.clone(),
                        )
                    })
                    .collect();
                cell_resync = Some(c);
            }
            TopoEvent::TabletChanged { tablet, .. } => {
                let alias = tablet
                    .value
                    .alias
                    .clone()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                view.insert(alias, tablet.value);
            }
            TopoEvent::TabletDeleted { alias, .. } => {
                view.remove(&alias.to_string());
            }
            _ => {}
        }
    }
    let c = cell_resync.expect("loop ends after a cell resync");
    assert_eq!(
        c.errors.len(),
        1,
        "the corrupt record is reported in the snapshot"
    );
    if matches!(b, Backend::Memory { .. }) {
        let mut uids: Vec<u32> = c
            .tablets
            .iter()
            .filter_map(|t| t.value.alias.as_ref().map(|a| a.uid))
            .collect();
        uids.sort_unstable();
        assert_eq!(
            uids,
            [1, 3],
            "the resync carries the change made while the watch was down"
        );
    }
    // And changes flow again after the resync.
    topo.create_tablet(&tablet("zone1", 4, "ks", "0", TabletType::Replica))
        .await
        .expect("tablet");
    next_matching(&mut w, Duration::from_secs(2), |e| {
        matches!(e, TopoEvent::TabletChanged { tablet, .. } if tablet.value.alias == Some(TabletAlias::new("zone1", 4)))
    })
    .await;
}

/// Versions reported by the typed API are the store's mod revisions.
pub async fn topo_versions_are_mod_revisions(b: &Backend) {
    let topo = b.topo(&[]).await;
    let v = topo
        .create_keyspace("ks", &Keyspace::default())
        .await
        .expect("ks");
    let raw = b
        .store()
        .get("/vitess/global/keyspaces/ks/Keyspace")
        .await
        .expect("raw");
    assert_eq!(raw.version, v);
    assert_eq!(topo.get_keyspace("ks").await.expect("ks").version, v);
    assert_ne!(v, Version(0));
}
