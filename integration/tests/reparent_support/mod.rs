//! Helpers shared by the reparent tests: a reparenter over the cluster,
//! replication checks, a Vitess-protocol third-party lock, and a vtorc
//! gRPC server on a free port.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use integration::cluster::{Cluster, poll_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::recovery::AuditLog;
use vtorc::reparent::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentConfig, ReparentOutcome,
    ReparentResult, Reparenter, system_wall_clock,
};
use vtorc::server::{ServerError, VtctldService, serve_grpc};
use vtorc::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager};

/// `zone-uid` alias.
pub fn alias(cell: &str, uid: u32) -> TabletAlias {
    TabletAlias::new(cell, uid)
}

/// The outcome of [`ers_commerce`].
pub struct ErsRun {
    /// The reparenter. Keep it while the test looks at the shard: it owns
    /// the calls the ERS left running (replicas still catching up before
    /// they are repointed), and dropping it stops them.
    pub reparenter: Arc<Reparenter>,
    /// What the ERS returned.
    pub outcome: ReparentOutcome,
    /// Its step log.
    pub log: EventLog,
}

/// ERS of `commerce/0` with `opts` (a 15 s reparenter); a failure fails
/// the test with the step log and the cluster's diagnostics.
pub async fn ers_commerce(cluster: &Cluster, opts: &EmergencyReparentOptions) -> ErsRun {
    let reparenter = reparenter(cluster, Duration::from_secs(15));
    let log = EventLog::default();
    let outcome = reparenter
        .emergency_reparent_shard("commerce", "0", opts, None, &log)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ERS failed: {e}\n{:#?}\n{}",
                log.messages(),
                cluster.diagnostics()
            )
        });
    ErsRun {
        reparenter,
        outcome,
        log,
    }
}

/// PRS of `commerce/0` with `opts` through `rp`, taking the shard lock
/// itself; its step log is not kept.
pub async fn prs(rp: &Reparenter, opts: &PlannedReparentOptions) -> ReparentResult<ReparentOutcome> {
    rp.planned_reparent_shard("commerce", "0", opts, None, &EventLog::default())
        .await
}

/// ERS of `commerce/0` with `opts` through `rp`, taking the shard lock
/// itself; its step log is not kept.
pub async fn ers(rp: &Reparenter, opts: &EmergencyReparentOptions) -> ReparentResult<ReparentOutcome> {
    rp.emergency_reparent_shard("commerce", "0", opts, None, &EventLog::default())
        .await
}

/// A tablet client with the bounds a reparent uses.
pub fn tablet_client() -> Arc<dyn TabletManager> {
    Arc::new(GrpcTabletManager::new(TabletClientConfig {
        remote_operation_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(1),
        ..TabletClientConfig::default()
    }))
}

/// A reparenter over the cluster's topo: remote operations 10 s, replica
/// waits `wait`.
pub fn reparenter(cluster: &Cluster, wait: Duration) -> Arc<Reparenter> {
    Arc::new(Reparenter::new(
        cluster.topo().clone(),
        tablet_client(),
        ReparentConfig {
            remote_operation_timeout: Duration::from_secs(10),
            wait_replicas_timeout: wait,
            clock: system_wall_clock,
        },
    ))
}

/// The tablet type the topo records for `alias`.
pub async fn topo_type(cluster: &Cluster, alias: &TabletAlias) -> TabletType {
    cluster
        .tablet_record(alias)
        .await
        .unwrap_or_else(|e| panic!("tablet record {alias}: {e}"))
        .r#type()
}

/// Waits until `replica`'s MariaDB replicates from `primary`'s with both
/// threads running.
pub async fn wait_replicating_from(cluster: &Cluster, replica: &TabletAlias, primary: &TabletAlias) {
    let port = i32::from(cluster.tablet(primary).expect("primary").mysql_port());
    let what = format!("{replica} replicating from {primary}");
    poll_until(Duration::from_secs(30), &what, || async {
        let status = cluster.full_status(replica).await?;
        Ok(status
            .replication_status
            .filter(|r| r.source_port == port && r.io_state == 3 && r.sql_state == 3)
            .map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.diagnostics()));
}

/// Whether `alias`'s MariaDB is writable (read_only off).
pub async fn writable(cluster: &Cluster, alias: &TabletAlias) -> bool {
    !cluster
        .full_status(alias)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .read_only
}

/// A shard lock taken with raw etcd operations the way Vitess's etcd2
/// backend (vtctld) takes it: a lease and a create-if-absent key
/// `<shard>/locks/<lease>` holding the lock JSON. Released by revoking the
/// lease.
pub struct ThirdPartyLock {
    /// The etcd client that holds the lease.
    pub client: Client,
    /// The lease.
    pub lease: i64,
}

impl ThirdPartyLock {
    /// Takes the lock on `keyspace/shard` (the shard must be unlocked).
    pub async fn take(cluster: &Cluster, keyspace: &str, shard: &str) -> ThirdPartyLock {
        let mut client = cluster.etcd().client().await.expect("etcd client");
        let lease = client.lease_grant(30, None).await.expect("lease").id();
        let key = format!("/vitess/global/keyspaces/{keyspace}/shards/{shard}/locks/{lease}");
        let contents = "{\n  \"Action\": \"PlannedReparentShard(zone1-0000000102, AvoidPrimary = <nil>)\",\n  \
                        \"HostName\": \"vtctld-test\",\n  \"UserName\": \"vitess\",\n  \"Time\": \
                        \"2026-01-01T00:00:00Z\",\n  \"Options\": {},\n  \"Status\": \"Running\"\n}";
        integration::etcd::create_leased_key(&mut client, &key, contents, lease).await;
        ThirdPartyLock { client, lease }
    }

    /// Releases it (revokes the lease, which deletes the key).
    pub async fn release(mut self) {
        self.client.lease_revoke(self.lease).await.expect("revoke");
    }
}

/// Our gRPC server (Vtctld, health, reflection) on a free loopback port.
pub struct Server {
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// The audit the service records operator-requested reparents in.
    pub audit: Arc<AuditLog>,
    /// Stops the server.
    pub shutdown: CancellationToken,
    /// The server task (taken by [`Server::stop`]).
    pub task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Server {
    /// Starts it over the cluster's topo.
    pub async fn start(cluster: &Cluster, wait: Duration) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let shutdown = CancellationToken::new();
        let (audit, _) = AuditLog::new(100, "vtorc-test", system_wall_clock, None).expect("no audit file");
        let audit = Arc::new(audit);
        let service = VtctldService::new(
            cluster.topo().clone(),
            tablet_client(),
            reparenter(cluster, wait),
            Arc::clone(&audit),
            shutdown.clone(),
        );
        let task = tokio::spawn(serve_grpc(listener, service, shutdown.clone()));
        Server {
            address,
            audit,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops it and waits for the task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Median of durations (upper median for even counts).
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Runs `vtctldclient` with `args` (bounded by 60 s) and returns its
/// output; the command and its output (without INFO log lines) go to the
/// test log.
pub async fn run_vtctldclient(client: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(client);
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("vtctldclient {args:?} did not finish within 60 s"))
        .expect("run vtctldclient");
    eprintln!(
        "$ vtctldclient {}\n[exit {:?}]\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("\"level\":\"INFO\"") && !l.starts_with('I'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}

/// The standard output, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
