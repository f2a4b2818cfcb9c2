//! The simulated fleet of the scale benchmarks (`discovery_scale`,
//! `sharing_scale`): child processes of [`crate::sim`] tablets (one process
//! holds at most a few thousand, for its open files), the lines they report,
//! the topology records written for them, and the wait for the TIME_WAIT
//! sockets a stopped controller leaves behind.
//!
//! A child is the benchmark binary itself, started with the spec
//! `first_shard:shards:total_shards:first_uid` (see [`run_simulator`]): it
//! prints one `uid port shard type` line per tablet and `ready`, then applies
//! commands from stdin (`fail <uid>`: the tablet's MySQL fails as vttablet
//! reports it) until stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;
use vtorc::config::ShardRange;
use vtorc::proto::topodata::{KeyRange, Keyspace, Shard, Tablet, TabletAlias, TabletType};
use vtorc::topo::Topo;

use crate::sim::{SimConfig, SimFault, SimFleet};

/// Tablets per simulated shard: a primary and two replicas.
pub const PER_SHARD: usize = 3;

/// Waits (up to 70 s) until fewer than 1,000 loopback sockets are in TIME_WAIT.
pub async fn drain_time_wait() {
    let deadline = Instant::now() + Duration::from_secs(70);
    while Instant::now() < deadline {
        let count = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| {
                t.lines()
                    .filter(|l| l.split_whitespace().nth(3) == Some("06"))
                    .count()
            })
            .sum::<usize>();
        if count < 1000 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One simulated tablet as the child reports it: `uid port shard type`.
pub struct Record {
    /// The tablet's uid (cell `zone1`).
    pub uid: u32,
    /// Its gRPC port.
    pub port: i32,
    /// Its shard.
    pub shard: String,
    /// Its type.
    pub tablet_type: TabletType,
}

/// Reads a child's tablet lines until its `ready`.
pub fn read_records(stdout: std::process::ChildStdout) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "ready" {
            return Ok(records);
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
    bail!("a simulator exited before it was ready")
}

/// Writes keyspace `ks` (`semi_sync`), the shard records (primary from the
/// `PRIMARY` tablets) and the tablet records of `records` into `topo`.
pub async fn register(topo: &Topo, records: &[Record]) -> anyhow::Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};
    topo.create_keyspace("ks", &Keyspace::with_durability("semi_sync"))
        .await?;
    let mut shards = std::collections::BTreeMap::new();
    let mut tablets = Vec::with_capacity(records.len());
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
        tablets.push(tablet);
    }
    // Writes in parallel (a real etcd answers each in about a millisecond).
    futures::stream::iter(tablets.iter().map(|t| topo.create_tablet(t)))
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let shards: Vec<(String, Shard)> = shards
        .into_iter()
        .map(|(name, primary)| (name, Shard::with_primary(primary)))
        .collect();
    futures::stream::iter(
        shards
            .iter()
            .map(|(name, record)| topo.create_shard("ks", name, record)),
    )
    .buffer_unordered(64)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

/// Shard names `-0c4f`, `0c4f-189e`, ... splitting the key space in `n`.
pub fn shard_names(n: usize) -> Vec<String> {
    let bound = |i: usize| -> String {
        if i == 0 || i == n {
            String::new()
        } else {
            format!("{:04x}", i * 0x1_0000 / n)
        }
    };
    (0..n).map(|i| format!("{}-{}", bound(i), bound(i + 1))).collect()
}

/// The child (`first_shard:shards:total_shards:first_uid`): starts its
/// part of the fleet, prints one line per tablet and `ready`, then applies
/// commands from stdin (`fail <uid>`: the tablet's MySQL fails as vttablet
/// reports it) until stdin closes.
pub fn run_simulator(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<usize> = spec
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("simulator spec")?;
    let [first, count, total, first_uid] = parts.as_slice() else {
        bail!("bad simulator spec {spec:?}");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let names = shard_names(*total);
        let refs: Vec<&str> = names
            .iter()
            .skip(*first)
            .take(*count)
            .map(String::as_str)
            .collect();
        let config = SimConfig {
            first_uid: u32::try_from(*first_uid)?,
            ..SimConfig::default()
        };
        let fleet = Arc::new(SimFleet::start(config, "ks", &refs, PER_SHARD).await?);
        let mut out = std::io::stdout().lock();
        for t in fleet.tablets() {
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
        // Serve and take commands until the parent closes our stdin.
        let commands = Arc::clone(&fleet);
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                if let Some(uid) = line.trim().strip_prefix("fail ").and_then(|u| u.parse().ok())
                    && let Some(t) = commands.get(&TabletAlias::new("zone1", uid))
                {
                    t.set_fault(Some(SimFault::Error(
                        tonic::Code::Unavailable,
                        "mysqld is not reachable".into(),
                    )));
                    t.set_health(false, "mysqld is not reachable");
                }
                line.clear();
            }
        })
        .await?;
        drop(fleet);
        anyhow::Ok(())
    })
}

/// One simulator child process.
pub struct Simulator {
    /// Kills the child when dropped.
    _child: crate::process::ChildGuard,
    /// Its pid, for CPU figures.
    pub pid: u32,
    /// Commands (`fail <uid>`); closing it stops the child.
    pub stdin: std::process::ChildStdin,
    /// The uids of the tablets it serves.
    pub uids: std::ops::Range<u32>,
}

impl Simulator {
    /// Makes tablet `uid`'s MySQL fail as vttablet reports it.
    pub fn fail(&mut self, uid: u32) -> anyhow::Result<()> {
        writeln!(self.stdin, "fail {uid}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

/// Starts `shards` shards of [`PER_SHARD`] simulated tablets in child
/// processes of the running benchmark (`child_env` set to each one's spec,
/// see [`run_simulator`]), at most `per_sim_shards` shards each, and waits
/// until all report ready. Returns the children and their tablets.
pub async fn spawn_simulators(
    child_env: &str,
    shards: usize,
    per_sim_shards: usize,
) -> anyhow::Result<(Vec<Simulator>, Vec<Record>)> {
    let mut sims = Vec::new();
    let mut outputs = Vec::new();
    let mut first = 0;
    while first < shards {
        let n = per_sim_shards.max(1).min(shards - first);
        let first_uid = 100 + u32::try_from(first * PER_SHARD)?;
        let mut child = crate::process::ChildGuard::spawn(
            "tablet simulator",
            std::process::Command::new(std::env::current_exe()?)
                .env(child_env, format!("{first}:{n}:{shards}:{first_uid}"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped()),
            None,
        )?;
        let pid = child.pid().context("simulator pid")?;
        outputs.push(child.take_stdout().context("simulator stdout")?);
        let stdin = child.take_stdin().context("simulator stdin")?;
        sims.push(Simulator {
            _child: child,
            pid,
            stdin,
            uids: first_uid..first_uid + u32::try_from(n * PER_SHARD)?,
        });
        first += n;
    }
    let mut records = Vec::new();
    for stdout in outputs {
        records.extend(tokio::task::spawn_blocking(move || read_records(stdout)).await??);
    }
    if records.len() != shards * PER_SHARD {
        bail!(
            "the simulators started {} of {} tablets",
            records.len(),
            shards * PER_SHARD
        );
    }
    Ok((sims, records))
}

/// A benchmark's command line, read as `--name value` pairs.
pub struct BenchArgs(Vec<String>);

impl BenchArgs {
    /// This process's arguments.
    pub fn from_env() -> BenchArgs {
        BenchArgs(std::env::args().collect())
    }

    /// The argument after `name`, if `name` is given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
}
