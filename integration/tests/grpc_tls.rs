//! vtorc's gRPC server over TLS (`--grpc-cert/--grpc-key/--grpc-ca/
//! --grpc-crl`) with real certificates from a test CA:
//!
//! - a client needs a certificate signed by `--grpc-ca`: none, one from
//!   another CA and plaintext are all refused;
//! - a CRL written over `--grpc-crl` while the server runs revokes a client
//!   certificate from the next connection on (no restart); a client's CRL
//!   (`--tablet-manager-grpc-crl`) refuses a revoked server;
//! - certificate files replaced on disk are used without a restart, on
//!   both sides: the server presents its new certificate, and a client
//!   whose old certificate was revoked connects with its new one;
//! - a reparent requested over mTLS is audited with the subject of the
//!   client's certificate;
//! - the `vtorc` binary stops at start-up, without a panic, with an error
//!   naming the file and the flag, when a TLS file cannot be used.

mod api_support;
mod recovery_support;

use std::net::SocketAddr;
use std::time::Duration;

use api_support::*;
use integration::pki::{CertFiles, TestPki};
use tonic::transport::Endpoint;
use vtorc::config::TlsFiles;
use vtorc::proto::vtctldata::PlannedReparentShardRequest;
use vtorc::proto::vtctlservice::vtctld_client::VtctldClient;
use vtorc::proto::vtorc::v1 as pb;
use vtorc::proto::vtorc::v1::vtorc_client::VtorcClient;
use vtorc::recovery::{AuditFilter, RecoveryOutcome};
use vtorc::tls::{ClientTls, ServerTls};

