//! Discovery at scale: poll-cycle time, poll latency, CPU and RSS of the
//! discovery process with N simulated tablets.
//!
//! The simulated tablets (`integration::sim`, one tonic server per tablet on
//! its own loopback port) run in a child process (this binary re-executed),
//! so the CPU and memory figures are discovery's own; the topology is the
//! in-memory store. Two scenarios:
//!
//! - `steady`: `--instance-poll-time 1s`, 300 workers: the production shape.
//!   The cycle (every tablet polled once) should take about 1 s and the
//!   CPU figure is the cost of N polls per second.
//! - `flat-out`: poll interval 0: every tablet is polled again as soon as
//!   its previous poll ends; the cycle time is the fastest discovery can go
//!   through N tablets on this machine (client and simulator share the cores).
//!
//! ```text
//! cargo bench -p integration --bench discovery_scale -- [--tablets 1000] [--runs 5] [--seconds 10]
//! ```
//!
//! Each run starts a fresh simulator and discovery, waits until discovery is
//! ready (time to first full round reported), warms up 2 s, then measures
//! for `--seconds`. The median over the runs is reported.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, bail};
use integration::{
    process::ChildGuard,
    sim::{SimConfig, SimFleet},
};
use tokio::time::Instant;
use vtorc::{
    config::ShardRange,
    discovery::{Discovery, DiscoveryConfig, DiscoveryMetrics, ScheduleConfig, metrics::LATENCY_BUCKETS_US},
    proto::topodata::{KeyRange, Keyspace, Shard, Tablet, TabletAlias, TabletType},
    tablet::{GrpcTabletManager, TabletClientConfig},
    topo::Topo,
};

/// Environment variable that turns this binary into the simulator child.
const CHILD_ENV: &str = "VTORC_DISCOVERY_SCALE_SIM";

/// Tablets per shard (a primary and two replicas).
const PER_SHARD: usize = 3;

/// Linux clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        return run_simulator(n.parse().context("tablet count")?);
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .context("missing value")?
                .parse()
                .with_context(|| format!("bad value for {name}")),
            None => Ok(default),
        }
    };
    let tablets = usize::try_from(arg("--tablets", 1000)?)?;
    let runs = arg("--runs", 5)?;
    let seconds = arg("--seconds", 10)?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "discovery_scale: {tablets} tablets ({} shards of {PER_SHARD}), simulator in a child process, \
         {cores} cores, {runs} runs x {seconds} s measured",
        tablets.div_ceil(PER_SHARD)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for (name, poll) in [("steady", Duration::from_secs(1)), ("flat-out", Duration::ZERO)] {
        let mut results = Vec::new();
        for run in 1..=runs {
            let r = runtime.block_on(run_once(tablets, poll, Duration::from_secs(seconds)))?;
            println!("  {name} run {run}: {}", r.line());
            results.push(r);
        }
        println!(
            "{name} (poll {poll:?}) median of {runs}: {}",
            Sample::median(&results).line()
        );
    }
    Ok(())
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Start to ready (topology loaded and every tablet polled once), seconds.
    ready_s: f64,
    /// Mean time of a discovery cycle (every tablet polled once), seconds.
    cycle_s: f64,
    /// Polls completed per second.
    polls_per_s: f64,
    /// Poll latency bucket bound holding the median, milliseconds.
    p50_ms: f64,
    /// Poll latency bucket bound holding the 99th percentile, milliseconds.
    p99_ms: f64,
    /// Discovery process CPU, percent of one core.
    cpu_pct: f64,
    /// Simulator process CPU, percent of one core.
    sim_cpu_pct: f64,
    /// CPU microseconds per poll in the discovery process.
    us_per_poll: f64,
    /// Discovery process resident memory at the end, MiB.
    rss_mib: f64,
    /// Growth of resident memory from just before discovery started, KiB per tablet.
    rss_kib_per_tablet: f64,
    /// Failed polls during the window.
    failures: u64,
}

impl Sample {
    fn line(&self) -> String {
        format!(
            "ready {:.2} s, cycle {:.3} s, {:.0} polls/s, latency p50 <= {} ms p99 <= {} ms, \
             cpu {:.1}% of a core ({:.0} us/poll), sim cpu {:.1}%, rss {:.1} MiB ({:.0} KiB/tablet), \
             {} failed polls",
            self.ready_s,
            self.cycle_s,
            self.polls_per_s,
            self.p50_ms,
            self.p99_ms,
            self.cpu_pct,
            self.us_per_poll,
            self.sim_cpu_pct,
            self.rss_mib,
            self.rss_kib_per_tablet,
            self.failures
        )
    }

