//! Records encoded by the upstream Vitess schema (`../shared/fixtures/topo`)
//! decode with our protos, hold the documented values, and re-encode to the
//! same bytes (so nothing another component wrote is lost when we write back).

use std::path::PathBuf;

use prost::Message;
use vtorc::proto::{query, replicationdata, topodata, vtctldata};

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("VTORC_TOPO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/topo"));
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

/// Decodes a fixture as `M` and checks that re-encoding gives the same bytes.
fn round_trip<M: Message + Default>(name: &str) -> M {
    let bytes = fixture(name);
    let msg = M::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
    assert_eq!(
        msg.encode_to_vec(),
        bytes,
        "{name}: re-encoding changed the bytes"
    );
    msg
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    round_trip::<topodata::CellInfo>("cellinfo_zone1.bin");
    round_trip::<topodata::CellInfo>("cellinfo_zone2.bin");
    round_trip::<topodata::Keyspace>("keyspace_commerce.bin");
    round_trip::<topodata::Keyspace>("keyspace_customer_none.bin");
    round_trip::<topodata::Keyspace>("keyspace_commerce_snapshot.bin");
    round_trip::<topodata::Shard>("shard_commerce_0.bin");
    round_trip::<topodata::Shard>("shard_customer_80-.bin");
    round_trip::<topodata::Tablet>("tablet_zone1_100.bin");
    round_trip::<topodata::Tablet>("tablet_zone1_101.bin");
    round_trip::<topodata::Tablet>("tablet_zone2_200.bin");
    round_trip::<topodata::ShardReplication>("shardreplication_commerce_0_zone1.bin");
    round_trip::<vtctldata::PlannedReparentShardRequest>("prs_request.bin");
    round_trip::<vtctldata::EmergencyReparentShardRequest>("ers_request.bin");
    round_trip::<replicationdata::FullStatus>("fullstatus.bin");
    round_trip::<query::StreamHealthResponse>("streamhealth.bin");
}

#[test]
fn cell_info_holds_address_and_root() {
    let c: topodata::CellInfo = round_trip("cellinfo_zone2.bin");
    assert_eq!(c.server_address, "127.0.0.1:2379");
    assert_eq!(c.root, "/vitess/zone2");
}

#[test]
fn keyspace_keeps_throttler_and_vtorc_state() {
    let k: topodata::Keyspace = round_trip("keyspace_commerce.bin");
    assert_eq!(k.durability_policy, "semi_sync");
    assert_eq!(k.sidecar_db_name, "_vt");
    assert_eq!(k.vtorc_state.map(|s| s.disable_emergency_reparent), Some(true));
    let t = k.throttler_config.expect("throttler_config");
    assert!(t.enabled);
    assert_eq!(t.metric_thresholds.get("threads_running"), Some(&64.0));
    assert_eq!(t.throttled_apps.get("online-ddl").map(|a| a.ratio), Some(0.75));
    assert!(k.query_throttler_config.is_some());

    let snap: topodata::Keyspace = round_trip("keyspace_commerce_snapshot.bin");
    assert_eq!(snap.keyspace_type(), topodata::KeyspaceType::Snapshot);
    assert_eq!(snap.base_keyspace, "commerce");
}

#[test]
fn shard_distinguishes_empty_vtorc_state_from_none() {
    let s: topodata::Shard = round_trip("shard_commerce_0.bin");
    let primary = s.primary_alias.as_ref().expect("primary alias");
    assert_eq!((primary.cell.as_str(), primary.uid), ("zone1", 100));
    assert!(s.is_primary_serving);
    assert_eq!(
        s.primary_term_start_time.as_ref().map(|t| t.nanoseconds),
        Some(123_456_789)
    );
    assert_eq!(s.vtorc_state.map(|v| v.disable_emergency_reparent), Some(false));
    assert!(s.key_range.is_none());

    let s: topodata::Shard = round_trip("shard_customer_80-.bin");
    assert_eq!(s.key_range.as_ref().map(|k| k.start.clone()), Some(vec![0x80]));
    assert_eq!(s.source_shards.len(), 1);
    assert_eq!(s.tablet_controls[0].denied_tables, vec!["customer", "corder"]);
    assert_eq!(s.vtorc_state.map(|v| v.disable_emergency_reparent), Some(true));
}

#[test]
fn tablets_hold_every_field() {
    let t: topodata::Tablet = round_trip("tablet_zone1_100.bin");
    assert_eq!(t.r#type(), topodata::TabletType::Primary);
    assert_eq!(t.port_map.get("grpc"), Some(&16100));
    assert_eq!(t.tags.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(t.mysql_port, 17100);
    assert_eq!(t.default_conn_collation, 255);
    assert!(t.primary_term_start_time.is_some() && t.tablet_start_time.is_some());

    let t: topodata::Tablet = round_trip("tablet_zone2_200.bin");
    assert_eq!(t.r#type(), topodata::TabletType::Rdonly);
    assert_eq!(t.key_range.as_ref().map(|k| k.start.clone()), Some(vec![0x80]));
    assert_eq!(t.tablet_shutdown_time.as_ref().map(|t| t.nanoseconds), Some(42));
    assert!(t.tablet_start_time.is_none());
}

#[test]
fn shard_replication_keeps_node_order() {
    let r: topodata::ShardReplication = round_trip("shardreplication_commerce_0_zone1.bin");
    let uids: Vec<u32> = r
        .nodes
        .iter()
        .filter_map(|n| n.tablet_alias.as_ref())
        .map(|a| a.uid)
        .collect();
    assert_eq!(uids, vec![100, 101]);
}

#[test]
fn reparent_requests_hold_every_option() {
    let p: vtctldata::PlannedReparentShardRequest = round_trip("prs_request.bin");
    assert_eq!(p.new_primary.as_ref().map(|a| a.uid), Some(101));
    assert_eq!(p.avoid_primary.as_ref().map(|a| a.uid), Some(100));
    assert_eq!(
        p.wait_replicas_timeout.as_ref().map(|d| (d.seconds, d.nanos)),
        Some((15, 500_000_000))
    );
    assert!(p.allow_cross_cell_promotion);
    assert_eq!(p.expected_primary.as_ref().map(|a| a.uid), Some(100));

    let e: vtctldata::EmergencyReparentShardRequest = round_trip("ers_request.bin");
    let ignored: Vec<u32> = e.ignore_replicas.iter().map(|a| a.uid).collect();
    assert_eq!(ignored, vec![200, 102]);
    assert!(e.prevent_cross_cell_promotion && e.wait_for_all_tablets);
}

#[test]
fn full_status_and_stream_health_decode() {
    let f: replicationdata::FullStatus = round_trip("fullstatus.bin");
    assert_eq!(f.server_id, 101);
    assert_eq!(f.semi_sync_primary_timeout, 1_000_000_000_000_000_000);
    let rs = f.replication_status.expect("replication status");
    assert_eq!(rs.io_state, 3);
    assert_eq!(rs.source_port, 17100);
    assert_eq!(
        f.replication_configuration.map(|c| c.heartbeat_interval),
        Some(1.5)
    );
    assert!(f.disk_stalled && f.semi_sync_blocked);

    let h: query::StreamHealthResponse = round_trip("streamhealth.bin");
    assert!(h.serving);
    assert_eq!(h.primary_term_start_timestamp, 1_764_000_000);
    assert_eq!(h.realtime_stats.map(|s| s.qps), Some(125.5));
}
