//! Failover benchmark: `kill -9` of the primary's MariaDB → a new primary
//! named by the shard record and accepting writes, with vtorc (discovery +
//! recovery engine, Go VTOrc's default intervals) doing the failover.
//!
//! ```text
//! cargo bench -p integration --bench failover -- [--runs 20]
//! ```
//!
//! One 3-tablet `semi_sync` shard (MariaDB + in-process tablet agents,
//! etcd) and one vtorc in this process, started once. Each run:
//!
//! 1. waits until vtorc sees the shard healthy and a write on the primary
//!    succeeds;
//! 2. `kill -9` of the primary's MariaDB (t0);
//! 3. polls every 2 ms: the shard record's primary, and an `INSERT` (as the
//!    application user, semi-sync acknowledged) on the MariaDB of the
//!    tablet it names; t1 = first successful insert on a new primary;
//! 4. reads vtorc's audit: detection (first detection of the dead primary),
//!    and the ERS's own duration;
//! 5. brings the killed server back as a replica for the next run: restored
//!    from a consistent copy of the new primary (`integration::restore`),
//!    vtorc reconciles its stale record.
//!
//! Reported: median, p95 and max of t1 − t0 over the runs, plus the
//! kill → detection and ERS-duration medians (from the audit's wall-clock
//! times, millisecond resolution).

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

#[path = "../tests/recovery_support/mod.rs"]
mod recovery_support;

use std::time::Duration;

use anyhow::Context;
use integration::cluster::{APP_PASSWORD, APP_USER, Cluster, ClusterBuilder};
use mysql_async::prelude::Queryable;
use recovery_support::{Vtorc, alias, rejoin_as_replica, shard0};
use tokio::time::Instant;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::proto::topodata::TabletAlias;
use vtorc::recovery::{AuditFilter, RecoveryOutcome};

const KS: &str = "bench";

/// One measured failover.
struct Sample {
    /// kill -9 → first insert acknowledged by the new primary.
    total: Duration,
    /// kill -9 → the shard record names the new primary.
    record: Duration,
    /// kill -9 → vtorc opened the dead-primary detection (wall clock).
    detection: Duration,
    /// The ERS itself (audit duration).
    ers: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Inserts one row through the application user on `tablet`'s MariaDB.
async fn insert(cluster: &Cluster, tablet: &TabletAlias, id: u64) -> anyhow::Result<()> {
    let port = cluster.tablet(tablet)?.mysql_port();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD));
    let attempt = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        conn.query_drop(format!("INSERT INTO bench.t (id) VALUES ({id})"))
            .await?;
        conn.disconnect().await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .context("insert timed out")?
}

