//! Builders for snapshots in tests and benchmarks; compiled for the crate's
//! unit tests and with the `testkit` feature (the crate's own tests,
//! benchmarks and the `integration` crate enable it), never into the service.
//! It sits above `model` and `analysis` (it uses durability policies), so
//! `model` does not import `analysis`.
//!
//! [`ShardBuilder`] starts from a *healthy* shard: every tablet was polled a
//! second before `now`, replicas replicate from the primary with both threads
//! running, read-only is set where it should be, semi-sync follows the policy,
//! `replica_net_timeout = 2 × heartbeat`. Tests then break one thing with
//! [`ShardBuilder::edit`] and the [`TabletFixture`] helpers.
//!
//! Conventions: tablet `cell-uid` has MySQL at `mysql-<cell>-<uid>:3306`,
//! `server_id = uid`, `server_uuid = <uid as 8 hex>-0000-0000-0000-<uid as 12 hex>`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::analysis::durability::Durability;
use crate::model::{
    ClusterSnapshot, KeyspaceInfo, Observation, ReplicationObservation, ShardState, TabletState, TopoTime,
};
use crate::mysql::Position;
use crate::mysql::mysql56::{Interval, Mysql56GtidSet, Sid};
use crate::proto::topodata::{KeyspaceType, Tablet, TabletAlias, TabletType};

/// Primary term start of the fixture primary (2023-11-14).
pub const PRIMARY_TERM_SECONDS: i64 = 1_700_000_000;
/// MySQL port of every fixture tablet.
pub const MYSQL_PORT: i32 = 3306;
/// How long before `now` fixture tablets were last polled.
pub const POLLED_AGO: Duration = Duration::from_secs(1);

/// MySQL host of a fixture tablet.
pub fn mysql_host(cell: &str, uid: u32) -> String {
    format!("mysql-{cell}-{uid}")
}

/// `server_uuid` of a fixture tablet.
pub fn server_uuid(uid: u32) -> String {
    format!("{uid:08x}-0000-0000-0000-{uid:012x}")
}

/// MySQL GTID position with transactions `1..=n` of the fixture server `uid`.
pub fn gtids(uid: u32, n: u64) -> Position {
    let mut set = Mysql56GtidSet::new();
    if n > 0 {
        let sid = Sid::parse(&server_uuid(uid)).expect("fixture uuids are well formed");
        set.add_interval(sid, Interval { start: 1, end: n });
    }
    Position::MySql56(set)
}

/// A topo tablet record.
pub fn tablet_record(keyspace: &str, shard: &str, cell: &str, uid: u32, tablet_type: TabletType) -> Tablet {
    Tablet {
        alias: Some(TabletAlias::new(cell, uid)),
        hostname: format!("tablet-{cell}-{uid}"),
        keyspace: keyspace.to_string(),
        shard: shard.to_string(),
        r#type: tablet_type as i32,
        mysql_hostname: mysql_host(cell, uid),
        mysql_port: MYSQL_PORT,
        ..Default::default()
    }
}

/// Edits that tests apply to fixture tablets.
pub trait TabletFixture {
    /// The observation (panics if the tablet was made never-reached: a test bug).
    fn obs(&mut self) -> &mut Observation;
    /// The latest poll, at `now`, failed (the previous observation stays).
    fn unreachable(&mut self, now: Instant);
    /// The tablet was never reached: no observation, no poll times.
    fn never_reached(&mut self);
    /// Replication threads stopped (the source stays configured).
    fn stop_replication(&mut self);
    /// Points replication at `host:port` with both threads running.
    fn replicate_from(&mut self, host: &str, port: i32);
    /// No replication configured at all.
    fn no_replication(&mut self);
}

impl TabletFixture for TabletState {
    fn obs(&mut self) -> &mut Observation {
        self.observation_mut()
            .expect("fixture tablet has no observation; do not edit it after never_reached()")
    }

    fn unreachable(&mut self, now: Instant) {
        self.record_poll_failure(now, "fixture: connection refused".into(), false, false);
    }

    fn never_reached(&mut self) {
        self.observation = None;
        self.poll = Default::default();
        self.reachability = Default::default();
    }

    fn stop_replication(&mut self) {
        if let Some(r) = self.obs().replication.as_mut() {
            r.io_thread = crate::model::ThreadState::Stopped;
            r.sql_thread = crate::model::ThreadState::Stopped;
        }
    }

