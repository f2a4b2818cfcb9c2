//! Gray failures, end to end: the failures that are not a clean crash. Each
//! scenario runs a 3-tablet `semi_sync` shard (child-process agents over
//! MariaDB), the workload writer, and vtorc; injects the fault; waits for the
//! outcome; heals the fault (the old primary comes back); sends probe writes
//! to the old primary as an application would; and checks that the shard
//! ends with exactly one writable primary, the one the shard record names,
//! and that no acknowledged write (probes included) is missing from it.
//!
//! | scenario | fault | expected |
//! |---|---|---|
//! | frozen primary | SIGSTOP of its MariaDB and agent, then SIGCONT | failover |
//! | cut-off primary | its MariaDB and agent ports drop every packet, then healed | failover |
//! | dead tablet server | its agent SIGKILLed, MariaDB alive; agent restarted later | failover after the grace |
//! | vtorc alone cut off | packets from vtorc (another user) to the primary's agent dropped | no failover |
//! | flapping primary | five short SIGSTOP/SIGCONT cycles | at most one failover |
//!
//! The scenarios take the whole machine's attention (five MariaDB-backed
//! clusters at once would starve each other and distort the timing that
//! gray-failure detection rests on), so they run one at a time.

mod recovery_support;

use std::time::{Duration, Instant};

use integration::cluster::{AgentMode, Cluster, ClusterBuilder, poll_until};
use integration::netfault::PacketDrop;
use integration::workload::{AckedWrite, Workload, WorkloadConfig, WorkloadReport, check_acknowledged_on};
use mysql_async::prelude::Queryable;
use recovery_support::*;
use vtorc::analysis::RecoveryKind;
use vtorc::proto::topodata::TabletAlias;

const KS: &str = "commerce";

/// The unprivileged user vtorc runs as when only its packets are dropped.
const NOBODY: u32 = 65534;

/// The vtorc flags of every scenario (beyond the test defaults): the
/// world's vttablet heartbeats every 250 ms, so 1 s of silence is four
/// missed heartbeats.
const GRAY_FLAGS: &[&str] = &[
    "--primary-ping-interval=500ms",
    "--heartbeat-silence-threshold=1s",
    "--primary-tablet-down-grace=3s",
];

/// One scenario at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> Cluster {
    ClusterBuilder::three_tablets(KS, "semi_sync")
        .agent_mode(AgentMode::Process(env!("CARGO_BIN_EXE_tablet-agent").into()))
        .started()
        .await
}

async fn start_workload(cluster: &Cluster) -> (Workload, WorkloadConfig) {
    let config = WorkloadConfig {
        writers: 2,
        statement_timeout: Duration::from_secs(5),
        ..WorkloadConfig::new(KS, "0")
    };
    let workload = Workload::start_acked(cluster, &config, &alias(100), 20)
        .await
        .expect("the workload starts and the primary takes writes");
    (workload, config)
}

