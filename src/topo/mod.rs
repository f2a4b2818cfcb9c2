//! The Vitess topology over etcd: read what Vitess writes, write what
//! Vitess reads, and lock shards so that vtctld and vttablet respect it.
//!
//! # Layers
//!
//! - [`TopoStore`] (`store.rs`): the key-value operations of Vitess's etcd2
//!   backend: get, prefix list, list-dir, create / update-if-version /
//!   delete-if-version (`NodeExists`, `NoNode`, `BadVersion`), watches
//!   from a revision, leases. Versions are etcd mod revisions
//!   ([`Version`]). Two implementations: [`EtcdStore`] (`etcd-client`,
//!   etcd v3) and [`MemoryStore`] (an etcd look-alike for unit tests). One
//!   conformance suite (`integration::topo_conformance`) runs on both.
//! - [`TopoLock`] (`lock.rs`): Vitess's etcd2 lock protocol over any
//!   store: lease-attached key `<resource>/locks/<lease id>`, wait for all
//!   older keys to go, `--lock-timeout`, keep-alive, `check`, unlock by
//!   revoke. Its [`CancellationToken`](tokio_util::sync::CancellationToken)
//!   fires the moment the lease is lost.
//! - [`Topo`] (`server.rs`): typed records (`topodata::{CellInfo,
//!   Keyspace, Shard, Tablet, ShardReplication}`, binary protobuf) at the
//!   Vitess keys (`paths.rs`), the global root plus per-cell roots from
//!   `CellInfo` (a cell may live on another etcd cluster; one connection
//!   per `server_address`, cached), read-modify-write helpers with
//!   `BadVersion` retry, shard locks ([`ShardLock`]), and ERS-disable
//!   flags (`vtorc_state.disable_emergency_reparent`).
//! - [`TopoWatcher`] (`watch.rs`): typed change events from etcd watches,
//!   with a full snapshot (`GlobalResync` / `CellResync`) after every
//!   (re)start, to be swapped in atomically by the consumer.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), vtorc::topo::TopoError> {
//! use vtorc::topo::{Topo, TopoOptions, TopoEvent};
//! let topo = Topo::connect_etcd("127.0.0.1:2379", "/vitess/global", TopoOptions::default()).await?;
//! for cell in topo.cells().await? {
//!     let tablets = topo.tablets_by_cell(&cell).await?;
//!     for e in &tablets.errors { tracing::warn!("skipping tablet record: {e}"); }
//! }
//! let lock = topo.try_lock_shard("commerce", "0", "RecoverDeadPrimary").await?;
//! let token = lock.cancellation_token(); // fires if the lease is lost
//! // ... work, select!-ing on token.cancelled() ...
//! lock.unlock().await?;
//! let mut watcher = topo.watch();
//! while let Some(event) = watcher.next().await {
//!     if let TopoEvent::TabletChanged { tablet, .. } = event { let _ = tablet.value.alias; }
//! }
//! # Ok(()) }
//! ```
//!
//! Unit tests of other modules use [`Topo::in_memory`].
//!
//! # Errors
//!
//! [`TopoError`] carries Vitess's codes; `is_retryable()` is true for
//! timeouts and unreachable stores. A record that does not decode is
//! `Corrupt { key, reason }`; listings return such records in
//! [`Partial::errors`] and go on with the rest.
//!
//! # Gotchas
//!
//! - Writes keep fields our schema does not declare (top level only), so a
//!   record from a newer Vitess survives our read-modify-write.
//! - Dropping a [`ShardLock`] without `unlock` revokes its lease in a
//!   background task; the lease would expire after its TTL anyway.
//! - Changing the key layout means changing `paths.rs` only; the lock
//!   protocol lives only in `lock.rs`.

pub mod codec;
pub mod error;
pub mod etcd;
pub mod lock;
pub mod memory;
pub mod paths;
pub mod server;
pub mod store;
pub mod watch;

pub use error::{TopoError, TopoResult};
pub use etcd::{EtcdOptions, EtcdStore};
pub use lock::{LockMode, LockOptions, TopoLock};
pub use memory::MemoryStore;
pub use server::{
    CellStore, EtcdConnector, MemoryConnector, Partial, ShardLock, StoreConnector, Topo, TopoOptions,
    Versioned, keyspace_ers_disabled, shard_ers_disabled,
};
pub use store::{KeyValue, LeaseId, Listing, StoreWatch, TopoStore, Version, WatchBatch, WatchEvent};
pub use watch::{CellSnapshot, GlobalSnapshot, TopoEvent, TopoWatcher, WatchScope};
