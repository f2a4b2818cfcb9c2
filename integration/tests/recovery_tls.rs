//! Mutual TLS on every hop, end to end: etcd requires client certificates
//! (`--client-cert-auth`), every tablet agent serves gRPC over TLS and
//! requires client certificates, and vtorc talks to both with its own
//! certificate (`--tablet-manager-grpc-*`, `--topo-etcd-tls-*`). A dead
//! primary is failed over as in plaintext (the agents also call each other
//! over mTLS); with the wrong CA, vtorc reports the tablets unreachable with
//! the TLS reason and changes nothing. The same TLS world with the agents as
//! `tablet-agent` child processes (TLS flags on their command line) is
//! discovered healthy, and etcd refuses a client without a certificate.

mod recovery_support;

use std::time::Duration;

use integration::cluster::{Cluster, ClusterBuilder, poll_until};
use integration::pki::TestPki;
use recovery_support::*;
use vtorc::config::Config;
use vtorc::model::Reachability;
use vtorc::recovery::AuditFilter;
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager};

const KS: &str = "commerce";

async fn tls_cluster() -> Cluster {
    ClusterBuilder::three_tablets(KS, "semi_sync")
        .tls(true)
        .start()
        .await
        .expect("TLS cluster starts")
}

/// vtorc's flags for `cluster`, trusting `tablet_ca` for the tablets.
fn tls_config(cluster: &Cluster, tablet_ca: &std::path::Path) -> Config {
    let pki = cluster.pki().expect("TLS cluster");
    let own = pki.issue("vtorc").expect("vtorc certificate");
    let etcd = cluster.etcd().client_tls_files();
    let mut args = base_flags(cluster);
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().expect("set").display().to_string();
    args.extend([
        format!("--tablet-manager-grpc-ca={}", tablet_ca.display()),
        format!("--tablet-manager-grpc-cert={}", own.cert.display()),
        format!("--tablet-manager-grpc-key={}", own.key.display()),
        "--tablet-manager-grpc-server-name=localhost".to_string(),
        format!("--topo-etcd-tls-ca={}", path(&etcd.ca)),
        format!("--topo-etcd-tls-cert={}", path(&etcd.cert)),
        format!("--topo-etcd-tls-key={}", path(&etcd.key)),
    ]);
    Config::load(args).expect("TLS flags are valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_primary_is_failed_over_with_mutual_tls_on_every_hop() {
    let mut cluster = tls_cluster().await;
    let ca = cluster.pki().expect("TLS cluster").ca_path();
    // The agents really require a client certificate: a TLS client that
    // trusts their CA but has none is refused, and so is plaintext.
    let no_cert = GrpcTabletManager::new(TabletClientConfig {
        tablet_manager_tls: vtorc::tls::ClientTls::from_files(
            &vtorc::config::TlsFiles {
                ca: Some(ca.clone()),
                ..Default::default()
            },
            "tablet-manager-grpc-",
        )
        .expect("CA only"),
        connect_timeout: Duration::from_secs(2),
        remote_operation_timeout: Duration::from_secs(3),
        ..TabletClientConfig::default()
    });
    let primary = cluster.tablet(&alias(100)).expect("tablet 100").rpc_tablet();
    // (With TLS 1.3 the server checks the client's certificate after the
    // client considers the handshake done: the client sees its connection
    // closed; the agent logs "TLS handshake refused".)
    no_cert.ping(&primary).await.expect_err("no client certificate");
    let plain = GrpcTabletManager::new(TabletClientConfig {
        connect_timeout: Duration::from_secs(2),
        remote_operation_timeout: Duration::from_secs(3),
        ..TabletClientConfig::default()
    });
    plain.ping(&primary).await.expect_err("plaintext to a TLS agent");

    let vtorc = Vtorc::start_with(tls_config(&cluster, &ca)).await;
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(20))
        .await;
    cluster.kill_mysql(&alias(100)).expect("kill -9");
    let record = vtorc
        .wait_for_success(
            vtorc::analysis::RecoveryKind::RecoverDeadPrimary,
            Duration::from_secs(30),
        )
        .await;
    let successor = record.successor_alias.clone().expect("a successor is recorded");
    assert_clean_promotion(&record, &successor);
    assert_took_over_from_100(&cluster, KS, &successor).await;
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tablet_ca_makes_the_tablets_unreachable_with_the_tls_reason() {
    let cluster = tls_cluster().await;
    let other = TestPki::new(&cluster.dir().join("other-pki"), "other").expect("another CA");
    let vtorc = Vtorc::start_with(tls_config(&cluster, &other.ca_path())).await;
    let reasons = poll_until(Duration::from_secs(20), "every tablet unreachable", || async {
        let snapshot = vtorc.discovery.snapshot();
        let shard = snapshot.shard(&shard0(KS)).cloned();
        Ok(shard.and_then(|shard| {
            let reasons: Vec<String> = shard
                .tablets
                .iter()
                .filter_map(|t| match &t.reachability {
                    Reachability::Unreachable { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
                .collect();
            (reasons.len() == 3).then_some(reasons)
        }))
    })
    .await
    .expect("tablets reported unreachable");
    for reason in &reasons {
        assert!(
            reason.contains("TLS handshake") && reason.contains("UnknownIssuer"),
            "the reason names the TLS failure: {reason}"
        );
    }
    // vtorc sees a dead shard it cannot reach: an EmergencyReparentShard
    // may be attempted, but it stops at its first step (no tablet
    // answers), reports the TLS reason and changes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for record in vtorc.handle.recoveries(&AuditFilter::all()) {
        assert_ne!(
            record.outcome,
            vtorc::recovery::RecoveryOutcome::Succeeded,
            "{}",
            vtorc.audit_dump()
        );
        if let Some(error) = &record.error {
            assert!(error.contains("UnknownIssuer"), "{error}");
        }
    }
    assert_eq!(
        cluster.primary_alias(KS, "0").await.expect("shard record"),
        Some(alias(100)),
        "the shard record is unchanged"
    );
    vtorc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_agents_as_child_processes_and_etcd_refusing_clients_without_a_certificate() {
    let cluster = ClusterBuilder::three_tablets(KS, "semi_sync")
        .tls(true)
        .agent_mode(integration::cluster::AgentMode::Process(
            env!("CARGO_BIN_EXE_tablet-agent").into(),
        ))
        .start()
        .await
        .expect("TLS cluster of tablet-agent processes starts");
    let ca = cluster.pki().expect("TLS cluster").ca_path();
    // etcd runs --client-cert-auth: trusting its CA is not enough.
    let ca_only = vtorc::tls::etcd_tls_options(&vtorc::config::TlsFiles {
        ca: Some(ca.clone()),
        ..Default::default()
    })
    .expect("CA")
    .expect("TLS on");
    let refused = async {
        let mut client = etcd_client::Client::connect(
            [cluster.etcd().endpoint()],
            Some(
                etcd_client::ConnectOptions::new()
                    .with_tls(ca_only)
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(2)),
            ),
        )
        .await?;
        client.get("/", None).await
    };
    refused
        .await
        .expect_err("etcd refuses a client without a certificate");

    let vtorc = Vtorc::start_with(tls_config(&cluster, &ca)).await;
    vtorc
        .wait_until_healthy(&shard0(KS), Duration::from_secs(20))
        .await;
    let snapshot = vtorc.discovery.snapshot();
    let shard = snapshot.shard(&shard0(KS)).expect("shard");
    assert_eq!(shard.tablets.len(), 3);
    for t in &shard.tablets {
        assert!(
            matches!(t.reachability, Reachability::Reachable { .. }),
            "{:?}",
            t.reachability
        );
    }
    vtorc.stop().await;
}
