//! Cells and promotion rules on a two-cell world: zone1 holds the primary
//! 100, replica 101 and rdonly 102; zone2 holds replicas 200 and 201.
//! ERS with `prevent_cross_cell_promotion` keeps the primary in zone1 even
//! when zone2 is ahead (catching 101 up through an intermediate source), a
//! must_not tablet is never promoted even when it is the most advanced,
//! and PRS elects in the primary's cell unless told otherwise.

mod reparent_support;

use std::time::Duration;

use integration::cluster::{Cluster, ClusterBuilder, KeyspaceSpec, ShardSpec, TabletSpec};
use integration::workload::{Workload, WorkloadConfig};
use reparent_support::{ErsRun, alias, ers_commerce, prs, reparenter, topo_type, wait_replicating_from};
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::reparent::{EmergencyReparentOptions, PlannedReparentOptions};

async fn two_cells(durability: &str) -> Cluster {
    ClusterBuilder::new()
        .cell("zone1")
        .cell("zone2")
        .keyspace(
            KeyspaceSpec::new("commerce", durability).shard(
                ShardSpec::new("0")
                    .replicas("zone1", [100, 101])
                    .tablet(TabletSpec::rdonly("zone1", 102))
                    .replicas("zone2", [200, 201]),
            ),
        )
        .start()
        .await
        .expect("two-cell cluster starts")
}

/// Runs the workload, lets `lagging` fall behind (IO thread stopped) while
/// writes continue, kills the primary's MariaDB, runs ERS with `opts`, and
/// checks that no acknowledged write is lost. Returns the new primary.
async fn ers_with_lagging(
    cluster: &mut Cluster,
    lagging: &[TabletAlias],
    opts: EmergencyReparentOptions,
) -> TabletAlias {
    let old = alias("zone1", 100);
    let config = WorkloadConfig::new("commerce", "0");
    let workload = Workload::start_acked(cluster, &config, &old, 100)
        .await
        .expect("the workload starts and writes flow");
    for t in lagging {
        cluster
            .stop_replication_io_thread(t)
            .await
            .expect("stop IO thread");
    }
    let before = workload.acked_count_on(&old);
    workload
        .wait_for_acks_on(&old, before + 150, Duration::from_secs(60))
        .await
        .expect("writes continue while some replicas lag");
    cluster.kill_mysql(&old).expect("kill -9 the primary's MariaDB");
    let ErsRun {
        reparenter: _reparenter,
        outcome,
        log,
    } = ers_commerce(cluster, &opts).await;
    let winner = outcome.new_primary.and_then(|t| t.alias).expect("promoted");
    eprintln!(
        "ERS promoted {winner} in {:?}; steps:\n{}",
        outcome.duration,
        log.messages().join("\n")
    );
    cluster
        .wait_for_primary("commerce", "0", &winner, Duration::from_secs(15))
        .await
        .expect("shard record");
    let (_, check) = workload
        .finish_on(cluster, &winner, 100, Duration::from_secs(60))
        .await;
    assert!(check.is_lossless(), "lost acknowledged writes: {check:?}");
    for t in cluster.shard_tablets("commerce", "0") {
        let a = t.alias().clone();
        if a != winner && a != old {
            wait_replicating_from(cluster, &a, &winner).await;
        }
    }
    winner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prevent_cross_cell_keeps_the_primary_in_its_cell_even_when_another_cell_is_ahead() {
    let mut cluster = two_cells("semi_sync").await;
    let lagging = alias("zone1", 101);
    let winner = ers_with_lagging(
        &mut cluster,
        std::slice::from_ref(&lagging),
        EmergencyReparentOptions {
            prevent_cross_cell_promotion: true,
            ..Default::default()
        },
    )
    .await;
    // 101 was the only promotable zone1 tablet; it caught up through zone2.
    assert_eq!(winner, lagging);
    assert_eq!(topo_type(&cluster, &winner).await, TabletType::Primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_must_not_tablet_is_never_promoted_even_when_it_is_the_most_advanced() {
    // rdonly tablets ack here, so writes go on while every REPLICA lags.
    let mut cluster = two_cells("semi_sync_with_rdonly_ack").await;
    let lagging = [alias("zone1", 101), alias("zone2", 200), alias("zone2", 201)];
    let winner = ers_with_lagging(&mut cluster, &lagging, EmergencyReparentOptions::default()).await;
    assert_ne!(
        winner,
        alias("zone1", 102),
        "the rdonly tablet must not be promoted"
    );
    assert_eq!(topo_type(&cluster, &winner).await, TabletType::Primary);
    assert_eq!(
        topo_type(&cluster, &alias("zone1", 102)).await,
        TabletType::Rdonly
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prs_elects_in_the_primary_cell_unless_cross_cell_is_asked_for() {
    let cluster = two_cells("semi_sync").await;
    let rp = reparenter(&cluster, Duration::from_secs(15));
    let away = |avoid: TabletAlias| PlannedReparentOptions {
        avoid_primary: Some(avoid),
        ..Default::default()
    };
    // Each PRS in turn, with the primary it must elect.
    let steps = [
        // Away from 100: the only other zone1 REPLICA is 101 (102 is
        // rdonly, 200/201 are in zone2).
        (
            "PRS away from 100",
            away(alias("zone1", 100)),
            alias("zone1", 101),
        ),
        // An explicit cross-cell primary is allowed.
        (
            "PRS to zone2",
            PlannedReparentOptions::promote(alias("zone2", 200)),
            alias("zone2", 200),
        ),
        // Now the primary's cell is zone2: moving away from 200 elects 201.
        (
            "PRS away from 200",
            away(alias("zone2", 200)),
            alias("zone2", 201),
        ),
    ];
    for (what, opts, elected) in steps {
        let out = prs(&rp, &opts).await.expect(what);
        assert_eq!(
            out.new_primary.and_then(|t| t.alias),
            Some(elected.clone()),
            "{what}"
        );
        cluster
            .wait_for_primary("commerce", "0", &elected, Duration::from_secs(15))
            .await
            .expect("shard record");
    }
    for a in [
        alias("zone1", 100),
        alias("zone1", 101),
        alias("zone1", 102),
        alias("zone2", 200),
    ] {
        wait_replicating_from(&cluster, &a, &alias("zone2", 201)).await;
    }
}
