//! Work sharing at scale: three `vtorc --sharing` processes (release
//! binary) over N simulated tablets with the topology in a real etcd; one
//! instance is killed (`kill -9`) and the bench measures how long until
//! its shards are owned (and loaded) again by the survivors, and how long
//! until a primary failure injected in one of its shards at the moment of
//! the kill is seen (audited) by the shard's new owner.
//!
//! ```text
//! cargo bench -p integration --bench sharing_scale -- [--tablets 20000] [--instances 3]
//!     [--lease-ttl 10s] [--poll 5s] [--per-sim 3000] [--vtorc target/release/vtorc]
//! ```
//!
//! The simulators are child processes (this binary re-executed, at most
//! `--per-sim` tablets each), as in `discovery_scale`, whose simulator
//! code this bench shares by copy (bench targets cannot import each
//! other). Recoveries are off (`--allow-recovery=false`): simulated
//! tablets cannot be reparented; the failure is "seen" when the new owner
//! writes its `DetectionOpened` audit event.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use integration::{
    etcd::EtcdServer,
    process::{ChildGuard, free_port},
    vtadmin::http_get,
};
use serde_json::Value;
use tokio::time::Instant;
use vtorc::proto::topodata::{TabletAlias, TabletType};

/// Environment variable that turns this binary into a simulator child:
/// `first_shard:shards:total_shards:first_uid`.
const CHILD_ENV: &str = "VTORC_SHARING_SCALE_SIM";

/// Tablets per shard (a primary and two replicas).
use integration::fleet::{PER_SHARD, drain_time_wait, register, run_simulator, spawn_simulators};

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return run_simulator(&spec);
    }
    let args = integration::fleet::BenchArgs::from_env();
    let value = |name: &str| args.value(name);
    let tablets: usize = value("--tablets")
        .unwrap_or("20000")
        .parse()
        .context("--tablets")?;
    let instances: usize = value("--instances")
        .unwrap_or("3")
        .parse()
        .context("--instances")?;
    let per_sim: usize = value("--per-sim")
        .unwrap_or("3000")
        .parse()
        .context("--per-sim")?;
    let ttl = humantime::parse_duration(value("--lease-ttl").unwrap_or("10s")).context("--lease-ttl")?;
    let poll = humantime::parse_duration(value("--poll").unwrap_or("5s")).context("--poll")?;
    let vtorc = match value("--vtorc") {
        Some(p) => PathBuf::from(p),
        None => release_vtorc()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(tablets, instances, per_sim.max(PER_SHARD), ttl, poll, &vtorc))
}

/// Builds (if needed) and returns the release `vtorc` binary.
fn release_vtorc() -> anyhow::Result<PathBuf> {
    let out =
        integration::testkit::cargo_build_vtorc(&["--quiet", "--release"]).context("run cargo build")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build --release of vtorc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/vtorc"))
}

/// One vtorc process.
struct Instance {
    child: ChildGuard,
    http: String,
    audit: PathBuf,
}

impl Instance {
    fn start(
        vtorc: &Path,
        etcd: &str,
        dir: &Path,
        n: usize,
        ttl: Duration,
        poll: Duration,
    ) -> anyhow::Result<Instance> {
        let port = free_port()?;
        let log = dir.join(format!("vtorc-{n}.log"));
        let audit = dir.join(format!("vtorc-{n}-audit.jsonl"));
        let file = std::fs::File::create(&log)?;
        let child = ChildGuard::spawn(
            &format!("vtorc-{n}"),
            Command::new(vtorc)
                .args(integration::testkit::sharing_member_flags(
                    etcd, port, ttl, &audit,
                ))
                .arg(format!("--instance-poll-time={}ms", poll.as_millis()))
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file),
            Some(log),
        )?;
        Ok(Instance {
            child,
            http: format!("http://127.0.0.1:{port}"),
            audit,
        })
    }

    /// `/api/sharing` with every shard (`full`; an etcd listing of every
    /// shard record) or about one shard only (no listing).
    async fn sharing_of(&self, full: bool) -> anyhow::Result<Value> {
        let path = if full {
            "/api/sharing"
        } else {
            "/api/sharing?keyspace=ks&shard=-"
        };
        let (status, body) = http_get(&self.http, path).await?;
        anyhow::ensure!(status == 200, "/api/sharing: {status}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn sharing(&self) -> anyhow::Result<Value> {
        self.sharing_of(false).await
    }

    fn rss_mib(&self) -> f64 {
        let Some(pid) = self.child.pid() else {
            return f64::NAN;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |k| k / 1024.0)
    }
}

