//! Several vtorc processes on one cluster: every instance detects, the
//! shard lock lets exactly one act; when the acting instance dies in the
//! middle of its ERS, another one finishes once the dead one's lease has
//! expired, and the shard ends with exactly one serving primary.
//!
//! The instances are `vtorc` child processes (the real binary, which runs
//! discovery and recovery); each writes its own JSON-lines audit file,
//! which is how the test counts who ran what.

mod recovery_support;

use std::time::Duration;

use integration::cluster::{AgentMode, Cluster, ClusterBuilder, poll_until};
use integration::testkit::semi_sync_commerce;
use recovery_support::*;
use vtorc::analysis::RecoveryKind;
use vtorc::proto::topodata::{TabletAlias, TabletType};

const KS: &str = "commerce";

/// Starts three vtorc processes.
async fn three_vtorcs(cluster: &Cluster, dir: &std::path::Path) -> Vec<VtorcProcess> {
    let mut out = Vec::new();
    for n in 0..3 {
        out.push(VtorcProcess::start(cluster, dir, n, &[]).await);
    }
    out
}

/// Waits until exactly one live tablet is a writable PRIMARY in the topo,
/// named by the shard record, with the other live tablets replicating from
/// it; returns it.
async fn wait_one_serving_primary(
    cluster: &Cluster,
    live: &[TabletAlias],
    vtorcs: &[VtorcProcess],
) -> TabletAlias {
    poll_until(Duration::from_secs(45), "exactly one serving primary", || async {
        let Some(primary) = cluster.primary_alias(KS, "0").await? else {
            return Ok(None);
        };
        if !live.contains(&primary) {
            return Ok(None);
        }
        let mut writable = Vec::new();
        for t in live {
            if !read_only(cluster, t).await? {
                writable.push(t.clone());
            }
        }
        if writable != [primary.clone()] {
            return Ok(None);
        }
        let mut topo_primaries = Vec::new();
        for uid in [100, 101, 102] {
            if topo_type(cluster, &alias(uid)).await? == TabletType::Primary {
                topo_primaries.push(alias(uid));
            }
        }
        if topo_primaries != [primary.clone()] {
            return Ok(None);
        }
        let port = cluster.tablet(&primary)?.mysql_port();
        for t in live.iter().filter(|t| **t != primary) {
            if replication_source(cluster, t).await? != Some((port, true)) {
                return Ok(None);
            }
        }
        Ok(Some(primary))
    })
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = vtorcs.iter().map(|v| v.child.log_tail(40)).collect();
        panic!("{e:#}\n{}\n{}", logs.join("\n----\n"), cluster.diagnostics())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_vtorcs_and_a_dead_primary_run_exactly_one_ers() {
    let mut cluster = semi_sync_commerce().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vtorcs = three_vtorcs(&cluster, dir.path()).await;
    cluster.kill_mysql(&alias(100)).expect("kill -9");
    let live = [alias(101), alias(102)];
    let primary = wait_one_serving_primary(&cluster, &live, &vtorcs).await;
    // Let every instance see the repaired shard before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = ers_started_across(&vtorcs);
    assert_eq!(started, 1, "exactly one ERS across the three instances");
    let finished: Vec<serde_json::Value> = vtorcs
        .iter()
        .flat_map(|v| v.recovery_events("RecoveryFinished", RecoveryKind::RecoverDeadPrimary))
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"], "Succeeded");
    assert_eq!(finished[0]["successor_alias"], primary.to_string());
    // Every instance detected the dead primary.
    for v in &vtorcs {
        assert!(
            v.audit()
                .iter()
                .any(|e| e["event"] == "DetectionOpened" && e["tablet_alias"] == "zone1-0000000100"),
            "{} did not detect the dead primary:\n{}",
            v.child.name(),
            v.child.log_tail(30)
        );
    }
    for v in &mut vtorcs {
        let status = v.child.terminate(Duration::from_secs(15)).await.expect("SIGTERM");
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exit: {status:?}",
            v.child.name()
        );
        let audit = v.audit();
        assert!(
            audit.iter().any(|e| e["event"] == "Shutdown"),
            "shutdown is audited; last events: {:?}\n{}",
            audit.iter().rev().take(3).collect::<Vec<_>>(),
            v.child.log_tail(15)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_acting_vtorc_mid_ers_still_ends_with_one_serving_primary() {
    // Child agents, so one can be frozen: the acting vtorc's ERS then
    // waits on it in its stop-replication phase, which is when it is killed.
    let mut cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .agent_mode(AgentMode::Process(env!("CARGO_BIN_EXE_tablet-agent").into()))
        .started()
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vtorcs = three_vtorcs(&cluster, dir.path()).await;
    cluster.kill_mysql(&alias(100)).expect("kill -9");
    cluster.pause_agent(&alias(102)).expect("SIGSTOP 102's agent");
    let acting = poll_until(
        Duration::from_secs(30),
        "an instance in the middle of its ERS",
        || async {
            Ok(vtorcs.iter().position(|v| {
                v.audit().iter().any(|e| {
                    e["event"] == "RecoveryStep"
                        && e["step"]["step"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("ers:stop_replication"))
                })
            }))
        },
    )
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = vtorcs.iter().map(|v| v.child.log_tail(40)).collect();
        panic!("{e:#}\n{}", logs.join("\n----\n"))
    });
    assert!(
        vtorcs[acting]
            .recovery_events("RecoveryFinished", RecoveryKind::RecoverDeadPrimary)
            .is_empty(),
        "the ERS is still running when its vtorc is killed"
    );
    vtorcs[acting]
        .child
        .kill_and_wait()
        .expect("kill -9 the acting vtorc");
    cluster.resume_agent(&alias(102)).expect("SIGCONT 102's agent");
    let live = [alias(101), alias(102)];
    let primary = wait_one_serving_primary(&cluster, &live, &vtorcs).await;
    let survivors: Vec<&VtorcProcess> = vtorcs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != acting)
        .map(|(_, v)| v)
        .collect();
    let finished: Vec<serde_json::Value> = survivors
        .iter()
        .flat_map(|v| v.recovery_events("RecoveryFinished", RecoveryKind::RecoverDeadPrimary))
        .filter(|e| e["outcome"] == "Succeeded")
        .collect();
    assert_eq!(finished.len(), 1, "one survivor finished the failover");
    assert_eq!(finished[0]["successor_alias"], primary.to_string());
    for v in &mut vtorcs {
        let _ = v.child.terminate(Duration::from_secs(15)).await;
    }
}
