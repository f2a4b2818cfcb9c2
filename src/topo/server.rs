//! [`Topo`]: the typed topology API over the global store and the cell
//! stores (resolved from `CellInfo`, connected per `server_address`,
//! cached).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;

use super::codec::{decode, encode_preserving};
use super::error::{TopoError, TopoResult};
use super::etcd::{EtcdOptions, EtcdStore, parse_endpoints};
use super::lock::{LockMode, LockOptions, TopoLock, local_host_name, local_user_name, lock_contents};
use super::memory::MemoryStore;
use super::paths;
use super::store::{KeyValue, TopoStore, Version};
use crate::config::Config;
use crate::config::TlsFiles;
use crate::ids::KeyspaceShard;
use crate::proto::topodata::{
    CellInfo, CellsAlias, Keyspace, Shard, ShardReplication, SrvKeyspace, Tablet, TabletAlias,
    shard_replication,
};
use crate::proto::vtorcdata;

/// Most read-modify-write attempts before giving up with `BadVersion`.
const MAX_UPDATE_ATTEMPTS: usize = 100;

impl Keyspace {
    /// A keyspace record with only its durability policy set (`none`,
    /// `semi_sync`, ...), as tests and tools create one.
    pub fn with_durability(policy: impl Into<String>) -> Keyspace {
        Keyspace {
            durability_policy: policy.into(),
            ..Default::default()
        }
    }
}

impl Shard {
    /// A shard record with only its primary set.
    pub fn with_primary(primary: Option<TabletAlias>) -> Shard {
        Shard {
            primary_alias: primary,
            ..Default::default()
        }
    }
}

/// A record and the version it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The decoded record.
    pub value: T,
    /// Its mod revision; pass it back to update only if unchanged.
    pub version: Version,
    /// The bytes it was decoded from (empty if built locally); writes keep
    /// the fields of these bytes that our schema does not know.
    raw: Bytes,
}

impl<T> Versioned<T> {
    /// Wraps a record with a version (no original bytes).
    pub fn new(value: T, version: Version) -> Self {
        Versioned {
            value,
            version,
            raw: Bytes::new(),
        }
    }

    /// The bytes the record was read from (empty if built locally).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// A listing that may be partial: what could be read, and what could not.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial<T> {
    /// Records read successfully.
    pub items: Vec<T>,
    /// One error per record (or cell) that could not be read, e.g.
    /// `Corrupt { key, .. }`. Empty when the listing is complete.
    pub errors: Vec<TopoError>,
}

