//! Shared by the `recovery_*` and `failover_*` test binaries: a vtorc
//! (discovery + recovery engine) running in the test process against a
//! [`Cluster`], the `vtorc` binary for child-process tests, and waits.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use integration::cluster::{Cluster, poll_until};
use integration::faults::SemiSyncSide;
use mysql_async::prelude::Queryable;
use vtorc::analysis::{AnalysisCode, RecoveryKind};
use vtorc::config::Config;
use vtorc::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle, DiscoveryTask};
use vtorc::ids::KeyspaceShard;
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::recovery::{
    AuditFilter, DetectionRecord, RecoveryConfig, RecoveryDeps, RecoveryEngine, RecoveryHandle,
    RecoveryOutcome, RecoveryRecord, RecoveryTask,
};
use vtorc::reparent::{ReparentConfig, Reparenter, system_wall_clock};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager};

/// Alias of tablet `uid` in cell `zone1`.
pub fn alias(uid: u32) -> TabletAlias {
    integration::testkit::zone1(uid)
}

/// Flags every test vtorc gets (each test adds its own).
pub fn base_flags(cluster: &Cluster) -> Vec<String> {
    integration::testkit::vtorc_flags(cluster)
}

/// A vtorc configuration for `cluster` with `extra` flags.
pub fn config(cluster: &Cluster, extra: &[&str]) -> Config {
    let mut args = base_flags(cluster);
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::load(args).expect("test flags are valid")
}

/// Discovery and the recovery engine running in the test process.
pub struct Vtorc {
    /// The engine's handle (audit, switches, metrics).
    pub handle: RecoveryHandle,
    /// Discovery's handle (snapshots).
    pub discovery: DiscoveryHandle,
    /// The engine.
    task: Option<RecoveryTask>,
    /// Discovery.
    discovery_task: Option<DiscoveryTask>,
}

impl Vtorc {
    /// Starts discovery and the engine for `cluster` with `extra` flags and
    /// waits until discovery is ready.
    pub async fn start(cluster: &Cluster, extra: &[&str]) -> Vtorc {
        Vtorc::start_with(config(cluster, extra)).await
    }

    /// [`Vtorc::start`], then waits (up to 20 s) until it has seen
    /// `keyspace/0` healthy.
    pub async fn start_healthy(cluster: &Cluster, keyspace: &str, extra: &[&str]) -> Vtorc {
        let vtorc = Vtorc::start(cluster, extra).await;
        vtorc
            .wait_until_healthy(&shard0(keyspace), Duration::from_secs(20))
            .await;
        vtorc
    }

    /// Starts discovery and the engine with `config`.
    pub async fn start_with(config: Config) -> Vtorc {
        let topo = vtorc::topo::Topo::connect_etcd(
            &config.topo_global_server_address.join(","),
            &config.topo_global_root,
            vtorc::topo::TopoOptions::from_config(&config),
        )
        .await
        .expect("connect to etcd");
        let grpc = GrpcTabletManager::new(
            TabletClientConfig::from_config(&config).expect("tablet client TLS settings"),
        );
        let tmc: std::sync::Arc<dyn TabletManager> = std::sync::Arc::new(grpc.clone());
        let (discovery, discovery_handle) = Discovery::new(
            DiscoveryConfig::from_config(&config),
            topo.clone(),
            tmc.clone(),
            std::sync::Arc::new(grpc),
        );
        let discovery_task = discovery.spawn();
        let reparenter = std::sync::Arc::new(Reparenter::new(
            topo.clone(),
            tmc.clone(),
            ReparentConfig::from_config(&config),
        ));
        let (engine, handle) = RecoveryEngine::new(
            RecoveryConfig::from_config(&config, "test-vtorc"),
            RecoveryDeps {
                topo,
                tmc,
                cluster: std::sync::Arc::new(discovery_handle.clone()),
                reparenter,
                clock: system_wall_clock,
            },
        )
        .expect("engine");
        let task = engine.spawn();
        tokio::time::timeout(Duration::from_secs(30), discovery_handle.wait_ready())
            .await
            .expect("discovery ready within 30 s")
            .expect("discovery runs");
        Vtorc {
            handle,
            discovery: discovery_handle,
            task: Some(task),
            discovery_task: Some(discovery_task),
        }
    }

