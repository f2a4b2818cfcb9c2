//! Discovery at scale: poll-cycle time, poll latency, CPU and RSS of the
//! discovery process with N simulated tablets, and how fast a failed
//! primary is seen.
//!
//! The simulated tablets (`integration::sim`, one tonic server per tablet on
//! its own loopback port) run in child processes (this binary re-executed,
//! at most `--per-sim` tablets each: a tablet costs the simulator two file
//! descriptors), so the CPU and memory figures are discovery's own. The
//! topology is in a real etcd (`--topo etcd`, the default) or the
//! in-memory store (`--topo memory`). Discovery runs with vtorc's default
//! settings (primary pings every 1 s, 300 workers) and each poll interval
//! of `--polls` (humantime, comma-separated; `0s` = flat out: every tablet
//! polled again as soon as its previous poll ends).
//!
//! ```text
//! cargo bench -p integration --bench discovery_scale -- [--tablets 1000] [--runs 5] [--seconds 10]
//!     [--polls 5s,1s] [--failures 0] [--per-sim 4000] [--topo etcd|memory] [--ping-interval 1s]
//! ```
//!
//! Each run starts fresh simulators and discovery, waits until discovery is
//! ready (time to first full round reported), warms up 2 s, then measures
//! for `--seconds`. With `--failures K`, K shard primaries (spread over the
//! window) have their MySQL fail as vttablet reports it: FullStatus answers
//! an error and the health stream says "not serving"; the detection time
//! is from the injection (written to the simulator) until discovery's
//! published snapshot shows the primary's last poll failed. The median over
//! the runs is reported; detection times are pooled over all runs.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::{
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, bail};
use integration::etcd::EtcdServer;
use tokio::time::Instant;
use vtorc::{
    discovery::{
        Discovery, DiscoveryConfig, DiscoveryMetrics, LivenessConfig, ScheduleConfig,
        metrics::LATENCY_BUCKETS_US,
    },
    ids::KeyspaceShard,
    model::ClusterSnapshot,
    proto::topodata::{TabletAlias, TabletType},
    tablet::{GrpcTabletManager, TabletClientConfig},
    topo::Topo,
};

/// Environment variable that turns this binary into a simulator child:
/// `first_shard:shards:total_shards:first_uid`.
const CHILD_ENV: &str = "VTORC_DISCOVERY_SCALE_SIM";

/// Tablets per shard (a primary and two replicas).
use integration::fleet::{PER_SHARD, Record, drain_time_wait, register, run_simulator, spawn_simulators};

/// Linux clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;