impl<T> Default for Partial<T> {
    fn default() -> Self {
        Partial {
            items: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Timeouts and limits of the topology layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopoOptions {
    /// Shard/keyspace lock timing (`--topo-etcd-lease-ttl`, `--lock-timeout`).
    pub lock: LockOptions,
    /// Bound on each etcd call (`--remote-operation-timeout`).
    pub remote_operation_timeout: Duration,
    /// Parallel reads per listing (`--topo-read-concurrency`, 32).
    pub read_concurrency: usize,
    /// TLS towards etcd (`--topo-etcd-tls-*`); all unset = plaintext.
    pub etcd_tls: TlsFiles,
}

impl Default for TopoOptions {
    fn default() -> Self {
        TopoOptions {
            lock: LockOptions::default(),
            remote_operation_timeout: Duration::from_secs(15),
            read_concurrency: 32,
            etcd_tls: TlsFiles::default(),
        }
    }
}

impl TopoOptions {
    /// Takes the flags that concern the topology from the config.
    pub fn from_config(config: &Config) -> Self {
        TopoOptions {
            lock: LockOptions {
                lease_ttl: config.topo_etcd_lease_ttl,
                lock_timeout: config.lock_timeout,
                remote_operation_timeout: config.remote_operation_timeout,
            },
            remote_operation_timeout: config.remote_operation_timeout,
            read_concurrency: config.topo_read_concurrency,
            etcd_tls: config.topo_etcd_tls.clone(),
        }
    }
}

/// Opens the store for a cell's `server_address`.
#[async_trait]
pub trait StoreConnector: Send + Sync + std::fmt::Debug {
    /// Connects to the cluster at `server_address` (Vitess form:
    /// comma-separated `host:port`).
    async fn connect(&self, server_address: &str) -> TopoResult<Arc<dyn TopoStore>>;
}

/// Connects to etcd clusters.
#[derive(Clone, Debug, Default)]
pub struct EtcdConnector {
    /// Timeouts for each connection.
    pub options: EtcdOptions,
}

#[async_trait]
impl StoreConnector for EtcdConnector {
    async fn connect(&self, server_address: &str) -> TopoResult<Arc<dyn TopoStore>> {
        let store = EtcdStore::connect(&parse_endpoints(server_address), &self.options).await?;
        Ok(Arc::new(store))
    }
}

/// Hands out one [`MemoryStore`] per address (created on first use), so
/// tests can put cells on "other clusters".
#[derive(Debug, Default)]
pub struct MemoryConnector {
    /// Stores by server address. A `std::sync::Mutex`: lookups only.
    stores: Mutex<HashMap<String, MemoryStore>>,
}

impl MemoryConnector {
    /// The store for `address`, created empty if new.
    pub fn store(&self, address: &str) -> MemoryStore {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.entry(address.to_string()).or_default().clone()
    }
}

#[async_trait]
impl StoreConnector for MemoryConnector {
    async fn connect(&self, server_address: &str) -> TopoResult<Arc<dyn TopoStore>> {
        Ok(Arc::new(self.store(server_address)))
    }
}

/// Where one cell's records live.
#[derive(Clone, Debug)]
pub struct CellStore {
    /// The cell's root path (`CellInfo.root`).
    pub root: String,
    /// The store of the cell's cluster.
    pub store: Arc<dyn TopoStore>,
}

/// Shared state behind [`Topo`].
#[derive(Debug)]
struct Inner {
    /// Store of the global topo.
    global: Arc<dyn TopoStore>,
    /// `--topo-global-root`.
    global_root: String,
    /// Opens stores for cells on other clusters.
    connector: Arc<dyn StoreConnector>,
    /// Timeouts and limits.
    options: TopoOptions,
    /// Open stores by server address (the global one included). A
    /// `std::sync::Mutex`: held for map lookups only, never across `.await`.
    stores: Mutex<HashMap<String, Arc<dyn TopoStore>>>,
    /// Resolved cells by name; dropped by [`Topo::forget_cell`].
    cells: Mutex<HashMap<String, CellStore>>,
    /// `HostName` of our lock contents.
    host_name: String,
    /// `UserName` of our lock contents.
    user_name: String,
}

/// The typed topology. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Topo {
    inner: Arc<Inner>,
}

/// Guard for a shard lock; see [`TopoLock`] for the token and drop rules.
#[derive(Debug)]
pub struct ShardLock {
    /// The locked shard.
    keyspace_shard: KeyspaceShard,
    /// The lock itself.
    lock: TopoLock,
}

impl ShardLock {
    /// The locked shard.
    pub fn keyspace_shard(&self) -> &KeyspaceShard {
        &self.keyspace_shard
    }

    /// The etcd key of our lock.
    pub fn key(&self) -> &str {
        self.lock.key()
    }

    /// The lease behind the lock.
    pub fn lease_id(&self) -> i64 {
        self.lock.lease_id()
    }

    /// The lock JSON we wrote.
    pub fn contents(&self) -> &str {
        self.lock.contents()
    }

    /// Cancelled as soon as the lock is lost (or released).
    pub fn cancellation_token(&self) -> tokio_util::sync::CancellationToken {
        self.lock.cancellation_token()
    }

    /// True once the lease is known lost.
    pub fn is_lost(&self) -> bool {
        self.lock.is_lost()
    }

    /// Confirms with etcd that the lock is still held (Vitess
    /// `CheckShardLocked`); `LockLost` if not.
    pub async fn check(&self) -> TopoResult<()> {
        self.lock.check().await
    }

    /// Releases the lock (revokes the lease).
    pub async fn unlock(self) -> TopoResult<()> {
        self.lock.unlock().await
    }
}

/// Reads a key and decodes it.
async fn read<M: Message + Default>(store: &dyn TopoStore, key: &str) -> TopoResult<Versioned<M>> {
    let kv = store.get(key).await?;
    decode_kv(kv)
}

pub(crate) fn decode_kv<M: Message + Default>(kv: KeyValue) -> TopoResult<Versioned<M>> {
    let value = decode(&kv.key, &kv.value)?;
    Ok(Versioned {
        value,
        version: kv.version,
        raw: Bytes::from(kv.value),
    })
}

/// Empty list for `NoNode`, the error otherwise.
fn names_or_empty(result: TopoResult<Vec<String>>) -> TopoResult<Vec<String>> {
    match result {
        Err(TopoError::NoNode(_)) => Ok(Vec::new()),
        other => other,
    }
}

fn check_name(kind: &str, name: &str) -> TopoResult<()> {
    if paths::valid_component(name) {
        Ok(())
    } else {
        Err(TopoError::Invalid(format!("{kind} name {name:?}")))
    }
}

/// Read-modify-write of one record: read, apply `update`, write if the
/// version is unchanged, retry on `BadVersion`. `Err(NoUpdateNeeded)` from
/// `update` returns the current record without writing.
async fn update_fields<M, F>(
    store: &dyn TopoStore,
    key: &str,
    full_name: &str,
    mut update: F,
) -> TopoResult<Versioned<M>>
where
    M: Message + Default + Clone,
    F: FnMut(&mut M) -> TopoResult<()> + Send,
{
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        let mut record: Versioned<M> = read(store, key).await?;
        match update(&mut record.value) {
            Ok(()) => {}
            Err(TopoError::NoUpdateNeeded) => return Ok(record),
            Err(e) => return Err(e),
        }
        let bytes = encode_preserving(&record.value, full_name, &record.raw);
        match store.update(key, &bytes, Some(record.version)).await {
            Ok(version) => {
                return Ok(Versioned {
                    value: record.value,
                    version,
                    raw: Bytes::from(bytes),
                });
            }
            Err(TopoError::BadVersion(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(TopoError::BadVersion(format!(
        "{key} (still changing after {MAX_UPDATE_ATTEMPTS} attempts)"
    )))
}

/// True when the keyspace record disables EmergencyReparentShard.
pub fn keyspace_ers_disabled(keyspace: &Keyspace) -> bool {
    keyspace
        .vtorc_state
        .as_ref()
        .is_some_and(|s| s.disable_emergency_reparent)
}

/// True when the shard record disables EmergencyReparentShard.
pub fn shard_ers_disabled(shard: &Shard) -> bool {
    shard
        .vtorc_state
        .as_ref()
        .is_some_and(|s| s.disable_emergency_reparent)
}

impl Topo {
    /// A topology over `global` (rooted at `global_root`, reachable at
    /// `global_address`); cells on other addresses are opened with
    /// `connector`.
    pub fn new(
        global: Arc<dyn TopoStore>,
        global_address: &str,
        global_root: &str,
        connector: Arc<dyn StoreConnector>,
        options: TopoOptions,
    ) -> Topo {
        let mut stores = HashMap::new();
        stores.insert(global_address.to_string(), global.clone());
        Topo {
            inner: Arc::new(Inner {
                global,
                global_root: paths::join(global_root, ""),
                connector,
                options,
                stores: Mutex::new(stores),
                cells: Mutex::new(HashMap::new()),
                host_name: local_host_name(),
                user_name: local_user_name(),
            }),
        }
    }

    /// Connects to the global etcd at `global_server_address` (Vitess form,
    /// comma-separated) with root `global_root`.
    pub async fn connect_etcd(
        global_server_address: &str,
        global_root: &str,
        options: TopoOptions,
    ) -> TopoResult<Topo> {
        let etcd = EtcdOptions {
            operation_timeout: options.remote_operation_timeout,
            tls: options.etcd_tls.clone(),
            ..EtcdOptions::default()
        };
        let global = EtcdStore::connect(&parse_endpoints(global_server_address), &etcd).await?;
        Ok(Topo::new(
            Arc::new(global),
            global_server_address,
            global_root,
            Arc::new(EtcdConnector { options: etcd }),
            options,
        ))
    }

    /// Connects to the global topo named by the config
    /// (`--topo-global-server-address`, `--topo-global-root`, with the
    /// lock and timeout flags).
    pub async fn from_config(config: &Config) -> TopoResult<Topo> {
        let address = config.topo_global_server_address.join(",");
        Topo::connect_etcd(
            &address,
            &config.topo_global_root,
            TopoOptions::from_config(config),
        )
        .await
    }

    /// An in-memory topology for unit tests: global root `/vitess/global`
    /// on the memory store at address `memory`, and one `CellInfo` per
    /// name in `cells` with root `/vitess/<cell>` on the same store.
    /// Returns the topology and the shared store.
    pub fn in_memory(cells: &[&str]) -> (Topo, MemoryStore) {
        let connector = Arc::new(MemoryConnector::default());
        let store = connector.store("memory");
        for cell in cells {
            let info = CellInfo {
                server_address: "memory".into(),
                root: format!("/vitess/{cell}"),
            };
            store.put_raw(
                &paths::join("/vitess/global", &paths::cell_info(cell)),
                &info.encode_to_vec(),
            );
        }
        let topo = Topo::new(
            Arc::new(store.clone()),
            "memory",
            "/vitess/global",
            connector,
            TopoOptions::default(),
        );
        (topo, store)
    }

    /// The global root.
    pub fn global_root(&self) -> &str {
        &self.inner.global_root
    }

    /// The global store.
    pub fn global_store(&self) -> Arc<dyn TopoStore> {
        self.inner.global.clone()
    }

    /// The options this topology runs with.
    pub fn options(&self) -> &TopoOptions {
        &self.inner.options
    }

    /// Full global key for a relative path.
    pub fn global_key(&self, relative: &str) -> String {
        paths::join(&self.inner.global_root, relative)
    }

    // ---- cells ----

    /// Names of all cells (`GetKnownCells`), sorted.
    pub async fn cells(&self) -> TopoResult<Vec<String>> {
        names_or_empty(
            self.inner
                .global
                .list_dir(&self.global_key(paths::CELLS_DIR))
                .await,
        )
    }

    /// A cell's `CellInfo`.
    pub async fn get_cell_info(&self, cell: &str) -> TopoResult<Versioned<CellInfo>> {
        check_name("cell", cell)?;
        read(
            self.inner.global.as_ref(),
            &self.global_key(&paths::cell_info(cell)),
        )
        .await
    }

    /// Creates a cell's `CellInfo` (`NodeExists` if present).
    pub async fn create_cell_info(&self, cell: &str, info: &CellInfo) -> TopoResult<Version> {
        check_name("cell", cell)?;
        let key = self.global_key(&paths::cell_info(cell));
        self.inner.global.create(&key, &info.encode_to_vec(), 0).await
    }

    /// Drops the cached connection data of `cell` (after its `CellInfo`
    /// changed); the next access re-reads it.
    pub fn forget_cell(&self, cell: &str) {
        self.inner
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cell);
    }

    /// The store and root of `cell`, from cache or from its `CellInfo`.
    pub async fn cell_store(&self, cell: &str) -> TopoResult<CellStore> {
        if let Some(c) = self
            .inner
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cell)
        {
            return Ok(c.clone());
        }
        let info = self.get_cell_info(cell).await?.value;
        let store = self.store_for(&info.server_address).await?;
        let resolved = CellStore {
            root: paths::join(&info.root, ""),
            store,
        };
        let mut cells = self.inner.cells.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cells.entry(cell.to_string()).or_insert(resolved).clone())
    }

    /// The store for `server_address` (empty = the global one), opened once.
    async fn store_for(&self, server_address: &str) -> TopoResult<Arc<dyn TopoStore>> {
        if server_address.is_empty() {
            return Ok(self.inner.global.clone());
        }
        if let Some(s) = self
            .inner
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server_address)
        {
            return Ok(s.clone());
        }
        let store = self.inner.connector.connect(server_address).await?;
        let mut stores = self.inner.stores.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stores.entry(server_address.to_string()).or_insert(store).clone())
    }