async fn one_run(
    cluster: &mut Cluster,
    vtorc: &Vtorc,
    run: usize,
    next_id: &mut u64,
) -> anyhow::Result<(Sample, TabletAlias)> {
    let old = cluster.primary_alias(KS, "0").await?.context("a primary")?;
    *next_id += 1;
    insert(cluster, &old, *next_id)
        .await
        .context("write before the kill")?;
    let ers_before = vtorc.finished(RecoveryKind::RecoverDeadPrimary).len();
    let killed_wall = vtorc::reparent::system_wall_clock();
    let t0 = Instant::now();
    cluster.kill_mysql(&old)?;
    let mut record_at = None;
    let new_primary = loop {
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("run {run}: no new primary within 60 s; {}", vtorc.audit_dump());
        }
        if let Some(p) = cluster.primary_alias(KS, "0").await?.filter(|p| *p != old) {
            record_at.get_or_insert_with(|| t0.elapsed());
            *next_id += 1;
            if insert(cluster, &p, *next_id).await.is_ok() {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let total = t0.elapsed();
    let record = record_at.unwrap_or(total);
    // The audit of this failover.
    let ers = integration::cluster::poll_until(Duration::from_secs(10), "the ERS record", || async {
        let finished = vtorc.finished(RecoveryKind::RecoverDeadPrimary);
        Ok((finished.len() > ers_before).then(|| finished[0].clone()))
    })
    .await?;
    anyhow::ensure!(
        ers.outcome == RecoveryOutcome::Succeeded,
        "run {run}: ERS failed: {:?}",
        ers.error
    );
    let detected = vtorc
        .handle
        .detections(&AuditFilter::shard(&shard0(KS)))
        .into_iter()
        .filter(|d| d.tablet_alias == old && d.first_detected_at >= killed_wall)
        .filter(|d| {
            matches!(
                d.analysis,
                AnalysisCode::DeadPrimary
                    | AnalysisCode::DeadPrimaryAndSomeReplicas
                    | AnalysisCode::UnreachablePrimary
                    | AnalysisCode::UnreachablePrimaryWithBrokenReplicas
                    | AnalysisCode::UnreachablePrimaryWithLaggingReplicas
            )
        })
        .map(|d| d.first_detected_at)
        .min()
        .unwrap_or(ers.detected_at);
    let sample = Sample {
        total,
        record,
        detection: detected.duration_since(killed_wall).unwrap_or_default(),
        ers: Duration::from_millis(ers.duration_ms.unwrap_or(0)),
    };
    println!(
        "run {run:2}: {old} → {new_primary}: writes accepted after {}, shard record after {}, detected after {}, ERS {}",
        ms(sample.total),
        ms(sample.record),
        ms(sample.detection),
        ms(sample.ers)
    );
    rejoin_as_replica(cluster, &old, &new_primary).await;
    Ok((sample, new_primary))
}

async fn bench(runs: usize) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut cluster = ClusterBuilder::three_tablets(KS, "semi_sync").start().await?;
    // Go VTOrc's default intervals (--instance-poll-time 5s, --recovery-poll-duration 1s).
    let config = vtorc::config::Config::load([
        "vtorc".to_string(),
        format!("--topo-global-server-address={}", cluster.topo_address()),
        format!("--topo-global-root={}", integration::cluster::GLOBAL_ROOT),
        "--cell=zone1".to_string(),
    ])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let vtorc = Vtorc::start_with(config).await;
    {
        let mut conn = cluster.mysql_conn(&alias(100)).await?;
        conn.query_drop("CREATE DATABASE IF NOT EXISTS bench").await?;
        conn.query_drop("CREATE TABLE IF NOT EXISTS bench.t (id BIGINT PRIMARY KEY)")
            .await?;
        conn.disconnect().await?;
    }
    println!("cluster and vtorc up in {:?}; {runs} runs", started.elapsed());
    let mut samples = Vec::new();
    let mut next_id = 0;
    for run in 1..=runs {
        vtorc
            .wait_until_healthy(&shard0(KS), Duration::from_secs(60))
            .await;
        let (sample, _) = one_run(&mut cluster, &vtorc, run, &mut next_id).await?;
        samples.push(sample);
        // Let vtorc reconcile the old primary's record and see the rejoined replica.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    let mut records: Vec<Duration> = samples.iter().map(|s| s.record).collect();
    let mut detections: Vec<Duration> = samples.iter().map(|s| s.detection).collect();
    let mut ers: Vec<Duration> = samples.iter().map(|s| s.ers).collect();
    for v in [&mut totals, &mut records, &mut detections, &mut ers] {
        v.sort();
    }
    println!();
    println!("| kill -9 → | median | p95 | max |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("new primary accepts writes", &totals),
        ("shard record names it", &records),
        ("vtorc detects it (audit)", &detections),
        ("ERS duration (audit)", &ers),
    ] {
        println!(
            "| {what} | {} | {} | {} |",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 95.0)),
            ms(percentile(v, 100.0))
        );
    }
    println!(
        "\n{} runs, {} with {} cores",
        samples.len(),
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    vtorc.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut runs = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs needs a value")?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other:?} (expected --runs N)"),
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(runs))
}
