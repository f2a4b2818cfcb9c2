//! Golden records (`tests/fixtures/topo/`, see its MANIFEST.md): each `.bin`
//! was encoded by protoc with the upstream Vitess schema from the `.txtpb`
//! beside it (`scripts/gen-topo-fixtures.sh`). They decode with our protos,
//! hold the values written in the text files, and re-encode to the same
//! bytes (so nothing another component wrote is lost when we write back).
//! A coverage test walks the wire bytes with our descriptor set: every field
//! of every message type the records use is set at least once, and no field
//! is unknown to our schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use vtorc::proto::{query, replicationdata, topodata, vtctldata};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/topo")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}); run scripts/gen-topo-fixtures.sh",
            path.display()
        )
    })
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

/// Topology records: (file, Vitess message type).
const TOPOLOGY: &[(&str, &str)] = &[
    ("cellinfo_zone1.bin", "topodata.CellInfo"),
    ("cellinfo_zone2.bin", "topodata.CellInfo"),
    ("keyspace_commerce.bin", "topodata.Keyspace"),
    ("keyspace_customer_none.bin", "topodata.Keyspace"),
    ("keyspace_commerce_snapshot.bin", "topodata.Keyspace"),
    ("shard_commerce_0.bin", "topodata.Shard"),
    ("shard_customer_80-.bin", "topodata.Shard"),
    ("tablet_zone1_100.bin", "topodata.Tablet"),
    ("tablet_zone1_101.bin", "topodata.Tablet"),
    ("tablet_zone2_200.bin", "topodata.Tablet"),
    (
        "shardreplication_commerce_0_zone1.bin",
        "topodata.ShardReplication",
    ),
    ("srvkeyspace_customer_zone1.bin", "topodata.SrvKeyspace"),
];

/// RPC messages: (file, Vitess message type).
const RPC: &[(&str, &str)] = &[
    ("prs_request.bin", "vtctldata.PlannedReparentShardRequest"),
    ("ers_request.bin", "vtctldata.EmergencyReparentShardRequest"),
    ("fullstatus.bin", "replicationdata.FullStatus"),
    ("streamhealth.bin", "query.StreamHealthResponse"),
];

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
    round_trip::<topodata::SrvKeyspace>("srvkeyspace_customer_zone1.bin");
    round_trip::<vtctldata::PlannedReparentShardRequest>("prs_request.bin");
    round_trip::<vtctldata::EmergencyReparentShardRequest>("ers_request.bin");
    round_trip::<replicationdata::FullStatus>("fullstatus.bin");
    round_trip::<query::StreamHealthResponse>("streamhealth.bin");
}

