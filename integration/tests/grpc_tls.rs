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
//!   naming the file and the flag, when a TLS file cannot be used, and
//!   when `--grpc-mutating-identities-file` cannot be used or enforced, or
//!   `--grpc-auth-static-password-file` cannot be read as Go's JSON;
//! - `--grpc-auth-mode=static` as vtctld: no credentials UNAUTHENTICATED,
//!   a wrong password PERMISSION_DENIED, with our client and with the real
//!   `vtctldclient --grpc-auth-static-client-creds`;
//! - etcd's client files (`--topo-etcd-tls-*`) replaced on disk are used
//!   from the next connection (a CA rotation with etcd restarted), a
//!   broken replacement keeps the previous ones;
//! - with `--grpc-mutating-identities-file`, a listed certificate
//!   reparents (the real `vtctldclient` when it can be built), another
//!   one of the same CA reads but is refused PERMISSION_DENIED naming the
//!   method, audited and counted; editing the file takes effect without a
//!   restart, a bad edit keeps the last good list.

mod api_support;
mod recovery_support;

use std::net::SocketAddr;
use std::time::Duration;

use api_support::*;
use integration::cluster::poll_until;
use integration::pki::{CertFiles, TestPki};
use integration::testkit::vtctldclient;
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

/// A channel to `addr` over mTLS with `own`'s certificate of `pki`, each
/// call bounded by `timeout`.
async fn mtls_channel(
    addr: SocketAddr,
    pki: &TestPki,
    own: &CertFiles,
    timeout: Duration,
) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .connect_with_connector(client(pki, Some(own)).connector())
        .await
        .expect("mTLS connection")
}

