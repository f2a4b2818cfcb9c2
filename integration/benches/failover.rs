//! Failover benchmark: a primary fault → a new primary named by the shard
//! record and accepting writes, with vtorc-rs (or, side by side, real Go
//! VTOrc v24) doing the failover.
//!
//! ```text
//! cargo bench -p integration --bench failover -- [--runs 20] [--fault kill|freeze|cutoff|agent]
//!     [--controllers rust|go|rust,go] [--instance-poll-time 5s] [--health-check-interval 5s]
//!     [--heartbeat-interval 250ms|off] [--deadline 120s] [--steps-over 1s] [--rust-flag=--flag=value ...]
//! ```
//!
//! One 3-tablet `semi_sync` shard (MariaDB, `tablet-agent` child processes,
//! etcd), configured like Vitess (`slave_net_timeout` 8 s, semi-sync timeout
//! 10^18 ms, vttablet heartbeats, health-check interval as given). Faults:
//!
//! | fault | how | healed by |
//! |---|---|---|
//! | `kill` | `kill -9` of the primary's MariaDB | restore |
//! | `freeze` | SIGSTOP of the primary's MariaDB and agent | SIGCONT |
//! | `cutoff` | every packet to/from its MariaDB and agent ports dropped (`iptables`) | rules removed |
//! | `agent` | SIGKILL of the primary's agent, MariaDB alive | agent restarted |
//!
//! Each run: the controller of this run (alternating when several are
//! given) is started and given time to see the healthy shard; the fault is
//! injected at a random offset within one poll interval plus a second (Go
//! VTOrc polls every `--instance-poll-time` plus up to 1 s and starts
//! recoveries on a 1 s tick, so a fixed offset would favour or penalise it);
//! then every 2 ms the shard record's primary is read and an `INSERT` (as the
//! application user, semi-sync acknowledged) is tried on the tablet it
//! names: t1 = first successful insert on a new primary. A run with no new
//! primary by `--deadline` is reported as such (censored). Afterwards the
//! fault is healed, the controller stopped, and the old primary restored
//! from the new one (`integration::restore`) as an operator would.
//!
//! Go VTOrc refuses to run as root: it runs as `nobody` (`setpriv`); its
//! binary comes from `scripts/build-vitess-tool.sh vtorc` or `$GO_VTORC`.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

#[path = "../tests/recovery_support/mod.rs"]
mod recovery_support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use integration::cluster::{APP_PASSWORD, APP_USER, AgentMode, Cluster, ClusterBuilder};
use integration::netfault::PacketDrop;
use integration::process::ChildGuard;
use mysql_async::prelude::Queryable;
use rand::Rng;
use recovery_support::{Vtorc, alias, rejoin_as_replica, shard0};
use tokio::time::Instant;
use vtorc::proto::topodata::TabletAlias;

const KS: &str = "bench";

/// How the primary fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Freeze,
    Cutoff,
    Agent,
}

impl Fault {
    fn parse(s: &str) -> anyhow::Result<Fault> {
        Ok(match s {
            "kill" => Fault::Kill,
            "freeze" => Fault::Freeze,
            "cutoff" => Fault::Cutoff,
            "agent" => Fault::Agent,
            other => anyhow::bail!("unknown fault {other:?} (kill, freeze, cutoff, agent)"),
        })
    }
}

/// Who repairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Rust,
    Go,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Rust => "vtorc-rs",
            Controller::Go => "Go VTOrc v24",
        }
    }
}

/// Benchmark settings.
#[derive(Clone, Debug)]
struct Settings {
    runs: usize,
    fault: Fault,
    controllers: Vec<Controller>,
    poll: Duration,
    health_check_interval: Duration,
    heartbeat: Option<Duration>,
    deadline: Duration,
    rust_flags: Vec<String>,
    /// vtorc-rs recoveries that took longer than this print their steps.
    steps_over: Duration,
}

/// A running controller.
enum Running {
    Rust(Box<Vtorc>),
    Go(ChildGuard),
}

