//! The Vtctld RPCs VTAdmin's keyspace, shard and tablet pages and its
//! tablet/shard actions call, each through the real Vitess 24
//! `vtctldclient` against our server over a real cluster (etcd, MariaDB,
//! agents), with their error cases: unknown keyspace/shard/tablet, and a
//! tablet whose agent is down (unreachable).
//!
//! The client comes from `VTCTLDCLIENT` or `scripts/build-vitess-tool.sh
//! vtctldclient` (cached); when neither gives one the tests FAIL (they never
//! pass without having run).

mod reparent_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use integration::cluster::{Cluster, ClusterBuilder, poll_until};
use integration::testkit::semi_sync_commerce;
use reparent_support::{
    Server, alias, run_vtctldclient, stderr, stdout, topo_type, wait_replicating_from, writable,
};
use vtorc::proto::topodata::TabletType;

/// The vtctldclient binary; panics with the build output when there is none.
fn vtctldclient() -> PathBuf {
    if let Ok(path) = std::env::var("VTCTLDCLIENT") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "VTCTLDCLIENT={} is not a file", path.display());
        return path;
    }
    let out = integration::testkit::build_vitess_tool("vtctldclient");
    assert!(
        out.status.success(),
        "scripts/build-vitess-tool.sh vtctldclient failed, so these tests cannot run:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert!(path.is_file(), "the build printed {}, not a file", path.display());
    path
}

