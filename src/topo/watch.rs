//! Watching the topology: typed events for keyspaces, shards, cells and
//! tablets, fed by etcd watches (no polling).
//!
//! [`Topo::watch`] starts one task for the global topo and one per cell.
//! Each task lists its scope, sends a full snapshot ([`TopoEvent::GlobalResync`]
//! or [`TopoEvent::CellResync`]), then watches from the listing's revision
//! and sends one event per change. When a watch ends (compaction, stream
//! error, reconnect, etcd gone) the task reports [`TopoEvent::WatchError`],
//! lists again and sends a fresh snapshot: the consumer replaces everything
//! it holds for that scope with the snapshot, atomically.
//!
//! Readiness: the topology is fully loaded once a `GlobalResync` has
//! arrived and a `CellResync` for every cell in its `cells`.
//!
//! Dropping the [`TopoWatcher`] stops every task.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::mpsc;

use super::codec::decode;
use super::error::TopoError;
use super::paths::{self, GlobalKey};
use super::server::{ByName, CellStore, Topo, Versioned, decode_kv, decode_tablet, decode_tablets};
use super::store::{AbortOnDrop, KeyValue, Listing, WatchEvent};
use crate::ids::KeyspaceShard;
use crate::proto::topodata::{CellInfo, Keyspace, Shard, Tablet, TabletAlias};

/// Events buffered for the consumer.
const EVENT_BUFFER: usize = 1024;

/// First delay before re-listing after a failure; doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Longest delay between re-list attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Everything in the global topo that VTOrc uses, at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalSnapshot {
    /// Store revision of the listing.
    pub revision: i64,
    /// Cells by name. A cell missing here is gone: drop its tablets.
    pub cells: BTreeMap<String, CellInfo>,
    /// Keyspace records by name.
    pub keyspaces: ByName<Keyspace>,
    /// Shard records by keyspace/shard.
    pub shards: BTreeMap<KeyspaceShard, Versioned<Shard>>,
    /// Records that did not decode (`Corrupt { key, .. }`), skipped.
    pub errors: Vec<TopoError>,
}

/// Every tablet of one cell, at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellSnapshot {
    /// The cell.
    pub cell: String,
    /// Store revision of the listing (of the cell's store).
    pub revision: i64,
    /// The tablets, sorted by key (alias).
    pub tablets: Vec<Versioned<Tablet>>,
    /// Records that did not decode (`Corrupt { key, .. }`), skipped.
    pub errors: Vec<TopoError>,
}

/// What a [`TopoEvent::WatchError`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// The global topo (cells, keyspaces, shards).
    Global,
    /// One cell's tablets.
    Cell(String),
}

/// One change in the topology.
#[derive(Clone, Debug, PartialEq)]
pub enum TopoEvent {
    /// Full state of the global topo: replace all cells, keyspaces and
    /// shards with it.
    GlobalResync(GlobalSnapshot),
    /// Full state of one cell: replace all tablets of `cell` with it.
    CellResync(CellSnapshot),
    /// A cell was added or its `CellInfo` changed (a `CellResync` follows).
    CellChanged {
        /// Cell name.
        cell: String,
        /// New record.
        info: CellInfo,
    },
    /// A cell's `CellInfo` was deleted: forget its tablets.
    CellDeleted {
        /// Cell name.
        cell: String,
    },
    /// A keyspace record was created or changed.
    KeyspaceChanged {
        /// Keyspace name.
        name: String,
        /// New record.
        keyspace: Versioned<Keyspace>,
    },
    /// A keyspace record was deleted.
    KeyspaceDeleted {
        /// Keyspace name.
        name: String,
    },
    /// A shard record was created or changed.
    ShardChanged {
        /// The shard.
        keyspace_shard: KeyspaceShard,
        /// New record.
        shard: Versioned<Shard>,
    },
    /// A shard record was deleted.
    ShardDeleted {
        /// The shard.
        keyspace_shard: KeyspaceShard,
    },
    /// A tablet record was created or changed.
    TabletChanged {
        /// Cell whose topo holds the record.
        cell: String,
        /// New record.
        tablet: Versioned<Tablet>,
    },
    /// A tablet record was deleted.
    TabletDeleted {
        /// Cell whose topo held the record.
        cell: String,
        /// The tablet.
        alias: TabletAlias,
    },
    /// A changed record does not decode (`Corrupt { key, .. }`); it is
    /// skipped and the previous state of that record should be dropped.
    Corrupt(TopoError),
    /// A watch failed; the scope is re-listed and a resync follows.
    WatchError {
        /// What stopped being watched.
        scope: WatchScope,
        /// Why.
        error: TopoError,
    },
}