    // ---- keyspaces ----

    /// Names of all keyspaces, sorted.
    pub async fn keyspaces(&self) -> TopoResult<Vec<String>> {
        names_or_empty(
            self.inner
                .global
                .list_dir(&self.global_key(paths::KEYSPACES_DIR))
                .await,
        )
    }

    /// A keyspace record.
    pub async fn get_keyspace(&self, keyspace: &str) -> TopoResult<Versioned<Keyspace>> {
        check_name("keyspace", keyspace)?;
        read(
            self.inner.global.as_ref(),
            &self.global_key(&paths::keyspace(keyspace)),
        )
        .await
    }

    /// Creates a keyspace record (`NodeExists` if present).
    pub async fn create_keyspace(&self, keyspace: &str, record: &Keyspace) -> TopoResult<Version> {
        check_name("keyspace", keyspace)?;
        let key = self.global_key(&paths::keyspace(keyspace));
        self.inner.global.create(&key, &record.encode_to_vec(), 0).await
    }

    /// Writes `record.value` if the keyspace is still at `record.version`
    /// (`BadVersion` otherwise), keeping fields our schema does not know.
    pub async fn update_keyspace(&self, keyspace: &str, record: &Versioned<Keyspace>) -> TopoResult<Version> {
        check_name("keyspace", keyspace)?;
        let key = self.global_key(&paths::keyspace(keyspace));
        let bytes = encode_preserving(&record.value, "topodata.Keyspace", &record.raw);
        self.inner.global.update(&key, &bytes, Some(record.version)).await
    }