/// An injected fault, until healed.
enum Injected {
    Killed,
    Frozen,
    Cut(PacketDrop),
    AgentDead,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// How long the controller's failover recovery ran, from the start of its
/// recovery function (after its gates and the shard lock) to its end.
///
/// vtorc-rs: the newest finished primary recovery in its audit. Go VTOrc: its
/// log, from `recoverDeadPrimary`'s first line ("Analysis: DeadPrimary,
/// RecoverDeadPrimary ...", written after the lock and the re-check) to
/// "Recovery succeeded" (glog timestamps, microseconds).
fn recovery_duration(running: &Running, go_log: &std::path::Path, steps_over: Duration) -> Option<Duration> {
    use vtorc::analysis::RecoveryKind;
    match running {
        Running::Rust(vtorc) => vtorc
            .handle
            .recoveries(&vtorc::recovery::AuditFilter::all())
            .into_iter()
            .find(|r| {
                matches!(
                    r.recovery_type,
                    RecoveryKind::RecoverDeadPrimary
                        | RecoveryKind::RecoverIncapacitatedPrimary
                        | RecoveryKind::RecoverPrimaryTabletDeleted
                ) && r.ended_at.is_some()
            })
            .and_then(|r| {
                let took = r.ended_at?.duration_since(r.started_at).ok()?;
                if took > steps_over {
                    // A slow recovery: show where its time went.
                    for step in &r.steps {
                        let at = step.at.duration_since(r.started_at).unwrap_or_default();
                        println!("    +{:>5} {} {}", ms(at), step.step, step.message);
                    }
                }
                Some(took)
            }),
        Running::Go(_) => {
            let log = std::fs::read_to_string(go_log).ok()?;
            let start = log
                .lines()
                .filter(|l| l.contains("RecoverDeadPrimary") && l.contains("Analysis: "))
                .find_map(glog_time)?;
            let end = log
                .lines()
                .filter(|l| l.contains("Recovery succeeded"))
                .filter_map(glog_time)
                .find(|t| *t >= start)?;
            Some(end - start)
        }
    }
}

/// The time of day of a log line: glog (`I1207 09:30:01.123456 ...`) or
/// Vitess's structured logging (`"time":"2026-12-07T09:30:01.123456789Z"`,
/// `time=2026-12-07T09:30:01.123Z`).
fn glog_time(line: &str) -> Option<Duration> {
    let time = match structured_time(line) {
        Some(t) => t,
        None => line.split_whitespace().nth(1)?,
    };
    let (hms, fraction) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let digits: String = fraction
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos = format!("{digits:0<9}").parse::<u64>().ok()?;
    Some(Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_nanos(nanos))
}

/// `HH:MM:SS.fff...` after the date of a structured log line's time.
fn structured_time(line: &str) -> Option<&str> {
    let at = line.find("time")?;
    let rest = &line[at..];
    let t = rest.find('T')?;
    let time = &rest[t + 1..];
    time.get(..8)
        .filter(|hms| hms.as_bytes()[2] == b':' && hms.as_bytes()[5] == b':')?;
    Some(time)
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    if let Some(v) = s.strip_suffix("ms") {
        return Ok(Duration::from_millis(v.parse()?));
    }
    if let Some(v) = s.strip_suffix('s') {
        return Ok(Duration::from_secs_f64(v.parse()?));
    }
    anyhow::bail!("duration {s:?}: use e.g. 500ms or 5s")
}

/// Inserts one row through the application user on `tablet`'s MariaDB.
async fn insert(cluster: &Cluster, tablet: &TabletAlias, id: u64) -> anyhow::Result<()> {
    let port = cluster.tablet(tablet)?.mysql_port();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false);
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

/// Path of Go VTOrc v24.
fn go_vtorc() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("GO_VTORC") {
        return Ok(PathBuf::from(p));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-vitess-tool.sh");
    let out = std::process::Command::new(&script)
        .arg("vtorc")
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} vtorc failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

async fn start_controller(
    which: Controller,
    cluster: &Cluster,
    settings: &Settings,
    dir: &std::path::Path,
    run: usize,
) -> anyhow::Result<Running> {
    let poll = format!("{}ms", settings.poll.as_millis());
    match which {
        Controller::Rust => {
            let mut args = vec![
                "vtorc".to_string(),
                format!("--topo-global-server-address={}", cluster.topo_address()),
                format!("--topo-global-root={}", integration::cluster::GLOBAL_ROOT),
                "--cell=zone1".to_string(),
                format!("--instance-poll-time={poll}"),
            ];
            args.extend(settings.rust_flags.iter().cloned());
            let config = vtorc::config::Config::load(args).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let vtorc = Vtorc::start_with(config).await;
            vtorc
                .wait_until_healthy(&shard0(KS), Duration::from_secs(60))
                .await;
            Ok(Running::Rust(Box::new(vtorc)))
        }
        Controller::Go => {
            let port = integration::process::free_port()?;
            let log_path = dir.join(format!("go-vtorc-{run}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut command = std::process::Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(go_vtorc()?)
                .args([
                    "--topo-implementation=etcd2".to_string(),
                    format!("--topo-global-server-address={}", cluster.topo_address()),
                    format!("--topo-global-root={}", integration::cluster::GLOBAL_ROOT),
                    format!("--port={port}"),
                    format!("--instance-poll-time={poll}"),
                    "--logtostderr".to_string(),
                ])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = ChildGuard::spawn("go-vtorc", &mut command, Some(log_path))?;
            // Ready when /debug/health says so, then one more poll cycle so
            // it has seen every tablet.
            integration::cluster::poll_until(Duration::from_secs(60), "Go VTOrc healthy", || async {
                Ok((http_status(port, "/debug/health").await == Some(200)).then_some(()))
            })
            .await
            .with_context(|| child.log_tail(20))?;
            tokio::time::sleep(settings.poll + Duration::from_secs(1)).await;
            Ok(Running::Go(child))
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:`port` (HTTP/1.0), if any.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Stops a controller the way an operator would (SIGTERM for Go VTOrc, so
/// it releases the shard lock of a recovery it is running), then waits until
/// nobody holds the shard lock: a lock left behind would hold the next run's
/// controller until its lease expires (30 s for Go VTOrc).
async fn stop_controller(running: Running, cluster: &Cluster) {
    match running {
        Running::Rust(vtorc) => vtorc.stop().await,
        Running::Go(mut child) => {
            if let Err(e) = child.terminate(Duration::from_secs(10)).await {
                println!("Go VTOrc did not stop on SIGTERM: {e:#}");
            }
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        match cluster
            .topo()
            .try_lock_shard(KS, "0", "failover bench: is the shard free?")
            .await
        {
            Ok(lock) => {
                let _ = lock.unlock().await;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if started.elapsed() > Duration::from_secs(1) {
        println!(
            "  (waited {} for the shard lock to be free)",
            ms(started.elapsed())
        );
    }
}

fn inject(cluster: &mut Cluster, fault: Fault, old: &TabletAlias) -> anyhow::Result<Injected> {
    Ok(match fault {
        Fault::Kill => {
            cluster.kill_mysql(old)?;
            Injected::Killed
        }
        Fault::Freeze => {
            cluster.pause_mysql(old)?;
            cluster.pause_agent(old)?;
            Injected::Frozen
        }
        Fault::Cutoff => {
            let t = cluster.tablet(old)?;
            Injected::Cut(PacketDrop::isolate(&[t.mysql_port(), t.grpc_port()])?)
        }
        Fault::Agent => {
            cluster.kill_agent(old)?;
            Injected::AgentDead
        }
    })
}

async fn heal(cluster: &mut Cluster, injected: Injected, old: &TabletAlias) -> anyhow::Result<()> {
    match injected {
        Injected::Killed => {}
        Injected::Frozen => {
            cluster.resume_agent(old)?;
            cluster.resume_mysql(old)?;
        }
        Injected::Cut(drop) => drop.heal()?,
        Injected::AgentDead => cluster.restart_agent(old).await?,
    }
    Ok(())
}

/// One run: `Some((writes accepted, shard record))` after the fault, or
/// `None` when no new primary took writes by the deadline.
async fn one_run(
    cluster: &mut Cluster,
    settings: &Settings,
    which: Controller,
    dir: &std::path::Path,
    run: usize,
    next_id: &mut u64,
) -> anyhow::Result<Option<(Duration, Duration, Option<Duration>)>> {
    let old = cluster.primary_alias(KS, "0").await?.context("a primary")?;
    let running = start_controller(which, cluster, settings, dir, run).await?;
    *next_id += 1;
    insert(cluster, &old, *next_id)
        .await
        .context("write before the fault")?;
    let offset = rand::rng().random_range(Duration::ZERO..settings.poll + Duration::from_secs(1));
    tokio::time::sleep(offset).await;
    let t0 = Instant::now();
    let injected = inject(cluster, settings.fault, &old)?;
    let mut record_at = None;
    let outcome = loop {
        if t0.elapsed() > settings.deadline {
            break None;
        }
        if let Some(p) = cluster.primary_alias(KS, "0").await?.filter(|p| *p != old) {
            record_at.get_or_insert_with(|| t0.elapsed());
            *next_id += 1;
            if insert(cluster, &p, *next_id).await.is_ok() {
                break Some((t0.elapsed(), record_at.unwrap_or_default(), p));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    heal(cluster, injected, &old).await?;
    let result = match outcome {
        Some((total, record, new_primary)) => {
            // Give the controller a moment to see the old primary back (and
            // to log the recovery's end), then rebuild it as a replica of
            // the new one.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let recovery = recovery_duration(
                &running,
                &dir.join(format!("go-vtorc-{run}.log")),
                settings.steps_over,
            );
            println!(
                "run {run:2} [{}]: {old} → {new_primary}: writes accepted after {}, shard record after {}, recovery function {} (fault at +{} in the poll cycle)",
                which.name(),
                ms(total),
                ms(record),
                recovery.map_or_else(|| "?".to_string(), ms),
                ms(offset)
            );
            stop_controller(running, cluster).await;
            rejoin_as_replica(cluster, &old, &new_primary).await;
            Some((total, record, recovery))
        }
        None => {
            println!(
                "run {run:2} [{}]: no new primary within {:?}",
                which.name(),
                settings.deadline
            );
            stop_controller(running, cluster).await;
            None
        }
    };
    // Let the world settle (the rejoined replica catches up).
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(result)
}

async fn bench(settings: Settings) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .agent_mode(AgentMode::Process(env!("CARGO_BIN_EXE_tablet-agent").into()))
        .health_check_interval(settings.health_check_interval)
        .heartbeat(settings.heartbeat)
        .start()
        .await?;
    {
        let mut conn = cluster.mysql_conn(&alias(100)).await?;
        conn.query_drop("CREATE DATABASE IF NOT EXISTS bench").await?;
        conn.query_drop("CREATE TABLE IF NOT EXISTS bench.t (id BIGINT PRIMARY KEY)")
            .await?;
        conn.disconnect().await?;
    }
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    println!(
        "cluster up in {:?}; fault {:?}, {} runs, controllers {:?}, --instance-poll-time {:?}, agent --health-check-interval {:?}, heartbeats {:?}, vtorc-rs extra flags {:?}",
        started.elapsed(),
        settings.fault,
        settings.runs,
        settings.controllers.iter().map(|c| c.name()).collect::<Vec<_>>(),
        settings.poll,
        settings.health_check_interval,
        settings.heartbeat,
        settings.rust_flags
    );
    let mut results: Vec<(Controller, Vec<Duration>, Vec<Duration>, usize)> = settings
        .controllers
        .iter()
        .map(|c| (*c, Vec::new(), Vec::new(), 0))
        .collect();
    // Recovery function durations, per controller.
    let mut recoveries: Vec<Vec<Duration>> = vec![Vec::new(); results.len()];
    let mut next_id = 0;
    for run in 1..=settings.runs {
        let slot = (run - 1) % results.len();
        let which = results[slot].0;
        match one_run(&mut cluster, &settings, which, dir.path(), run, &mut next_id).await? {
            Some((total, record, recovery)) => {
                results[slot].1.push(total);
                results[slot].2.push(record);
                recoveries[slot].extend(recovery);
            }
            None => results[slot].3 += 1,
        }
    }
    println!();
    println!(
        "| fault → new primary accepting writes | runs | median | p95 | max | no failover by {:?} |",
        settings.deadline
    );
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (which, totals, _, censored) in &mut results {
        totals.sort();
        if totals.is_empty() {
            println!("| {} | {} | – | – | – | {censored} |", which.name(), *censored);
            continue;
        }
        let median = percentile(totals, 50.0);
        medians.push((*which, median));
        println!(
            "| {} | {} | {} | {} | {} | {censored} |",
            which.name(),
            totals.len() + *censored,
            ms(median),
            ms(percentile(totals, 95.0)),
            ms(percentile(totals, 100.0))
        );
    }
    println!("\n| recovery function, start → end (after gates and lock) | runs | median | p95 | max |");
    println!("|---|---|---|---|---|");
    for ((which, ..), durations) in results.iter().zip(&mut recoveries) {
        durations.sort();
        if durations.is_empty() {
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {} |",
            which.name(),
            durations.len(),
            ms(percentile(durations, 50.0)),
            ms(percentile(durations, 95.0)),
            ms(percentile(durations, 100.0))
        );
    }
    if let (Some((_, rust)), Some((_, go))) = (
        medians.iter().find(|(c, _)| *c == Controller::Rust),
        medians.iter().find(|(c, _)| *c == Controller::Go),
    ) {
        println!(
            "\nratio of medians (Go / vtorc-rs): {:.1}",
            go.as_secs_f64() / rust.as_secs_f64()
        );
    }
    println!(
        "\n{} runs, {} with {} cores",
        settings.runs,
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut settings = Settings {
        runs: 20,
        fault: Fault::Kill,
        controllers: vec![Controller::Rust],
        poll: Duration::from_secs(5),
        health_check_interval: integration::cluster::DEFAULT_HEALTH_CHECK_INTERVAL,
        heartbeat: Some(integration::cluster::DEFAULT_HEARTBEAT_INTERVAL),
        deadline: Duration::from_secs(120),
        rust_flags: Vec::new(),
        steps_over: Duration::from_secs(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => settings.runs = value("--runs")?.parse()?,
            "--fault" => settings.fault = Fault::parse(&value("--fault")?)?,
            "--controllers" => {
                settings.controllers = value("--controllers")?
                    .split(',')
                    .map(|c| match c {
                        "rust" => Ok(Controller::Rust),
                        "go" => Ok(Controller::Go),
                        other => anyhow::bail!("unknown controller {other:?} (rust, go)"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--instance-poll-time" => settings.poll = parse_duration(&value("--instance-poll-time")?)?,
            "--health-check-interval" => {
                settings.health_check_interval = parse_duration(&value("--health-check-interval")?)?;
            }
            "--heartbeat-interval" => {
                let v = value("--heartbeat-interval")?;
                settings.heartbeat = if v == "off" {
                    None
                } else {
                    Some(parse_duration(&v)?)
                };
            }
            "--deadline" => settings.deadline = parse_duration(&value("--deadline")?)?,
            "--steps-over" => settings.steps_over = parse_duration(&value("--steps-over")?)?,
            "--bench" => {}
            other => match other.strip_prefix("--rust-flag=") {
                Some(flag) => settings.rust_flags.push(flag.to_string()),
                None => anyhow::bail!("unknown argument {other:?} (see the module docs)"),
            },
        }
    }
    anyhow::ensure!(settings.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(!settings.controllers.is_empty(), "--controllers is empty");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(settings))
}
