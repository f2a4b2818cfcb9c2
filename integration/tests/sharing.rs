//! Work sharing (`--sharing`) with real etcd and several `vtorc` processes.
//!
//! Most tests run over simulated tablets (`integration::sim`, in this
//! process) so that every tablet's `FullStatus` count is visible: a
//! background sampler records, per tablet, the longest time without a poll
//! from any instance; that is how long a shard went unwatched. The last
//! test runs over real MariaDB tablets and counts recoveries in every
//! instance's audit file.
//!
//! Bounds are correctness properties ("unwatched for at most the lease TTL
//! plus slack"), not speed measurements; the numbers are printed for the
//! record (`--nocapture`).

mod recovery_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration::cluster::{ClusterBuilder, poll_until};
use integration::etcd::EtcdServer;
use integration::netfault::PacketDrop;
use integration::process::{ChildGuard, free_port};
use integration::sim::{SimConfig, SimFleet, SimMode};
use integration::vtadmin::http_get;
use recovery_support::{VtorcProcess, alias, ers_started_across, vtorc_binary};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vtorc::analysis::RecoveryKind;
use vtorc::proto::topodata::TabletType;
use vtorc::proto::vtorc::v1 as pb;
use vtorc::proto::vtorc::v1::vtorc_client::VtorcClient;

/// Member lease TTL of the test instances.
const TTL: Duration = Duration::from_secs(4);

/// Poll interval of the test instances.
const POLL: Duration = Duration::from_secs(1);

/// Slack on top of a bound: process scheduling on a loaded 2-core box,
/// the re-list and the first poll of the moved shard.
const SLACK: Duration = Duration::from_secs(3);

/// The uid a partitioned instance runs as (its packets to etcd are dropped).
const PARTITIONED_UID: u32 = 4321;

/// Shards of the simulated keyspace.
fn shard_names(n: usize) -> Vec<String> {
    let step = 256 / n;
    (0..n)
        .map(|i| {
            let start = if i == 0 {
                String::new()
            } else {
                format!("{:02x}", i * step)
            };
            let end = if i + 1 == n {
                String::new()
            } else {
                format!("{:02x}", (i + 1) * step)
            };
            format!("{start}-{end}")
        })
        .collect()
}

/// Real etcd with a simulated fleet registered in it.
struct World {
    etcd: EtcdServer,
    fleet: SimFleet,
    shards: Vec<String>,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(shards: usize) -> World {
        let etcd = EtcdServer::start().await.expect("etcd starts");
        let names = shard_names(shards);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fleet = SimFleet::start(SimConfig::default(), "ks", &refs, 2)
            .await
            .expect("simulator starts");
        let topo = integration::testkit::etcd_topo(&etcd).await;
        fleet.register(&topo, "none").await;
        let dir = tempfile::tempdir().expect("tempdir");
        // A partitioned instance runs as another user and writes here.
        let _ = std::process::Command::new("chmod")
            .arg("777")
            .arg(dir.path())
            .status();
        World {
            etcd,
            fleet,
            shards: names,
            dir,
        }
    }

    fn instance(&self, n: usize, uid: Option<u32>) -> Instance {
        Instance::start(&self.etcd.address(), self.dir.path(), n, uid)
    }

    /// Starts sampling every tablet's poll count.
    fn watch_polls(&self) -> PollGaps {
        PollGaps::start(&self.fleet)
    }
}

/// One `vtorc --sharing` child process.
struct Instance {
    child: ChildGuard,
    http: String,
    grpc: String,
    log: PathBuf,
    audit: PathBuf,
}