#[test]
fn every_text_file_has_its_record_and_is_listed() {
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(fixture_dir()).expect("tests/fixtures/topo") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(stem) = name.strip_suffix(".txtpb") {
            assert!(
                fixture_dir().join(format!("{stem}.bin")).is_file(),
                "{name} has no .bin"
            );
            on_disk.insert(format!("{stem}.bin"));
        } else if let Some(stem) = name.strip_suffix(".bin") {
            assert!(
                fixture_dir().join(format!("{stem}.txtpb")).is_file(),
                "{name} has no .txtpb"
            );
        }
    }
    let listed: BTreeSet<String> = TOPOLOGY.iter().chain(RPC).map(|(f, _)| f.to_string()).collect();
    assert_eq!(on_disk, listed, "fixtures on disk vs. those this test checks");
    // The header of each text file names the type the test decodes it as.
    for (file, ty) in TOPOLOGY.iter().chain(RPC) {
        let txt = std::fs::read_to_string(fixture_dir().join(file.replace(".bin", ".txtpb"))).expect("txtpb");
        assert!(
            txt.contains(&format!("# proto-message: {ty}\n")),
            "{file}: header does not name {ty}"
        );
    }
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
    assert_eq!(k.keyspace_type(), topodata::KeyspaceType::Normal);
    assert_eq!(k.vtorc_state.map(|s| s.disable_emergency_reparent), Some(true));
    let t = k.throttler_config.expect("throttler_config");
    assert!(t.enabled && t.check_as_check_self);
    assert_eq!(t.threshold, 2.5);
    let keys: Vec<&str> = t.metric_thresholds.keys().map(String::as_str).collect();
    assert_eq!(keys, ["history_list_length", "lag", "loadavg"]);
    assert_eq!(t.metric_thresholds.get("loadavg"), Some(&0.875));
    assert_eq!(t.throttled_apps.len(), 3);
    assert_eq!(t.throttled_apps.get("analytics").map(|a| a.ratio), Some(0.5));
    assert!(t.throttled_apps["vreplication"].exempt);
    assert_eq!(
        t.app_checked_metrics["analytics"].names,
        ["history_list_length", "loadavg"]
    );
    let q = k.query_throttler_config.expect("query_throttler_config");
    assert!(q.enabled && q.dry_run);
    let rules = &q.tablet_strategy_config.expect("tablet strategy").tablet_rules;
    assert_eq!(rules.keys().collect::<Vec<_>>(), ["PRIMARY", "REPLICA"]);
    let update = &rules["PRIMARY"].statement_rules["UPDATE"].metric_rules;
    assert_eq!(update.keys().collect::<Vec<_>>(), ["lag", "threads_running"]);
    let delete = &rules["PRIMARY"].statement_rules["DELETE"].metric_rules["lag"].thresholds;
    assert_eq!(
        delete.iter().map(|t| (t.above, t.throttle)).collect::<Vec<_>>(),
        [(5.0, 25), (20.0, 90)]
    );

    let none: topodata::Keyspace = round_trip("keyspace_customer_none.bin");
    assert_eq!(
        none,
        topodata::Keyspace {
            durability_policy: "none".into(),
            ..Default::default()
        }
    );

    let snap: topodata::Keyspace = round_trip("keyspace_commerce_snapshot.bin");
    assert_eq!(snap.keyspace_type(), topodata::KeyspaceType::Snapshot);
    assert_eq!(snap.base_keyspace, "commerce");
    assert_eq!(
        snap.snapshot_time.map(|t| (t.seconds, t.nanoseconds)),
        Some((1_767_139_200, 900))
    );
}

#[test]
fn shard_distinguishes_empty_vtorc_state_from_none() {
    let bytes = fixture("shard_commerce_0.bin");
    assert!(
        bytes.windows(2).any(|w| w == [0x4a, 0x00]),
        "empty vtorc_state is on the wire"
    );
    let s: topodata::Shard = round_trip("shard_commerce_0.bin");
    let primary = s.primary_alias.as_ref().expect("primary alias");
    assert_eq!((primary.cell.as_str(), primary.uid), ("zone1", 100));
    assert!(s.is_primary_serving);
    assert_eq!(
        s.primary_term_start_time.as_ref().map(|t| t.nanoseconds),
        Some(314_159_265)
    );
    assert_eq!(s.vtorc_state.map(|v| v.disable_emergency_reparent), Some(false));
    assert!(s.key_range.is_none());

    let s: topodata::Shard = round_trip("shard_customer_80-.bin");
    assert_eq!(s.key_range.as_ref().map(|k| k.start.clone()), Some(vec![0x80]));
    assert!(!s.is_primary_serving);
    assert_eq!(s.source_shards.len(), 1);
    assert_eq!(
        s.source_shards[0].key_range.as_ref().map(|k| k.end.clone()),
        Some(vec![0xe0])
    );
    assert_eq!(s.source_shards[0].tables, ["customer", "invoice", "payment"]);
    assert_eq!(s.tablet_controls.len(), 2);
    assert!(s.tablet_controls[0].frozen && !s.tablet_controls[0].allow_reads);
    assert_eq!(s.tablet_controls[1].tablet_type(), topodata::TabletType::Rdonly);
    assert_eq!(s.tablet_controls[1].denied_tables, ["customer", "payment"]);
    assert_eq!(s.vtorc_state.map(|v| v.disable_emergency_reparent), Some(true));
}