/// Whether every instance reports `members` members, all ready, its
/// assignment loaded and no handover; with every shard owned by one of
/// them. Returns the shard → owner map when so.
async fn settled(
    instances: &[&Instance],
    members: usize,
    shards: usize,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let mut owners = None;
    for i in instances {
        let r = i.sharing().await?;
        let ok = r["registered"] == true
            && r["members"]
                .as_array()
                .is_some_and(|m| m.len() == members && m.iter().all(|m| m["ready"] == true))
            && r["retained_views"] == 0
            && r["generation"] == r["applied_generation"];
        if !ok {
            return Ok(None);
        }
        // Settled: now (only) read the whole shard list.
        let r = i.sharing_of(true).await?;
        let list: Vec<(String, String)> = r["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["shard"].as_str().unwrap_or_default().to_string(),
                    s["owner"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        if list.len() != shards {
            return Ok(None);
        }
        owners = Some(list);
    }
    Ok(owners)
}

async fn wait<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(v)) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(
    tablets: usize,
    n: usize,
    per_sim: usize,
    ttl: Duration,
    poll: Duration,
    vtorc: &Path,
) -> anyhow::Result<()> {
    let shards = tablets.div_ceil(PER_SHARD);
    let per_sim_shards = (per_sim / PER_SHARD).max(1);
    println!(
        "sharing_scale: {} tablets ({shards} shards of {PER_SHARD}), {} simulator process(es), {n} vtorc instances, \
         lease TTL {ttl:?}, poll {poll:?}, {} cores",
        shards * PER_SHARD,
        shards.div_ceil(per_sim_shards),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let (mut sims, records) = spawn_simulators(CHILD_ENV, shards, per_sim_shards).await?;
    let etcd = EtcdServer::start().await?;
    let topo = integration::testkit::zone1_topo(&etcd.endpoint()).await?;
    register(&topo, &records).await?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut instances = Vec::new();
    for i in 0..n {
        instances.push(Instance::start(
            vtorc,
            &etcd.endpoint(),
            dir.path(),
            i,
            ttl,
            poll,
        )?);
    }
    let refs: Vec<&Instance> = instances.iter().collect();
    let owners = wait(Duration::from_secs(600), "all instances settled", || {
        settled(&refs, n, shards)
    })
    .await?;
    println!(
        "all {n} instances settled (registered, shards loaded, every tablet polled once) {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    for (i, inst) in instances.iter().enumerate() {
        let me = inst.sharing().await?["me"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let owned = owners.iter().filter(|(_, o)| *o == me).count();
        println!("  instance {i}: {owned} shards, RSS {:.0} MiB", inst.rss_mib());
    }
    // Let them run a few poll cycles.
    tokio::time::sleep(poll * 2).await;
    let dead = instances[0].sharing().await?["me"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let victim_shard = owners
        .iter()
        .find(|(_, o)| *o == dead)
        .map(|(s, _)| s.clone())
        .context("the killed instance owns a shard")?;
    let victim = records
        .iter()
        .find(|r| r.shard == victim_shard && r.tablet_type == TabletType::Primary)
        .context("the shard's primary")?;
    let victim_alias = TabletAlias::new("zone1", victim.uid).to_string();
    let killed = Instant::now();
    instances[0].child.kill_and_wait()?;
    sims.iter_mut()
        .find(|s| s.uids.contains(&victim.uid))
        .context("the victim's simulator")?
        .fail(victim.uid)?;
    let survivors: Vec<&Instance> = instances[1..].iter().collect();
    let membership = wait(ttl * 3, "a survivor saw the member leave", || async {
        let r = survivors[0].sharing().await?;
        Ok((r["members"].as_array().map(Vec::len) == Some(n - 1)).then(|| killed.elapsed()))
    })
    .await?;
    let seen = {
        let survivors = &survivors;
        let alias = &victim_alias;
        wait(
            Duration::from_secs(300),
            "the failure seen by a survivor",
            || async move {
                Ok(survivors
                    .iter()
                    .any(|s| {
                        std::fs::read_to_string(&s.audit)
                            .unwrap_or_default()
                            .lines()
                            .any(|l| {
                                l.contains("\"DetectionOpened\"")
                                    && l.contains(&format!("\"tablet_alias\":\"{alias}\""))
                            })
                    })
                    .then(|| killed.elapsed()))
            },
        )
        .await?
    };
    let owned = wait(Duration::from_secs(600), "survivors settled", || async {
        Ok(settled(&survivors, n - 1, shards)
            .await?
            .map(|_| killed.elapsed()))
    })
    .await?;
    let moved = owners.iter().filter(|(_, o)| *o == dead).count();
    println!(
        "kill -9 of instance 0 ({moved} shards): member gone at the survivors after {:.2} s; \
         a primary failure injected in one of its shards at the kill seen after {:.2} s; \
         all its shards owned and loaded again (survivors settled) after {:.2} s",
        membership.as_secs_f64(),
        seen.as_secs_f64(),
        owned.as_secs_f64()
    );
    for (i, inst) in instances.iter().enumerate().skip(1) {
        println!("  instance {i}: RSS {:.0} MiB after the takeover", inst.rss_mib());
    }
    drop(instances);
    drop(sims);
    drain_time_wait().await;
    Ok(())
}