/// An in-memory world serving gRPC with `server`'s certificate of `pki`,
/// client certificates required and checked against the CA's CRL (empty
/// for now, rewritten by the test at run time).
async fn mtls_world(
    pki: &TestPki,
    server: &CertFiles,
) -> (
    MemoryWorld,
    SocketAddr,
    tokio::task::JoinHandle<Result<(), vtorc::server::ServerError>>,
) {
    let crl = pki.write_crl(&[]).expect("empty CRL");
    let tls = ServerTls::from_files(
        &TlsFiles {
            crl: Some(crl),
            ..pki.tls_files(server)
        },
        "grpc-",
    )
    .expect("server TLS")
    .expect("TLS on");
    assert!(tls.requires_client_certificates());
    let mut world = MemoryWorld::new();
    world.start_discovery();
    let (addr, task) = world.serve_grpc_tls(Some(tls)).await;
    (world, addr, task)
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
    let (world, addr, _task) = mtls_world(&pki, &server).await;

    call(addr, Some(&client(&pki, Some(&good))))
        .await
        .expect("a certificate from the CA is accepted");
    // An operator's reparent over mTLS is audited with the subject of the
    // client certificate (the shard does not exist: a failed record).
    let channel = mtls_channel(addr, &pki, &good, Duration::from_secs(10)).await;
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
    let (world, addr, _task) = mtls_world(&pki, &server).await;
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
        // An identities file without client certificates cannot be enforced.
        (
            vec![format!("--grpc-mutating-identities-file={}", garbage.display())],
            "--grpc-mutating-identities-file",
            &garbage,
        ),
        // Static passwords: a file that is not Go's JSON list.
        (
            vec![
                "--grpc-auth-mode=static".to_string(),
                format!("--grpc-auth-static-password-file={}", garbage.display()),
            ],
            "--grpc-auth-static-password-file",
            &garbage,
        ),
        // With them, a file that does not parse.
        (
            vec![
                format!("--grpc-cert={}", cert.cert.display()),
                format!("--grpc-key={}", cert.key.display()),
                format!("--grpc-ca={}", pki.ca_path().display()),
                format!("--grpc-mutating-identities-file={}", garbage.display()),
            ],
            "--grpc-mutating-identities-file",
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

/// Writes `bytes` over `path` by a rename, as a renewal tool or a
/// ConfigMap update does (a reader never sees half a file).
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("replacing");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_certificate_files_replaced_on_disk_are_used_from_the_next_connection() {
    use integration::etcd::{EtcdServer, EtcdTls};
    use vtorc::topo::{EtcdOptions, EtcdStore, TopoStore};

    let dir = tempfile::tempdir().expect("dir");
    let one = TestPki::new(&dir.path().join("one"), "one").expect("CA one");
    let two = TestPki::new(&dir.path().join("two"), "two").expect("CA two");
    let (etcd_one, client_one) = (
        one.issue("etcd").expect("cert"),
        one.issue("vtorc").expect("cert"),
    );
    let (etcd_two, client_two) = (
        two.issue("etcd").expect("cert"),
        two.issue("vtorc").expect("cert"),
    );
    // vtorc's --topo-etcd-tls-* files, at fixed paths.
    let files = TlsFiles {
        ca: Some(dir.path().join("etcd-ca.pem")),
        cert: Some(dir.path().join("etcd-client.pem")),
        key: Some(dir.path().join("etcd-client-key.pem")),
        crl: None,
        server_name: None,
    };
    let install = |ca: &std::path::Path, own: &CertFiles| {
        replace_file(files.ca.as_ref().expect("ca"), &read(ca));
        replace_file(files.key.as_ref().expect("key"), &read(&own.key));
        replace_file(files.cert.as_ref().expect("cert"), &read(&own.cert));
    };
    install(&one.ca_path(), &client_one);
    let etcd_tls = |pki: &TestPki, server: &CertFiles, client: &CertFiles| EtcdTls {
        server: server.clone(),
        ca: pki.ca_path(),
        client_cert_auth: true,
        client: pki.tls_files(client),
    };
    let mut etcd = EtcdServer::start_with(Some(etcd_tls(&one, &etcd_one, &client_one)))
        .await
        .expect("etcd with client-certificate auth");
    let options = EtcdOptions {
        operation_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(3),
        tls: files.clone(),
    };
    let store = EtcdStore::connect(&[etcd.address()], &options)
        .await
        .expect("connect over TLS");
    store
        .create("/rotation/key", b"1", 0)
        .await
        .expect("a write over the first CA's certificates");
    // Several endpoints: a dead one first is skipped.
    let dead = format!("127.0.0.1:{}", integration::process::free_port().expect("port"));
    let failover = EtcdStore::connect(&[dead, etcd.address()], &options)
        .await
        .expect("connect");
    failover
        .get("/rotation/key")
        .await
        .expect("read through the second endpoint");
    // The control: etcd-client's own TLS, which reads the same files once.
    let mut control = etcd_client::Client::connect(
        [etcd.endpoint()],
        Some(
            etcd_client::ConnectOptions::new()
                .with_tls(vtorc::tls::etcd_tls_options(&files).expect("files").expect("TLS"))
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2)),
        ),
    )
    .await
    .expect("control client");
    control.get("/rotation/key", None).await.expect("control reads");

    // Rotate to the second CA: new client files on disk, etcd restarted
    // with a certificate of the second CA that trusts only it.
    install(&two.ca_path(), &client_two);
    etcd.restart_with_tls(Some(etcd_tls(&two, &etcd_two, &client_two)))
        .await
        .expect("etcd restarts with the second CA");
    let value = poll_until(
        Duration::from_secs(20),
        "the same store reads over the second CA",
        || async { Ok(store.get("/rotation/key").await.ok().map(|kv| kv.value)) },
    )
    .await
    .expect("the store reconnects with the replaced files, without a restart");
    assert_eq!(value, b"1");
    control
        .get("/rotation/key", None)
        .await
        .expect_err("the control, with the files it read at start, is refused");

    // A broken replacement (half a certificate) keeps the last good files.
    replace_file(
        files.cert.as_ref().expect("cert"),
        b"-----BEGIN CERTIFICATE-----\ntrunc",
    );
    etcd.restart_with_tls(Some(etcd_tls(&two, &etcd_two, &client_two)))
        .await
        .expect("etcd restarts");
    poll_until(
        Duration::from_secs(20),
        "the store reads after the broken replacement",
        || async { Ok(store.get("/rotation/key").await.ok().map(|_| ())) },
    )
    .await
    .expect("the previous files are kept");
}

fn prs_to(uid: u32) -> vtorc::proto::vtctldata::PlannedReparentShardRequest {
    vtorc::proto::vtctldata::PlannedReparentShardRequest {
        keyspace: KS.to_string(),
        shard: "0".to_string(),
        new_primary: Some(alias(uid)),
        ..Default::default()
    }
}