#[test]
fn tablets_hold_every_field() {
    let t: topodata::Tablet = round_trip("tablet_zone1_100.bin");
    assert_eq!(t.r#type(), topodata::TabletType::Primary);
    assert_eq!(t.hostname, "vttablet-100.zone1.svc.test");
    assert_eq!(t.port_map.keys().collect::<Vec<_>>(), ["grpc", "metrics", "vt"]);
    assert_eq!(t.port_map.get("grpc"), Some(&16100));
    assert_eq!(t.tags.get("rack").map(String::as_str), Some("r07"));
    assert_eq!(t.tags.len(), 3);
    assert_eq!(t.mysql_port, 3306);
    assert_eq!(t.default_conn_collation, 255);
    assert!(t.primary_term_start_time.is_some() && t.tablet_start_time.is_some());
    assert!(t.key_range.is_none() && t.tablet_shutdown_time.is_none());

    let t: topodata::Tablet = round_trip("tablet_zone1_101.bin");
    assert_eq!(t.r#type(), topodata::TabletType::Replica);
    assert_eq!(t.db_name_override, "vt_commerce");
    assert!(t.tags.is_empty());

    let t: topodata::Tablet = round_trip("tablet_zone2_200.bin");
    assert_eq!(t.r#type(), topodata::TabletType::Rdonly);
    assert_eq!(t.key_range.as_ref().map(|k| k.start.clone()), Some(vec![0x80]));
    assert_eq!(t.tablet_shutdown_time.as_ref().map(|t| t.nanoseconds), Some(5));
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
fn srv_keyspace_holds_partitions_and_throttling() {
    let k: topodata::SrvKeyspace = round_trip("srvkeyspace_customer_zone1.bin");
    let served: Vec<_> = k.partitions.iter().map(|p| p.served_type()).collect();
    use topodata::TabletType::{Primary, Rdonly, Replica};
    assert_eq!(served, [Primary, Replica, Rdonly]);
    let names: Vec<&str> = k.partitions[0]
        .shard_references
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["-80", "80-"]);
    let control = &k.partitions[1].shard_tablet_controls[0];
    assert!(control.query_service_disabled && control.name == "80-");
    let t = k.throttler_config.expect("throttler_config");
    assert_eq!(
        t.throttled_apps.keys().collect::<Vec<_>>(),
        ["online-ddl", "vplayer"]
    );
    let q = k.query_throttler_config.expect("query_throttler_config");
    let rules = q.tablet_strategy_config.expect("tablet strategy").tablet_rules;
    assert_eq!(rules.keys().collect::<Vec<_>>(), ["PRIMARY", "RDONLY"]);
}

#[test]
fn reparent_requests_hold_every_option() {
    let p: vtctldata::PlannedReparentShardRequest = round_trip("prs_request.bin");
    assert_eq!(p.new_primary.as_ref().map(|a| a.uid), Some(101));
    assert_eq!(p.avoid_primary.as_ref().map(|a| a.uid), Some(100));
    assert_eq!(
        p.wait_replicas_timeout.as_ref().map(|d| (d.seconds, d.nanos)),
        Some((20, 750_000_000))
    );
    assert_eq!(
        p.tolerable_replication_lag.as_ref().map(|d| (d.seconds, d.nanos)),
        Some((2, 5000))
    );
    assert!(p.allow_cross_cell_promotion);
    assert_eq!(p.expected_primary.as_ref().map(|a| a.uid), Some(100));

    let e: vtctldata::EmergencyReparentShardRequest = round_trip("ers_request.bin");
    let ignored: Vec<u32> = e.ignore_replicas.iter().map(|a| a.uid).collect();
    assert_eq!(ignored, vec![200, 102]);
    assert_eq!(
        e.wait_replicas_timeout.as_ref().map(|d| (d.seconds, d.nanos)),
        Some((45, 3))
    );
    assert!(e.prevent_cross_cell_promotion && e.wait_for_all_tablets);
}

#[test]
fn full_status_and_stream_health_decode() {
    let f: replicationdata::FullStatus = round_trip("fullstatus.bin");
    assert_eq!(f.server_id, 1101);
    assert_eq!(f.semi_sync_primary_timeout, 1 << 62);
    assert_eq!(f.tablet_type(), topodata::TabletType::Replica);
    let rs = f.replication_status.expect("replication status");
    assert_eq!((rs.io_state, rs.sql_state), (2, 1));
    assert_eq!(rs.source_port, 3306);
    assert_eq!(rs.sql_delay, 30);
    assert_eq!(
        f.replication_configuration.map(|c| c.heartbeat_interval),
        Some(0.25)
    );
    assert!(f.disk_stalled && f.semi_sync_blocked);

    let h: query::StreamHealthResponse = round_trip("streamhealth.bin");
    assert!(h.serving);
    assert_eq!(h.primary_term_start_timestamp, 1_767_000_000);
    assert_eq!(
        h.target.map(|t| t.tablet_type()),
        Some(topodata::TabletType::Primary)
    );
    let stats = h.realtime_stats.expect("realtime stats");
    assert_eq!((stats.cpu_usage, stats.qps), (0.625, 300.25));
    assert_eq!(stats.table_schema_changed, ["customer", "invoice"]);
}

// ------------------------------------------------------------- coverage

/// Our message descriptors by full name (".pkg.Msg"), nested ones included.
fn descriptors() -> BTreeMap<String, DescriptorProto> {
    fn add(m: &DescriptorProto, scope: &str, out: &mut BTreeMap<String, DescriptorProto>) {
        let full = format!("{scope}.{}", m.name());
        for n in &m.nested_type {
            add(n, &full, out);
        }
        out.insert(full, m.clone());
    }
    let set = FileDescriptorSet::decode(vtorc::proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = BTreeMap::new();
    for file in &set.file {
        for m in &file.message_type {
            add(m, &format!(".{}", file.package()), &mut out);
        }
    }
    out
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).expect("truncated varint");
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes")
}

/// Walks one encoded message of type `ty`, recording the (type, field number)
/// pairs present. Fails on a field our schema lacks and on fields out of
/// ascending number order (the order Vitess and protoc write).
fn walk(
    types: &BTreeMap<String, DescriptorProto>,
    ty: &str,
    bytes: &[u8],
    seen: &mut BTreeSet<(String, i32)>,
) {
    let desc = types.get(ty).unwrap_or_else(|| panic!("our schema lacks {ty}"));
    let (mut at, mut last) = (0, 0);
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let number = i32::try_from(key >> 3).expect("field number");
        assert!(number >= last, "{ty}: field {number} after field {last}");
        last = number;
        let field = desc
            .field
            .iter()
            .find(|f| f.number() == number)
            .unwrap_or_else(|| panic!("{ty}: field {number} is unknown to our schema (prost would drop it)"));
        match key & 7 {
            0 => {
                varint(bytes, &mut at);
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)).expect("length");
                let body = bytes.get(at..at + len).expect("truncated field");
                at += len;
                if field.r#type() == Type::Message {
                    walk(types, field.type_name(), body, seen);
                }
            }
            other => panic!("{ty}: wire type {other} in field {number}"),
        }
        seen.insert((ty.to_string(), number));
    }
    assert_eq!(at, bytes.len(), "{ty}: truncated");
}

