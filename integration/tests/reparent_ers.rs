//! EmergencyReparentShard on the real world after `kill -9` of the
//! primary's MariaDB: the most advanced replica is promoted without losing
//! an acknowledged write (semi_sync); and ERS refuses, with a clear error
//! and replication restarted, when it cannot prove safety.

mod reparent_support;

use std::time::Duration;

use integration::cluster::{Cluster, ClusterBuilder, KeyspaceSpec, ShardSpec, TabletSpec};
use integration::testkit::semi_sync_commerce;
use integration::workload::{Workload, WorkloadConfig};
use mysql_async::prelude::Queryable;
use reparent_support::{
    ErsRun, alias, ers, ers_commerce, reparenter, topo_type, wait_replicating_from, writable,
};
use tokio::time::Instant;
use vtorc::mysql::Position;
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::reparent::position::at_least;
use vtorc::reparent::{EmergencyReparentOptions, EventLog, ReparentError};

/// The relay-log (received) position a replica reports; read without
/// changing anything.
async fn received(cluster: &Cluster, replica: &TabletAlias) -> Position {
    let status = cluster
        .full_status(replica)
        .await
        .expect("full status")
        .replication_status
        .expect("a replica");
    Position::parse(&status.relay_log_position).expect("relay position parses")
}

/// The IO thread state of a replica (3 = running, 2 = connecting, 1 = stopped).
async fn io_state(cluster: &Cluster, replica: &TabletAlias) -> i32 {
    cluster
        .full_status(replica)
        .await
        .expect("full status")
        .replication_status
        .map_or(0, |r| r.io_state)
}