/// Waits until the shard record names a primary other than `old` that
/// acknowledges writes; returns it and how long it took from `since`.
async fn wait_for_failover(
    cluster: &Cluster,
    workload: &Workload,
    old: &TabletAlias,
    since: Instant,
    context: impl Fn() -> String,
) -> (TabletAlias, Duration) {
    let new = poll_until(Duration::from_secs(60), "a new primary", || async {
        Ok(cluster.primary_alias(KS, "0").await?.filter(|p| p != old))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", context()));
    workload
        .wait_for_acks_on(&new, 5, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{new} takes no writes: {e:#}\n{}", context()));
    (new, since.elapsed())
}

/// Writes probe rows to `old`'s MariaDB as the application would, each
/// bounded by `timeout`. Returns the acknowledged ones (they must then be
/// on the final primary, which they cannot be if `old` is no longer it).
async fn probe_writes(
    cluster: &Cluster,
    config: &WorkloadConfig,
    old: &TabletAlias,
    first_id: u64,
    count: u64,
) -> Vec<AckedWrite> {
    let port = cluster.tablet(old).expect("tablet").mysql_port();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(integration::cluster::APP_USER))
        .pass(Some(integration::cluster::APP_PASSWORD))
        .prefer_socket(false);
    let mut acked = Vec::new();
    for id in first_id..first_id + count {
        let attempt = async {
            let mut conn = mysql_async::Conn::new(opts.clone()).await?;
            conn.query_drop(format!(
                "INSERT INTO `{}`.`{}` (id, writer, primary_uid) VALUES ({id}, 999, {})",
                config.database, config.table, old.uid
            ))
            .await?;
            conn.disconnect().await.ok();
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(())) => acked.push(AckedWrite {
                id,
                primary: old.clone(),
                at: Duration::ZERO,
            }),
            Ok(Err(e)) => eprintln!("probe {id} on {old} refused: {e:#}"),
            Err(_) => eprintln!("probe {id} on {old}: no answer in 3 s (outcome unknown)"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked
}

/// The end state: exactly one writable MariaDB, the one the shard record
/// names, and every acknowledged write (workload and probes) on it.
async fn assert_one_primary_nothing_lost(
    cluster: &Cluster,
    config: &WorkloadConfig,
    mut report: WorkloadReport,
    probes: Vec<AckedWrite>,
    context: impl Fn() -> String,
) {
    let primary = cluster
        .primary_alias(KS, "0")
        .await
        .expect("shard record")
        .expect("the shard has a primary");
    let aliases = [alias(100), alias(101), alias(102)];
    poll_until(
        Duration::from_secs(60),
        "exactly one writable primary",
        || async {
            let mut writable = Vec::new();
            for a in &aliases {
                if !read_only(cluster, a).await? {
                    writable.push(a.clone());
                }
            }
            Ok((writable == [primary.clone()]).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", context()));
    report.acked.extend(probes);
    let check = check_acknowledged_on(cluster, &primary, config, &report)
        .await
        .expect("loss check");
    assert!(
        check.is_lossless(),
        "acknowledged writes lost: {:?} of {} (errors: {:?})\n{}",
        check.missing,
        check.checked,
        report.sample_errors,
        context()
    );
    assert!(
        report.acked.len() > 20,
        "the workload wrote ({} acks)",
        report.acked.len()
    );
}

/// A healthy shard under the workload writer, watched by vtorc (in this
/// process, with [`GRAY_FLAGS`]).
async fn shard_under_writes() -> (Cluster, Vtorc, Workload, WorkloadConfig) {
    let cluster = cluster().await;
    let vtorc = Vtorc::start(&cluster, GRAY_FLAGS).await;
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(30))
        .await;
    let (workload, config) = start_workload(&cluster).await;
    (cluster, vtorc, workload, config)
}

/// After the fault is healed: probe writes to `old` are never acknowledged,
/// the shard ends with one writable primary and no acknowledged write lost,
/// and vtorc ran exactly one ERS.
async fn assert_old_primary_fenced(
    cluster: &Cluster,
    vtorc: &Vtorc,
    workload: Workload,
    config: &WorkloadConfig,
    old: &TabletAlias,
) {
    let context = || format!("{}\n{}", vtorc.audit_dump(), cluster.diagnostics());
    let probes = probe_writes(cluster, config, old, 1_000_000_000, 10).await;
    assert!(probes.is_empty(), "the old primary acknowledged {probes:?}");
    let report = workload.stop().await.expect("workload report");
    assert_one_primary_nothing_lost(cluster, config, report, probes, context).await;
    assert_eq!(
        vtorc.finished(RecoveryKind::RecoverDeadPrimary).len(),
        1,
        "{}",
        context()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_is_replaced_and_never_acknowledges_after_it_resumes() {
    let _serial = SERIAL.lock().await;
    let (cluster, vtorc, workload, config) = shard_under_writes().await;
    let old = alias(100);
    let frozen_at = Instant::now();
    cluster.pause_mysql(&old).expect("SIGSTOP MariaDB");
    cluster.pause_agent(&old).expect("SIGSTOP agent");
    let context = || format!("{}\n{}", vtorc.audit_dump(), cluster.diagnostics());
    let (new, took) = wait_for_failover(&cluster, &workload, &old, frozen_at, context).await;
    eprintln!("frozen primary: {old} -> {new} in {took:?}");
    cluster.resume_agent(&old).expect("SIGCONT agent");
    cluster.resume_mysql(&old).expect("SIGCONT MariaDB");
    assert_old_primary_fenced(&cluster, &vtorc, workload, &config, &old).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_primary_is_replaced_and_never_acknowledges_after_the_network_heals() {
    let _serial = SERIAL.lock().await;
    let (cluster, vtorc, workload, config) = shard_under_writes().await;
    let old = alias(100);
    let tablet = cluster.tablet(&old).expect("tablet");
    let cut_at = Instant::now();
    let cut = PacketDrop::isolate(&[tablet.mysql_port(), tablet.grpc_port()]).expect("drop packets");
    let context = || format!("{}\n{}", vtorc.audit_dump(), cluster.diagnostics());
    let (new, took) = wait_for_failover(&cluster, &workload, &old, cut_at, context).await;
    eprintln!("cut-off primary: {old} -> {new} in {took:?}");
    cut.heal().expect("heal the network");
    assert_old_primary_fenced(&cluster, &vtorc, workload, &config, &old).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tablet_server_with_live_mysql_is_replaced_after_the_grace() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, vtorc, workload, config) = shard_under_writes().await;
    let old = alias(100);
    let killed_at = Instant::now();
    cluster.kill_agent(&old).expect("SIGKILL the agent");
    let context = || format!("{}\n{}", vtorc.audit_dump(), cluster.diagnostics());
    let (new, took) = wait_for_failover(&cluster, &workload, &old, killed_at, context).await;
    eprintln!("dead tablet server: {old} -> {new} in {took:?}");
    assert!(
        took >= Duration::from_secs(3),
        "failed over after {took:?}, before the 3 s grace"
    );
    let record = vtorc
        .wait_for_recovery(RecoveryKind::RecoverDeadPrimary, Duration::from_secs(10))
        .await;
    assert!(
        record.analysis_entry.reason.contains("refused connections"),
        "{}",
        record.analysis_entry.reason
    );
    // The old primary's vttablet comes back and finds it is no longer primary.
    cluster.restart_agent(&old).await.expect("restart the agent");
    assert_old_primary_fenced(&cluster, &vtorc, workload, &config, &old).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtorc_alone_cut_off_from_the_primary_does_not_fail_over() {
    let _serial = SERIAL.lock().await;
    let cluster = cluster().await;
    // vtorc runs as another user so that only its packets can be dropped.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let vtorc = VtorcProcess::start_as(&cluster, dir.path(), 1, GRAY_FLAGS, Some(NOBODY)).await;
    let (workload, config) = start_workload(&cluster).await;
    let old = alias(100);
    // Let vtorc see the healthy shard first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grpc_port = cluster.tablet(&old).expect("tablet").grpc_port();
    let cut = PacketDrop::from_uid(NOBODY, &[grpc_port]).expect("drop vtorc's packets");
    // Longer than every timer involved: pings, probes, the poll timeout,
    // the health window and replica_net_timeout.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(&vtorc.log_path).unwrap_or_default();
    assert!(
        log.contains("primary did not answer a ping"),
        "vtorc noticed it lost the primary:\n{}",
        vtorc.child.log_tail(40)
    );
    cut.heal().expect("heal");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.primary_alias(KS, "0").await.expect("shard record"),
        Some(old.clone()),
        "no failover while the replicas still hear the primary:\n{}",
        vtorc.child.log_tail(60)
    );
    assert!(
        vtorc
            .recovery_events("recovery_started", RecoveryKind::RecoverDeadPrimary)
            .is_empty(),
        "no ERS:\n{}",
        vtorc.child.log_tail(60)
    );
    let probes = probe_writes(&cluster, &config, &old, 1_000_000_000, 3).await;
    assert_eq!(probes.len(), 3, "the primary still takes writes");
    let report = workload.stop().await.expect("workload report");
    assert_one_primary_nothing_lost(&cluster, &config, report, probes, || vtorc.child.log_tail(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_primary_ends_with_one_primary_and_no_lost_write() {
    let _serial = SERIAL.lock().await;
    let (cluster, vtorc, workload, config) = shard_under_writes().await;
    let old = alias(100);
    for _ in 0..5 {
        cluster.pause_mysql(&old).expect("SIGSTOP MariaDB");
        cluster.pause_agent(&old).expect("SIGSTOP agent");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.resume_agent(&old).expect("SIGCONT agent");
        cluster.resume_mysql(&old).expect("SIGCONT MariaDB");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let context = || format!("{}\n{}", vtorc.audit_dump(), cluster.diagnostics());
    // Whichever way it went (failed over or not), the shard settles.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let primary = cluster
        .primary_alias(KS, "0")
        .await
        .expect("shard record")
        .expect("a primary");
    workload
        .wait_for_acks_on(&primary, 5, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{primary} takes no writes: {e:#}\n{}", context()));
    let probes = if primary == old {
        Vec::new()
    } else {
        let probes = probe_writes(&cluster, &config, &old, 1_000_000_000, 5).await;
        assert!(probes.is_empty(), "the old primary acknowledged {probes:?}");
        probes
    };
    let report = workload.stop().await.expect("workload report");
    assert_one_primary_nothing_lost(&cluster, &config, report, probes, context).await;
    assert!(
        vtorc.finished(RecoveryKind::RecoverDeadPrimary).len() <= 1,
        "{}",
        context()
    );
    vtorc.stop().await;
}