/// One `GetHealth` call on a fresh connection (TLS with `tls`, else plaintext).
async fn call(addr: SocketAddr, tls: Option<&ClientTls>) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let channel = match tls {
        Some(tls) => endpoint.connect_with_connector(tls.connector()).await,
        None => endpoint.connect().await,
    }
    .map_err(|e| format!("{e:?}"))?;
    VtorcClient::new(channel)
        .get_health(pb::GetHealthRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn client(pki: &TestPki, own: Option<&CertFiles>) -> ClientTls {
    let files = TlsFiles {
        ca: Some(pki.ca_path()),
        cert: own.map(|c| c.cert.clone()),
        key: own.map(|c| c.key.clone()),
        crl: None,
        server_name: Some("localhost".into()),
    };
    ClientTls::from_files(&files, "tablet-manager-grpc-")
        .expect("client TLS")
        .expect("TLS on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_a_crl_written_at_run_time_revokes_one() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new(dir.path(), "vtorc").expect("CA");
    let other = TestPki::new(&dir.path().join("other"), "other").expect("another CA");
    let server = pki.issue("server").expect("server cert");
    let good = pki.issue("good").expect("client cert");
    let doomed = pki.issue("doomed").expect("client cert");
    let stranger = other.issue("stranger").expect("foreign client cert");
    let crl = pki.write_crl(&[]).expect("empty CRL");
    let tls = ServerTls::from_files(
        &TlsFiles {
            crl: Some(crl),
            ..pki.tls_files(&server)
        },
        "grpc-",
    )
    .expect("server TLS")
    .expect("TLS on");
    assert!(tls.requires_client_certificates());

    let mut world = MemoryWorld::new();
    world.start_discovery();
    let (addr, _task) = world.serve_grpc_tls(Some(tls)).await;

    call(addr, Some(&client(&pki, Some(&good))))
        .await
        .expect("a certificate from the CA is accepted");
    // An operator's reparent over mTLS is audited with the subject of the
    // client certificate (the shard does not exist: a failed record).
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect_with_connector(client(&pki, Some(&good)).connector())
        .await
        .expect("connect");
    let status = VtctldClient::new(channel)
        .planned_reparent_shard(PlannedReparentShardRequest {
            keyspace: "ks".into(),
            shard: "0".into(),
            ..PlannedReparentShardRequest::default()
        })
        .await
        .expect_err("no such shard");
    let records = world.ctx.recovery.recoveries(&AuditFilter::all());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, RecoveryOutcome::Failed, "{status:?}");
    let by = records[0].requested_by.as_ref().expect("requested_by");
    assert_eq!(by.method, "PlannedReparentShard");
    assert_eq!(by.client_identity.as_deref(), Some("CN=good"), "{by:?}");
    assert!(
        by.peer.as_deref().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{by:?}"
    );
    call(addr, Some(&client(&pki, Some(&doomed))))
        .await
        .expect("not revoked yet");
    call(addr, Some(&client(&pki, None)))
        .await
        .expect_err("no client certificate");
    call(addr, Some(&client(&pki, Some(&stranger))))
        .await
        .expect_err("a certificate from another CA");
    call(addr, None).await.expect_err("plaintext");
    // A client that does not trust the server's CA refuses the server.
    let err = call(addr, Some(&client(&other, Some(&stranger))))
        .await
        .expect_err("the server's CA is not trusted");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Revoke while the server runs: the next connection is refused.
    pki.write_crl(&[&doomed]).expect("CRL");
    let err = call(addr, Some(&client(&pki, Some(&doomed))))
        .await
        .expect_err("revoked");
    assert!(!err.is_empty());
    call(addr, Some(&client(&pki, Some(&good))))
        .await
        .expect("the others still get in");

    // The client side of a CRL (--tablet-manager-grpc-crl): a server
    // whose certificate is revoked is refused.
    let crl = pki.write_crl(&[&doomed, &server]).expect("CRL");
    let checking = ClientTls::from_files(
        &TlsFiles {
            crl: Some(crl),
            server_name: Some("localhost".into()),
            ..pki.tls_files(&good)
        },
        "tablet-manager-grpc-",
    )
    .expect("client TLS")
    .expect("TLS on");
    let err = call(addr, Some(&checking)).await.expect_err("revoked server");
    assert!(err.contains("Revoked"), "{err}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_used_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new(dir.path(), "vtorc").expect("CA");
    let server = pki.issue("server").expect("server cert");
    let me = pki.issue("me").expect("client cert");
    let crl = pki.write_crl(&[]).expect("empty CRL");
    let tls = ServerTls::from_files(
        &TlsFiles {
            crl: Some(crl),
            ..pki.tls_files(&server)
        },
        "grpc-",
    )
    .expect("server TLS")
    .expect("TLS on");
    let mut world = MemoryWorld::new();
    world.start_discovery();
    let (addr, _task) = world.serve_grpc_tls(Some(tls)).await;
    let client = client(&pki, Some(&me));

    // The server presents the certificate in its files at each handshake.
    let presented = |client: ClientTls| async move {
        let stream = client
            .connect("127.0.0.1", addr.port())
            .await
            .expect("TLS connection");
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .expect("a server certificate")
    };
    let pem_der = |path: &std::path::Path| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_file(path).expect("PEM").to_vec()
    };
    let first = presented(client.clone()).await;
    assert_eq!(first, pem_der(&server.cert));
    // mtime granularity: make sure the replacement is seen as a change.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let renewed = pki.issue("server").expect("renewed server cert");
    assert_eq!(renewed.cert, server.cert, "same file names");
    let second = presented(client.clone()).await;
    assert_ne!(second, first, "the renewed certificate is served");
    assert_eq!(second, pem_der(&renewed.cert));
    call(addr, Some(&client))
        .await
        .expect("gRPC over the renewed certificate");

    // The client side: revoke the client's certificate, then replace its
    // files; the same client (no rebuild) gets in with the new one.
    pki.write_crl(&[&me]).expect("CRL");
    call(addr, Some(&client)).await.expect_err("revoked");
    let new_me = pki.issue("me").expect("renewed client cert");
    assert_eq!(new_me.cert, me.cert, "same file names");
    call(addr, Some(&client))
        .await
        .expect("the renewed client certificate is used");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtorc_stops_at_start_up_naming_an_unusable_tls_file_and_its_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM").expect("write");
    let missing = dir.path().join("missing-key.pem");
    let pki = TestPki::new(dir.path(), "vtorc").expect("CA");
    let cert = pki.issue("cert").expect("cert");
    let cases: Vec<(Vec<String>, &str, &std::path::Path)> = vec![
        (
            vec![format!("--tablet-manager-grpc-ca={}", garbage.display())],
            "--tablet-manager-grpc-ca",
            &garbage,
        ),
        (
            vec![
                format!("--grpc-cert={}", cert.cert.display()),
                format!("--grpc-key={}", missing.display()),
            ],
            "--grpc-key",
            &missing,
        ),
        (
            vec![format!("--topo-etcd-tls-ca={}", garbage.display())],
            "--topo-etcd-tls-ca",
            &garbage,
        ),
        (
            vec![format!("--tablet-grpc-crl={}", garbage.display())],
            "--tablet-grpc-crl",
            &garbage,
        ),
    ];
    let binary = recovery_support::vtorc_binary();
    for (flags, flag, file) in cases {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(&binary)
                .args([
                    "--topo-global-server-address=127.0.0.1:1",
                    "--topo-global-root=/vitess/global",
                    "--port=0",
                ])
                .args(&flags)
                .output(),
        )
        .await
        .expect("vtorc exits quickly")
        .expect("run vtorc");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{flags:?}: {text}");
        assert!(
            text.contains(flag) && text.contains(&file.display().to_string()),
            "{flags:?}: the error names {flag} and the file: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}