/// Receives topology events. Dropping it stops the watches.
#[derive(Debug)]
pub struct TopoWatcher {
    /// Events from the watch tasks.
    rx: mpsc::Receiver<TopoEvent>,
    /// The global task (which owns the cell tasks).
    _task: AbortOnDrop,
}

impl TopoWatcher {
    /// The next event; `None` only if the watch tasks stopped.
    pub async fn next(&mut self) -> Option<TopoEvent> {
        self.rx.recv().await
    }

    /// An event if one is ready now.
    pub fn try_next(&mut self) -> Option<TopoEvent> {
        self.rx.try_recv().ok()
    }
}

impl Topo {
    /// Starts watching the whole topology (see the module docs). Must be
    /// called inside a tokio runtime.
    pub fn watch(&self) -> TopoWatcher {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let topo = self.clone();
        let task = tokio::spawn(async move { global_loop(topo, tx).await });
        TopoWatcher {
            rx,
            _task: AbortOnDrop(task.abort_handle()),
        }
    }
}

/// Builds the global snapshot from a listing of the global root.
fn global_snapshot(topo: &Topo, listing: Listing) -> GlobalSnapshot {
    let mut snap = GlobalSnapshot {
        revision: listing.revision,
        ..GlobalSnapshot::default()
    };
    for kv in listing.entries {
        let Some(relative) = paths::strip_root(topo.global_root(), &kv.key) else {
            continue;
        };
        match paths::parse_global(relative) {
            GlobalKey::CellInfo(cell) => match decode::<CellInfo>(&kv.key, &kv.value) {
                Ok(info) => {
                    snap.cells.insert(cell, info);
                }
                Err(e) => snap.errors.push(e),
            },
            GlobalKey::Keyspace(name) => match versioned::<Keyspace>(kv) {
                Ok(k) => {
                    snap.keyspaces.insert(name, k);
                }
                Err(e) => snap.errors.push(e),
            },
            GlobalKey::Shard(ks, shard) => match versioned::<Shard>(kv) {
                Ok(s) => {
                    snap.shards.insert(KeyspaceShard::new(ks, shard), s);
                }
                Err(e) => snap.errors.push(e),
            },
            GlobalKey::Other => {}
        }
    }
    snap
}

fn versioned<M: prost::Message + Default>(kv: KeyValue) -> Result<Versioned<M>, TopoError> {
    decode_kv(kv)
}

/// Sends or returns from the enclosing task when the consumer is gone.
macro_rules! send_or_stop {
    ($tx:expr, $event:expr) => {
        if $tx.send($event).await.is_err() {
            return;
        }
    };
}

