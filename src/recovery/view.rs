//! What the recovery engine needs from discovery, as a trait (so the gate
//! order can be tested against an in-process fake), and the "fresh records"
//! overlay used for the re-check under the shard lock.
//!
//! Discovery follows the topology through an etcd watch, which lags a
//! write by a few milliseconds. Under the lock the engine re-reads the
//! keyspace, shard and tablet records itself and lays them over the latest
//! snapshot ([`overlay_records`]) before re-running analysis, so the
//! decision to act never rests on a record older than the lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::discovery::{DiscoveryError, DiscoveryHandle, ShardChange};
use crate::ids::KeyspaceShard;
use crate::model::{ClusterSnapshot, KeyspaceInfo, ShardState, TabletState, TopoTime};
use crate::proto::topodata::{Keyspace, Shard, Tablet, TabletAlias};

/// Discovery as the recovery engine sees it.
#[async_trait]
pub trait ClusterView: Send + Sync {
    /// The latest published snapshot.
    fn snapshot(&self) -> Arc<ClusterSnapshot>;

    /// Shard-changed notifications from now on.
    fn subscribe_changes(&self) -> broadcast::Receiver<ShardChange>;

    /// Returns once the first topology load and discovery round are done.
    async fn wait_ready(&self) -> Result<(), DiscoveryError>;

    /// Polls a tablet now; returns after a poll that started after the call
    /// has finished and the snapshot holding it is published.
    async fn refresh_tablet(&self, alias: &TabletAlias) -> Result<Arc<TabletState>, DiscoveryError>;
}

#[async_trait]
impl ClusterView for DiscoveryHandle {
    fn snapshot(&self) -> Arc<ClusterSnapshot> {
        DiscoveryHandle::snapshot(self)
    }

    fn subscribe_changes(&self) -> broadcast::Receiver<ShardChange> {
        DiscoveryHandle::subscribe_changes(self)
    }

    async fn wait_ready(&self) -> Result<(), DiscoveryError> {
        DiscoveryHandle::wait_ready(self).await
    }

    async fn refresh_tablet(&self, alias: &TabletAlias) -> Result<Arc<TabletState>, DiscoveryError> {
        DiscoveryHandle::refresh_tablet(self, alias).await
    }
}

/// Records read from the topology under the shard lock. `None` = not read
/// (the snapshot's copy is kept).
#[derive(Clone, Debug, Default)]
pub struct FreshRecords {
    /// The keyspace record.
    pub keyspace: Option<Keyspace>,
    /// The shard record.
    pub shard: Option<Shard>,
    /// The shard's tablet records.
    pub tablets: Option<Vec<Tablet>>,
    /// Whether the tablet listing was complete; when it is not, tablets of
    /// the snapshot missing from it are kept (their deletion is unproven).
    pub tablets_complete: bool,
}

/// The snapshot with one shard's records replaced by `fresh`: the keyspace
/// record, the shard record, and the tablet records (each tablet keeps its
/// polled state; a tablet new to the snapshot is "never reached"; a tablet
/// gone from a complete listing is dropped).
pub fn overlay_records(
    snapshot: &ClusterSnapshot,
    key: &KeyspaceShard,
    fresh: &FreshRecords,
) -> ClusterSnapshot {
    let mut out = snapshot.clone();
    if let Some(ks) = &fresh.keyspace {
        out.put_keyspace(KeyspaceInfo::from_record(key.keyspace.clone(), ks));
    }
    let old = snapshot.shard(key);
    let mut shard = match (&fresh.shard, old) {
        (Some(record), Some(old)) => {
            let mut s = ShardState::from_record(key.keyspace.clone(), key.shard.clone(), record, Vec::new());
            s.tablets = old.tablets.clone();
            s
        }
        (Some(record), None) => {
            ShardState::from_record(key.keyspace.clone(), key.shard.clone(), record, Vec::new())
        }
        (None, Some(old)) => ShardState::clone(old),
        (None, None) => return out,
    };
    if let Some(tablets) = &fresh.tablets {
        let mut by_alias: BTreeMap<TabletAlias, Arc<TabletState>> = if fresh.tablets_complete {
            BTreeMap::new()
        } else {
            shard
                .tablets
                .iter()
                .map(|t| (t.alias().clone(), Arc::clone(t)))
                .collect()
        };
        for record in tablets {
            let Some(alias) = record.alias.clone() else {
                continue;
            };
            let state = match shard.tablet(&alias) {
                Some(existing) if existing.tablet == *record => Arc::clone(existing),
                Some(existing) => {
                    let mut t = TabletState::clone(existing);
                    t.tablet = record.clone();
                    Arc::new(t)
                }
                None => Arc::new(TabletState::new(record.clone())),
            };
            by_alias.insert(alias, state);
        }
        shard.tablets = by_alias.into_values().collect();
    }
    out.put_shard(shard);
    out
}

