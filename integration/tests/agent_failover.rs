//! A full emergency failover driven only through the agents' RPCs, the way
//! ERS drives vttablet, with a writer running: under semi-sync no
//! acknowledged write is lost.

mod agent_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::{World, eventually, type_of, with_timeout};
use integration::agent::position;
use mysql_async::prelude::Queryable;
use vtorc::proto::replicationdata::StopReplicationMode;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::TabletType;

/// Sequence of domain 0 in a position (0 if absent).
fn seq(position: &str) -> u64 {
    position::decode(position)
        .expect("position")
        .get(0)
        .map_or(0, |g| g.sequence)
}

#[tokio::test]
async fn emergency_failover_through_agent_rpcs_loses_no_acknowledged_write() {
    let mut world = World::start(3, "semi_sync").await;
    world.bootstrap(0, true).await;
    world.write_rows(0, 1).await;

    // A writer that records every acknowledged insert until the primary dies.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut conn = world.sql(0).await;
    let writer = tokio::spawn({
        let acked = acked.clone();
        async move {
            for n in 0..100_000u64 {
                match conn
                    .query_drop(format!("INSERT INTO demo.t (v) VALUES ('w{n}')"))
                    .await
                {
                    Ok(()) => acked
                        .lock()
                        .expect("lock")
                        .push(conn.last_insert_id().unwrap_or(0)),
                    Err(_) => return,
                }
            }
        }
    });
    eventually(Duration::from_secs(10), "some acknowledged writes", || async {
        acked.lock().expect("lock").len() >= 50
    })
    .await;

    // The primary's MariaDB dies mid-stream.
    world.dbs[0].kill().expect("kill -9 the primary's MariaDB");
    writer.await.expect("writer ends when the primary dies");
    let acked: Vec<u64> = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty());

    // 1. Stop the IO threads and read what each replica received.
    let mut relay = Vec::new();
    for i in [1, 2] {
        let status = world
            .stop_replication_and_get_status(
                i,
                StopReplicationMode::Iothreadonly,
                "StopReplicationAndGetStatus",
            )
            .await;
        let after = status.after.expect("after");
        assert!(!after.relay_log_position.is_empty());
        relay.push((i, after.relay_log_position));
    }
    // 2. Wait until each has applied its relay log.
    for (i, position) in &relay {
        world.wait_applied(*i, position, "relay log applied").await;
    }
    // 3. The most advanced wins.
    let (winner, winner_position) = relay
        .iter()
        .max_by_key(|(_, p)| seq(p))
        .cloned()
        .expect("a winner");
    let other = if winner == 1 { 2 } else { 1 };
    let mut new_primary = world.client(winner).await;
    let journal_length = new_primary
        .read_reparent_journal_info(tm::ReadReparentJournalInfoRequest {})
        .await
        .expect("ReadReparentJournalInfo")
        .into_inner()
        .length;
    assert_eq!(journal_length, 0);
    let position = new_primary
        .promote_replica(tm::PromoteReplicaRequest { semi_sync: true })
        .await
        .expect("PromoteReplica")
        .into_inner()
        .position;
    assert!(seq(&position) >= seq(&winner_position));

    // 4. Journal on the new primary and repoint the other replica, concurrently.
    let ns = 1_700_000_000_000_000_000i64;
    let mut replica = world.client(other).await;
    let parent = world.alias(winner);
    let repoint = tokio::spawn(async move {
        replica
            .set_replication_source(with_timeout(
                tm::SetReplicationSourceRequest {
                    parent: Some(parent),
                    time_created_ns: ns,
                    force_start_replication: true,
                    semi_sync: true,
                    ..Default::default()
                },
                Duration::from_secs(15),
            ))
            .await
    });
    new_primary
        .populate_reparent_journal(with_timeout(
            tm::PopulateReparentJournalRequest {
                time_created_ns: ns,
                action_name: "EmergencyReparentShard".to_string(),
                primary_alias: Some(world.alias(winner)),
                replication_position: position.clone(),
            },
            Duration::from_secs(15),
        ))
        .await
        .expect("PopulateReparentJournal");
    repoint
        .await
        .expect("join")
        .expect("SetReplicationSource to the new primary");

    // No acknowledged write was lost, on the new primary or the other replica.
    for i in [winner, other] {
        let mut conn = world.sql(i).await;
        let ids: Vec<u64> = conn.query("SELECT id FROM demo.t").await.expect("ids");
        let ids: std::collections::HashSet<u64> = ids.into_iter().collect();
        let missing: Vec<&u64> = acked.iter().filter(|id| !ids.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "tablet {i} lost acknowledged writes {missing:?}"
        );
    }
    assert_eq!(type_of(&world.tablet_record(winner).await), TabletType::Primary);
    eventually(
        Duration::from_secs(5),
        "shard record names the new primary",
        || async { world.shard_record().await.primary_alias == Some(world.alias(winner)) },
    )
    .await;
    // The new primary takes writes that reach the other replica.
    world.write_rows(winner, 1).await;
    world
        .wait_applied(
            other,
            &world.position(winner).await,
            "replicates from the new primary",
        )
        .await;
}