    fn median(samples: &[Sample]) -> Sample {
        let pick = |f: fn(&Sample) -> f64| -> f64 {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let mut failures: Vec<u64> = samples.iter().map(|s| s.failures).collect();
        failures.sort_unstable();
        Sample {
            ready_s: pick(|s| s.ready_s),
            cycle_s: pick(|s| s.cycle_s),
            polls_per_s: pick(|s| s.polls_per_s),
            p50_ms: pick(|s| s.p50_ms),
            p99_ms: pick(|s| s.p99_ms),
            cpu_pct: pick(|s| s.cpu_pct),
            sim_cpu_pct: pick(|s| s.sim_cpu_pct),
            us_per_poll: pick(|s| s.us_per_poll),
            rss_mib: pick(|s| s.rss_mib),
            rss_kib_per_tablet: pick(|s| s.rss_kib_per_tablet),
            failures: failures.get(failures.len() / 2).copied().unwrap_or(0),
        }
    }
}

/// One measured run.
async fn run_once(tablets: usize, poll: Duration, window: Duration) -> anyhow::Result<Sample> {
    let mut child = ChildGuard::spawn(
        "tablet simulator",
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, tablets.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        None,
    )?;
    let child_pid = child.pid().context("simulator pid")?;
    let stdout = child.take_stdout().context("simulator stdout")?;
    // Keep the pipe open: the simulator exits when it closes.
    let _stdin = child.take_stdin();
    let records = tokio::task::spawn_blocking(move || read_records(stdout, tablets)).await??;

    let (topo, _store) = Topo::in_memory(&["zone1"]);
    register(&topo, &records).await?;
    let config = DiscoveryConfig {
        schedule: ScheduleConfig {
            poll_interval: poll,
            workers: 300,
            ..ScheduleConfig::default()
        },
        poll_timeout: Duration::from_secs(15),
        topo_refresh_interval: Duration::from_secs(15),
        ..DiscoveryConfig::default()
    };
    let tmc = GrpcTabletManager::new(TabletClientConfig::default());
    let rss_base = rss_kib()?;
    let started = Instant::now();
    let (discovery, handle) = Discovery::new(config, topo, Arc::new(tmc.clone()), Arc::new(tmc));
    let task = discovery.spawn();
    tokio::time::timeout(Duration::from_secs(120), handle.wait_ready())
        .await
        .context("discovery not ready within 120 s")??;
    let ready_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let m = handle.metrics();
    let before = Counters::read(m, child_pid)?;
    let window_start = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = window_start.elapsed().as_secs_f64();
    let after = Counters::read(m, child_pid)?;
    task.shutdown().await;
    drop(child);

    let polls = after.polls.saturating_sub(before.polls);
    let rounds = after.rounds.saturating_sub(before.rounds);
    let buckets: Vec<u64> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let cpu_s = (after.cpu_ticks - before.cpu_ticks) / CLK_TCK;
    Ok(Sample {
        ready_s,
        cycle_s: if rounds > 0 {
            elapsed / rounds as f64
        } else {
            f64::NAN
        },
        polls_per_s: polls as f64 / elapsed,
        p50_ms: quantile_ms(&buckets, 0.5),
        p99_ms: quantile_ms(&buckets, 0.99),
        cpu_pct: 100.0 * cpu_s / elapsed,
        sim_cpu_pct: 100.0 * (after.sim_cpu_ticks - before.sim_cpu_ticks) / CLK_TCK / elapsed,
        us_per_poll: if polls > 0 {
            cpu_s * 1e6 / polls as f64
        } else {
            f64::NAN
        },
        rss_mib: after.rss_kib as f64 / 1024.0,
        rss_kib_per_tablet: after.rss_kib.saturating_sub(rss_base) as f64 / tablets as f64,
        failures: after.failures.saturating_sub(before.failures),
    })
}

/// Counter values at one moment.
struct Counters {
    polls: u64,
    failures: u64,
    rounds: u64,
    buckets: Vec<u64>,
    cpu_ticks: f64,
    sim_cpu_ticks: f64,
    rss_kib: u64,
}

impl Counters {
    fn read(m: &DiscoveryMetrics, sim_pid: u32) -> anyhow::Result<Counters> {
        let polls = m.poll_latency.count();
        let succeeded = m.polls_succeeded.load(Ordering::Relaxed);
        Ok(Counters {
            polls,
            failures: polls.saturating_sub(succeeded),
            rounds: m.rounds.load(Ordering::Relaxed),
            buckets: m.poll_latency.buckets(),
            cpu_ticks: cpu_ticks("self")?,
            sim_cpu_ticks: cpu_ticks(&sim_pid.to_string())?,
            rss_kib: rss_kib()?,
        })
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?)
}

/// The bucket bound below which `q` of the polls lie, in milliseconds.
fn quantile_ms(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let target = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= target {
            return LATENCY_BUCKETS_US
                .get(i)
                .map_or(f64::INFINITY, |us| *us as f64 / 1000.0);
        }
    }
    f64::INFINITY
}