/// The global watch task; owns the cell tasks.
async fn global_loop(topo: Topo, tx: mpsc::Sender<TopoEvent>) {
    let store = topo.global_store();
    let prefix = format!("{}/", topo.global_root().trim_end_matches('/'));
    let mut cells: HashMap<String, (CellInfo, AbortOnDrop)> = HashMap::new();
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let listing = match store.list(&prefix).await {
            Ok(l) => l,
            Err(error) => {
                send_or_stop!(
                    tx,
                    TopoEvent::WatchError {
                        scope: WatchScope::Global,
                        error
                    }
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        let snapshot = global_snapshot(&topo, listing);
        let revision = snapshot.revision;
        // Start, restart or stop cell watches to match the snapshot.
        cells.retain(|name, _| snapshot.cells.contains_key(name));
        for (name, info) in &snapshot.cells {
            if cells.get(name).is_none_or(|(old, _)| old != info) {
                topo.forget_cell(name);
                cells.insert(name.clone(), (info.clone(), spawn_cell(&topo, name, &tx)));
            }
        }
        send_or_stop!(tx, TopoEvent::GlobalResync(snapshot));
        let mut watch = match store.watch(&prefix, true, revision + 1).await {
            Ok(w) => w,
            Err(error) => {
                send_or_stop!(
                    tx,
                    TopoEvent::WatchError {
                        scope: WatchScope::Global,
                        error
                    }
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        delay = FIRST_RETRY_DELAY;
        let error = loop {
            let batch = match watch.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => break e,
                None => break TopoError::Unavailable("global watch ended".into()),
            };
            for event in batch.events {
                let Some(relative) = paths::strip_root(topo.global_root(), event.key()) else {
                    continue;
                };
                let out = match (paths::parse_global(relative), event) {
                    (GlobalKey::Other, _) => continue,
                    (GlobalKey::CellInfo(cell), WatchEvent::Put(kv)) => {
                        match decode::<CellInfo>(&kv.key, &kv.value) {
                            Ok(info) => {
                                topo.forget_cell(&cell);
                                cells.insert(cell.clone(), (info.clone(), spawn_cell(&topo, &cell, &tx)));
                                TopoEvent::CellChanged { cell, info }
                            }
                            Err(e) => TopoEvent::Corrupt(e),
                        }
                    }
                    (GlobalKey::CellInfo(cell), WatchEvent::Delete { .. }) => {
                        cells.remove(&cell);
                        topo.forget_cell(&cell);
                        TopoEvent::CellDeleted { cell }
                    }
                    (GlobalKey::Keyspace(name), WatchEvent::Put(kv)) => match versioned(kv) {
                        Ok(keyspace) => TopoEvent::KeyspaceChanged { name, keyspace },
                        Err(e) => TopoEvent::Corrupt(e),
                    },
                    (GlobalKey::Keyspace(name), WatchEvent::Delete { .. }) => {
                        TopoEvent::KeyspaceDeleted { name }
                    }
                    (GlobalKey::Shard(ks, shard), WatchEvent::Put(kv)) => match versioned(kv) {
                        Ok(record) => TopoEvent::ShardChanged {
                            keyspace_shard: KeyspaceShard::new(ks, shard),
                            shard: record,
                        },
                        Err(e) => TopoEvent::Corrupt(e),
                    },
                    (GlobalKey::Shard(ks, shard), WatchEvent::Delete { .. }) => TopoEvent::ShardDeleted {
                        keyspace_shard: KeyspaceShard::new(ks, shard),
                    },
                };
                send_or_stop!(tx, out);
            }
        };
        tracing::info!("global topo watch ended, re-listing: {error:#}");
        send_or_stop!(
            tx,
            TopoEvent::WatchError {
                scope: WatchScope::Global,
                error
            }
        );
        tokio::time::sleep(FIRST_RETRY_DELAY).await;
    }
}

/// Starts the watch task of one cell.
fn spawn_cell(topo: &Topo, cell: &str, tx: &mpsc::Sender<TopoEvent>) -> AbortOnDrop {
    let task = tokio::spawn(cell_loop(topo.clone(), cell.to_string(), tx.clone()));
    AbortOnDrop(task.abort_handle())
}

/// The watch task of one cell's tablets.
async fn cell_loop(topo: Topo, cell: String, tx: mpsc::Sender<TopoEvent>) {
    let scope = WatchScope::Cell(cell.clone());
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let c: CellStore = match topo.cell_store(&cell).await {
            Ok(c) => c,
            Err(error) => {
                send_or_stop!(
                    tx,
                    TopoEvent::WatchError {
                        scope: scope.clone(),
                        error
                    }
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        let prefix = format!("{}/", paths::join(&c.root, paths::TABLETS_DIR));
        let listing = match c.store.list(&prefix).await {
            Ok(l) => l,
            Err(error) => {
                send_or_stop!(
                    tx,
                    TopoEvent::WatchError {
                        scope: scope.clone(),
                        error
                    }
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        let revision = listing.revision;
        let tablets = decode_tablets(&c.root, listing.entries);
        let snapshot = CellSnapshot {
            cell: cell.clone(),
            revision,
            tablets: tablets.items,
            errors: tablets.errors,
        };
        send_or_stop!(tx, TopoEvent::CellResync(snapshot));
        let mut watch = match c.store.watch(&prefix, true, revision + 1).await {
            Ok(w) => w,
            Err(error) => {
                send_or_stop!(
                    tx,
                    TopoEvent::WatchError {
                        scope: scope.clone(),
                        error
                    }
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        delay = FIRST_RETRY_DELAY;
        let error = loop {
            let batch = match watch.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => break e,
                None => break TopoError::Unavailable(format!("watch of cell {cell} ended")),
            };
            for event in batch.events {
                let Some(alias) = paths::strip_root(&c.root, event.key()).and_then(paths::parse_tablet)
                else {
                    continue;
                };
                let alias = alias.to_string();
                let out = match event {
                    WatchEvent::Put(kv) => match decode_tablet(kv) {
                        Ok(tablet) => TopoEvent::TabletChanged {
                            cell: cell.clone(),
                            tablet,
                        },
                        Err(e) => TopoEvent::Corrupt(e),
                    },
                    WatchEvent::Delete { key, .. } => match TabletAlias::parse(&alias) {
                        Ok(alias) => TopoEvent::TabletDeleted {
                            cell: cell.clone(),
                            alias,
                        },
                        Err(reason) => TopoEvent::Corrupt(TopoError::Corrupt { key, reason }),
                    },
                };
                send_or_stop!(tx, out);
            }
        };
        tracing::info!(%cell, "cell topo watch ended, re-listing: {error:#}");
        send_or_stop!(
            tx,
            TopoEvent::WatchError {
                scope: scope.clone(),
                error
            }
        );
        tokio::time::sleep(FIRST_RETRY_DELAY).await;
    }
}