/// Settings of a benchmark invocation.
#[derive(Clone, Debug)]
struct Options {
    tablets: usize,
    runs: u64,
    seconds: u64,
    polls: Vec<Duration>,
    failures: usize,
    per_sim: usize,
    etcd: bool,
    /// `--primary-ping-interval` (0 = no pings).
    ping: Duration,
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return run_simulator(&spec);
    }
    let args = integration::fleet::BenchArgs::from_env();
    let value = |name: &str| args.value(name);
    let num = |name: &str, default: u64| -> anyhow::Result<u64> {
        value(name).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("bad value for {name}"))
        })
    };
    let polls = value("--polls")
        .unwrap_or("5s,1s")
        .split(',')
        .map(|p| humantime::parse_duration(p.trim()).with_context(|| format!("bad poll interval {p:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = Options {
        tablets: usize::try_from(num("--tablets", 1000)?)?,
        runs: num("--runs", 5)?,
        seconds: num("--seconds", 10)?,
        polls,
        failures: usize::try_from(num("--failures", 0)?)?,
        per_sim: usize::try_from(num("--per-sim", 4000)?)?.max(PER_SHARD),
        ping: humantime::parse_duration(value("--ping-interval").unwrap_or("1s"))
            .context("--ping-interval")?,
        etcd: match value("--topo").unwrap_or("etcd") {
            "etcd" => true,
            "memory" => false,
            other => bail!("--topo is etcd or memory, not {other:?}"),
        },
    };
    let shards = opts.tablets.div_ceil(PER_SHARD);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "discovery_scale: {} tablets ({shards} shards of {PER_SHARD}), {} simulator process(es), topology in {}, \
         {cores} cores, {} runs x {} s measured, {} primary failures per run",
        shards * PER_SHARD,
        shards.div_ceil(opts.per_sim / PER_SHARD),
        if opts.etcd { "etcd" } else { "memory" },
        opts.runs,
        opts.seconds,
        opts.failures,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for poll in opts.polls.clone() {
        let mut results = Vec::new();
        let mut detections = Vec::new();
        for run in 1..=opts.runs {
            let (r, d) = runtime.block_on(run_once(&opts, poll))?;
            println!("  poll {poll:?} run {run}: {}", r.line());
            results.push(r);
            detections.extend(d);
        }
        println!(
            "poll {poll:?} median of {}: {}",
            opts.runs,
            Sample::median(&results).line()
        );
        if opts.failures > 0 {
            println!(
                "poll {poll:?} primary failure seen: {}",
                detection_line(&mut detections)
            );
        }
    }
    Ok(())
}

/// `n failures: p50 .. p99 .. max` of detection times (missed ones count as infinite).
fn detection_line(times: &mut [Option<Duration>]) -> String {
    let missed = times.iter().filter(|t| t.is_none()).count();
    let mut seen: Vec<Duration> = times.iter().flatten().copied().collect();
    seen.sort();
    let q = |q: f64| -> String {
        let i = ((q * times.len() as f64).ceil() as usize).max(1) - 1;
        seen.get(i).map_or("missed".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    format!(
        "{} injected, {missed} not seen, p50 {}, p99 {}, max {}",
        times.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    )
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

/// One measured run: the sample and the detection time of each injected failure.
async fn run_once(opts: &Options, poll: Duration) -> anyhow::Result<(Sample, Vec<Option<Duration>>)> {
    let window = Duration::from_secs(opts.seconds);
    let shards = opts.tablets.div_ceil(PER_SHARD);
    let per_sim = (opts.per_sim / PER_SHARD).max(1);
    let (mut sims, records) = spawn_simulators(CHILD_ENV, shards, per_sim).await?;

    let (topo, _etcd, _store) = if opts.etcd {
        let etcd = EtcdServer::start().await?;
        let topo = integration::testkit::zone1_topo(&etcd.endpoint()).await?;
        (topo, Some(etcd), None)
    } else {
        let (topo, store) = Topo::in_memory(&["zone1"]);
        (topo, None, Some(store))
    };
    register(&topo, &records).await?;
    let config = DiscoveryConfig {
        schedule: ScheduleConfig {
            poll_interval: poll,
            ..ScheduleConfig::default()
        },
        liveness: LivenessConfig {
            ping_interval: opts.ping,
            ..LivenessConfig::default()
        },
        ..DiscoveryConfig::default()
    };
    let tmc = GrpcTabletManager::new(TabletClientConfig::default());
    let rss_base = rss_kib()?;
    let started = Instant::now();
    let (discovery, handle) = Discovery::new(config, topo, Arc::new(tmc.clone()), Arc::new(tmc));
    let task = discovery.spawn();
    tokio::time::timeout(Duration::from_secs(180), handle.wait_ready())
        .await
        .context("discovery not ready within 180 s")??;
    let ready_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pids: Vec<u32> = sims.iter().map(|s| s.pid).collect();
    let m = handle.metrics();
    let before = Counters::read(m, &pids)?;
    let window_start = Instant::now();
    // Failures: every `step`-th shard's primary, spread over the window.
    let primaries: Vec<&Record> = records
        .iter()
        .filter(|r| r.tablet_type == TabletType::Primary)
        .collect();
    let mut detections = Vec::new();
    if let Some(step) = primaries.len().checked_div(opts.failures) {
        let step = step.max(1);
        let mut watchers = tokio::task::JoinSet::new();
        for (i, r) in primaries.iter().step_by(step).take(opts.failures).enumerate() {
            let at = window_start + window.mul_f64((i as f64 + 0.5) / opts.failures as f64);
            tokio::time::sleep_until(at).await;
            let sim = sims
                .iter_mut()
                .find(|s| s.uids.contains(&r.uid))
                .context("no simulator serves this uid")?;
            let key = KeyspaceShard {
                keyspace: "ks".into(),
                shard: r.shard.clone(),
            };
            let alias = TabletAlias::new("zone1", r.uid);
            let mut snapshots = handle.watch_snapshots();
            snapshots.borrow_and_update();
            let t0 = Instant::now();
            writeln!(sim.stdin, "fail {}", r.uid)?;
            sim.stdin.flush()?;
            watchers.spawn(async move {
                let seen = |s: &ClusterSnapshot| {
                    s.shard(&key)
                        .and_then(|sh| sh.tablet(&alias))
                        .is_some_and(|t| !t.poll.last_poll_succeeded())
                };
                let wait = async {
                    loop {
                        if snapshots.changed().await.is_err() {
                            return None;
                        }
                        let snapshot = Arc::clone(&snapshots.borrow_and_update());
                        if seen(&snapshot) {
                            return Some(t0.elapsed());
                        }
                    }
                };
                tokio::time::timeout(Duration::from_secs(30), wait)
                    .await
                    .ok()
                    .flatten()
            });
        }
        tokio::time::sleep_until(window_start + window).await;
        while let Some(d) = watchers.join_next().await {
            detections.push(d?);
        }
    } else {
        tokio::time::sleep(window).await;
    }
    let elapsed = window_start.elapsed().as_secs_f64();
    let after = Counters::read(m, &pids)?;
    task.shutdown().await;
    drop(sims);

    let polls = after.polls.saturating_sub(before.polls);
    let rounds = after.rounds.saturating_sub(before.rounds);
    let buckets: Vec<u64> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let cpu_s = (after.cpu_ticks - before.cpu_ticks) / CLK_TCK;
    let sample = Sample {
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
        rss_kib_per_tablet: after.rss_kib.saturating_sub(rss_base) as f64 / records.len() as f64,
        failures: after.failures.saturating_sub(before.failures),
    };
    // Let the closed connections' TIME_WAIT sockets expire before the next run.
    drain_time_wait().await;
    Ok((sample, detections))
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
    fn read(m: &DiscoveryMetrics, sim_pids: &[u32]) -> anyhow::Result<Counters> {
        let polls = m.poll_latency.count();
        let succeeded = m.polls_succeeded.load(Ordering::Relaxed);
        Ok(Counters {
            polls,
            failures: polls.saturating_sub(succeeded),
            rounds: m.rounds.load(Ordering::Relaxed),
            buckets: m.poll_latency.buckets(),
            cpu_ticks: cpu_ticks("self")?,
            sim_cpu_ticks: sim_pids
                .iter()
                .map(|p| cpu_ticks(&p.to_string()))
                .sum::<anyhow::Result<f64>>()?,
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
