//! Interop with what Vitess writes, on a real etcd: the golden records in
//! `tests/fixtures/topo/` (encoded with the upstream schema, see its
//! MANIFEST.md) are written raw at their Vitess keys, read
//! back with every field, and updated without losing any (byte-compared).
//! Also: a cell on a second etcd cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use integration::etcd::EtcdServer;
use integration::topo_conformance::{GLOBAL_ROOT, next_matching, tablet, test_topo_options};
use prost::Message;
use vtorc::proto::topodata::{CellInfo, Keyspace, Shard, Tablet, TabletAlias, TabletType};
use vtorc::topo::{Topo, TopoEvent};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/topo")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

/// (fixture file, full etcd key) for every topology record.
const RECORDS: &[(&str, &str)] = &[
    ("cellinfo_zone1.bin", "/vitess/global/cells/zone1/CellInfo"),
    ("cellinfo_zone2.bin", "/vitess/global/cells/zone2/CellInfo"),
    (
        "keyspace_commerce.bin",
        "/vitess/global/keyspaces/commerce/Keyspace",
    ),
    (
        "keyspace_customer_none.bin",
        "/vitess/global/keyspaces/customer/Keyspace",
    ),
    (
        "keyspace_commerce_snapshot.bin",
        "/vitess/global/keyspaces/commerce_snapshot/Keyspace",
    ),
    (
        "shard_commerce_0.bin",
        "/vitess/global/keyspaces/commerce/shards/0/Shard",
    ),
    (
        "shard_customer_80-.bin",
        "/vitess/global/keyspaces/customer/shards/80-/Shard",
    ),
    (
        "tablet_zone1_100.bin",
        "/vitess/zone1/tablets/zone1-0000000100/Tablet",
    ),
    (
        "tablet_zone1_101.bin",
        "/vitess/zone1/tablets/zone1-0000000101/Tablet",
    ),
    (
        "tablet_zone2_200.bin",
        "/vitess/zone2/tablets/zone2-0000000200/Tablet",
    ),
    (
        "shardreplication_commerce_0_zone1.bin",
        "/vitess/zone1/keyspaces/commerce/shards/0/ShardReplication",
    ),
];

/// Starts etcd, writes every fixture raw at its key, and points the cells
/// at this etcd (the fixtures name 127.0.0.1:2379, which tests never use)
/// after checking the CellInfo records read back intact.
async fn etcd_with_fixtures() -> (EtcdServer, Topo) {
    let etcd = match EtcdServer::start().await {
        Ok(e) => e,
        Err(e) => panic!("etcd did not start: {e:#}"),
    };
    let mut client = etcd.client().await.expect("client");
    for (file, key) in RECORDS {
        client.put(*key, fixture(file), None).await.expect("raw put");
    }
    let topo = Topo::connect_etcd(&etcd.address(), GLOBAL_ROOT, test_topo_options())
        .await
        .expect("topo");
    for cell in ["zone1", "zone2"] {
        let info = topo.get_cell_info(cell).await.expect("cell info");
        assert_eq!(
            info.value.encode_to_vec(),
            fixture(&format!("cellinfo_{cell}.bin"))
        );
        assert_eq!(info.value.server_address, "127.0.0.1:2379");
        let local = CellInfo {
            server_address: etcd.address(),
            root: info.value.root.clone(),
        };
        topo.global_store()
            .update(
                &topo.global_key(&format!("cells/{cell}/CellInfo")),
                &local.encode_to_vec(),
                Some(info.version),
            )
            .await
            .expect("repoint cell");
    }
    (etcd, topo)
}

async fn raw(topo: &Topo, key: &str) -> Vec<u8> {
    topo.global_store().get(key).await.expect("raw get").value
}