    fn replicate_from(&mut self, host: &str, port: i32) {
        let r = self
            .obs()
            .replication
            .get_or_insert_with(ReplicationObservation::default);
        r.source_host = host.to_string();
        r.source_port = port;
        r.io_thread = crate::model::ThreadState::Running;
        r.sql_thread = crate::model::ThreadState::Running;
        r.lag_seconds = Some(0);
    }

    fn no_replication(&mut self) {
        self.obs().replication = None;
    }
}

/// Builds one healthy shard (see the module docs).
pub struct ShardBuilder {
    keyspace: KeyspaceInfo,
    shard: ShardState,
    tablets: Vec<TabletState>,
    now: Instant,
}

impl ShardBuilder {
    /// A shard of keyspace `keyspace` with durability policy `policy` (any
    /// string; an unknown or empty one is kept as is).
    pub fn new(keyspace: &str, shard: &str, policy: &str, now: Instant) -> Self {
        ShardBuilder {
            keyspace: KeyspaceInfo {
                name: keyspace.to_string(),
                keyspace_type: KeyspaceType::Normal,
                durability_policy: policy.to_string(),
                emergency_reparent_disabled: false,
            },
            shard: ShardState {
                keyspace: keyspace.to_string(),
                shard: shard.to_string(),
                primary_alias: None,
                primary_term_start: None,
                emergency_reparent_disabled: false,
                tablets: Vec::new(),
            },
            tablets: Vec::new(),
            now,
        }
    }

    fn durability(&self) -> Option<Durability> {
        Durability::from_name(&self.keyspace.durability_policy).ok()
    }

    fn primary_index(&self) -> Option<usize> {
        self.tablets
            .iter()
            .position(|t| t.tablet_type() == TabletType::Primary)
    }

    /// Adds a healthy primary, recorded in the shard record, term started at
    /// [`PRIMARY_TERM_SECONDS`].
    pub fn primary(mut self, cell: &str, uid: u32) -> Self {
        let mut record = tablet_record(
            &self.keyspace.name,
            &self.shard.shard,
            cell,
            uid,
            TabletType::Primary,
        );
        let term = TopoTime {
            seconds: PRIMARY_TERM_SECONDS,
            nanos: 0,
        };
        record.primary_term_start_time = Some(term.to_proto());
        self.shard.primary_alias = record.alias.clone();
        self.shard.primary_term_start = Some(term);
        let acks = self.durability().map_or(0, |d| d.semi_sync_ackers(&record));
        let mut obs = base_observation(uid, TabletType::Primary);
        obs.read_only = false;
        obs.replication = None;
        obs.executed_position = gtids(uid, 100);
        obs.semi_sync.primary_enabled = acks > 0;
        obs.semi_sync.primary_status = acks > 0;
        obs.semi_sync.wait_for_replica_count = acks;
        let mut state = TabletState::new(record);
        state.record_poll_success(self.now - POLLED_AGO, obs);
        self.tablets.push(state);
        self
    }

    /// Adds a healthy REPLICA replicating from the first PRIMARY (not
    /// replicating at all if there is none).
    pub fn replica(self, cell: &str, uid: u32) -> Self {
        self.tablet(cell, uid, TabletType::Replica)
    }

    /// Adds a healthy RDONLY (see [`ShardBuilder::replica`]).
    pub fn rdonly(self, cell: &str, uid: u32) -> Self {
        self.tablet(cell, uid, TabletType::Rdonly)
    }

