//! The cluster harness against real etcd, MariaDB and tablet agents:
//! start-up shape, topology records, replication bootstrap, several cells,
//! keyspaces and shards, and clean teardown (also after a panic).

use std::path::PathBuf;

use integration::cluster::{AgentMode, Cluster, ClusterBuilder, KeyspaceSpec, ShardSpec, TabletSpec};
use integration::testkit::semi_sync_commerce;
use mysql_async::prelude::Queryable;
use vtorc::proto::topodata::{TabletAlias, TabletType};

/// Replication state value Vitess uses for a running thread.
const RUNNING: i32 = 3;

/// True if `pid` is gone (no /proc entry) or is not the process we started
/// (a reused pid); a zombie counts as still there.
fn process_gone(pid: u32, name_hint: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => {
            let zombie = status.contains("State:\tZ");
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && !cmdline.contains(name_hint)
        }
    }
}

/// Asserts that every pid is gone and every directory removed.
fn assert_nothing_left(pids: &[(u32, String)], dirs: &[PathBuf]) {
    for (pid, hint) in pids {
        assert!(process_gone(*pid, hint), "process {pid} ({hint}) still exists");
    }
    for dir in dirs {
        assert!(!dir.exists(), "directory {} still exists", dir.display());
    }
}

/// Pids of a cluster with a name each process's command line contains.
fn named_pids(cluster: &Cluster) -> Vec<(u32, String)> {
    let mut pids: Vec<(u32, String)> = cluster
        .etcd()
        .pid()
        .map(|p| (p, "etcd".to_string()))
        .into_iter()
        .collect();
    for t in cluster.tablets() {
        pids.extend(t.mysql_pid().map(|p| (p, "mariadbd".to_string())));
        pids.extend(t.agent_pid().map(|p| (p, "tablet-agent".to_string())));
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_semi_sync_cluster_has_one_primary_and_two_semi_sync_replicas() {
    let cluster = semi_sync_commerce().await;
    eprintln!("3-tablet semi_sync cluster up in {:?}", cluster.startup_time());
    let topo = cluster.topo();

    // Topology records.
    assert_eq!(topo.cells().await.expect("cells"), vec!["zone1".to_string()]);
    let cell = topo.get_cell_info("zone1").await.expect("CellInfo").value;
    assert_eq!(cell.root, "/vitess/zone1");
    assert_eq!(cell.server_address, cluster.topo_address());
    let ks = topo.get_keyspace("commerce").await.expect("keyspace").value;
    assert_eq!(ks.durability_policy, "semi_sync");
    let primary_alias = TabletAlias::new("zone1", 100);
    assert_eq!(
        cluster.primary_alias("commerce", "0").await.expect("shard"),
        Some(primary_alias.clone())
    );
    for t in cluster.tablets() {
        let record = topo.get_tablet(t.alias()).await.expect("tablet record").value;
        let expected = if t.alias() == &primary_alias {
            TabletType::Primary
        } else {
            TabletType::Replica
        };
        assert_eq!(record.r#type(), expected, "{}", t.alias());
        assert_eq!(record.mysql_port, i32::from(t.mysql_port()));
        assert_eq!(
            record.port_map.get("grpc").copied(),
            Some(i32::from(t.grpc_port()))
        );
        assert_eq!(
            record.primary_term_start_time.is_some(),
            expected == TabletType::Primary,
            "{}",
            t.alias()
        );
    }

    // Replication and semi-sync as the agents report them.
    let primary_port = cluster.tablet(&primary_alias).expect("primary").mysql_port();
    let status = cluster
        .full_status(&primary_alias)
        .await
        .expect("primary FullStatus");
    assert!(!status.read_only, "primary is writable");
    assert!(status.semi_sync_primary_enabled && status.semi_sync_primary_status);
    assert_eq!(status.semi_sync_primary_clients, 2);
    assert!(
        status.replication_status.is_none()
            || status
                .replication_status
                .as_ref()
                .is_some_and(|r| r.source_port == 0),
        "primary replicates from nobody: {:?}",
        status.replication_status
    );
    for uid in [101, 102] {
        let alias = TabletAlias::new("zone1", uid);
        let status = cluster.full_status(&alias).await.expect("replica FullStatus");
        assert!(status.read_only, "{alias} is read-only");
        assert!(status.semi_sync_replica_enabled, "{alias} acks semi-sync");
        assert!(
            !status.semi_sync_primary_enabled,
            "{alias} does not wait for acks"
        );
        let repl = status
            .replication_status
            .expect("replica has a replication status");
        assert_eq!(
            repl.source_port,
            i32::from(primary_port),
            "{alias} replicates from the primary"
        );
        assert_eq!(
            (repl.io_state, repl.sql_state),
            (RUNNING, RUNNING),
            "{alias}: {repl:?}"
        );
    }

    // The reparent journal row written by the bootstrap replicated everywhere.
    for t in cluster.tablets() {
        let mut conn = t.mysql_conn().await.expect("connect");
        let rows: Vec<(String, String)> = conn
            .query("SELECT action_name, primary_alias FROM _vt.reparent_journal")
            .await
            .expect("journal");
        assert_eq!(
            rows,
            vec![("InitShardPrimary".to_string(), "zone1-0000000100".to_string())],
            "{}",
            t.alias()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cells_share_one_etcd_under_their_own_roots_with_several_keyspaces_and_shards() {
    let cluster = ClusterBuilder::new()
        .cell("zone1")
        .cell_with_root("zone2", "/vitess/second")
        .keyspace(
            KeyspaceSpec::new("customer", "cross_cell").shard(
                ShardSpec::new("0")
                    .tablet(TabletSpec::replica("zone1", 200))
                    .tablet(TabletSpec::replica("zone1", 201))
                    .tablet(TabletSpec::replica("zone2", 210)),
            ),
        )
        .keyspace(
            KeyspaceSpec::new("orders", "none")
                .shard(
                    ShardSpec::new("-80")
                        .replicas("zone1", [300])
                        .rdonly("zone2", 310),
                )
                .shard(ShardSpec::new("80-").replicas("zone2", [320, 321]).primary(321)),
        )
        .started()
        .await;
    eprintln!("7-tablet, 2-cell cluster up in {:?}", cluster.startup_time());
    let topo = cluster.topo();
    assert_eq!(
        topo.get_cell_info("zone2").await.expect("zone2").value.root,
        "/vitess/second"
    );
    // Both cells' records live in the one etcd, under their roots.
    let mut etcd = cluster.etcd().client().await.expect("etcd client");
    let zone2 = etcd
        .get(
            "/vitess/second/tablets/",
            Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("list zone2 tablets");
    assert_eq!(zone2.kvs().len(), 4, "zone2 holds tablets 210, 310, 320, 321");
    assert_eq!(
        topo.keyspaces().await.expect("keyspaces"),
        vec!["customer", "orders"]
    );
    assert_eq!(
        topo.shard_names("orders").await.expect("shards"),
        vec!["-80", "80-"]
    );
    assert_eq!(
        topo.get_keyspace("orders")
            .await
            .expect("orders")
            .value
            .durability_policy,
        "none"
    );

    // Primaries as chosen, per shard.
    let primary = |ks: &'static str, shard: &'static str| {
        let c = &cluster;
        async move { c.primary_alias(ks, shard).await.expect("shard record") }
    };
    assert_eq!(
        primary("customer", "0").await,
        Some(TabletAlias::new("zone1", 200))
    );
    assert_eq!(
        primary("orders", "-80").await,
        Some(TabletAlias::new("zone1", 300))
    );
    assert_eq!(
        primary("orders", "80-").await,
        Some(TabletAlias::new("zone2", 321))
    );

    // cross_cell: only the replica in the other cell acks.
    let acks = |uid| {
        let c = &cluster;
        async move {
            c.full_status(&c.tablet_by_uid(uid).expect("tablet").alias().clone())
                .await
                .expect("FullStatus")
                .semi_sync_replica_enabled
        }
    };
    assert!(acks(210).await, "zone2 replica acks for a zone1 primary");
    assert!(
        !acks(201).await,
        "same-cell replica does not ack under cross_cell"
    );
    let p = cluster
        .full_status(&TabletAlias::new("zone1", 200))
        .await
        .expect("primary");
    assert!(p.semi_sync_primary_enabled);
    assert_eq!(p.semi_sync_primary_clients, 1);
    // none: no semi-sync at all; the RDONLY tablet replicates and stays RDONLY.
    let rdonly = cluster
        .full_status(&TabletAlias::new("zone2", 310))
        .await
        .expect("rdonly");
    assert!(!rdonly.semi_sync_replica_enabled && !rdonly.semi_sync_primary_enabled);
    let repl = rdonly.replication_status.expect("rdonly replicates");
    assert_eq!(repl.io_state, RUNNING);
    let record = topo
        .get_tablet(&TabletAlias::new("zone2", 310))
        .await
        .expect("record")
        .value;
    assert_eq!(record.r#type(), TabletType::Rdonly);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bootstrap_every_tablet_waits_as_a_replica_with_no_primary() {
    let cluster = integration::testkit::semi_sync_commerce_without_primary().await;
    assert_eq!(cluster.primary_alias("commerce", "0").await.expect("shard"), None);
    for t in cluster.tablets() {
        let record = cluster.topo().get_tablet(t.alias()).await.expect("record").value;
        assert_eq!(record.r#type(), TabletType::Replica);
        let status = cluster.full_status(t.alias()).await.expect("FullStatus");
        assert!(status.read_only);
        let replicating = status
            .replication_status
            .as_ref()
            .is_some_and(|r| r.io_state == RUNNING || r.source_port != 0);
        assert!(!replicating, "{}: {:?}", t.alias(), status.replication_status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cluster_kills_every_process_and_removes_every_directory() {
    let cluster = integration::testkit::semi_sync_commerce_in_processes(PathBuf::from(env!(
        "CARGO_BIN_EXE_tablet-agent"
    )))
    .await;
    let pids = named_pids(&cluster);
    assert_eq!(pids.len(), 7, "etcd + 3 MariaDB + 3 agents: {pids:?}");
    let dirs = cluster.dirs();
    for dir in &dirs {
        assert!(dir.exists());
    }
    // A paused MariaDB must not stop the teardown.
    cluster
        .pause_mysql(&TabletAlias::new("zone1", 101))
        .expect("SIGSTOP");
    let started = std::time::Instant::now();
    drop(cluster);
    eprintln!("teardown took {:?}", started.elapsed());
    assert_nothing_left(&pids, &dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_leaves_no_process_or_directory() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tablet-agent"));
    let failing_test = tokio::spawn(async move {
        let cluster = ClusterBuilder::three_tablets("commerce", "none")
            .agent_mode(AgentMode::Process(binary))
            .started()
            .await;
        let _ = tx.send((named_pids(&cluster), cluster.dirs()));
        panic!("the test body fails while the cluster runs");
    });
    let result = failing_test.await;
    assert!(result.as_ref().is_err_and(|e| e.is_panic()), "the task panicked");
    let (pids, dirs) = rx.await.expect("the cluster had started before the panic");
    assert_eq!(pids.len(), 7);
    assert_nothing_left(&pids, &dirs);
}

/// Processes started by some cluster whose directory no longer exists:
/// a MariaDB whose `--defaults-file` or an etcd whose `--data-dir` is gone
/// was leaked by a teardown (directories are removed only after the kill).
fn orphans() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        for arg in &args {
            let path = arg
                .strip_prefix("--defaults-file=")
                .or_else(|| arg.strip_prefix("--data-dir="));
            if let Some(path) = path
                && (path.contains("vtorc-cluster-") || path.contains("vtorc-etcd-"))
                && !std::path::Path::new(path).exists()
            {
                found.push(args.join(" "));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_reports_the_reason_and_leaves_nothing() {
    let missing = PathBuf::from("/nonexistent/tablet-agent");
    let err = ClusterBuilder::three_tablets("commerce", "none")
        .agent_mode(AgentMode::Process(missing))
        .start()
        .await
        .expect_err("agents cannot start without their binary");
    let text = format!("{err:#}");
    assert!(text.contains("tablet-agent binary"), "{text}");
    let leaked = orphans();
    assert!(leaked.is_empty(), "processes outlived their cluster: {leaked:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_scan_sees_a_server_whose_directory_was_removed() {
    // Guards the check above: remove a live cluster's directory behind its
    // back and the scan must report its MariaDB servers.
    let cluster = ClusterBuilder::new()
        .cell("zone1")
        .keyspace(KeyspaceSpec::new("ks", "none").shard(ShardSpec::new("0").replicas("zone1", [1])))
        .bootstrap(false)
        .started()
        .await;
    let my_cnf = cluster.tablets()[0].mysql().dir().join("my.cnf");
    std::fs::remove_file(&my_cnf).expect("remove my.cnf");
    let leaked = orphans();
    assert!(
        leaked.iter().any(|l| l.contains(&my_cnf.display().to_string())),
        "{leaked:#?}"
    );
}