/// The refusal tests' `wait_replicas_timeout`. The refusals under test are
/// decided before or after the relay-log wait, which only has to outlast
/// the replicas applying a few heartbeats on a loaded 2-core machine (one
/// CI run timed out at 5 s). Vitess's default is 30 s.
const REFUSAL_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ers_after_kill_9_of_the_primary_promotes_the_most_advanced_replica_and_loses_nothing() {
    let mut cluster = semi_sync_commerce().await;
    let old = alias("zone1", 100);
    let config = WorkloadConfig {
        writers: 4,
        ..WorkloadConfig::new("commerce", "0")
    };
    let workload = Workload::start_acked(&cluster, &config, &old, 300)
        .await
        .expect("the workload starts and writes flow");
    let killed = cluster.kill_mysql(&old).expect("kill -9 the primary's MariaDB");
    let killed_at = Instant::now();
    eprintln!("killed MariaDB of {old} (pid {killed})");
    // What each replica received before anyone touches them.
    let replicas = [alias("zone1", 101), alias("zone1", 102)];
    let mut before = Vec::new();
    for r in &replicas {
        before.push((r.clone(), received(&cluster, r).await));
    }

    let ErsRun {
        reparenter: _reparenter,
        outcome,
        ..
    } = ers_commerce(&cluster, &EmergencyReparentOptions::default()).await;
    let ers_time = outcome.duration;
    let winner = outcome.new_primary.and_then(|t| t.alias).expect("promoted");
    // The winner received at least what every other replica received.
    let winner_pos = &before
        .iter()
        .find(|(a, _)| *a == winner)
        .expect("a replica won")
        .1;
    for (a, pos) in &before {
        assert!(
            at_least(winner_pos, pos).expect("same flavor"),
            "{winner} ({winner_pos}) is behind {a} ({pos})"
        );
    }
    cluster
        .wait_for_primary("commerce", "0", &winner, Duration::from_secs(15))
        .await
        .expect("shard record names the new primary");
    let failover = killed_at.elapsed();
    assert_eq!(topo_type(&cluster, &winner).await, TabletType::Primary);
    assert!(writable(&cluster, &winner).await);
    let other = replicas.iter().find(|a| **a != winner).expect("other replica");
    wait_replicating_from(&cluster, other, &winner).await;

    let (report, check) = workload
        .finish_on(&cluster, &winner, 200, Duration::from_secs(60))
        .await;
    eprintln!(
        "ERS promoted {winner}: ERS {ers_time:?}, kill -> shard record {failover:?}; {} acknowledged \
         ({} on {old}), {} unknown; check {check:?}",
        report.acked.len(),
        report.acked_on(&old),
        report.unknown.len()
    );
    assert!(check.is_lossless(), "lost acknowledged writes: {check:?}");
    assert!(report.acked_on(&old) >= 300);
    let journal = cluster
        .mysql_conn(other)
        .await
        .expect("connect")
        .query_first::<String, _>(
            "SELECT action_name FROM _vt.reparent_journal ORDER BY time_created_ns DESC LIMIT 1",
        )
        .await
        .expect("journal");
    assert_eq!(
        journal.as_deref(),
        Some("EmergencyReparentShard"),
        "journal replicated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ers_refuses_when_too_few_tablets_answer_to_revoke_the_old_primary() {
    let mut cluster = semi_sync_commerce().await;
    let (p, r1, r2) = (alias("zone1", 100), alias("zone1", 101), alias("zone1", 102));
    // The primary and one replica are gone: the primary may still be able
    // to get acks from that replica, so nothing proves it stopped writing.
    cluster.kill_mysql(&p).expect("kill primary");
    cluster.kill_agent(&r2).expect("kill a replica's agent");
    let rp = reparenter(&cluster, REFUSAL_WAIT);
    let err = ers(&rp, &EmergencyReparentOptions::default())
        .await
        .expect_err("cannot prove safety");
    eprintln!("refusal: {err}");
    assert!(
        matches!(
            err,
            ReparentError::NotEnoughTabletsReached {
                reached: 1,
                total: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("could not reach sufficient tablets to guarantee safety")
    );
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    assert_eq!(topo_type(&cluster, &r1).await, TabletType::Replica);
    assert!(!writable(&cluster, &r1).await, "nothing was promoted");
    // The replica ERS stopped has its IO thread back (connecting to the dead primary).
    assert_ne!(io_state(&cluster, &r1).await, 1, "replication restarted");
    assert_eq!(
        cluster.primary_alias("commerce", "0").await.expect("shard"),
        Some(p)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ers_refuses_split_brain_positions() {
    let mut cluster = semi_sync_commerce().await;
    let (p, r1, r2) = (alias("zone1", 100), alias("zone1", 101), alias("zone1", 102));
    cluster.kill_mysql(&p).expect("kill primary");
    // Each replica gets a transaction, stamped with the primary's server id,
    // that the other lacks: two histories that both look like the primary's.
    for (replica, domain) in [(&r1, 1), (&r2, 2)] {
        cluster.set_writable(replica).await.expect("writable");
        let mut conn = cluster.mysql_conn(replica).await.expect("connect");
        for sql in [
            format!("SET SESSION gtid_domain_id = {domain}"),
            "SET SESSION server_id = 100".to_string(),
            format!("CREATE DATABASE diverged_{domain}"),
        ] {
            conn.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{replica}: {sql}: {e}"));
        }
        cluster.set_read_only(replica).await.expect("read-only again");
    }
    let (_, err) = ers_refused(&cluster, "split brain", |e| {
        matches!(e, ReparentError::SplitBrain(_))
    })
    .await;
    assert!(err.to_string().contains(&r1.to_string()) && err.to_string().contains(&r2.to_string()));
    for r in [&r1, &r2] {
        assert_eq!(topo_type(&cluster, r).await, TabletType::Replica);
        assert_ne!(io_state(&cluster, r).await, 1, "replication restarted on {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ers_refuses_errant_only_candidates() {
    // One REPLICA with an errant GTID; the other tablets are RDONLY and
    // cannot be promoted.
    let mut cluster = ClusterBuilder::new()
        .cell("zone1")
        .keyspace(
            KeyspaceSpec::new("commerce", "semi_sync").shard(
                ShardSpec::new("0")
                    .replicas("zone1", [100, 101])
                    .tablet(TabletSpec::rdonly("zone1", 102))
                    .tablet(TabletSpec::rdonly("zone1", 103)),
            ),
        )
        .started()
        .await;
    let (p, r1) = (alias("zone1", 100), alias("zone1", 101));
    let gtid = cluster.write_errant_transaction(&r1).await.expect("errant write");
    cluster.set_read_only(&r1).await.expect("read-only again");
    cluster.kill_mysql(&p).expect("kill primary");
    let (rp, err) = ers_refused(&cluster, "the only promotable tablet has an errant GTID", |e| {
        matches!(e, ReparentError::ErrantGtids(_))
    })
    .await;
    assert!(err.to_string().contains(&gtid), "{err} names {gtid}");
    assert!(!writable(&cluster, &r1).await);
    // Asking for it explicitly is refused too.
    let err = ers(
        &rp,
        &EmergencyReparentOptions {
            new_primary: Some(r1.clone()),
            ..Default::default()
        },
    )
    .await
    .expect_err("requested primary has errant GTIDs");
    assert!(matches!(err, ReparentError::ErrantGtids(_)), "{err:?}");
    assert_eq!(topo_type(&cluster, &r1).await, TabletType::Replica);
    for r in [alias("zone1", 102), alias("zone1", 103)] {
        assert_ne!(io_state(&cluster, &r).await, 1, "replication restarted on {r}");
    }
    // The tablet client is still usable after the refusals (no lock left behind).
    let tmc = reparent_support::tablet_client();
    vtorc::tablet::TabletManager::ping(tmc.as_ref(), &cluster.tablet(&r1).expect("r1").rpc_tablet())
        .await
        .expect("agent answers");
    let lock = cluster
        .topo()
        .try_lock_shard("commerce", "0", "test")
        .await
        .expect("no lock left behind");
    lock.unlock().await.expect("unlock");
}

/// Runs ERS with default options on `commerce/0` (relay-log waits bounded
/// by `REFUSAL_WAIT`) and expects it to refuse (`what`) with an error that
/// `expected` accepts; another outcome fails the test with the step log and
/// every server's replication state. Returns the reparenter and the error.
async fn ers_refused(
    cluster: &Cluster,
    what: &str,
    expected: impl Fn(&ReparentError) -> bool,
) -> (std::sync::Arc<vtorc::reparent::Reparenter>, ReparentError) {
    let rp = reparenter(cluster, REFUSAL_WAIT);
    let log = EventLog::default();
    let err = rp
        .emergency_reparent_shard("commerce", "0", &EmergencyReparentOptions::default(), None, &log)
        .await
        .expect_err(what);
    eprintln!("refusal: {err}");
    if !expected(&err) {
        panic!(
            "{err:?}\n{:#?}\n{}",
            log.messages(),
            cluster.replication_report().await
        );
    }
    (rp, err)
}