/// One simulated tablet as the child reports it: `uid port shard type`.
struct Record {
    uid: u32,
    port: i32,
    shard: String,
    tablet_type: TabletType,
}

fn read_records(stdout: std::process::ChildStdout, tablets: usize) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::with_capacity(tablets);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "ready" {
            break;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [uid, port, shard, tablet_type] = f.as_slice() else {
            bail!("unexpected simulator line {line:?}");
        };
        records.push(Record {
            uid: uid.parse()?,
            port: port.parse()?,
            shard: (*shard).to_string(),
            tablet_type: TabletType::from_str_name(tablet_type).context("tablet type")?,
        });
    }
    if records.len() != tablets {
        bail!("the simulator started {} of {tablets} tablets", records.len());
    }
    Ok(records)
}

async fn register(topo: &Topo, records: &[Record]) -> anyhow::Result<()> {
    topo.create_keyspace(
        "ks",
        &Keyspace {
            durability_policy: "semi_sync".into(),
            ..Default::default()
        },
    )
    .await?;
    let mut shards = std::collections::BTreeMap::new();
    for r in records {
        let alias = TabletAlias::new("zone1", r.uid);
        let entry = shards.entry(r.shard.clone()).or_insert(None);
        if r.tablet_type == TabletType::Primary {
            *entry = Some(alias.clone());
        }
        let range = ShardRange::parse(&r.shard).ok();
        let mut tablet = Tablet {
            alias: Some(alias),
            hostname: "127.0.0.1".into(),
            keyspace: "ks".into(),
            shard: r.shard.clone(),
            key_range: range.map(|r| KeyRange {
                start: r.start,
                end: r.end,
            }),
            r#type: r.tablet_type as i32,
            mysql_hostname: "127.0.0.1".into(),
            mysql_port: 3306,
            ..Default::default()
        };
        tablet.port_map.insert("grpc".into(), r.port);
        topo.create_tablet(&tablet).await?;
    }
    for (shard, primary) in shards {
        topo.create_shard(
            "ks",
            &shard,
            &Shard {
                primary_alias: primary,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

/// Shard names `-0c4f`, `0c4f-189e`, ... splitting the key space in `n`.
fn shard_names(n: usize) -> Vec<String> {
    let bound = |i: usize| -> String {
        if i == 0 || i == n {
            String::new()
        } else {
            format!("{:04x}", i * 0x1_0000 / n)
        }
    };
    (0..n).map(|i| format!("{}-{}", bound(i), bound(i + 1))).collect()
}

/// The child: starts the fleet, prints one line per tablet and `ready`,
/// serves until its stdin closes.
fn run_simulator(tablets: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let names = shard_names(tablets.div_ceil(PER_SHARD));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fleet = SimFleet::start(SimConfig::default(), "ks", &refs, PER_SHARD).await?;
        // Whole shards are started; only the first `tablets` are reported.
        let mut out = std::io::stdout().lock();
        for t in fleet.tablets().iter().take(tablets) {
            let r = t.record();
            writeln!(
                out,
                "{} {} {} {}",
                t.alias().uid,
                t.port(),
                r.shard,
                TabletType::try_from(r.r#type)
                    .unwrap_or(TabletType::Unknown)
                    .as_str_name()
            )?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
        drop(out);
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                sink.clear();
            }
        })
        .await?;
        drop(fleet);
        anyhow::Ok(())
    })
}
