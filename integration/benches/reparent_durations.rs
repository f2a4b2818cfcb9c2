//! PRS and ERS durations on the local world.
//!
//! ```text
//! cargo bench -p integration --bench reparent_durations -- [--runs 12]
//! ```
//!
//! One 3-tablet `semi_sync` shard (etcd, MariaDB, in-process tablet
//! agents), started once; the reparent engine runs in this process with
//! `--remote-operation-timeout` 10 s and `--wait-replicas-timeout` 15 s.
//!
//! - PRS: each run moves the primary to the next tablet (100 → 101 → 102 →
//!   100 …). Measured: the reparent call (lock to unlock), and until the
//!   shard record names the new primary.
//! - ERS: each run `kill -9`s the primary's MariaDB, then runs ERS.
//!   Measured: the reparent call, and kill → shard record. Between runs the
//!   killed server is restarted and its agent, seeing a newer primary in
//!   the shard record, ends its term and follows it (as vttablet does).
//!
//! Before every run all replicas replicate from the primary. Reported: the
//! median (and min, p90, max) of each measure over the runs.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use integration::cluster::{Cluster, ClusterBuilder, poll_until};
use tokio::time::Instant;
use vtorc::proto::topodata::TabletAlias;
use vtorc::reparent::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentConfig, Reparenter, system_wall_clock,
};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig};

const KS: &str = "bench";

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// Waits until every tablet but `primary` replicates from it (both threads running).
async fn settled(cluster: &Cluster, primary: &TabletAlias) -> anyhow::Result<()> {
    let port = i32::from(cluster.tablet(primary)?.mysql_port());
    for uid in [100, 101, 102] {
        let a = alias(uid);
        if a == *primary {
            continue;
        }
        poll_until(
            Duration::from_secs(60),
            &format!("{a} replicating from {primary}"),
            || async {
                let status = cluster.full_status(&a).await?;
                Ok(status
                    .replication_status
                    .filter(|r| r.source_port == port && r.io_state == 3 && r.sql_state == 3)
                    .map(|_| ()))
            },
        )
        .await?;
    }
    Ok(())
}

/// `(median, min, p90, max)`.
fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(0.5), v[0], at(0.9), v[v.len() - 1])
}

fn report(name: &str, v: Vec<Duration>) {
    let n = v.len();
    let (median, min, p90, max) = summary(v);
    println!(
        "{name:<34} median {median:>10.1?}  min {min:>10.1?}  p90 {p90:>10.1?}  max {max:>10.1?}  ({n} runs)"
    );
}

async fn bench(runs: usize) -> anyhow::Result<()> {
    let mut cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .start()
        .await
        .context("cluster")?;
    let rp = Reparenter::new(
        cluster.topo().clone(),
        Arc::new(GrpcTabletManager::new(TabletClientConfig {
            remote_operation_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            ..TabletClientConfig::default()
        })),
        ReparentConfig {
            remote_operation_timeout: Duration::from_secs(10),
            wait_replicas_timeout: Duration::from_secs(15),
            clock: system_wall_clock,
        },
    );
    let mut primary = cluster
        .primary_alias(KS, "0")
        .await?
        .context("bootstrap primary")?;
    settled(&cluster, &primary).await?;

    let (mut prs_call, mut prs_record) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let next = alias(100 + (primary.uid - 100 + 1) % 3);
        let log = EventLog::default();
        let started = Instant::now();
        let out = rp
            .planned_reparent_shard(
                KS,
                "0",
                &PlannedReparentOptions::promote(next.clone()),
                None,
                &log,
            )
            .await
            .with_context(|| format!("PRS run {run}: {:#?}", log.messages()))?;
        prs_call.push(out.duration);
        cluster
            .wait_for_primary(KS, "0", &next, Duration::from_secs(30))
            .await?;
        prs_record.push(started.elapsed());
        primary = next;
        settled(&cluster, &primary).await?;
    }

    let (mut ers_call, mut ers_record) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let killed = primary.clone();
        cluster.kill_mysql(&killed)?;
        let t0 = Instant::now();
        let log = EventLog::default();
        let out = rp
            .emergency_reparent_shard(KS, "0", &EmergencyReparentOptions::default(), None, &log)
            .await
            .with_context(|| format!("ERS run {run}: {:#?}", log.messages()))?;
        ers_call.push(out.duration);
        let Some(new) = out.new_primary.and_then(|t| t.alias) else {
            bail!("ERS run {run} promoted nothing");
        };
        cluster
            .wait_for_primary(KS, "0", &new, Duration::from_secs(30))
            .await?;
        ers_record.push(t0.elapsed());
        rp.wait_for_background_calls().await;
        cluster.restart_mysql(&killed).await?;
        primary = new;
        settled(&cluster, &primary)
            .await
            .with_context(|| format!("the killed {killed} rejoins\n{}", cluster.diagnostics()))?;
    }

    println!(
        "reparent durations, 3-tablet semi_sync shard, {runs} runs each (MariaDB, in-process agents, etcd)"
    );
    report("PRS call (lock..unlock)", prs_call);
    report("PRS start -> shard record", prs_record);
    report("ERS call (lock..unlock)", ers_call);
    report("ERS kill -9 -> shard record", ers_record);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut runs = 12;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().context("--runs N")?.parse().context("--runs N")?;
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(runs))
}