    /// Stops the engine (gracefully) and discovery.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.shutdown().await.expect("the engine stops cleanly");
        }
        if let Some(task) = self.discovery_task.take() {
            task.shutdown().await;
        }
    }

    /// Finished recoveries of `kind` (newest first).
    pub fn finished(&self, kind: RecoveryKind) -> Vec<RecoveryRecord> {
        self.handle
            .recoveries(&AuditFilter::all())
            .into_iter()
            .filter(|r| r.recovery_type == kind && r.outcome != RecoveryOutcome::Running)
            .collect()
    }

    /// Waits for a finished recovery of `kind` and returns it.
    pub async fn wait_for_recovery(&self, kind: RecoveryKind, timeout: Duration) -> RecoveryRecord {
        let what = format!("a finished {} recovery", kind.name());
        poll_until(timeout, &what, || async {
            Ok(self.finished(kind).into_iter().next())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}; audit: {}", self.audit_dump()))
    }

    /// Waits for a finished recovery of `kind`, asserts it succeeded (the
    /// audit in the message otherwise) and returns it.
    pub async fn wait_for_success(&self, kind: RecoveryKind, timeout: Duration) -> RecoveryRecord {
        let record = self.wait_for_recovery(kind, timeout).await;
        assert_eq!(
            record.outcome,
            RecoveryOutcome::Succeeded,
            "{}",
            self.audit_dump()
        );
        record
    }

    /// Waits for a successful recovery of `kind` on `tablet` and returns it.
    pub async fn wait_for_success_on(
        &self,
        kind: RecoveryKind,
        tablet: &TabletAlias,
        timeout: Duration,
    ) -> RecoveryRecord {
        let what = format!("a successful {} recovery of {tablet}", kind.name());
        poll_until(timeout, &what, || async {
            Ok(self
                .finished(kind)
                .into_iter()
                .find(|r| r.outcome == RecoveryOutcome::Succeeded && &r.tablet_alias == tablet))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}; audit: {}", self.audit_dump()))
    }

    /// [`Vtorc::wait_for_detection`] bounded by 20 s.
    pub async fn detected(&self, tablet: &TabletAlias, code: AnalysisCode) -> DetectionRecord {
        self.wait_for_detection(tablet, code, Duration::from_secs(20))
            .await
    }

    /// [`Vtorc::succeeded_on`] of a recovery that answered `code`: fails
    /// the test (with the audit) when the successful recovery on `tablet`
    /// was for another analysis.
    pub async fn fixed(
        &self,
        kind: RecoveryKind,
        tablet: &TabletAlias,
        code: AnalysisCode,
    ) -> RecoveryRecord {
        let record = self.succeeded_on(kind, tablet).await;
        assert_eq!(record.analysis, code, "{}", self.audit_dump());
        assert_eq!(record.outcome, RecoveryOutcome::Succeeded);
        record
    }

    /// [`Vtorc::wait_for_success_on`] bounded by 20 s.
    pub async fn succeeded_on(&self, kind: RecoveryKind, tablet: &TabletAlias) -> RecoveryRecord {
        self.wait_for_success_on(kind, tablet, Duration::from_secs(20))
            .await
    }

    /// Waits until `tablet` has an open detection of `code` and returns it.
    pub async fn wait_for_detection(
        &self,
        tablet: &TabletAlias,
        code: AnalysisCode,
        timeout: Duration,
    ) -> DetectionRecord {
        let what = format!("a detection of {code} on {tablet}");
        poll_until(timeout, &what, || async {
            Ok(self
                .handle
                .detections(&AuditFilter::all())
                .into_iter()
                .find(|d| &d.tablet_alias == tablet && d.analysis == code))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}; audit: {}", self.audit_dump()))
    }

    /// Waits until the shard has no problem other than `allowed`.
    pub async fn wait_until_healthy(&self, key: &KeyspaceShard, timeout: Duration) {
        let what = format!("shard {key} without problems");
        poll_until(timeout, &what, || async {
            Ok(self.problems_left(key).is_empty().then_some(()))
        })
        .await
        .unwrap_or_else(|e| {
            let left = self.problems_left(key);
            panic!("{e:#}; still: {left:?}; audit: {}", self.audit_dump())
        });
    }

    /// The problems Explain still lists for `key`: code, tablet and reason.
    fn problems_left(&self, key: &KeyspaceShard) -> Vec<String> {
        self.handle
            .explain(key)
            .into_iter()
            .map(|e| {
                format!(
                    "{} on {}: {}",
                    e.analysis.analysis, e.analysis.analyzed_instance_alias, e.analysis.reason
                )
            })
            .collect()
    }

    /// The audited incident `record`'s recovery answered.
    pub fn detection_of(&self, record: &RecoveryRecord) -> DetectionRecord {
        self.handle
            .detections(&AuditFilter::all())
            .into_iter()
            .find(|d| d.detection_id == record.detection_id)
            .unwrap_or_else(|| panic!("the incident is audited; audit: {}", self.audit_dump()))
    }

    /// The audit as JSON, for failure messages.
    pub fn audit_dump(&self) -> String {
        let recoveries = self.handle.recoveries(&AuditFilter::all().recent(10));
        let detections = self.handle.detections(&AuditFilter::all().recent(20));
        let brief_r: Vec<String> = recoveries
            .iter()
            .map(|r| {
                format!(
                    "#{} {} {} on {} {:?} err={:?} steps={:?}",
                    r.recovery_id,
                    r.recovery_type.name(),
                    r.analysis,
                    r.tablet_alias,
                    r.outcome,
                    r.error,
                    r.steps
                        .iter()
                        .map(|s| format!("{}: {}", s.step, s.message))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        let brief_d: Vec<String> = detections
            .iter()
            .map(|d| {
                format!(
                    "{} on {} skip={:?} note={:?} resolved={:?}",
                    d.analysis, d.tablet_alias, d.skip_reason, d.note, d.resolution
                )
            })
            .collect();
        format!("recoveries: {brief_r:#?}\ndetections: {brief_d:#?}")
    }
}

/// Waits until the shard record names a primary other than `old` and
/// returns it.
pub async fn wait_for_new_primary(
    cluster: &Cluster,
    keyspace: &str,
    shard: &str,
    old: &TabletAlias,
    timeout: Duration,
) -> TabletAlias {
    poll_until(timeout, "a new primary in the shard record", || async {
        Ok(cluster.primary_alias(keyspace, shard).await?.filter(|p| p != old))
    })
    .await
    .expect("the shard record names a new primary")
}

/// `read_only` of a tablet's MariaDB.
pub async fn read_only(cluster: &Cluster, tablet: &TabletAlias) -> anyhow::Result<bool> {
    let mut conn = cluster.mysql_conn(tablet).await?;
    let v: Option<i64> = conn.query_first("SELECT @@global.read_only").await?;
    conn.disconnect().await.ok();
    Ok(v.unwrap_or(1) != 0)
}

/// The MySQL port `tablet` replicates from, and whether both threads run
/// (`None` = no replication configured).
pub async fn replication_source(
    cluster: &Cluster,
    tablet: &TabletAlias,
) -> anyhow::Result<Option<(u16, bool)>> {
    let status = cluster.full_status(tablet).await?;
    Ok(status.replication_status.and_then(|r| {
        if r.source_port == 0 {
            return None;
        }
        let running = r.io_state == 3 && r.sql_state == 3;
        Some((u16::try_from(r.source_port).unwrap_or(0), running))
    }))
}

/// Waits until `tablet` replicates from `primary` with both threads running.
pub async fn wait_replicating_from(
    cluster: &Cluster,
    tablet: &TabletAlias,
    primary: &TabletAlias,
    timeout: Duration,
) {
    if let Err(e) = try_wait_replicating_from(cluster, tablet, primary, timeout).await {
        panic!("{e}");
    }
}

/// [`wait_replicating_from`], returning the failure (with the tablet's
/// replication status) instead of panicking.
pub async fn try_wait_replicating_from(
    cluster: &Cluster,
    tablet: &TabletAlias,
    primary: &TabletAlias,
    timeout: Duration,
) -> Result<(), String> {
    let port = cluster.tablet(primary).expect("primary in cluster").mysql_port();
    let what = format!("{tablet} replicating from {primary}");
    let result = poll_until(timeout, &what, || async {
        Ok((replication_source(cluster, tablet).await? == Some((port, true))).then_some(()))
    })
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let status = cluster
                .full_status(tablet)
                .await
                .map(|s| format!("{:?}", s.replication_status))
                .unwrap_or_else(|e| format!("{e:#}"));
            Err(format!("{e:#}; replication status of {tablet}: {status}"))
        }
    }
}

/// Asserts that the record of shard `keyspace/0` names `primary`.
pub async fn assert_shard_primary(cluster: &Cluster, keyspace: &str, primary: &TabletAlias) {
    assert_eq!(
        cluster.primary_alias(keyspace, "0").await.expect("shard"),
        Some(primary.clone())
    );
}

/// The topo type of `tablet`.
pub async fn topo_type(cluster: &Cluster, tablet: &TabletAlias) -> anyhow::Result<TabletType> {
    Ok(cluster.tablet_record(tablet).await?.r#type())
}

/// Path of the `vtorc` binary, built once per test binary (`cargo build`
/// of the root package; the integration crate cannot name another
/// package's binary).
pub fn vtorc_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = integration::testkit::cargo_build_vtorc(&["--quiet"])
            .expect("run cargo build for the vtorc binary");
        assert!(
            out.status.success(),
            "cargo build of the vtorc binary failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // target/<profile>/deps/<this test> → target/<profile>/vtorc
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executables live in target/<profile>/deps");
        let path = dir.join("vtorc");
        assert!(path.is_file(), "no vtorc binary at {}", path.display());
        path
    })
    .clone()
}

/// The shard `keyspace/0`.
pub fn shard0(keyspace: &str) -> KeyspaceShard {
    KeyspaceShard::new(keyspace, "0")
}

/// A 3-tablet shard `keyspace/0` (primary 100, replicas 101 and 102) with
/// `durability`, and a vtorc with `extra` flags that has seen it healthy.
pub async fn healthy_world(keyspace: &str, durability: &str, extra: &[&str]) -> (Cluster, Vtorc) {
    healthy_world_of(
        integration::cluster::ClusterBuilder::three_tablets(keyspace, durability),
        keyspace,
        extra,
    )
    .await
}

/// [`healthy_world`] of a cluster built by `builder` (its shard `keyspace/0`).
pub async fn healthy_world_of(
    builder: integration::cluster::ClusterBuilder,
    keyspace: &str,
    extra: &[&str],
) -> (Cluster, Vtorc) {
    let cluster = builder.start().await.expect("cluster starts");
    let vtorc = Vtorc::start_healthy(&cluster, keyspace, extra).await;
    (cluster, vtorc)
}

/// Runs one SQL statement on a tablet's MariaDB as root.
pub async fn sql(cluster: &Cluster, tablet: &TabletAlias, statement: &str) {
    let mut conn = cluster.mysql_conn(tablet).await.expect("connect as root");
    conn.query_drop(statement)
        .await
        .unwrap_or_else(|e| panic!("{tablet}: {statement}: {e}"));
    conn.disconnect().await.ok();
}

/// Waits (5 s) until FullStatus of `tablet` reports `side`'s semi-sync
/// `enabled`.
pub async fn wait_semi_sync(cluster: &Cluster, tablet: &TabletAlias, side: SemiSyncSide, enabled: bool) {
    let what = format!("semi-sync {side:?} {}", if enabled { "on" } else { "off" });
    wait_full_status(cluster, tablet, &what, Duration::from_secs(5), |s| {
        let on = match side {
            SemiSyncSide::Primary => s.semi_sync_primary_enabled,
            SemiSyncSide::Replica => s.semi_sync_replica_enabled,
        };
        on == enabled
    })
    .await;
}

/// Waits until `check` holds on `tablet`'s FullStatus.
pub async fn wait_full_status(
    cluster: &Cluster,
    tablet: &TabletAlias,
    what: &str,
    timeout: Duration,
    check: impl Fn(&vtorc::proto::replicationdata::FullStatus) -> bool,
) {
    let check = &check;
    poll_until(timeout, what, || async move {
        let status = cluster.full_status(tablet).await?;
        Ok(check(&status).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{tablet}: {e:#}"));
}

/// A `vtorc` child process with its own audit file and log.
pub struct VtorcProcess {
    /// The child (SIGKILLed on drop).
    pub child: integration::process::ChildGuard,
    /// Its JSON-lines audit file.
    pub audit_path: PathBuf,
    /// Its log (stdout and stderr).
    pub log_path: PathBuf,
}

impl VtorcProcess {
    /// Starts `vtorc` number `n` for `cluster` in `dir` with `extra` flags
    /// and waits until its recovery engine runs.
    pub async fn start(cluster: &Cluster, dir: &std::path::Path, n: usize, extra: &[&str]) -> VtorcProcess {
        VtorcProcess::start_as(cluster, dir, n, extra, None).await
    }

    /// [`VtorcProcess::start`], running as user and group `uid` when given
    /// (`setpriv`; `dir` must be writable by it).
    pub async fn start_as(
        cluster: &Cluster,
        dir: &std::path::Path,
        n: usize,
        extra: &[&str],
        uid: Option<u32>,
    ) -> VtorcProcess {
        let audit_path = dir.join(format!("vtorc-{n}-audit.jsonl"));
        let log_path = dir.join(format!("vtorc-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("create the log file");
        let mut command = integration::testkit::command_as(&vtorc_binary(), uid);
        command
            .args(base_flags(cluster).into_iter().skip(1))
            .arg(format!("--audit-file-location={}", audit_path.display()))
            .arg("--log-level=info")
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = integration::process::ChildGuard::spawn(
            &format!("vtorc-{n}"),
            &mut command,
            Some(log_path.clone()),
        )
        .expect("spawn vtorc");
        let p = VtorcProcess {
            child,
            audit_path,
            log_path,
        };
        poll_until(
            Duration::from_secs(30),
            "vtorc's recovery engine running",
            || async {
                let log = std::fs::read_to_string(&p.log_path).unwrap_or_default();
                anyhow::ensure!(!log.contains("vtorc failed"), "vtorc failed: {log}");
                Ok(log.contains("recovery engine running").then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", p.child.log_tail(30)));
        p
    }

    /// Every audit event written so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit events of `event` kind about recovery type `kind`.
    pub fn recovery_events(&self, event: &str, kind: RecoveryKind) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event && e["recovery_type"] == kind.name())
            .collect()
    }
}

/// How many ERS recoveries (`RecoveryStarted` of `RecoverDeadPrimary`)
/// the audit files of `vtorcs` record, all instances together.
pub fn ers_started_across(vtorcs: &[VtorcProcess]) -> usize {
    vtorcs
        .iter()
        .map(|v| {
            v.recovery_events("RecoveryStarted", RecoveryKind::RecoverDeadPrimary)
                .len()
        })
        .sum()
}

/// Brings a crashed primary back the way an operator does: its MariaDB is
/// restored from a consistent copy of the new primary (dropping whatever
/// unacknowledged transactions it had binlogged before the kill) and
/// replicates from it; vtorc then reconciles the tablet's stale PRIMARY
/// record. Returns the GTID position it was restored at.
pub async fn rejoin_as_replica(
    cluster: &mut Cluster,
    old: &TabletAlias,
    new_primary: &TabletAlias,
) -> String {
    cluster
        .restore_mysql_from(old, new_primary)
        .await
        .unwrap_or_else(|e| panic!("restore {old} from {new_primary}: {e:#}"))
}

/// A stalled disk on one tablet, made for real: the file the agent's
/// disk-health monitor rewrites is replaced (atomically, by `rename`) with
/// a FIFO that has no reader, so the monitor's next open-for-write blocks
/// in the kernel and its write thread stays blocked until a reader
/// appears. [`StalledDisk::release`] (or, best effort, dropping the guard)
/// opens the FIFO (`O_RDWR` never blocks on Linux), which lets the blocked
/// thread finish, and puts the FIFO away so no later write blocks.
pub struct StalledDisk {
    /// The check file, now a FIFO.
    path: PathBuf,
    /// Set once released.
    released: bool,
}

impl StalledDisk {
    /// Stalls `tablet`'s disk (the cluster needs
    /// `ClusterBuilder::disk_health_check`).
    pub fn induce(cluster: &Cluster, tablet: &TabletAlias) -> StalledDisk {
        let path = cluster
            .tablet(tablet)
            .expect("tablet")
            .disk_check_file()
            .expect("the cluster runs the disk-health monitor");
        let fifo = path.with_extension("fifo");
        let out = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .output()
            .expect("run mkfifo");
        assert!(
            out.status.success(),
            "mkfifo {}: {}",
            fifo.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&fifo, &path).expect("put the FIFO in place of the check file");
        StalledDisk {
            path,
            released: false,
        }
    }

    /// Opens the FIFO so a blocked write returns, removes it, and waits
    /// until `tablet`'s monitor has no write outstanding (its write thread
    /// ended).
    pub async fn release(mut self, cluster: &Cluster, tablet: &TabletAlias) {
        let reader = self.unblock();
        let monitor = cluster
            .tablet(tablet)
            .expect("tablet")
            .agent_handle()
            .and_then(|h| h.disk_health())
            .expect("an in-process agent with a disk-health monitor");
        poll_until(
            Duration::from_secs(10),
            "the blocked disk write to return",
            || async { Ok((!monitor.write_in_flight()).then_some(())) },
        )
        .await
        .expect("the write thread ends once the FIFO has a reader");
        drop(reader);
    }

    /// Opens the FIFO for reading and writing (so any writer blocked in
    /// `open` proceeds) and removes it; returns the open end, which the
    /// caller keeps until the writer is done.
    fn unblock(&mut self) -> Option<std::fs::File> {
        self.released = true;
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .ok();
        let _ = std::fs::remove_file(&self.path);
        reader
    }
}

impl Drop for StalledDisk {
    fn drop(&mut self) {
        if !self.released {
            // A failed test: let the write thread go. A writer blocked in
            // `open` proceeds once any reader has opened the FIFO, even if
            // that reader is gone again (Linux counts reader opens), and
            // its write then fails with EPIPE instead of blocking.
            drop(self.unblock());
        }
    }
}

/// A recovery's steps as `step: message` lines (for failure messages).
pub fn steps_text(record: &RecoveryRecord) -> String {
    record
        .steps
        .iter()
        .map(|s| format!("{}: {}", s.step, s.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names of the steps `record` ran, in order.
pub fn step_names(record: &RecoveryRecord) -> Vec<&str> {
    record.steps.iter().map(|s| s.step.as_str()).collect()
}

/// Asserts that an ERS recovery's audit shows a clean promotion of
/// `successor`: ERS steps recorded, a `promoted` step naming it, no step
/// at error level.
pub fn assert_clean_promotion(record: &RecoveryRecord, successor: &TabletAlias) {
    assert!(
        record.steps.iter().any(|s| s.step.starts_with("ers:")),
        "ERS steps are audited:\n{}",
        steps_text(record)
    );
    assert!(
        record
            .steps
            .iter()
            .any(|s| s.step == "promoted" && s.message == format!("promoted replica: {successor}")),
        "{}",
        steps_text(record)
    );
    assert!(
        record
            .steps
            .iter()
            .all(|s| s.level != vtorc::recovery::StepLevel::Error),
        "{}",
        steps_text(record)
    );
}

/// [`assert_serving_primary`] after a failover away from 100 to
/// `successor` (101 or 102): the other of the two follows it.
pub async fn assert_took_over_from_100(cluster: &Cluster, keyspace: &str, successor: &TabletAlias) {
    assert_serving_primary(
        cluster,
        keyspace,
        &alias(100),
        successor,
        &[other_replica(successor)],
    )
    .await;
}

/// After a failover away from `old` in `keyspace/0`: waits until the shard
/// record names `successor`, checks it is writable and that each of
/// `followers` replicates from it.
pub async fn assert_serving_primary(
    cluster: &Cluster,
    keyspace: &str,
    old: &TabletAlias,
    successor: &TabletAlias,
    followers: &[TabletAlias],
) {
    let new_primary = wait_for_new_primary(cluster, keyspace, "0", old, Duration::from_secs(15)).await;
    assert_eq!(&new_primary, successor, "the shard record names the successor");
    assert!(
        !read_only(cluster, successor).await.expect("read_only"),
        "the new primary is writable"
    );
    for follower in followers {
        wait_replicating_from(cluster, follower, successor, Duration::from_secs(15)).await;
    }
}

/// Of replicas 101 and 102, the one that is not `successor`.
pub fn other_replica(successor: &TabletAlias) -> TabletAlias {
    if *successor == alias(101) {
        alias(102)
    } else {
        alias(101)
    }
}
