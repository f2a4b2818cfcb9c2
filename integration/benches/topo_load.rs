//! Time and memory to load a topology of 10,000 tablets from a real etcd.
//!
//! Run: `cargo bench -p integration --bench topo_load` (release build).
//! `VTORC_BENCH_TABLETS` changes the count, `VTORC_BENCH_RUNS` the number
//! of timed runs (median reported).
//!
//! Measured: (1) `Topo::tablets_by_cell` (one prefix range + decode), (2)
//! the watcher's first full load (`TopoWatcher` until the `CellResync` of
//! the cell arrives), and (3) memory: process RSS growth while the loaded
//! tablets are held, and the peak RSS growth during a load (VmHWM, reset
//! through `/proc/self/clear_refs`).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Txn, TxnOp};
use integration::etcd::EtcdServer;
use prost::Message;
use vtorc::proto::topodata::{CellInfo, Tablet, TabletAlias, TabletType};
use vtorc::proto::vttime;
use vtorc::topo::{Topo, TopoEvent, TopoOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tablet shaped like a real vttablet record (~200 bytes).
fn tablet(uid: u32) -> Tablet {
    let shard = format!("{:02x}-{:02x}", (uid / 100) % 256, (uid / 100 + 1) % 256);
    Tablet {
        alias: Some(TabletAlias::new("zone1", uid)),
        hostname: format!("tablet-{uid}.zone1.example.internal"),
        port_map: BTreeMap::from([
            ("grpc".to_string(), 16000 + (uid % 1000) as i32),
            ("vt".to_string(), 15000),
        ]),
        keyspace: format!("ks{}", uid % 10),
        shard,
        r#type: if uid.is_multiple_of(3) {
            TabletType::Primary
        } else {
            TabletType::Replica
        } as i32,
        tags: BTreeMap::from([("rack".to_string(), format!("r{}", uid % 7))]),
        mysql_hostname: format!("mysql-{uid}.zone1.example.internal"),
        mysql_port: 17000 + (uid % 1000) as i32,
        primary_term_start_time: Some(vttime::Time {
            seconds: 1_764_000_000,
            nanoseconds: 123,
        }),
        default_conn_collation: 255,
        tablet_start_time: Some(vttime::Time {
            seconds: 1_763_999_000,
            nanoseconds: 5,
        }),
        ..Default::default()
    }
}

/// (VmRSS, VmHWM) of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Prints the median, minimum and maximum of `times` (at least one run),
/// one line headed by `what`.
fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let runs = times.len();
    println!(
        "{what}: median {} (min {}, max {}) over {runs} runs",
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[runs - 1])
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count = env_usize("VTORC_BENCH_TABLETS", 10_000);
    let runs = env_usize("VTORC_BENCH_RUNS", 7).max(1);
    let etcd = EtcdServer::start().await.context("etcd did not start")?;
    let mut client = etcd.client().await?;
    let info = CellInfo {
        server_address: etcd.address(),
        root: "/vitess/zone1".into(),
    };
    client
        .put("/vitess/global/cells/zone1/CellInfo", info.encode_to_vec(), None)
        .await?;
    let write = Instant::now();
    let mut bytes = 0usize;
    let uids: Vec<u32> = (1..=u32::try_from(count)?).collect();
    for chunk in uids.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|uid| {
                let value = tablet(*uid).encode_to_vec();
                bytes += value.len();
                TxnOp::put(
                    format!("/vitess/zone1/tablets/zone1-{uid:010}/Tablet"),
                    value,
                    None,
                )
            })
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    println!(
        "wrote {count} tablets ({:.0} bytes each, {:.1} MB) in {}",
        bytes as f64 / count as f64,
        bytes as f64 / 1e6,
        ms(write.elapsed())
    );

    let topo = Topo::connect_etcd(&etcd.address(), "/vitess/global", TopoOptions::default()).await?;
    topo.cell_store("zone1").await?; // connect once, outside the timings

    // Memory: first load in this process.
    let (before, _) = rss_kib();
    reset_peak();
    let loaded = topo.tablets_by_cell("zone1").await?;
    let (after, peak) = rss_kib();
    anyhow::ensure!(
        loaded.items.len() == count && loaded.errors.is_empty(),
        "load incomplete"
    );
    println!(
        "memory: {:.1} MB retained while the {count} loaded tablets are held, {:.1} MB peak growth during the load",
        after.saturating_sub(before) as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    drop(loaded);

    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let loaded = topo.tablets_by_cell("zone1").await?;
        times.push(start.elapsed());
        anyhow::ensure!(loaded.items.len() == count, "load incomplete");
    }
    report("tablets_by_cell", times);

    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut watcher = topo.watch();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), watcher.next()).await {
                Ok(Some(TopoEvent::CellResync(c))) if c.cell == "zone1" => {
                    anyhow::ensure!(c.tablets.len() == count, "snapshot incomplete");
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("watcher stopped"),
                Err(_) => anyhow::bail!("no snapshot within 60 s"),
            }
        }
        times.push(start.elapsed());
    }
    report("watcher first full load (global + cell snapshot)", times);
    Ok(())
}
