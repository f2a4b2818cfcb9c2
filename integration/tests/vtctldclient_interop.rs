//! The real Vitess 24 `vtctldclient` against our vtctld-compatible server,
//! and against the topo directly (`--server internal`, which runs real
//! Vitess code: its reads of the records our agents wrote, its lock
//! protocol against ours, and a real Vitess PRS driving our tablet agents).
//!
//! The client comes from the `VTCTLDCLIENT` environment variable, or from
//! `scripts/build-vtctldclient.sh` (cached build; needs Go the first
//! time). When neither works the tests say plainly that they did not run,
//! and fail if `CI` is set (CI builds the client).

mod reparent_support;

use std::process::Output;
use std::time::Duration;

use integration::cluster::Cluster;
use integration::testkit::{semi_sync_commerce, vtctldclient};
use reparent_support::{
    Server, alias, run_vtctldclient as run, stderr, stdout, topo_type, wait_replicating_from,
};
use vtorc::analysis::AnalysisCode;
use vtorc::proto::topodata::TabletType;
use vtorc::recovery::{AuditFilter, RecoveryOutcome, RecoveryRecord};
use vtorc::topo::shard_ers_disabled;

/// `--server internal` flags for the cluster's topo.
fn internal(cluster: &Cluster) -> Vec<String> {
    vec![
        "--server".into(),
        "internal".into(),
        "--topo-implementation".into(),
        "etcd2".into(),
        "--topo-global-server-address".into(),
        cluster.topo_address(),
        "--topo-global-root".into(),
        "/vitess/global".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtctldclient_reads_and_reparents_through_our_server() {
    let Some(client) = vtctldclient("vtctldclient interop test") else {
        return;
    };
    let mut cluster = semi_sync_commerce().await;
    let server = Server::start(&cluster, Duration::from_secs(15)).await;
    // vtctldclient with `args` against our server.
    let call = async |args: &[&str]| {
        let mut all = vec!["--server", server.address.as_str()];
        all.extend_from_slice(args);
        run(&client, &all).await
    };

    let out = succeeded(call(&["GetTablets"]).await);
    let text = stdout(&out);
    for uid in [100, 101, 102] {
        assert!(text.contains(&format!("zone1-0000000{uid}")), "{text}");
    }
    assert!(text.contains("primary"), "{text}");
    let out = succeeded(
        call(&[
            "GetTablets",
            "--keyspace",
            "commerce",
            "--shard",
            "0",
            "--tablet-type",
            "replica",
        ])
        .await,
    );
    assert!(
        !stdout(&out).contains("zone1-0000000100"),
        "the primary is not a replica"
    );

    for args in [
        vec!["GetShard", "commerce/0"],
        vec!["GetKeyspace", "commerce"],
        vec!["GetKeyspaces"],
        vec!["GetCellInfoNames"],
        vec!["GetCellInfo", "zone1"],
        vec!["GetTablet", "zone1-0000000100"],
        vec!["GetFullStatus", "zone1-0000000101"],
    ] {
        let out = call(&args).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(stdout(&call(&["GetShard", "commerce/0"]).await).contains("zone1"));
    assert!(stdout(&call(&["GetKeyspace", "commerce"]).await).contains("semi_sync"));

    // A refusal comes back as an error with Vitess's message.
    let out = call(&[
        "PlannedReparentShard",
        "commerce/0",
        "--new-primary",
        "zone1-0000000101",
        "--expected-primary",
        "zone1-0000000102",
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not equal to expected alias zone1-0000000102"),
        "{}",
        stderr(&out)
    );
    // Refused inside the reparent (after validation): audited as failed.
    let refused = operator_records(&server, "OperatorPlannedReparentShard");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].outcome, RecoveryOutcome::Failed);
    assert!(
        refused[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is not equal to expected alias zone1-0000000102")),
        "{:?}",
        refused[0].error
    );

    // PRS.
    let out = succeeded(
        call(&[
            "PlannedReparentShard",
            "commerce/0",
            "--new-primary",
            "zone1-0000000101",
        ])
        .await,
    );
    assert!(
        stdout(&out).contains("finished PlannedReparentShard"),
        "events printed"
    );
    cluster
        .wait_for_primary("commerce", "0", &alias("zone1", 101), Duration::from_secs(15))
        .await
        .expect("shard record");
    wait_replicating_from(&cluster, &alias("zone1", 100), &alias("zone1", 101)).await;
    // The operator's PRS is in vtorc's audit: newest first, succeeded, the
    // new primary, the PRS's events as steps, the caller's address.
    let prs = operator_records(&server, "OperatorPlannedReparentShard");
    assert_eq!(prs.len(), 2, "{prs:?}");
    let prs = &prs[0];
    assert_eq!(prs.outcome, RecoveryOutcome::Succeeded, "{prs:?}");
    assert_eq!(prs.successor_alias, Some(alias("zone1", 101)));
    assert_eq!(prs.tablet_alias, alias("zone1", 100), "the primary it replaced");
    assert_eq!(prs.analysis, AnalysisCode::NoProblem);
    assert_eq!(prs.detection_id, 0);
    assert!(prs.duration_ms.is_some() && prs.ended_at.is_some());
    let request = prs.requested_by.as_ref().expect("requested_by");
    assert_eq!(request.method, "PlannedReparentShard");
    assert_eq!(request.new_primary, Some(alias("zone1", 101)));
    assert!(
        request
            .peer
            .as_deref()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{request:?}"
    );
    assert!(
        prs.steps.iter().any(|s| s.step.starts_with("prs:")),
        "{:?}",
        prs.steps
    );
    assert_eq!(prs.steps.last().map(|s| s.step.as_str()), Some("promoted"));
    assert_eq!(
        prs.tablets,
        vec![alias("zone1", 100), alias("zone1", 101)],
        "the replaced primary, then the requested one"
    );

    // ERS after kill -9 of the new primary's MariaDB.
    cluster.kill_mysql(&alias("zone1", 101)).expect("kill");
    succeeded(
        call(&[
            "EmergencyReparentShard",
            "commerce/0",
            "--wait-replicas-timeout",
            "20s",
        ])
        .await,
    );
    let promoted = cluster
        .primary_alias("commerce", "0")
        .await
        .expect("shard")
        .filter(|a| *a != alias("zone1", 101));
    let new = match promoted {
        Some(a) => a,
        None => {
            // The shard record follows a moment later.
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster
                .primary_alias("commerce", "0")
                .await
                .expect("shard")
                .expect("a primary")
        }
    };
    assert_ne!(new, alias("zone1", 101));
    assert_eq!(topo_type(&cluster, &new).await, TabletType::Primary);
    let ers = operator_records(&server, "OperatorEmergencyReparentShard");
    assert_eq!(ers.len(), 1, "{ers:?}");
    assert_eq!(ers[0].outcome, RecoveryOutcome::Succeeded, "{:?}", ers[0]);
    assert_eq!(ers[0].successor_alias.as_ref(), Some(&new));
    assert_eq!(ers[0].tablet_alias, alias("zone1", 101), "the dead primary");
    assert!(
        ers[0].steps.iter().any(|s| s.step.starts_with("ers:")),
        "{:?}",
        ers[0].steps
    );

    // SetVtorcEmergencyReparent writes the shard's vtorc_state.
    succeeded(call(&["SetVtorcEmergencyReparent", "--disable", "commerce", "0"]).await);
    let shard = cluster.topo().get_shard("commerce", "0").await.expect("shard");
    assert!(shard_ers_disabled(&shard.value));
    succeeded(call(&["SetVtorcEmergencyReparent", "--enable", "commerce", "0"]).await);
    let shard = cluster.topo().get_shard("commerce", "0").await.expect("shard");
    assert!(!shard_ers_disabled(&shard.value));

    // A method we do not serve says so by name.
    let out = call(&["GetVSchema", "commerce"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not implemented by vtorc-rs"),
        "{}",
        stderr(&out)
    );

    // An ERS to a tablet that does not exist fails, and its audit record
    // says so (failed, the error, no successor, the requested tablet).
    let out = call(&[
        "EmergencyReparentShard",
        "commerce/0",
        "--new-primary",
        "zone1-0000000999",
        "--wait-replicas-timeout",
        "5s",
    ])
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let ers = operator_records(&server, "OperatorEmergencyReparentShard");
    assert_eq!(ers.len(), 2, "{ers:?}");
    let failed = &ers[0];
    assert_eq!(failed.outcome, RecoveryOutcome::Failed, "{failed:?}");
    assert_eq!(failed.successor_alias, None);
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(error.contains("zone1-0000000999"), "{error}");
    let request = failed.requested_by.as_ref().expect("requested_by");
    assert_eq!(request.method, "EmergencyReparentShard");
    assert_eq!(request.new_primary, Some(alias("zone1", 999)));
    assert_eq!(failed.tablet_alias, new, "the primary at the time of the request");
    assert!(failed.ended_at.is_some());
    server.stop().await;
}

/// `out` of a vtctldclient call that must have succeeded (else the test
/// fails with its stderr).
fn succeeded(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// The server's audit records of `kind` (an operator kind), newest first.
fn operator_records(server: &Server, kind: &str) -> Vec<RecoveryRecord> {
    server
        .audit
        .recoveries(&AuditFilter::all())
        .into_iter()
        .filter(|r| r.recovery_type.name() == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vitess_reads_our_topo_respects_our_lock_and_reparents_our_agents() {
    let Some(client) = vtctldclient("vtctldclient interop test") else {
        return;
    };
    let mut cluster = semi_sync_commerce().await;
    let base = internal(&cluster);
    let call = |args: &[&str]| {
        let mut v: Vec<String> = base.clone();
        v.extend(args.iter().map(|s| s.to_string()));
        let client = client.clone();
        async move {
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            run(&client, &refs).await
        }
    };

    // Real Vitess decodes the records our agents and topo layer wrote.
    let out = succeeded(call(&["GetTablets", "--keyspace", "commerce"]).await);
    for uid in [100, 101, 102] {
        assert!(
            stdout(&out).contains(&format!("zone1-0000000{uid}")),
            "{}",
            stdout(&out)
        );
    }
    let out = succeeded(call(&["GetShard", "commerce/0"]).await);
    assert!(stdout(&out).contains("\"uid\": 100"), "{}", stdout(&out));

    // Our shard lock blocks a real Vitess reparent.
    let lock = cluster
        .topo()
        .lock_shard(
            "commerce",
            "0",
            "VTOrc Recovery for DeadPrimary on zone1-0000000100",
        )
        .await
        .expect("our lock");
    let out = call(&[
        "--action-timeout",
        "3s",
        "PlannedReparentShard",
        "commerce/0",
        "--new-primary",
        "zone1-0000000101",
    ])
    .await;
    assert!(!out.status.success(), "Vitess reparented under our lock");
    assert!(
        stderr(&out).contains("deadline exceeded: /vitess/global/keyspaces/commerce/shards/0/locks"),
        "Vitess waited on the shard lock: {}",
        stderr(&out)
    );
    assert_eq!(
        topo_type(&cluster, &alias("zone1", 100)).await,
        TabletType::Primary
    );
    lock.unlock().await.expect("unlock");

    // A real Vitess PRS drives our tablet agents (fidelity check of the agent).
    let out = call(&[
        "PlannedReparentShard",
        "commerce/0",
        "--new-primary",
        "zone1-0000000101",
    ])
    .await;
    assert!(
        out.status.success(),
        "real Vitess PRS against our agents failed: {}",
        stderr(&out)
    );
    cluster
        .wait_for_primary("commerce", "0", &alias("zone1", 101), Duration::from_secs(15))
        .await
        .expect("shard record");
    wait_replicating_from(&cluster, &alias("zone1", 100), &alias("zone1", 101)).await;
    wait_replicating_from(&cluster, &alias("zone1", 102), &alias("zone1", 101)).await;

    // And a real Vitess ERS after kill -9 of the primary's MariaDB.
    cluster.kill_mysql(&alias("zone1", 101)).expect("kill");
    let out = call(&[
        "EmergencyReparentShard",
        "commerce/0",
        "--wait-replicas-timeout",
        "20s",
    ])
    .await;
    assert!(
        out.status.success(),
        "real Vitess ERS against our agents failed: {}",
        stderr(&out)
    );
    let new = integration::cluster::poll_until(Duration::from_secs(15), "a new primary", || async {
        Ok(cluster
            .primary_alias("commerce", "0")
            .await?
            .filter(|a| *a != alias("zone1", 101)))
    })
    .await
    .expect("shard record names a new primary");
    assert_eq!(topo_type(&cluster, &new).await, TabletType::Primary);
    let other = if new == alias("zone1", 100) {
        alias("zone1", 102)
    } else {
        alias("zone1", 100)
    };
    wait_replicating_from(&cluster, &other, &new).await;
}