/// The message types reachable from `root` (map entries included).
fn reachable(types: &BTreeMap<String, DescriptorProto>, root: &str, out: &mut BTreeSet<String>) {
    if !out.insert(root.to_string()) {
        return;
    }
    for f in &types[root].field {
        if f.r#type() == Type::Message {
            reachable(types, f.type_name(), out);
        }
    }
}

/// Fields of the reachable types that none of `files` sets: (type, "field (number)").
fn unset_fields(types: &BTreeMap<String, DescriptorProto>, files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut wanted = BTreeSet::new();
    for (file, ty) in files {
        let ty = format!(".{ty}");
        walk(types, &ty, &fixture(file), &mut seen);
        reachable(types, &ty, &mut wanted);
    }
    let mut unset = Vec::new();
    for ty in &wanted {
        for f in &types[ty].field {
            if !seen.contains(&(ty.clone(), f.number())) {
                unset.push((ty[1..].to_string(), format!("{} ({})", f.name(), f.number())));
            }
        }
    }
    unset
}

fn list(unset: &[(String, String)]) -> String {
    unset
        .iter()
        .map(|(ty, f)| format!("  {ty}.{f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn topology_records_set_every_field_of_every_type_they_use() {
    let types = descriptors();
    let unset = unset_fields(&types, TOPOLOGY);
    assert!(unset.is_empty(), "no topology fixture sets:\n{}", list(&unset));
    // Every field of Tablet itself is set in one of the three tablet files.
    let tablets: Vec<_> = TOPOLOGY
        .iter()
        .copied()
        .filter(|(f, _)| f.starts_with("tablet_"))
        .collect();
    let mut unset = unset_fields(&types, &tablets);
    unset.retain(|(ty, _)| ty == "topodata.Tablet");
    assert!(unset.is_empty(), "no tablet fixture sets:\n{}", list(&unset));
}

#[test]
fn rpc_messages_set_every_field_at_every_level() {
    let types = descriptors();
    for one in RPC {
        let unset = unset_fields(&types, std::slice::from_ref(one));
        assert!(unset.is_empty(), "{} does not set:\n{}", one.0, list(&unset));
    }
}