/// Fails the test, saying `what`, unless the record at `key` holds exactly
/// the bytes of fixture file `name` (every field kept, as Vitess wrote it).
async fn assert_bytes_of(topo: &Topo, key: &str, name: &str, what: &str) {
    assert_eq!(raw(topo, key).await, fixture(name), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitess_records_read_back_with_every_field() {
    let (_etcd, topo) = etcd_with_fixtures().await;
    assert_eq!(topo.cells().await.expect("cells"), ["zone1", "zone2"]);
    assert_eq!(
        topo.keyspaces().await.expect("keyspaces"),
        ["commerce", "commerce_snapshot", "customer"]
    );

    for (name, file) in [
        ("commerce", "keyspace_commerce.bin"),
        ("customer", "keyspace_customer_none.bin"),
        ("commerce_snapshot", "keyspace_commerce_snapshot.bin"),
    ] {
        let k = topo.get_keyspace(name).await.expect("keyspace");
        assert_eq!(k.value.encode_to_vec(), fixture(file), "{name} lost fields");
        assert_eq!(k.raw(), fixture(file).as_slice());
    }
    let commerce = topo.get_keyspace("commerce").await.expect("commerce").value;
    assert_eq!(commerce.durability_policy, "semi_sync");
    assert!(vtorc::topo::keyspace_ers_disabled(&commerce));
    assert!(commerce.throttler_config.is_some() && commerce.query_throttler_config.is_some());

    for (ks, shard, file) in [
        ("commerce", "0", "shard_commerce_0.bin"),
        ("customer", "80-", "shard_customer_80-.bin"),
    ] {
        let s = topo.get_shard(ks, shard).await.expect("shard");
        assert_eq!(s.value.encode_to_vec(), fixture(file), "{ks}/{shard} lost fields");
    }
    let s0 = topo.get_shard("commerce", "0").await.expect("shard").value;
    assert_eq!(s0.primary_alias, Some(TabletAlias::new("zone1", 100)));
    assert!(!vtorc::topo::shard_ers_disabled(&s0) && s0.vtorc_state.is_some());
    assert!(vtorc::topo::shard_ers_disabled(
        &topo.get_shard("customer", "80-").await.expect("shard").value
    ));

    for (alias, file) in [
        (TabletAlias::new("zone1", 100), "tablet_zone1_100.bin"),
        (TabletAlias::new("zone1", 101), "tablet_zone1_101.bin"),
        (TabletAlias::new("zone2", 200), "tablet_zone2_200.bin"),
    ] {
        let t = topo.get_tablet(&alias).await.expect("tablet");
        assert_eq!(t.value.encode_to_vec(), fixture(file), "{alias} lost fields");
    }
    let zone1 = topo.tablets_by_cell("zone1").await.expect("zone1");
    assert!(zone1.errors.is_empty(), "{:?}", zone1.errors);
    assert_eq!(
        zone1
            .items
            .iter()
            .map(|t| t.value.encode_to_vec())
            .collect::<Vec<_>>(),
        [fixture("tablet_zone1_100.bin"), fixture("tablet_zone1_101.bin")]
    );
    let sr = topo
        .get_shard_replication("zone1", "commerce", "0")
        .await
        .expect("sr");
    assert_eq!(
        sr.value.encode_to_vec(),
        fixture("shardreplication_commerce_0_zone1.bin")
    );
    let by_shard = topo.tablets_by_shard("commerce", "0").await.expect("by shard");
    assert_eq!(by_shard.items.len(), 2);
    assert!(by_shard.errors.is_empty());
    let shards = topo.shards_of_keyspace("customer").await.expect("shards");
    assert_eq!(shards.items.len(), 1);
    assert_eq!(
        shards.items[0].1.value.encode_to_vec(),
        fixture("shard_customer_80-.bin")
    );

    // The watcher's snapshots carry the same records.
    let mut w = topo.watch();
    let TopoEvent::GlobalResync(g) = next_matching(&mut w, Duration::from_secs(5), |e| {
        matches!(e, TopoEvent::GlobalResync(_))
    })
    .await
    else {
        unreachable!("matched");
    };
    assert_eq!(
        g.keyspaces["commerce"].value.encode_to_vec(),
        fixture("keyspace_commerce.bin")
    );
    assert_eq!(g.shards.len(), 2);
    assert!(g.errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_we_update_keep_every_field() {
    let (_etcd, topo) = etcd_with_fixtures().await;
    let ks_key = "/vitess/global/keyspaces/commerce/Keyspace";

    // Keyspace: flip ERS back on, then off again. Every other byte stays.
    topo.set_keyspace_emergency_reparent_disabled("commerce", false)
        .await
        .expect("enable ERS");
    let mut expected = Keyspace::decode(fixture("keyspace_commerce.bin").as_slice()).expect("decode");
    expected.vtorc_state = Some(vtorc::proto::vtorcdata::Keyspace {
        disable_emergency_reparent: false,
    });
    assert_eq!(raw(&topo, ks_key).await, expected.encode_to_vec());
    topo.set_keyspace_emergency_reparent_disabled("commerce", true)
        .await
        .expect("disable ERS");
    assert_bytes_of(&topo, ks_key, "keyspace_commerce.bin", "keyspace bytes changed").await;

    // Shards: same round trip, including the empty-but-present vtorc_state.
    let s_key = "/vitess/global/keyspaces/customer/shards/80-/Shard";
    topo.set_shard_emergency_reparent_disabled("customer", "80-", false)
        .await
        .expect("enable");
    assert_ne!(raw(&topo, s_key).await, fixture("shard_customer_80-.bin"));
    topo.set_shard_emergency_reparent_disabled("customer", "80-", true)
        .await
        .expect("disable");
    assert_bytes_of(&topo, s_key, "shard_customer_80-.bin", "shard bytes changed").await;
    let s0_key = "/vitess/global/keyspaces/commerce/shards/0/Shard";
    let before = topo.get_shard("commerce", "0").await.expect("shard").version;
    let same = topo
        .set_shard_emergency_reparent_disabled("commerce", "0", false)
        .await
        .expect("no-op");
    assert_eq!(same.version, before, "already enabled: no write");
    topo.set_shard_emergency_reparent_disabled("commerce", "0", true)
        .await
        .expect("disable");
    topo.set_shard_emergency_reparent_disabled("commerce", "0", false)
        .await
        .expect("enable");
    assert_bytes_of(&topo, s0_key, "shard_commerce_0.bin", "`4a 00` must stay").await;

    // Shard fields as the tablet agent changes them.
    let original = Shard::decode(fixture("shard_commerce_0.bin").as_slice()).expect("decode");
    topo.update_shard_fields("commerce", "0", |s| {
        s.primary_alias = Some(TabletAlias::new("zone1", 101));
        Ok(())
    })
    .await
    .expect("promote 101");
    let now = Shard::decode(raw(&topo, s0_key).await.as_slice()).expect("decode");
    assert_eq!(
        Shard {
            primary_alias: original.primary_alias.clone(),
            ..now.clone()
        },
        original
    );
    topo.update_shard_fields("commerce", "0", |s| {
        s.primary_alias = Some(TabletAlias::new("zone1", 100));
        Ok(())
    })
    .await
    .expect("back to 100");
    assert_bytes_of(&topo, s0_key, "shard_commerce_0.bin", "shard bytes changed").await;

    // Tablet: change and revert a field; bytes come back identical.
    let alias = TabletAlias::new("zone1", 100);
    let t_key = "/vitess/zone1/tablets/zone1-0000000100/Tablet";
    topo.update_tablet_fields(&alias, |t| {
        t.r#type = TabletType::Replica as i32;
        Ok(())
    })
    .await
    .expect("demote");
    topo.update_tablet_fields(&alias, |t| {
        t.r#type = TabletType::Primary as i32;
        Ok(())
    })
    .await
    .expect("promote");
    assert_bytes_of(&topo, t_key, "tablet_zone1_100.bin", "tablet bytes changed").await;

    // ShardReplication: adding a present node writes nothing; add + remove restores.
    let sr_key = "/vitess/zone1/keyspaces/commerce/shards/0/ShardReplication";
    let v = topo
        .get_shard_replication("zone1", "commerce", "0")
        .await
        .expect("sr")
        .version;
    let same = topo
        .add_shard_replication_node("zone1", "commerce", "0", &TabletAlias::new("zone1", 101))
        .await
        .expect("present");
    assert_eq!(same.version, v);
    topo.add_shard_replication_node("zone1", "commerce", "0", &TabletAlias::new("zone1", 102))
        .await
        .expect("add");
    topo.remove_shard_replication_node("zone1", "commerce", "0", &TabletAlias::new("zone1", 102))
        .await
        .expect("remove");
    let name = "shardreplication_commerce_0_zone1.bin";
    assert_bytes_of(&topo, sr_key, name, "shard replication bytes changed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_unknown_to_our_schema_survive_an_update() {
    let (_etcd, topo) = etcd_with_fixtures().await;
    // A newer Vitess added field 99 (varint 7) to Tablet.
    let mut newer = fixture("tablet_zone1_101.bin");
    newer.extend_from_slice(&[0x98, 0x06, 0x07]);
    let key = "/vitess/zone1/tablets/zone1-0000000101/Tablet";
    topo.global_store()
        .update(key, &newer, None)
        .await
        .expect("raw put");
    let alias = TabletAlias::new("zone1", 101);
    let read = topo.get_tablet(&alias).await.expect("read");
    assert_eq!(
        read.value.encode_to_vec(),
        fixture("tablet_zone1_101.bin"),
        "prost sees the known fields"
    );
    topo.update_tablet_fields(&alias, |t| {
        t.hostname = "renamed".into();
        Ok(())
    })
    .await
    .expect("update");
    let written = raw(&topo, key).await;
    let mut expected = Tablet::decode(fixture("tablet_zone1_101.bin").as_slice()).expect("decode");
    expected.hostname = "renamed".into();
    let mut expected = expected.encode_to_vec();
    expected.extend_from_slice(&[0x98, 0x06, 0x07]);
    assert_eq!(written, expected, "field 99 was dropped");
    // update_tablet with a Versioned read from the store keeps it too.
    let mut again = topo.get_tablet(&alias).await.expect("read");
    again.value.hostname = Tablet::decode(fixture("tablet_zone1_101.bin").as_slice())
        .expect("decode")
        .hostname;
    topo.update_tablet(&again).await.expect("update");
    assert_eq!(raw(&topo, key).await, newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_on_another_etcd_cluster_is_reached_through_its_cell_info() {
    let (global, other) = tokio::join!(EtcdServer::start(), EtcdServer::start());
    let global = global.unwrap_or_else(|e| panic!("global etcd did not start: {e:#}"));
    let other = other.unwrap_or_else(|e| panic!("second etcd did not start: {e:#}"));
    let topo = Topo::connect_etcd(&global.address(), GLOBAL_ROOT, test_topo_options())
        .await
        .expect("topo");
    for (cell, address) in [("zone1", global.address()), ("zone2", other.address())] {
        let info = CellInfo {
            server_address: address,
            root: format!("/vitess/{cell}"),
        };
        topo.create_cell_info(cell, &info).await.expect("cell");
    }
    topo.create_tablet(&tablet("zone1", 1, "ks", "0", TabletType::Primary))
        .await
        .expect("zone1 tablet");
    topo.create_tablet(&tablet("zone2", 2, "ks", "0", TabletType::Replica))
        .await
        .expect("zone2 tablet");

    let mut other_client = other.client().await.expect("client");
    let on_other = other_client
        .get("/vitess/zone2/tablets/zone2-0000000002/Tablet", None)
        .await
        .expect("get");
    assert_eq!(
        on_other.kvs().len(),
        1,
        "zone2's tablet lives on the second cluster"
    );
    let mut global_client = global.client().await.expect("client");
    let on_global = global_client
        .get(
            "/vitess/zone2/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    assert!(
        on_global.kvs().is_empty(),
        "nothing of zone2 on the global cluster"
    );

    let by_shard = topo.tablets_by_shard("ks", "0").await.expect("by shard");
    assert_eq!(by_shard.items.len(), 2);
    let a = topo.cell_store("zone2").await.expect("zone2");
    let b = topo.cell_store("zone2").await.expect("zone2 again");
    assert!(Arc::ptr_eq(&a.store, &b.store), "connections are cached");

    // The watcher follows the second cluster too.
    let mut w = topo.watch();
    next_matching(
        &mut w,
        Duration::from_secs(5),
        |e| matches!(e, TopoEvent::CellResync(c) if c.cell == "zone2" && c.tablets.len() == 1),
    )
    .await;
    topo.create_tablet(&tablet("zone2", 3, "ks", "0", TabletType::Replica))
        .await
        .expect("tablet");
    next_matching(&mut w, Duration::from_secs(1), |e| {
        matches!(e, TopoEvent::TabletChanged { cell, tablet } if cell == "zone2" && tablet.value.alias == Some(TabletAlias::new("zone2", 3)))
    })
    .await;

    // If the cell's cluster goes away, its reads fail; the rest keeps working.
    drop(w);
    drop(other);
    let err = topo.tablets_by_cell("zone2").await.expect_err("zone2 is gone");
    assert!(err.is_retryable(), "{err}");
    let by_shard = topo.tablets_by_shard("ks", "0").await.expect("partial result");
    assert_eq!(by_shard.items.len(), 1);
    assert!(!by_shard.errors.is_empty());
    assert!(matches!(topo.tablets_by_cell("zone1").await, Ok(l) if l.items.len() == 1));
}
