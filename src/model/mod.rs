//! The cluster model: an immutable snapshot of what VTOrc knows about every
//! keyspace, shard and tablet it watches. No I/O here.
//!
//! Discovery owns the mutable copy and publishes [`ClusterSnapshot`]s; analysis
//! and the APIs read them. Shards sit behind `Arc`, and so do tablets inside a
//! shard, so a new snapshot shares every shard (and tablet) that did not change.
//!
//! What comes from where:
//!
//! | Field | Source |
//! |---|---|
//! | [`KeyspaceInfo`] | topo keyspace record |
//! | [`ShardState`] (not `tablets`) | topo shard record |
//! | [`TabletState::tablet`] | topo tablet record |
//! | [`TabletState::observation`] | last successful `FullStatus` poll |
//! | [`TabletState::poll`], [`TabletState::reachability`] | outcome and times of polls |
//! | [`TabletState::primary_health`] | outcome history of polls while the tablet was PRIMARY |
//! | [`TabletState::peer_health`] | shard-peer ping report carried by the tablet's FullStatus (v25) |
//!
//! Times are `tokio::time::Instant` values written by discovery; pure code never
//! reads the clock and is given `now`. Topo timestamps (wall clock, written by
//! vttablets) are [`TopoTime`].

mod errant;
mod health;
mod observation;
mod tablet;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use health::{PeerHealthReport, PeerPing, PrimaryHealthWindow};
pub use observation::{Observation, ReplicationObservation, SemiSyncObservation, ThreadState};
pub use tablet::{HeartbeatReport, PollTimes, Reachability, StreamHealth, TabletState};

use crate::ids::KeyspaceShard;
use crate::proto::topodata::{self, KeyspaceType, TabletAlias};
use crate::proto::vttime;

/// Serializes a tablet type as its wire number, as Go's JSON does for proto enums.
pub fn serialize_tablet_type<S: serde::Serializer>(
    t: &topodata::TabletType,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_i32(*t as i32)
}

/// A wall-clock timestamp from a topo record (`vttime.Time`), e.g. a primary
/// term start time. Ordered by time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopoTime {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: i32,
}

impl TopoTime {
    /// Reads a proto time; absent or all-zero means "not set" (`None`), which
    /// is how Go VTOrc's zero `time.Time` reads.
    pub fn from_proto(t: Option<&vttime::Time>) -> Option<TopoTime> {
        match t {
            Some(t) if t.seconds != 0 || t.nanoseconds != 0 => Some(TopoTime {
                seconds: t.seconds,
                nanos: t.nanoseconds,
            }),
            _ => None,
        }
    }

    /// The proto form.
    pub fn to_proto(self) -> vttime::Time {
        vttime::Time {
            seconds: self.seconds,
            nanoseconds: self.nanos,
        }
    }
}

/// RFC 3339 in UTC, as Go prints a `time.Time` in JSON.
impl fmt::Display for TopoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.seconds.div_euclid(86_400);
        let secs = self.seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date
/// (proleptic Gregorian calendar; Howard Hinnant's published algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What VTOrc needs from a keyspace record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceInfo {
    /// Keyspace name.
    pub name: String,
    /// NORMAL or SNAPSHOT; SNAPSHOT keyspaces are never analysed.
    pub keyspace_type: KeyspaceType,
    /// Durability policy name as stored (`""` = not set: the keyspace is ignored).
    pub durability_policy: String,
    /// `vtorc_state.disable_emergency_reparent`: ERS is disabled for this keyspace.
    pub emergency_reparent_disabled: bool,
}

impl KeyspaceInfo {
    /// Reads a topo keyspace record.
    pub fn from_record(name: impl Into<String>, record: &topodata::Keyspace) -> Self {
        KeyspaceInfo {
            name: name.into(),
            keyspace_type: record.keyspace_type(),
            durability_policy: record.durability_policy.clone(),
            emergency_reparent_disabled: record
                .vtorc_state
                .as_ref()
                .is_some_and(|s| s.disable_emergency_reparent),
        }
    }
}

/// One shard: its topo record and the tablets that belong to it.
#[derive(Clone, Debug)]
pub struct ShardState {
    /// Keyspace name.
    pub keyspace: String,
    /// Shard name (`0`, `-80`, ...).
    pub shard: String,
    /// The shard record's `primary_alias` (`None` = the shard never had a primary).
    pub primary_alias: Option<TabletAlias>,
    /// The shard record's `primary_term_start_time` (`None` = zero / not set).
    pub primary_term_start: Option<TopoTime>,
    /// The shard record's `vtorc_state.disable_emergency_reparent`.
    pub emergency_reparent_disabled: bool,
    /// Tablets of this shard known to the topo, sorted by alias.
    pub tablets: Vec<Arc<TabletState>>,
}