impl Instance {
    fn start(etcd: &str, dir: &Path, n: usize, uid: Option<u32>) -> Instance {
        let port = free_port().expect("free port");
        let grpc_port = free_port().expect("free port");
        let log = dir.join(format!("vtorc-{n}.log"));
        let audit = dir.join(format!("vtorc-{n}-audit.jsonl"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = integration::testkit::command_as(&vtorc_binary(), uid);
        command
            .args(integration::testkit::sharing_member_flags(
                etcd, port, TTL, &audit,
            ))
            .arg(format!("--instance-poll-time={}s", POLL.as_secs()))
            .arg("--remote-operation-timeout=2s")
            .arg("--topo-etcd-lease-ttl=4")
            .arg("--recovery-poll-duration=500ms")
            .arg(format!("--grpc-port={grpc_port}"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file);
        let child =
            ChildGuard::spawn(&format!("vtorc-{n}"), &mut command, Some(log.clone())).expect("spawn vtorc");
        Instance {
            child,
            http: format!("http://127.0.0.1:{port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            log,
            audit,
        }
    }

    /// `/api/sharing`.
    async fn sharing(&self) -> anyhow::Result<Value> {
        let (status, body) = http_get(&self.http, "/api/sharing").await?;
        anyhow::ensure!(status == 200, "/api/sharing: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// `GetSharing` of the VTOrc gRPC API.
    async fn grpc_sharing(&self, keyspace: &str, shard: &str) -> anyhow::Result<pb::GetSharingResponse> {
        let mut client = VtorcClient::connect(self.grpc.clone()).await?;
        Ok(client
            .get_sharing(pb::GetSharingRequest {
                keyspace: keyspace.to_string(),
                shard: shard.to_string(),
            })
            .await?
            .into_inner())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Whether `report` (one instance's `/api/sharing`) shows a settled state
/// over `members` members: registered, acting, every member ready, the
/// assignment loaded, no handover in progress.
fn settled(report: &Value, members: usize) -> bool {
    report["registered"] == true
        && report["acting"] == true
        && report["members"].as_array().is_some_and(|m| m.len() == members)
        && report["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["ready"] == true))
        && report["retained_views"] == 0
        && report["generation"].as_u64().is_some()
        && report["generation"] == report["applied_generation"]
}

/// Waits until every instance is settled over `instances.len()` members
/// and they agree on one owner per shard (each owner watching it); returns
/// the owner of each shard.
async fn wait_settled(
    instances: &[&Instance],
    shards: &[String],
    within: Duration,
) -> BTreeMap<String, String> {
    let n = instances.len();
    poll_until(
        within,
        "every instance settled on one owner per shard",
        || async {
            let mut owners: Option<BTreeMap<String, String>> = None;
            for i in instances {
                let report = i.sharing().await?;
                if !settled(&report, n) {
                    return Ok(None);
                }
                let me = report["me"].as_str().unwrap_or_default().to_string();
                let mut seen = BTreeMap::new();
                for s in report["shards"].as_array().into_iter().flatten() {
                    let shard = s["shard"].as_str().unwrap_or_default().to_string();
                    let owner = s["owner"].as_str().unwrap_or_default().to_string();
                    if (owner == me) != (s["watched_here"] == true) {
                        return Ok(None);
                    }
                    seen.insert(shard, owner);
                }
                if seen.len() != shards.len() {
                    return Ok(None);
                }
                match &owners {
                    None => owners = Some(seen),
                    Some(o) if *o == seen => {}
                    Some(_) => return Ok(None),
                }
            }
            Ok(owners)
        },
    )
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = instances.iter().map(|i| i.child.log_tail(25)).collect();
        panic!("{e:#}\n{}", logs.join("\n----\n"))
    })
}

/// The member id of an instance.
async fn member_id(i: &Instance) -> String {
    i.sharing().await.expect("/api/sharing")["me"]
        .as_str()
        .expect("me")
        .to_string()
}

/// Samples every simulated tablet's `FullStatus` count every 100 ms and
/// keeps the longest time any tablet went without a poll.
struct PollGaps {
    worst: Arc<Mutex<(Duration, String)>>,
    stop: CancellationToken,
}

impl PollGaps {
    fn start(fleet: &SimFleet) -> PollGaps {
        let tablets: Vec<_> = fleet.tablets().to_vec();
        let worst = Arc::new(Mutex::new((Duration::ZERO, String::new())));
        let stop = CancellationToken::new();
        let (w, s) = (Arc::clone(&worst), stop.clone());
        tokio::spawn(async move {
            let mut last: HashMap<String, (u64, Instant)> = HashMap::new();
            loop {
                let now = Instant::now();
                for t in &tablets {
                    let calls = t.full_status_calls();
                    let key = t.alias().to_string();
                    let entry = last.entry(key.clone()).or_insert((calls, now));
                    if calls != entry.0 {
                        *entry = (calls, now);
                    }
                    let gap = now.duration_since(entry.1);
                    let mut worst = w.lock().unwrap_or_else(|p| p.into_inner());
                    if gap > worst.0 {
                        *worst = (gap, key);
                    }
                }
                tokio::select! {
                    () = s.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        PollGaps { worst, stop }
    }

    /// The longest gap so far and its tablet.
    fn worst(&self) -> (Duration, String) {
        self.worst.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for PollGaps {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The shards `owners` gives to `id`.
fn owned_by(owners: &BTreeMap<String, String>, id: &str) -> Vec<String> {
    owners
        .iter()
        .filter(|(_, o)| *o == id)
        .map(|(s, _)| s.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_shards_move_within_the_lease_ttl_and_a_failure_there_is_seen() {
    let w = World::start(12).await;
    let mut instances: Vec<Instance> = (0..3).map(|n| w.instance(n, None)).collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let owners = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let dead_id = member_id(&instances[0]).await;
    let moved = owned_by(&owners, &dead_id);
    assert!(
        !moved.is_empty(),
        "instance 0 owns some of the 12 shards: {owners:?}"
    );
    let distinct: BTreeSet<&String> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "every instance owns shards: {owners:?}");
    let gaps = w.watch_polls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    instances[0].child.kill_and_wait().expect("kill -9 instance 0");
    let survivors: Vec<&Instance> = instances[1..].iter().collect();
    let after = wait_settled(&survivors, &w.shards, TTL * 5).await;
    let owned_again = killed.elapsed();
    for s in &moved {
        assert_ne!(after[s], dead_id, "{s} still owned by the dead instance");
    }
    // A failure in one of the moved shards is seen by its new owner.
    let shard = &moved[0];
    let primary = w
        .fleet
        .tablets()
        .iter()
        .find(|t| t.record().shard == *shard && t.record().r#type == TabletType::Primary as i32)
        .expect("a primary")
        .clone();
    let injected = Instant::now();
    primary.set_mode(SimMode::Down);
    let new_owner = after[shard].clone();
    let owner_instance = {
        let mut found = None;
        for i in &survivors {
            if member_id(i).await == new_owner {
                found = Some(*i);
            }
        }
        found.expect("the new owner is a survivor")
    };
    let primary_alias = primary.alias().to_string();
    poll_until(
        Duration::from_secs(20),
        "the new owner detects the dead primary",
        || async {
            Ok(owner_instance
                .audit()
                .iter()
                .any(|e| e["event"] == "DetectionOpened" && e["tablet_alias"] == primary_alias.as_str())
                .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", owner_instance.child.log_tail(40)));
    let seen = injected.elapsed();
    let (gap, tablet) = gaps.worst();
    eprintln!(
        "owner death: {} of 12 shards moved; all owned again (every survivor settled) {owned_again:?} after kill -9; \
         failure seen {seen:?} after injection; longest poll gap {gap:?} ({tablet}); lease TTL {TTL:?}",
        moved.len()
    );
    assert!(
        gap <= TTL + SLACK,
        "{tablet} went {gap:?} without a poll (lease TTL {TTL:?} + slack {SLACK:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_instance_takes_its_share_while_the_previous_owners_keep_watching() {
    let w = World::start(12).await;
    let mut instances: Vec<Instance> = (0..2).map(|n| w.instance(n, None)).collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let gaps = w.watch_polls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let added = Instant::now();
    instances.push(w.instance(2, None));
    let refs: Vec<&Instance> = instances.iter().collect();
    let owners = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let took = added.elapsed();
    let new_id = member_id(&instances[2]).await;
    let gained = owned_by(&owners, &new_id);
    assert!(!gained.is_empty(), "the new instance owns shards: {owners:?}");
    // The old owners stopped watching the moved shards.
    for i in &instances[..2] {
        let report = i.sharing().await.expect("/api/sharing");
        for s in report["shards"].as_array().into_iter().flatten() {
            if gained.iter().any(|g| s["shard"] == g.as_str()) {
                assert_eq!(s["watched_here"], false, "{s}");
            }
        }
    }
    // The gRPC API tells the same story as /api/sharing, from any instance.
    for i in &instances {
        let report = i.grpc_sharing("", "").await.expect("GetSharing");
        assert!(report.enabled && report.acting && report.registered, "{report:?}");
        assert_eq!(report.members.len(), 3, "{report:?}");
        assert!(
            report
                .members
                .iter()
                .all(|m| m.ready && !m.grpc_address.is_empty())
        );
        let seen: BTreeMap<String, String> = report
            .shards
            .iter()
            .map(|s| (s.shard.clone(), s.owner.clone()))
            .collect();
        assert_eq!(seen, owners, "{}", report.me);
        for s in &report.shards {
            assert_eq!(s.watched_here, s.owner == report.me, "{s:?}");
        }
    }
    let one = &w.shards[0];
    let report = instances[0]
        .grpc_sharing("ks", one)
        .await
        .expect("GetSharing one shard");
    assert_eq!(report.shards.len(), 1, "{report:?}");
    assert_eq!(report.shards[0].owner, owners[one]);
    let owner = report
        .members
        .iter()
        .find(|m| m.id == owners[one])
        .expect("owner listed");
    assert_eq!(report.shards[0].owner_grpc_address, owner.grpc_address);
    let refused = instances[0]
        .grpc_sharing("", one)
        .await
        .expect_err("shard without keyspace");
    assert!(refused.to_string().contains("needs keyspace"), "{refused:#}");

    let (gap, tablet) = gaps.worst();
    eprintln!(
        "owner added: {} of 12 shards moved to it; settled {took:?} after its start; longest poll gap {gap:?} ({tablet})",
        gained.len()
    );
    // Nothing is dropped before its new owner polls it: the gap is the
    // poll interval plus scheduling, far below the lease TTL.
    assert!(
        gap <= TTL,
        "{tablet} went {gap:?} without a poll during the handover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_keeps_every_shard_watched_and_the_members_register_again() {
    let mut w = World::start(8).await;
    let instances: Vec<Instance> = (0..2).map(|n| w.instance(n, None)).collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let before = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let gaps = w.watch_polls();
    w.etcd.kill().expect("kill etcd");
    // Long enough for every lease deadline to pass: nobody acts.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    for i in &instances {
        let report = i.sharing().await.expect("/api/sharing answers without etcd");
        assert_eq!(
            report["acting"], false,
            "no instance acts without its lease: {report}"
        );
    }
    w.etcd.restart().await.expect("etcd restarts");
    let restarted = Instant::now();
    let after = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let took = restarted.elapsed();
    assert_eq!(before.len(), after.len());
    let (gap, tablet) = gaps.worst();
    eprintln!(
        "etcd restart: settled again {took:?} after etcd was back; longest poll gap {gap:?} ({tablet})"
    );
    // Polling does not depend on etcd: every shard stayed watched.
    assert!(
        gap <= TTL,
        "{tablet} went {gap:?} without a poll across the etcd restart"
    );
}

/// The timestamp at the start of the first log line of `text` that
/// contains every one of `needles`.
fn log_time(text: &str, needles: &[&str]) -> Option<String> {
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_instance_stops_acting_before_another_takes_its_shards() {
    let w = World::start(8).await;
    let instances = [w.instance(0, Some(PARTITIONED_UID)), w.instance(1, None)];
    let refs: Vec<&Instance> = instances.iter().collect();
    let owners = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    let cut_id = member_id(&instances[0]).await;
    assert!(!owned_by(&owners, &cut_id).is_empty(), "{owners:?}");
    let gaps = w.watch_polls();
    // Log lines from before the cut (start-up churn on a loaded machine)
    // say nothing about it: only lines stamped after this count.
    let cut_at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let cut = PacketDrop::from_uid(PARTITIONED_UID, &[w.etcd.client_port()]).expect("iptables");
    // The other instance takes over once the partitioned one's lease expires.
    poll_until(TTL * 4, "the other instance owns every shard", || async {
        let report = instances[1].sharing().await?;
        let all_mine = report["shards"].as_array().is_some_and(|s| {
            s.iter()
                .all(|s| s["watched_here"] == true && s["owner"] == report["me"])
        });
        Ok((report["members"].as_array().is_some_and(|m| m.len() == 1) && all_mine).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", instances[1].child.log_tail(30)));
    let cut_report = instances[0].sharing().await.expect("its HTTP API still answers");
    assert_eq!(
        cut_report["acting"], false,
        "the partitioned instance does not act: {cut_report}"
    );
    // When it stopped acting (`acting_until`: its recoveries were refused
    // from then on), not when the log line was written.
    let stopped = instances[0]
        .log_text()
        .lines()
        .filter(|l| l.split_whitespace().next().is_some_and(|t| t >= cut_at.as_str()))
        .find(|l| l.contains("stopping acting"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("acting_until=")))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "the partitioned instance logged that it stopped acting:\n{}",
                instances[0].child.log_tail(30)
            )
        });
    let took_over = log_time(
        &instances[1]
            .log_text()
            .lines()
            .filter(|l| l.split_whitespace().next().is_some_and(|t| t >= cut_at.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        &["sharing: new assignment", "members=1"],
    )
    .unwrap_or_else(|| panic!("no takeover logged:\n{}", instances[1].child.log_tail(30)));
    eprintln!("partition: stopped acting at {stopped}, the other instance took over at {took_over}");
    // Same host clock, same RFC 3339 format: the strings order as the times.
    assert!(
        stopped < took_over,
        "the partitioned instance stopped acting ({stopped}) before the other took over ({took_over})"
    );
    let (gap, tablet) = gaps.worst();
    // It kept polling its shards while cut off from etcd (it does not act,
    // but it watches), so nothing went unwatched.
    assert!(gap <= TTL, "{tablet} went {gap:?} without a poll");
    cut.heal().expect("heal");
    let refs: Vec<&Instance> = instances.iter().collect();
    let healed = wait_settled(&refs, &w.shards, Duration::from_secs(60)).await;
    assert!(
        !owned_by(&healed, &cut_id).is_empty(),
        "back after healing, it owns its shards again: {healed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sharing_a_dead_primary_after_its_owners_death_gets_exactly_one_ers() {
    let mut cluster = ClusterBuilder::three_tablets("commerce", "semi_sync")
        .started()
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vtorcs = Vec::new();
    let mut ports = Vec::new();
    for n in 0..3 {
        let port = free_port().expect("free port");
        let flags = [
            "--sharing".to_string(),
            "--sharing-lease-ttl=4s".to_string(),
            format!("--port={port}"),
        ];
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        vtorcs.push(VtorcProcess::start(&cluster, dir.path(), n, &refs).await);
        ports.push(port);
    }
    // The owner of commerce/0, as every instance reports it.
    let owner = poll_until(Duration::from_secs(30), "one owner of commerce/0", || async {
        let mut owners = BTreeSet::new();
        for p in &ports {
            let (status, body) = http_get(&format!("http://127.0.0.1:{p}"), "/api/sharing").await?;
            anyhow::ensure!(status == 200, "{body}");
            let v: Value = serde_json::from_str(&body)?;
            if v["members"].as_array().map(Vec::len) != Some(3) {
                return Ok(None);
            }
            let o = v["shards"]
                .as_array()
                .and_then(|s| {
                    s.iter()
                        .find(|s| s["keyspace"] == "commerce" && s["shard"] == "0")
                })
                .and_then(|s| s["owner_http_address"].as_str())
                .map(str::to_string);
            owners.insert(o);
        }
        Ok((owners.len() == 1)
            .then(|| owners.into_iter().next().flatten())
            .flatten())
    })
    .await
    .expect("an owner");
    let owner_index = ports
        .iter()
        .position(|p| owner.ends_with(&format!(":{p}")))
        .expect("the owner is one of ours");
    vtorcs[owner_index]
        .child
        .kill_and_wait()
        .expect("kill -9 the owner");
    cluster.kill_mysql(&alias(100)).expect("kill -9 the primary");
    let live = [alias(101), alias(102)];
    poll_until(Duration::from_secs(60), "a new serving primary", || async {
        let Some(primary) = cluster.primary_alias("commerce", "0").await? else {
            return Ok(None);
        };
        Ok(live.contains(&primary).then_some(primary))
    })
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = vtorcs.iter().map(|v| v.child.log_tail(30)).collect();
        panic!("{e:#}\n{}", logs.join("\n----\n"))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = ers_started_across(&vtorcs);
    assert_eq!(started, 1, "exactly one ERS across the instances");
    assert!(
        vtorcs[owner_index]
            .recovery_events("RecoveryStarted", RecoveryKind::RecoverDeadPrimary)
            .is_empty()
    );
    for v in &mut vtorcs {
        let _ = v.child.terminate(Duration::from_secs(15)).await;
    }
}