/// `vtctldclient --server <server> args...` (bounded by 60 s).
async fn run(client: &Path, server: &str, args: &[&str]) -> Output {
    let all: Vec<&str> = ["--server", server]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run_vtctldclient(client, &all).await
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// Asserts a failure whose message contains every one of `needles`.
#[track_caller]
fn assert_fails(out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected a failure, got: {}", stdout(out));
    let err = stderr(out);
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

async fn three_tablets() -> Cluster {
    semi_sync_commerce().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_and_shard_reads_through_vtctldclient() {
    let client = vtctldclient();
    let cluster = three_tablets().await;
    let server = Server::start(&cluster, Duration::from_secs(15)).await;
    let at = server.address.clone();

    // FindAllShardsInKeyspace: the shard record, keyed by name.
    let out = run(&client, &at, &["FindAllShardsInKeyspace", "commerce"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["shards"]["0"]["keyspace"], "commerce", "{v}");
    assert_eq!(v["shards"]["0"]["name"], "0", "{v}");
    assert_eq!(v["shards"]["0"]["shard"]["primary_alias"]["uid"], 100, "{v}");
    // Unknown keyspace: NotFound, as vtctld.
    let out = run(&client, &at, &["FindAllShardsInKeyspace", "nosuchks"]).await;
    assert_fails(&out, &["NotFound", "nosuchks"]);

    // ShardReplicationPositions: the primary's position, each replica's status.
    let out = run(&client, &at, &["ShardReplicationPositions", "commerce/0"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for uid in [100, 101, 102] {
        assert!(text.contains(&format!("zone1-0000000{uid}")), "{text}");
    }
    assert!(text.contains("MariaDB/"), "positions printed: {text}");
    let out = run(&client, &at, &["ShardReplicationPositions", "nosuchks/0"]).await;
    assert_fails(&out, &["NotFound"]);
    let out = run(&client, &at, &["ShardReplicationPositions", "commerce/80-"]).await;
    assert_fails(&out, &["NotFound"]);

    // GetCellsAliases: none defined here (an empty map, no error).
    let out = run(&client, &at, &["GetCellsAliases"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // GetSrvKeyspaces: every cell; a cell without a SrvKeyspace is kept
    // with an empty entry (vtctld tolerates NoNode, and an unknown cell's
    // missing CellInfo is a NoNode too), so neither an unknown keyspace nor
    // an unknown cell is an error.
    let out = run(&client, &at, &["GetSrvKeyspaces", "commerce"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json(&out).get("zone1").is_some(), "{}", stdout(&out));
    let out = run(&client, &at, &["GetSrvKeyspaces", "nosuchks"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json(&out)["zone1"].is_null(), "{}", stdout(&out));
    let out = run(&client, &at, &["GetSrvKeyspaces", "commerce", "nosuchcell"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json(&out)["nosuchcell"].is_null(), "{}", stdout(&out));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablet_actions_through_vtctldclient() {
    let client = vtctldclient();
    let mut cluster = three_tablets().await;
    let server = Server::start(&cluster, Duration::from_secs(15)).await;
    let at = server.address.clone();
    let (p, r1, r2) = (alias("zone1", 100), alias("zone1", 101), alias("zone1", 102));

    for cmd in ["PingTablet", "RefreshState", "RunHealthCheck"] {
        let out = run(&client, &at, &[cmd, "zone1-0000000101"]).await;
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        let out = run(&client, &at, &[cmd, "zone1-0000000999"]).await;
        assert_fails(&out, &["NotFound", "zone1-0000000999"]);
    }

    // SetWritable flips read_only on the tablet's MariaDB.
    assert!(!writable(&cluster, &r1).await);
    let out = run(&client, &at, &["SetWritable", "zone1-0000000101", "true"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(writable(&cluster, &r1).await, "read_only off");
    let out = run(&client, &at, &["SetWritable", "zone1-0000000101", "false"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!writable(&cluster, &r1).await, "read_only on again");

    // StopReplication / StartReplication on a replica.
    let out = run(&client, &at, &["StopReplication", "zone1-0000000102"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status = cluster.full_status(&r2).await.expect("full status");
    let repl = status.replication_status.expect("a replica has a status");
    assert_ne!(repl.sql_state, 3, "SQL thread stopped: {repl:?}");
    let out = run(&client, &at, &["StartReplication", "zone1-0000000102"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_replicating_from(&cluster, &r2, &p).await;

    // ReparentTablet points the replica at the shard primary; refused for
    // the primary itself (FailedPrecondition, vtctld's message).
    let out = run(&client, &at, &["ReparentTablet", "zone1-0000000102"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["primary"]["uid"], 100, "{}", stdout(&out));
    wait_replicating_from(&cluster, &r2, &p).await;
    let out = run(&client, &at, &["ReparentTablet", "zone1-0000000100"]).await;
    assert_fails(&out, &["FailedPrecondition", "onto itself"]);

    // TabletExternallyReparented on the tablet that already is PRIMARY: a
    // no-op naming the old and new primary.
    let out = run(&client, &at, &["TabletExternallyReparented", "zone1-0000000100"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(topo_type(&cluster, &p).await, TabletType::Primary);

    // Unreachable tablet: its agent is down. Every tablet RPC fails with
    // Unavailable; ShardReplicationPositions fails as a whole (vtctld: only
    // a timeout leaves an empty entry, any other error fails the request).
    cluster
        .kill_agent(&r1)
        .expect("kill the agent of zone1-0000000101");
    for args in [
        vec!["PingTablet", "zone1-0000000101"],
        vec!["RefreshState", "zone1-0000000101"],
        vec!["RunHealthCheck", "zone1-0000000101"],
        vec!["SetWritable", "zone1-0000000101", "false"],
        vec!["StopReplication", "zone1-0000000101"],
        vec!["StartReplication", "zone1-0000000101"],
        vec!["ReparentTablet", "zone1-0000000101"],
        vec!["TabletExternallyReparented", "zone1-0000000101"],
        vec!["ShardReplicationPositions", "commerce/0"],
    ] {
        let out = run(&client, &at, &args).await;
        assert_fails(&out, &["Unavailable"]);
    }
    assert_eq!(
        topo_type(&cluster, &r1).await,
        TabletType::Replica,
        "nothing changed"
    );

    // TabletExternallyReparented on a replica: ChangeType(PRIMARY) on it.
    let out = run(&client, &at, &["TabletExternallyReparented", "zone1-0000000102"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["new_primary"]["uid"], 102, "{v}");
    assert_eq!(v["old_primary"]["uid"], 100, "{v}");
    poll_until(
        Duration::from_secs(10),
        "zone1-0000000102 is PRIMARY in the topo",
        || {
            let cluster = &cluster;
            let r2 = r2.clone();
            async move { Ok((topo_type(cluster, &r2).await == TabletType::Primary).then_some(())) }
        },
    )
    .await
    .expect("ChangeType(PRIMARY) reached the topo");

    server.stop().await;
}

/// A tablet that accepts connections but does not answer (its agent is
/// SIGSTOPped): ShardReplicationPositions still answers once the tablet's
/// call times out, with the other tablets' positions and an empty entry for
/// it, as vtctld does (only errors other than a timeout fail the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_replication_positions_keeps_a_timed_out_tablet_as_an_empty_entry() {
    let client = vtctldclient();
    let cluster = ClusterBuilder::three_tablets("commerce", "semi_sync")
        .agent_mode(integration::cluster::AgentMode::Process(
            env!("CARGO_BIN_EXE_tablet-agent").into(),
        ))
        .started()
        .await;
    let server = Server::start(&cluster, Duration::from_secs(15)).await;
    let r2 = alias("zone1", 102);
    cluster
        .pause_agent(&r2)
        .expect("SIGSTOP the agent of zone1-0000000102");
    let started = std::time::Instant::now();
    let out = run(
        &client,
        &server.address,
        &["ShardReplicationPositions", "commerce/0"],
    )
    .await;
    cluster.resume_agent(&r2).expect("SIGCONT");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "answered after the tablet's call timed out, not before ({:?})",
        started.elapsed()
    );
    let text = stdout(&out);
    let line = |uid: u32| {
        text.lines()
            .find(|l| l.starts_with(&format!("zone1-0000000{uid} ")))
            .unwrap_or_else(|| panic!("no line for {uid}: {text}"))
            .to_string()
    };
    assert!(line(100).contains("MariaDB/"), "{text}");
    assert!(line(101).contains("MariaDB/"), "{text}");
    assert!(
        !line(102).contains("MariaDB/"),
        "no position for the silent tablet: {text}"
    );
    server.stop().await;
}

/// A shard without a primary: StartReplication and ReparentTablet refuse
/// with FAILED_PRECONDITION (vtctld's "no primary tablet for shard"); the
/// shard's replication positions still list its replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_without_a_primary_refuses_replication_actions() {
    let client = vtctldclient();
    let cluster = integration::testkit::semi_sync_commerce_without_primary().await;
    let server = Server::start(&cluster, Duration::from_secs(15)).await;
    let at = server.address.clone();
    for cmd in ["StartReplication", "ReparentTablet"] {
        let out = run(&client, &at, &[cmd, "zone1-0000000101"]).await;
        assert_fails(
            &out,
            &["FailedPrecondition", "no primary tablet for shard commerce/0"],
        );
    }
    let out = run(&client, &at, &["FindAllShardsInKeyspace", "commerce"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        json(&out)["shards"]["0"]["shard"]["primary_alias"].is_null(),
        "{}",
        stdout(&out)
    );
    server.stop().await;
}