    /// Read-modify-write of a keyspace record with retry on `BadVersion`;
    /// `update` may return `Err(NoUpdateNeeded)` to skip the write.
    pub async fn update_keyspace_fields<F>(
        &self,
        keyspace: &str,
        update: F,
    ) -> TopoResult<Versioned<Keyspace>>
    where
        F: FnMut(&mut Keyspace) -> TopoResult<()> + Send,
    {
        check_name("keyspace", keyspace)?;
        let key = self.global_key(&paths::keyspace(keyspace));
        update_fields(self.inner.global.as_ref(), &key, "topodata.Keyspace", update).await
    }

    /// Sets `vtorc_state.disable_emergency_reparent` of a keyspace
    /// (`SetVtorcEmergencyReparent`), keeping every other field.
    pub async fn set_keyspace_emergency_reparent_disabled(
        &self,
        keyspace: &str,
        disabled: bool,
    ) -> TopoResult<Versioned<Keyspace>> {
        self.update_keyspace_fields(keyspace, |k| {
            if k.vtorc_state.is_some() && keyspace_ers_disabled(k) == disabled {
                return Err(TopoError::NoUpdateNeeded);
            }
            k.vtorc_state
                .get_or_insert_with(vtorcdata::Keyspace::default)
                .disable_emergency_reparent = disabled;
            Ok(())
        })
        .await
    }