/// The shard's primary as a recovery sees it: the PRIMARY-type tablet with
/// the newest primary term start (Go: the newest stored PRIMARY).
pub fn shard_primary(shard: &ShardState) -> Option<&Arc<TabletState>> {
    shard
        .tablets
        .iter()
        .filter(|t| t.tablet_type() == crate::proto::topodata::TabletType::Primary)
        .max_by_key(|t| t.primary_term_start().unwrap_or(TopoTime::default()))
}

/// Tablets of `shard` whose MySQL replicates from `primary`'s MySQL.
pub(crate) fn direct_replicas<'a>(
    shard: &'a ShardState,
    primary: &TabletAlias,
) -> Vec<&'a Arc<crate::model::TabletState>> {
    let Some(p) = shard.tablet(primary) else {
        return Vec::new();
    };
    let (host, port) = (p.tablet.mysql_hostname.as_str(), p.tablet.mysql_port);
    shard
        .tablets
        .iter()
        .filter(|t| t.alias() != primary)
        .filter(|t| {
            t.observation
                .as_ref()
                .and_then(|o| o.replication.as_ref())
                .is_some_and(|r| r.source_host == host && r.source_port == port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::topodata::TabletType;
    use crate::testkit::ShardBuilder;

    #[test]
    fn overlay_replaces_records_keeps_polls_and_drops_deleted_tablets() {
        let now = crate::clock::now();
        let snapshot = ShardBuilder::new("ks", "0", "semi_sync", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone1", 102)
            .build();
        let key = KeyspaceShard::new("ks", "0");
        let shard = snapshot.shard(&key).expect("built");
        let mut t101 = shard
            .tablet(&TabletAlias::new("zone1", 101))
            .expect("t")
            .tablet
            .clone();
        t101.r#type = TabletType::Rdonly as i32;
        let mut new103 = t101.clone();
        new103.alias = Some(TabletAlias::new("zone1", 103));
        let fresh = FreshRecords {
            keyspace: Some(Keyspace::with_durability("none")),
            shard: Some(Shard::with_primary(Some(TabletAlias::new("zone1", 100)))),
            tablets: Some(vec![
                shard
                    .tablet(&TabletAlias::new("zone1", 100))
                    .expect("t")
                    .tablet
                    .clone(),
                t101,
                new103,
            ]),
            tablets_complete: true,
        };
        let out = overlay_records(&snapshot, &key, &fresh);
        assert_eq!(out.keyspaces["ks"].durability_policy, "none");
        let s = out.shard(&key).expect("kept");
        assert_eq!(s.tablets.len(), 3);
        let t101 = s.tablet(&TabletAlias::new("zone1", 101)).expect("kept");
        assert_eq!(t101.tablet_type(), TabletType::Rdonly);
        assert!(t101.observation.is_some(), "polled state is kept");
        assert!(s.tablet(&TabletAlias::new("zone1", 102)).is_none(), "deleted");
        assert!(
            s.tablet(&TabletAlias::new("zone1", 103))
                .expect("new")
                .observation
                .is_none()
        );
        assert_eq!(s.primary_term_start, None, "fresh shard record");

        let partial = FreshRecords {
            tablets: Some(vec![]),
            tablets_complete: false,
            ..FreshRecords::default()
        };
        let out = overlay_records(&snapshot, &key, &partial);
        assert_eq!(
            out.shard(&key).expect("kept").tablets.len(),
            3,
            "unproven deletions are kept"
        );
    }

    #[test]
    fn the_shard_primary_is_the_newest_primary_term() {
        let now = crate::clock::now();
        let snapshot = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .edit("zone1", 101, |t| {
                t.tablet.r#type = TabletType::Primary as i32;
                t.tablet.primary_term_start_time = Some(crate::proto::vttime::Time {
                    seconds: crate::testkit::PRIMARY_TERM_SECONDS + 10,
                    nanoseconds: 0,
                });
            })
            .build();
        let shard = snapshot.shard(&KeyspaceShard::new("ks", "0")).expect("built");
        assert_eq!(shard_primary(shard).expect("one").alias().uid, 101);
    }
}