/// A PRS to `uid` through `client` that must be let through (`who` says
/// whose and why, for the failure message).
async fn prs_let_through(client: &mut VtctldClient<tonic::transport::Channel>, uid: u32, who: &str) {
    client
        .planned_reparent_shard(prs_to(uid))
        .await
        .unwrap_or_else(|e| panic!("{who}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_a_listed_certificate_identity_reads_do_not_and_the_list_reloads() {
    use integration::process::free_port;
    use integration::testkit::semi_sync_commerce;

    let cluster = semi_sync_commerce().await;
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new(dir.path(), "clients").expect("CA");
    let server = pki.issue("server").expect("cert");
    let admin = pki.issue("admin").expect("cert");
    let reader = pki.issue("reader").expect("cert");
    let identities = dir.path().join("mutating-identities");
    replace_file(&identities, b"# who may change things\ncn:admin\n");
    let (grpc_port, http_port) = (free_port().expect("port"), free_port().expect("port"));
    let flags = [
        format!("--grpc-port={grpc_port}"),
        format!("--port={http_port}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--grpc-cert={}", server.cert.display()),
        format!("--grpc-key={}", server.key.display()),
        format!("--grpc-ca={}", pki.ca_path().display()),
        format!("--grpc-mutating-identities-file={}", identities.display()),
        "--security-policy=read-only".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let vtorc = recovery_support::VtorcProcess::start(&cluster, dir.path(), 1, &flags).await;
    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let log = || std::fs::read_to_string(&vtorc.log_path).unwrap_or_default();

    // Reads: open to any certificate of the CA.
    // Vtctld calls may reparent: up to a minute each.
    let vtctld_client = async |own: &CertFiles| {
        VtctldClient::new(mtls_channel(grpc, &pki, own, Duration::from_secs(60)).await)
    };
    let mut as_reader = vtctld_client(&reader).await;
    let tablets = as_reader
        .get_tablets(vtorc::proto::vtctldata::GetTabletsRequest {
            keyspace: KS.to_string(),
            ..Default::default()
        })
        .await
        .expect("the reader may read")
        .into_inner();
    assert_eq!(tablets.tablets.len(), 3);
    let mut api_reader = VtorcClient::new(mtls_channel(grpc, &pki, &reader, Duration::from_secs(10)).await);
    api_reader
        .get_health(pb::GetHealthRequest {})
        .await
        .expect("the reader may read the VTOrc API");

    // Mutations: refused to the reader, naming the method; nothing changes.
    let denied = as_reader
        .planned_reparent_shard(prs_to(101))
        .await
        .expect_err("the reader may not reparent");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("vtctlservice.Vtctld/PlannedReparentShard")
            && denied.message().contains("CN=reader"),
        "{}",
        denied.message()
    );
    let denied = api_reader
        .disable_global_recoveries(pb::DisableGlobalRecoveriesRequest {})
        .await
        .expect_err("the reader may not switch recoveries off");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("vtorc.v1.Vtorc/DisableGlobalRecoveries")
    );
    assert_eq!(
        cluster.primary_alias(KS, "0").await.expect("shard"),
        Some(alias(100)),
        "the refused PRS changed nothing"
    );
    let health = api_reader
        .get_health(pb::GetHealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert!(health.recoveries_enabled, "the refused switch changed nothing");

    // The refusals are audited (file) and counted (metric).
    let audited = poll_until(Duration::from_secs(5), "the denial in the audit file", || async {
        Ok(vtorc.audit().into_iter().find(|e| {
            e["event"] == "AccessDenied" && e["method"] == "vtctlservice.Vtctld/PlannedReparentShard"
        }))
    })
    .await
    .expect("audited");
    assert_eq!(audited["code"], "PERMISSION_DENIED");
    assert!(
        audited["identity"]
            .as_str()
            .is_some_and(|i| i.contains("CN=reader")),
        "{audited}"
    );
    assert!(
        !audited["peer"].as_str().unwrap_or_default().is_empty(),
        "{audited}"
    );
    let audit_text = std::fs::read_to_string(&vtorc.audit_path).expect("audit file");
    assert!(!audit_text.contains("PRIVATE KEY") && !audit_text.contains("BEGIN CERTIFICATE"));
    let metrics = get_ok(http_addr, "/metrics").await;
    assert!(
        metrics.contains(
            "vtorc_grpc_calls_denied{method=\"vtctlservice.Vtctld/PlannedReparentShard\",reason=\"not_allowed_to_mutate\"} 1"
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("grpc"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("vtorc_grpc_mutating_identities 1"));
    // The HTTP API's mutations are closed by --security-policy=read-only
    // (the file guards gRPC only), and that refusal is audited too.
    let r = api_support::http(http_addr, "GET", "/api/ack-all-recoveries?comment=x")
        .await
        .expect("HTTP");
    assert_eq!(r.status, 403, "{}", r.body);
    poll_until(
        Duration::from_secs(5),
        "the HTTP denial in the audit file",
        || async {
            Ok(vtorc
                .audit()
                .into_iter()
                .find(|e| e["event"] == "AccessDenied" && e["method"] == "HTTP GET /api/ack-all-recoveries"))
        },
    )
    .await
    .expect("audited");

    // The listed identity reparents: through the real vtctldclient when it
    // can be had, else through our client.
    match vtctldclient("the vtctldclient leg") {
        Some(bin) => {
            // vtctldclient's PRS to `new_primary`, as `own` over mTLS.
            let prs_as = async |own: &CertFiles, new_primary: &str| {
                tokio::process::Command::new(&bin)
                    .args([
                        format!("--server=127.0.0.1:{grpc_port}"),
                        format!("--vtctld-grpc-ca={}", pki.ca_path().display()),
                        format!("--vtctld-grpc-cert={}", own.cert.display()),
                        format!("--vtctld-grpc-key={}", own.key.display()),
                        "--vtctld-grpc-server-name=localhost".to_string(),
                        "PlannedReparentShard".to_string(),
                        format!("{KS}/0"),
                        format!("--new-primary={new_primary}"),
                    ])
                    .kill_on_drop(true)
                    .output()
                    .await
                    .expect("run vtctldclient")
            };
            let out = prs_as(&admin, "zone1-0000000101").await;
            assert!(
                out.status.success(),
                "vtctldclient PRS as admin: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // And refuses the reader with PermissionDenied, as our client saw.
            let out = prs_as(&reader, "zone1-0000000100").await;
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{text}");
            assert!(text.contains("PermissionDenied"), "{text}");
        }
        None => {
            let mut as_admin = vtctld_client(&admin).await;
            prs_let_through(&mut as_admin, 101, "the admin reparents").await;
        }
    }
    recovery_support::assert_shard_primary(&cluster, KS, &alias(101)).await;

    // Add the reader to the file: let through without a restart.
    replace_file(&identities, b"cn:admin\ncn:reader\n");
    prs_let_through(&mut as_reader, 100, "the reader, now listed, reparents").await;
    recovery_support::assert_shard_primary(&cluster, KS, &alias(100)).await;
    // A bad edit keeps the last good list, and the log says why.
    replace_file(&identities, b"cn:admin\nreader\n");
    api_reader
        .disable_global_recoveries(pb::DisableGlobalRecoveriesRequest {})
        .await
        .expect("the last good list still has the reader");
    api_reader
        .enable_global_recoveries(pb::EnableGlobalRecoveriesRequest {})
        .await
        .expect("and switches them back on");
    let logged = log();
    assert!(
        logged.contains("keeping the previous identities") && logged.contains("line 2"),
        "{logged}"
    );
    // A good edit that drops the reader closes the door again.
    replace_file(&identities, b"cn:admin\n");
    let denied = api_reader
        .ack_recovery(pb::AckRecoveryRequest::default())
        .await
        .expect_err("dropped from the list");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_password_mode_as_vtctld_with_the_real_vtctldclient() {
    use vtorc::server::auth::{Authentication, GrpcAccess, load_static_users};

    let dir = tempfile::tempdir().expect("dir");
    let users = dir.path().join("users.json");
    std::fs::write(&users, r#"[{"Username": "ops", "Password": "s3cret"}]"#).expect("write");
    let access = GrpcAccess::new(
        Authentication::Static {
            users: load_static_users(&users).expect("Go's format"),
        },
        None,
    );
    let mut world = MemoryWorld::new();
    world.start_discovery();
    let (addr, _task) = world
        .serve_grpc_guarded(None, Some(std::sync::Arc::new(access)))
        .await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut api = VtorcClient::new(channel);
    let e = api
        .get_health(pb::GetHealthRequest {})
        .await
        .expect_err("no credentials");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let with = |user: &str, password: &str| {
        let mut r = tonic::Request::new(pb::GetHealthRequest {});
        r.metadata_mut().insert("username", user.parse().expect("ascii"));
        r.metadata_mut()
            .insert("password", password.parse().expect("ascii"));
        r
    };
    let e = api
        .get_health(with("ops", "wrong"))
        .await
        .expect_err("wrong password");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    api.get_health(with("ops", "s3cret"))
        .await
        .expect("right password");

    // Vitess's client with its --grpc-auth-static-client-creds file.
    if let Some(bin) = vtctldclient("the vtctldclient leg") {
        let run = |creds: Option<&str>| {
            let creds_file = dir.path().join("creds.json");
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.arg(format!("--server={addr}"));
            if let Some(creds) = creds {
                std::fs::write(&creds_file, creds).expect("write");
                cmd.arg(format!(
                    "--grpc-auth-static-client-creds={}",
                    creds_file.display()
                ));
            }
            cmd.arg("GetCellInfoNames").kill_on_drop(true);
            async move { cmd.output().await.expect("run vtctldclient") }
        };
        let out = run(Some(r#"{"Username": "ops", "Password": "s3cret"}"#)).await;
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(None).await;
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("Unauthenticated"),
            "{text}"
        );
        let out = run(Some(r#"{"Username": "ops", "Password": "nope"}"#)).await;
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("PermissionDenied"),
            "{text}"
        );
    }
    world.stop().await;
}
