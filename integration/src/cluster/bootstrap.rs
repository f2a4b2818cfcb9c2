//! Electing the first primary of a shard through the agents' own RPCs, the
//! way vtctld's (legacy) `InitShardPrimary` does, so the tablet records,
//! the shard record and semi-sync end up as vttablet would leave them:
//!
//! 1. `InitPrimary(semi_sync = policy needs acks)` on the chosen tablet: it
//!    writes one binlog event (`CREATE DATABASE _vt`), goes read-write,
//!    becomes PRIMARY in the topo and then turns primary semi-sync on.
//! 2. Concurrently `PopulateReparentJournal` on the primary and
//!    `InitReplica(parent, position, time_created_ns, semi_sync per policy)`
//!    on every other tablet. With semi-sync on, the journal insert waits
//!    for a replica's ACK; the replicas attach while it waits, so no commit
//!    ever falls back to async (MariaDB pitfall 4 in
//!    `shared/reference/integration-world.md`). `InitReplica` returns once
//!    the journal row has replicated.
//! 3. Wait until the primary's shard sync has written `primary_alias` into
//!    the shard record and, under a semi-sync policy, until the primary
//!    counts its semi-sync replicas as clients, so the first write after
//!    start-up does not wait for a replica to connect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use vtorc::analysis::durability::Durability;
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::topodata::TabletType;
use vtorc::tablet::{TabletManager, TabletManagerExt, TmRequest};

use super::{Cluster, poll_until};

/// Bound on each bootstrap RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound on waiting for the shard record and semi-sync clients.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The journal action name the bootstrap writes.
pub const BOOTSTRAP_ACTION: &str = "InitShardPrimary";

/// Nanoseconds since the Unix epoch, for `time_created_ns`.
pub fn now_ns() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// Makes `primary_uid` the primary of `keyspace/shard` (see the module docs).
pub(crate) async fn init_shard_primary(
    cluster: &Cluster,
    keyspace: &str,
    shard: &str,
    primary_uid: u32,
    policy: Durability,
) -> anyhow::Result<()> {
    let tablets = cluster.shard_tablets(keyspace, shard);
    let Some(primary) = tablets.iter().find(|t| t.uid() == primary_uid) else {
        bail!("{keyspace}/{shard}: no tablet with uid {primary_uid}");
    };
    let primary_alias = primary.alias().clone();
    let mut primary_tablet = primary.rpc_tablet();
    primary_tablet.r#type = TabletType::Primary as i32;
    let tmc = cluster.tmc().with_timeout(RPC_TIMEOUT);
    let primary_semi_sync = policy.semi_sync_ackers(&primary_tablet) > 0;
    let position = tmc
        .init_primary(&primary.rpc_tablet(), primary_semi_sync)
        .await
        .with_context(|| format!("InitPrimary on {primary_alias}"))?;

    let time_created_ns = now_ns();
    let primary_target = primary.rpc_tablet();
    let journal = tmc.populate_reparent_journal(
        &primary_target,
        tm::PopulateReparentJournalRequest {
            time_created_ns,
            action_name: BOOTSTRAP_ACTION.to_string(),
            primary_alias: Some(primary_alias.clone()),
            replication_position: position.clone(),
        },
    );
    let mut ackers = 0usize;
    let mut inits = Vec::new();
    for replica in tablets.iter().filter(|t| t.uid() != primary_uid) {
        let mut record = replica.rpc_tablet();
        record.r#type = replica.declared_type() as i32;
        let semi_sync = policy.is_replica_semi_sync(&primary_tablet, &record);
        ackers += usize::from(semi_sync);
        let request = TmRequest::InitReplica(tm::InitReplicaRequest {
            parent: Some(primary_alias.clone()),
            replication_position: position.clone(),
            time_created_ns,
            semi_sync,
        });
        let alias = replica.alias().clone();
        let target = replica.rpc_tablet();
        inits.push(async move {
            cluster
                .tmc()
                .call(&target, request, Some(RPC_TIMEOUT))
                .await
                .with_context(|| format!("InitReplica on {alias}"))
        });
    }
    let (journal, inits) = tokio::join!(journal, futures::future::join_all(inits));
    journal.with_context(|| format!("PopulateReparentJournal on {primary_alias}"))?;
    for result in inits {
        result?;
    }

    cluster
        .wait_for_primary(keyspace, shard, &primary_alias, SETTLE_TIMEOUT)
        .await?;
    if primary_semi_sync && ackers > 0 {
        wait_semi_sync_clients(primary, ackers).await?;
    }
    Ok(())
}

/// Waits until the primary reports `Rpl_semi_sync_master_status=ON` with
/// `ackers` clients.
async fn wait_semi_sync_clients(primary: &super::ClusterTablet, ackers: usize) -> anyhow::Result<()> {
    let what = format!("{} to count {ackers} semi-sync replicas", primary.alias());
    poll_until(SETTLE_TIMEOUT, &what, || async {
        let mut conn = primary.mysql_conn().await?;
        let rows: Vec<(String, String)> = conn
            .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_clients', 'Rpl_semi_sync_master_status')")
            .await?;
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let clients: usize = get("Rpl_semi_sync_master_clients").parse().unwrap_or(0);
        let on = get("Rpl_semi_sync_master_status").eq_ignore_ascii_case("ON");
        Ok((on && clients >= ackers).then_some(()))
    })
    .await
}