    // ---- shards ----

    /// Names of a keyspace's shards, sorted.
    pub async fn shard_names(&self, keyspace: &str) -> TopoResult<Vec<String>> {
        check_name("keyspace", keyspace)?;
        names_or_empty(
            self.inner
                .global
                .list_dir(&self.global_key(&paths::shards_dir(keyspace)))
                .await,
        )
    }

    /// All shard records of a keyspace in one read (`FindAllShardsInKeyspace`),
    /// by shard name; undecodable records are reported in `errors`.
    pub async fn shards_of_keyspace(
        &self,
        keyspace: &str,
    ) -> TopoResult<Partial<(String, Versioned<Shard>)>> {
        check_name("keyspace", keyspace)?;
        let prefix = format!("{}/", self.global_key(&paths::shards_dir(keyspace)));
        let listing = self.inner.global.list(&prefix).await?;
        let mut out = Partial::default();
        for kv in listing.entries {
            let Some(name) = kv.key[prefix.len()..].strip_suffix(&format!("/{}", paths::SHARD_FILE)) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            let name = name.to_string();
            match decode_kv(kv) {
                Ok(shard) => out.items.push((name, shard)),
                Err(e) => out.errors.push(e),
            }
        }
        Ok(out)
    }

    /// A shard record.
    pub async fn get_shard(&self, keyspace: &str, shard: &str) -> TopoResult<Versioned<Shard>> {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        read(
            self.inner.global.as_ref(),
            &self.global_key(&paths::shard(keyspace, shard)),
        )
        .await
    }

    /// Creates a shard record (`NodeExists` if present).
    pub async fn create_shard(&self, keyspace: &str, shard: &str, record: &Shard) -> TopoResult<Version> {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        let key = self.global_key(&paths::shard(keyspace, shard));
        self.inner.global.create(&key, &record.encode_to_vec(), 0).await
    }

    /// Read-modify-write of a shard record with retry on `BadVersion`
    /// (Vitess `UpdateShardFields`); `update` may return
    /// `Err(NoUpdateNeeded)` to skip the write.
    pub async fn update_shard_fields<F>(
        &self,
        keyspace: &str,
        shard: &str,
        update: F,
    ) -> TopoResult<Versioned<Shard>>
    where
        F: FnMut(&mut Shard) -> TopoResult<()> + Send,
    {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        let key = self.global_key(&paths::shard(keyspace, shard));
        update_fields(self.inner.global.as_ref(), &key, "topodata.Shard", update).await
    }

    /// Sets `vtorc_state.disable_emergency_reparent` of a shard, keeping
    /// every other field.
    pub async fn set_shard_emergency_reparent_disabled(
        &self,
        keyspace: &str,
        shard: &str,
        disabled: bool,
    ) -> TopoResult<Versioned<Shard>> {
        self.update_shard_fields(keyspace, shard, |s| {
            if s.vtorc_state.is_some() && shard_ers_disabled(s) == disabled {
                return Err(TopoError::NoUpdateNeeded);
            }
            s.vtorc_state
                .get_or_insert_with(vtorcdata::Shard::default)
                .disable_emergency_reparent = disabled;
            Ok(())
        })
        .await
    }

    // ---- tablets ----

    /// A tablet record.
    pub async fn get_tablet(&self, alias: &TabletAlias) -> TopoResult<Versioned<Tablet>> {
        let cell = self.cell_store(&alias.cell).await?;
        let kv = cell
            .store
            .get(&paths::join(&cell.root, &paths::tablet(alias)))
            .await?;
        decode_tablet(kv)
    }

    /// Creates a tablet record and adds it to its shard's
    /// `ShardReplication` in its cell (as Vitess `CreateTablet` does).
    /// `NodeExists` if the tablet record exists.
    pub async fn create_tablet(&self, tablet: &Tablet) -> TopoResult<Version> {
        let alias = tablet
            .alias
            .clone()
            .ok_or_else(|| TopoError::Invalid("tablet without alias".into()))?;
        let cell = self.cell_store(&alias.cell).await?;
        let key = paths::join(&cell.root, &paths::tablet(&alias));
        let version = cell.store.create(&key, &tablet.encode_to_vec(), 0).await?;
        if !tablet.keyspace.is_empty() && !tablet.shard.is_empty() {
            self.add_shard_replication_node(&alias.cell, &tablet.keyspace, &tablet.shard, &alias)
                .await?;
        }
        Ok(version)
    }

    /// Writes `record.value` if the tablet is still at `record.version`
    /// (`BadVersion` otherwise), keeping fields our schema does not know.
    pub async fn update_tablet(&self, record: &Versioned<Tablet>) -> TopoResult<Version> {
        let alias = record
            .value
            .alias
            .clone()
            .ok_or_else(|| TopoError::Invalid("tablet without alias".into()))?;
        let cell = self.cell_store(&alias.cell).await?;
        let key = paths::join(&cell.root, &paths::tablet(&alias));
        let bytes = encode_preserving(&record.value, "topodata.Tablet", &record.raw);
        cell.store.update(&key, &bytes, Some(record.version)).await
    }