impl ShardState {
    /// Builds a shard from its topo record; `tablets` are sorted by alias.
    pub fn from_record(
        keyspace: impl Into<String>,
        shard: impl Into<String>,
        record: &topodata::Shard,
        mut tablets: Vec<Arc<TabletState>>,
    ) -> Self {
        tablets.sort_by(|a, b| a.alias().cmp(b.alias()));
        ShardState {
            keyspace: keyspace.into(),
            shard: shard.into(),
            primary_alias: record.primary_alias.clone(),
            primary_term_start: TopoTime::from_proto(record.primary_term_start_time.as_ref()),
            emergency_reparent_disabled: record
                .vtorc_state
                .as_ref()
                .is_some_and(|s| s.disable_emergency_reparent),
            tablets,
        }
    }

    /// The shard's `keyspace/shard` name.
    pub fn key(&self) -> KeyspaceShard {
        KeyspaceShard::new(self.keyspace.clone(), self.shard.clone())
    }

    /// A tablet of this shard by alias.
    pub fn tablet(&self, alias: &TabletAlias) -> Option<&Arc<TabletState>> {
        self.tablets
            .binary_search_by(|t| t.alias().cmp(alias))
            .ok()
            .map(|i| &self.tablets[i])
    }

    /// Replaces (or inserts) a tablet, keeping the list sorted.
    pub fn upsert_tablet(&mut self, tablet: Arc<TabletState>) {
        match self.tablets.binary_search_by(|t| t.alias().cmp(tablet.alias())) {
            Ok(i) => self.tablets[i] = tablet,
            Err(i) => self.tablets.insert(i, tablet),
        }
    }

    /// Removes a tablet; returns it if it was there.
    pub fn remove_tablet(&mut self, alias: &TabletAlias) -> Option<Arc<TabletState>> {
        match self.tablets.binary_search_by(|t| t.alias().cmp(alias)) {
            Ok(i) => Some(self.tablets.remove(i)),
            Err(_) => None,
        }
    }

    /// The tablet whose MySQL listens on `host:port`, if any (how a replica's
    /// replication source is resolved to a tablet).
    pub fn tablet_by_mysql_address(&self, host: &str, port: i32) -> Option<&Arc<TabletState>> {
        self.tablets
            .iter()
            .find(|t| t.tablet.mysql_hostname == host && t.tablet.mysql_port == port)
    }
}

/// Everything VTOrc knows, at one moment. Cheap to clone (all `Arc`s).
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    /// Keyspace records by name.
    pub keyspaces: BTreeMap<String, Arc<KeyspaceInfo>>,
    /// Shards by `keyspace/shard`.
    pub shards: BTreeMap<KeyspaceShard, Arc<ShardState>>,
}

impl ClusterSnapshot {
    /// Number of tablets in all shards.
    pub fn tablet_count(&self) -> usize {
        self.shards.values().map(|s| s.tablets.len()).sum()
    }

    /// A shard by name.
    pub fn shard(&self, key: &KeyspaceShard) -> Option<&Arc<ShardState>> {
        self.shards.get(key)
    }

    /// Inserts or replaces a shard.
    pub fn put_shard(&mut self, shard: ShardState) {
        self.shards.insert(shard.key(), Arc::new(shard));
    }

    /// Inserts or replaces a keyspace.
    pub fn put_keyspace(&mut self, keyspace: KeyspaceInfo) {
        self.keyspaces.insert(keyspace.name.clone(), Arc::new(keyspace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topo_time_prints_rfc3339_utc() {
        let t = TopoTime {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.5Z");
        assert_eq!(TopoTime::default().to_string(), "1970-01-01T00:00:00Z");
        let before_epoch = TopoTime {
            seconds: -86_400,
            nanos: 0,
        };
        assert_eq!(before_epoch.to_string(), "1969-12-31T00:00:00Z");
    }

    #[test]
    fn zero_proto_time_is_not_set() {
        assert_eq!(TopoTime::from_proto(None), None);
        assert_eq!(TopoTime::from_proto(Some(&vttime::Time::default())), None);
        let t = vttime::Time {
            seconds: 5,
            nanoseconds: 1,
        };
        assert_eq!(TopoTime::from_proto(Some(&t)).map(TopoTime::to_proto), Some(t));
    }
}