    /// Adds a non-primary tablet of any type (see [`ShardBuilder::replica`]).
    pub fn tablet(mut self, cell: &str, uid: u32, tablet_type: TabletType) -> Self {
        let record = tablet_record(&self.keyspace.name, &self.shard.shard, cell, uid, tablet_type);
        let mut obs = base_observation(uid, tablet_type);
        let durability = self.durability();
        if let Some(pi) = self.primary_index() {
            let primary = &self.tablets[pi];
            let acks = durability.is_some_and(|d| d.is_replica_semi_sync(&primary.tablet, &record));
            obs.executed_position = gtids(primary.tablet.alias.as_ref().map_or(0, |a| a.uid), 100);
            obs.replication = Some(ReplicationObservation {
                source_host: primary.tablet.mysql_hostname.clone(),
                source_port: primary.tablet.mysql_port,
                source_uuid: primary
                    .observation
                    .as_ref()
                    .map_or(String::new(), |o| o.server_uuid.clone()),
                source_server_id: primary.observation.as_ref().map_or(0, |o| o.server_id),
                source_user: "vt_repl".into(),
                io_thread: crate::model::ThreadState::Running,
                sql_thread: crate::model::ThreadState::Running,
                position: obs.executed_position.clone(),
                relay_log_position: obs.executed_position.clone(),
                lag_seconds: Some(0),
                sql_delay: 0,
                auto_position: true,
                last_io_error: String::new(),
                last_sql_error: String::new(),
                has_replication_filters: false,
            });
            obs.semi_sync.replica_enabled = acks;
            obs.semi_sync.replica_status = acks;
            if acks {
                let p = self.tablets[pi]
                    .observation_mut()
                    .expect("fixture primary is observed");
                p.semi_sync.primary_clients += 1;
            }
        }
        let mut state = TabletState::new(record);
        state.record_poll_success(self.now - POLLED_AGO, obs);
        self.tablets.push(state);
        self
    }

    /// Edits tablet `cell-uid` (panics if absent: a test bug).
    pub fn edit(mut self, cell: &str, uid: u32, f: impl FnOnce(&mut TabletState)) -> Self {
        let alias = TabletAlias::new(cell, uid);
        let t = self
            .tablets
            .iter_mut()
            .find(|t| t.alias() == &alias)
            .expect("edit() names a tablet added to this builder");
        f(t);
        self
    }

    /// Removes tablet `cell-uid` from the shard (its record was deleted from the topo).
    pub fn remove(mut self, cell: &str, uid: u32) -> Self {
        let alias = TabletAlias::new(cell, uid);
        self.tablets.retain(|t| t.alias() != &alias);
        self
    }

    /// Edits the shard record fields.
    pub fn shard_record(mut self, f: impl FnOnce(&mut ShardState)) -> Self {
        f(&mut self.shard);
        self
    }

    /// Edits the keyspace record.
    pub fn keyspace_record(mut self, f: impl FnOnce(&mut KeyspaceInfo)) -> Self {
        f(&mut self.keyspace);
        self
    }

    /// The shard state alone.
    pub fn build_shard(self) -> (KeyspaceInfo, ShardState) {
        let mut shard = self.shard;
        let mut tablets: Vec<Arc<TabletState>> = self.tablets.into_iter().map(Arc::new).collect();
        tablets.sort_by(|a, b| a.alias().cmp(b.alias()));
        shard.tablets = tablets;
        (self.keyspace, shard)
    }

    /// Adds the keyspace (replacing one of the same name) and the shard to `snapshot`.
    pub fn add_to(self, snapshot: &mut ClusterSnapshot) {
        let (keyspace, shard) = self.build_shard();
        snapshot.put_keyspace(keyspace);
        snapshot.put_shard(shard);
    }

    /// A snapshot holding just this keyspace and shard.
    pub fn build(self) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot::default();
        self.add_to(&mut snapshot);
        snapshot
    }
}

fn base_observation(uid: u32, tablet_type: TabletType) -> Observation {
    Observation {
        server_id: uid,
        server_uuid: server_uuid(uid),
        version: "8.0.36".into(),
        version_comment: "fixture".into(),
        tablet_type,
        read_only: true,
        super_read_only: true,
        log_bin: true,
        log_replica_updates: true,
        binlog_format: "ROW".into(),
        binlog_row_image: "FULL".into(),
        gtid_mode: "ON".into(),
        heartbeat_interval: 1.0,
        replica_net_timeout: 2,
        ..Default::default()
    }
}

/// A healthy cluster of `shards` shards (keyspace `ks`, policy `semi_sync`),
/// each with one primary and `replicas_per_shard` replicas in two cells, for
/// benchmarks.
pub fn large_snapshot(shards: usize, replicas_per_shard: usize, now: Instant) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::default();
    let mut uid = 100u32;
    for s in 0..shards {
        let mut b = ShardBuilder::new("ks", &format!("{s:x}"), "semi_sync", now).primary("zone1", uid);
        uid += 1;
        for r in 0..replicas_per_shard {
            let cell = if r % 2 == 0 { "zone1" } else { "zone2" };
            b = b.replica(cell, uid);
            uid += 1;
        }
        b.add_to(&mut snapshot);
    }
    snapshot
}