    /// Read-modify-write of a tablet record with retry on `BadVersion`;
    /// `update` may return `Err(NoUpdateNeeded)` to skip the write.
    pub async fn update_tablet_fields<F>(
        &self,
        alias: &TabletAlias,
        update: F,
    ) -> TopoResult<Versioned<Tablet>>
    where
        F: FnMut(&mut Tablet) -> TopoResult<()> + Send,
    {
        let cell = self.cell_store(&alias.cell).await?;
        let key = paths::join(&cell.root, &paths::tablet(alias));
        update_fields(cell.store.as_ref(), &key, "topodata.Tablet", update).await
    }

    /// Deletes a tablet record and removes it from its shard's
    /// `ShardReplication` (as Vitess `DeleteTablet` does).
    pub async fn delete_tablet(&self, alias: &TabletAlias) -> TopoResult<()> {
        let record = self.get_tablet(alias).await?;
        let cell = self.cell_store(&alias.cell).await?;
        let key = paths::join(&cell.root, &paths::tablet(alias));
        cell.store.delete(&key, Some(record.version)).await?;
        let t = &record.value;
        if !t.keyspace.is_empty() && !t.shard.is_empty() {
            match self
                .remove_shard_replication_node(&alias.cell, &t.keyspace, &t.shard, alias)
                .await
            {
                Ok(_) | Err(TopoError::NoNode(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Aliases of every tablet in `cell`, sorted.
    pub async fn tablet_aliases_by_cell(&self, cell: &str) -> TopoResult<Vec<TabletAlias>> {
        let c = self.cell_store(cell).await?;
        let names = names_or_empty(c.store.list_dir(&paths::join(&c.root, paths::TABLETS_DIR)).await)?;
        let mut aliases: Vec<TabletAlias> = names.iter().filter_map(|n| TabletAlias::parse(n).ok()).collect();
        aliases.sort();
        Ok(aliases)
    }

    /// Every tablet of `cell` in one prefix read (`GetTabletsByCell`),
    /// sorted by alias. A record that does not decode is reported in
    /// `errors` as `Corrupt { key, .. }` and skipped; the rest still loads.
    pub async fn tablets_by_cell(&self, cell: &str) -> TopoResult<Partial<Versioned<Tablet>>> {
        let c = self.cell_store(cell).await?;
        let prefix = format!("{}/", paths::join(&c.root, paths::TABLETS_DIR));
        let listing = c.store.list(&prefix).await?;
        Ok(decode_tablets(&c.root, listing.entries))
    }

    /// Every tablet of a shard: the union of its `ShardReplication` nodes
    /// over all cells, each tablet read from its cell (`GetTabletsByShard`).
    /// Cells or tablets that cannot be read are reported in `errors`;
    /// replication nodes whose tablet record is gone are skipped.
    pub async fn tablets_by_shard(
        &self,
        keyspace: &str,
        shard: &str,
    ) -> TopoResult<Partial<Versioned<Tablet>>> {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        let mut out = Partial::default();
        let mut aliases = Vec::new();
        for cell in self.cells().await? {
            match self.get_shard_replication(&cell, keyspace, shard).await {
                Ok(sr) => aliases.extend(sr.value.nodes.into_iter().filter_map(|n| n.tablet_alias)),
                Err(TopoError::NoNode(_)) => {}
                Err(e) => out.errors.push(e),
            }
        }
        aliases.sort();
        aliases.dedup();
        let concurrency = self.inner.options.read_concurrency.max(1);
        let results: Vec<TopoResult<Versioned<Tablet>>> = futures::stream::iter(aliases)
            .map(|alias| async move { self.get_tablet(&alias).await })
            .buffered(concurrency)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(t) => out.items.push(t),
                Err(TopoError::NoNode(_)) => {}
                Err(e) => out.errors.push(e),
            }
        }
        Ok(out)
    }

    // ---- shard replication ----

    /// A shard's replication graph in `cell`.
    pub async fn get_shard_replication(
        &self,
        cell: &str,
        keyspace: &str,
        shard: &str,
    ) -> TopoResult<Versioned<ShardReplication>> {
        let c = self.cell_store(cell).await?;
        read(
            c.store.as_ref(),
            &paths::join(&c.root, &paths::shard_replication(keyspace, shard)),
        )
        .await
    }

    // ---- serving graph and cell aliases (read-only) ----

    /// A keyspace's serving record in `cell` (`<cell root>/keyspaces/<ks>/SrvKeyspace`).
    pub async fn get_srv_keyspace(&self, cell: &str, keyspace: &str) -> TopoResult<Versioned<SrvKeyspace>> {
        check_name("cell", cell)?;
        check_name("keyspace", keyspace)?;
        let c = self.cell_store(cell).await?;
        read(
            c.store.as_ref(),
            &paths::join(&c.root, &paths::srv_keyspace(keyspace)),
        )
        .await
    }

    /// Every cells alias (`cells_aliases/<name>/CellsAlias`), by name; none
    /// when the directory does not exist.
    pub async fn cells_aliases(&self) -> TopoResult<BTreeMap<String, CellsAlias>> {
        let names = names_or_empty(
            self.inner
                .global
                .list_dir(&self.global_key(paths::CELLS_ALIASES_DIR))
                .await,
        )?;
        let mut out = BTreeMap::new();
        for name in names {
            let alias: Versioned<CellsAlias> = read(
                self.inner.global.as_ref(),
                &self.global_key(&paths::cells_alias(&name)),
            )
            .await?;
            out.insert(name, alias.value);
        }
        Ok(out)
    }

    /// Read-modify-write of a `ShardReplication` record, creating it if
    /// missing, with retry on `BadVersion`/`NodeExists`.
    pub async fn update_shard_replication_fields<F>(
        &self,
        cell: &str,
        keyspace: &str,
        shard: &str,
        mut update: F,
    ) -> TopoResult<Versioned<ShardReplication>>
    where
        F: FnMut(&mut ShardReplication) -> TopoResult<()> + Send,
    {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        let c = self.cell_store(cell).await?;
        let key = paths::join(&c.root, &paths::shard_replication(keyspace, shard));
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current: Option<Versioned<ShardReplication>> = match read(c.store.as_ref(), &key).await {
                Ok(r) => Some(r),
                Err(TopoError::NoNode(_)) => None,
                Err(e) => return Err(e),
            };
            let mut record = current
                .clone()
                .unwrap_or_else(|| Versioned::new(ShardReplication::default(), Version(0)));
            match update(&mut record.value) {
                Ok(()) => {}
                Err(TopoError::NoUpdateNeeded) => return Ok(record),
                Err(e) => return Err(e),
            }
            let bytes = encode_preserving(&record.value, "topodata.ShardReplication", &record.raw);
            let written = match current {
                Some(cur) => c.store.update(&key, &bytes, Some(cur.version)).await,
                None => c.store.create(&key, &bytes, 0).await,
            };
            match written {
                Ok(version) => {
                    return Ok(Versioned {
                        value: record.value,
                        version,
                        raw: Bytes::from(bytes),
                    });
                }
                Err(TopoError::BadVersion(_) | TopoError::NodeExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(TopoError::BadVersion(format!(
            "{key} (still changing after {MAX_UPDATE_ATTEMPTS} attempts)"
        )))
    }

    /// Adds `alias` to the shard's replication graph in `cell` (no-op if
    /// present).
    pub async fn add_shard_replication_node(
        &self,
        cell: &str,
        keyspace: &str,
        shard: &str,
        alias: &TabletAlias,
    ) -> TopoResult<Versioned<ShardReplication>> {
        self.update_shard_replication_fields(cell, keyspace, shard, |sr| {
            if sr.nodes.iter().any(|n| n.tablet_alias.as_ref() == Some(alias)) {
                return Err(TopoError::NoUpdateNeeded);
            }
            sr.nodes.push(shard_replication::Node {
                tablet_alias: Some(alias.clone()),
            });
            Ok(())
        })
        .await
    }

    /// Removes `alias` from the shard's replication graph in `cell`
    /// (`NoNode` if it is not there).
    pub async fn remove_shard_replication_node(
        &self,
        cell: &str,
        keyspace: &str,
        shard: &str,
        alias: &TabletAlias,
    ) -> TopoResult<Versioned<ShardReplication>> {
        self.update_shard_replication_fields(cell, keyspace, shard, |sr| {
            let before = sr.nodes.len();
            sr.nodes.retain(|n| n.tablet_alias.as_ref() != Some(alias));
            if sr.nodes.len() == before {
                return Err(TopoError::NoNode(format!(
                    "{alias} in ShardReplication of {keyspace}/{shard}"
                )));
            }
            Ok(())
        })
        .await
    }

    // ---- locks ----

    /// The lock JSON for `action`, stamped now.
    fn lock_contents(&self, action: &str) -> String {
        // The one wall-clock read of the topo layer: the lock's "Time" is
        // informational (vtctld shows it), nothing is computed from it.
        let now = crate::clock::wall_now();
        lock_contents(action, &self.inner.host_name, &self.inner.user_name, now)
    }

    async fn lock_shard_mode(
        &self,
        keyspace: &str,
        shard: &str,
        action: &str,
        mode: LockMode,
    ) -> TopoResult<ShardLock> {
        check_name("keyspace", keyspace)?;
        check_name("shard", shard)?;
        let resource = self.global_key(&paths::shard_dir(keyspace, shard));
        let lock = TopoLock::acquire(
            self.inner.global.clone(),
            &resource,
            self.lock_contents(action),
            &self.inner.options.lock,
            mode,
        )
        .await?;
        Ok(ShardLock {
            keyspace_shard: KeyspaceShard::new(keyspace, shard),
            lock,
        })
    }

    /// Locks a shard, waiting up to `--lock-timeout` for other holders
    /// (vtctld, other VTOrcs, …). `NoNode` if the shard does not exist,
    /// `Timeout` if the wait runs out.
    pub async fn lock_shard(&self, keyspace: &str, shard: &str, action: &str) -> TopoResult<ShardLock> {
        self.lock_shard_mode(keyspace, shard, action, LockMode::Blocking)
            .await
    }

    /// Locks a shard only if nobody holds it: `NodeExists` ("lock already
    /// exists at path …") at once otherwise (Vitess `TryLockShard`).
    pub async fn try_lock_shard(&self, keyspace: &str, shard: &str, action: &str) -> TopoResult<ShardLock> {
        self.lock_shard_mode(keyspace, shard, action, LockMode::Try).await
    }

    /// Locks a keyspace (resource `keyspaces/<ks>`), waiting like
    /// [`Topo::lock_shard`].
    pub async fn lock_keyspace(&self, keyspace: &str, action: &str) -> TopoResult<TopoLock> {
        check_name("keyspace", keyspace)?;
        let resource = self.global_key(&paths::keyspace_dir(keyspace));
        TopoLock::acquire(
            self.inner.global.clone(),
            &resource,
            self.lock_contents(action),
            &self.inner.options.lock,
            LockMode::Blocking,
        )
        .await
    }
}

/// Decodes the tablet records of a cell listing; everything that is not a
/// `tablets/<alias>/Tablet` key is ignored.
pub(crate) fn decode_tablets(cell_root: &str, entries: Vec<KeyValue>) -> Partial<Versioned<Tablet>> {
    let mut out = Partial::default();
    for kv in entries {
        let Some(relative) = paths::strip_root(cell_root, &kv.key) else {
            continue;
        };
        if paths::parse_tablet(relative).is_none() {
            continue;
        }
        match decode_tablet(kv) {
            Ok(t) => out.items.push(t),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// Decodes a tablet record, warning (once per record, key and value) about
/// enum values this build does not know: such a tablet is handled as
/// `UNKNOWN` type (never analysed as a primary or replica).
pub(crate) fn decode_tablet(kv: KeyValue) -> TopoResult<Versioned<Tablet>> {
    let key = kv.key.clone();
    let t = decode_kv::<Tablet>(kv)?;
    let raw = t.value.r#type;
    if crate::proto::topodata::TabletType::try_from(raw).is_err() {
        warn_unknown_enum_once(&key, "type", raw);
    }
    Ok(t)
}

/// Logs an unknown enum value of a topo record once per (key, field, value).
pub(crate) fn warn_unknown_enum_once(key: &str, field: &'static str, value: i32) {
    type Seen = std::collections::HashSet<(String, &'static str, i32)>;
    static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let set = seen.get_or_insert_with(Default::default);
    // Bounded: a flood of distinct bad records stops being remembered (and warned).
    if set.len() < 10_000 && set.insert((key.to_string(), field, value)) {
        tracing::warn!(
            key,
            field,
            value,
            "topo record has an unknown enum value; treated as UNKNOWN"
        );
    }
}

/// Map of records keyed by name, for snapshots.
pub type ByName<T> = BTreeMap<String, Versioned<T>>;

#[cfg(test)]
mod unknown_enum_tests {
    use super::*;
    use crate::proto::topodata::TabletType;
    use crate::testkit::tablet_record;

    #[tokio::test]
    async fn a_tablet_record_with_an_unknown_type_is_read_as_unknown() {
        let (topo, _store) = Topo::in_memory(&["zone1"]);
        let mut t = tablet_record("ks", "0", "zone1", 177, TabletType::Replica);
        t.r#type = 77;
        topo.create_tablet(&t).await.expect("create");
        let alias = t.alias.clone().expect("alias");
        let read = topo.get_tablet(&alias).await.expect("decodes");
        assert_eq!(read.value.r#type, 77);
        assert_eq!(read.value.r#type(), TabletType::Unknown);
        let listed = topo.tablets_by_shard("ks", "0").await.expect("list");
        assert_eq!(listed.items.len(), 1);
        // Warned once per key and value (a second read logs nothing new).
        warn_unknown_enum_once("/x/tablets/zone1-177/Tablet", "type", 77);
        warn_unknown_enum_once("/x/tablets/zone1-177/Tablet", "type", 77);
    }
}
