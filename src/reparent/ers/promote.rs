//! ERS steps 16–17 and the abort path: repointing replicas (to the
//! intermediate source or to the new primary), catching the better
//! candidate up, promotion with the reparent journal, and restarting the
//! replication ERS stopped when it gives up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::Stragglers;
use super::super::context::{Deadline, Run};
use super::super::error::{ReparentError, ReparentResult};
use super::stop::replica_was_running;
use crate::analysis::durability::Durability;
use crate::proto::replicationdata::StopReplicationStatus;
use crate::proto::tabletmanagerdata as tm;
use crate::proto::topodata::Tablet;
use crate::tablet::{TabletManager, TabletManagerExt};

/// How the new primary is made primary (final step only).
#[derive(Clone, Debug)]
pub(crate) struct Promotion {
    /// The lock action, written as the journal's `action_name`.
    pub action: String,
    /// The shard never had a primary: `InitPrimary` instead of `PromoteReplica`.
    pub init: bool,
}

/// Everything [`reparent_replicas`] needs.
pub(crate) struct Repoint<'a> {
    /// The tablet the others will replicate from.
    pub source: &'a Tablet,
    /// Tablets to repoint (the source itself is skipped).
    pub tablets: &'a BTreeMap<String, Tablet>,
    /// Stop statuses, to restart replication only where it was running.
    pub status: &'a BTreeMap<String, StopReplicationStatus>,
    /// Semi-sync decisions.
    pub durability: Durability,
    /// `Some` for the final step: promote and write the journal, and return
    /// as soon as one replica follows. `None` for the intermediate step:
    /// wait for every replica.
    pub promotion: Option<Promotion>,
    /// The whole shard's size (with ≤ 2 tablets, a failing last replica is
    /// assumed to be the dead primary).
    pub shard_size: usize,
}

/// The outcome of one repoint.
type ReplicaResult = (String, Result<(), String>);

/// Repoints every tablet in `tablets` except the source with
/// `SetReplicationSource` (concurrently, within the wait bound). Final step:
/// in parallel, promotes the source (`PromoteReplica` / `InitPrimary`) and
/// writes the reparent journal, and returns once the journal is written and
/// one replica follows; the other calls finish in the background, bounded by
/// the wait. Intermediate step: returns the aliases that now replicate.
pub(crate) async fn reparent_replicas(
    run: &Run<'_>,
    tmc: &Arc<dyn TabletManager>,
    stragglers: &Stragglers,
    plan: Repoint<'_>,
) -> ReparentResult<Vec<String>> {
    let source_alias = plan
        .source
        .alias
        .clone()
        .ok_or_else(|| ReparentError::Internal("the new primary has no alias".into()))?;
    let source_text = source_alias.to_string();
    let final_step = plan.promotion.is_some();
    let abort = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<ReplicaResult>();
    let mut expected = 0usize;
    for (alias, tablet) in plan.tablets {
        if *alias == source_text {
            continue;
        }
        expected += 1;
        let force_start = plan.status.get(alias).is_some_and(replica_was_running);
        let request = tm::SetReplicationSourceRequest {
            parent: Some(source_alias.clone()),
            time_created_ns: 0,
            force_start_replication: force_start,
            wait_position: String::new(),
            semi_sync: plan.durability.is_replica_semi_sync(plan.source, tablet),
            heartbeat_interval: 0.0,
        };
        run.log
            .info(format!("setting new primary {source_text} on replica {alias}"));
        let call = repoint_one(
            tmc.clone(),
            tablet.clone(),
            alias.clone(),
            request,
            run.bounds.wait_replicas,
            abort.clone(),
            tx.clone(),
        );
        // Final step: the calls outlive this function when one replica was
        // enough; the reparenter owns them until they end (bounded by the wait).
        stragglers.spawn(call);
    }
    drop(tx);

    let primary = async {
        let Some(promotion) = plan.promotion.as_ref() else {
            return Ok(());
        };
        let deadline = Deadline::after(run.bounds.remote);
        let semi_sync = plan.durability.semi_sync_ackers(plan.source) > 0;
        let position = if promotion.init {
            run.log.info(format!(
                "setting up {source_text} as new primary for an uninitialized cluster"
            ));
            run.rpc(
                format!("primary-elect tablet {source_text} failed to be upgraded to primary"),
                run.tm(deadline.remaining()).init_primary(plan.source, semi_sync),
            )
            .await?
        } else {
            run.log
                .info(format!("starting promotion for the new primary {source_text}"));
            run.rpc(
                format!("primary-elect tablet {source_text} failed to be upgraded to primary"),
                run.tm(deadline.remaining())
                    .promote_replica(plan.source, semi_sync),
            )
            .await?
        };
        run.log.info(format!(
            "populating reparent journal on new primary {source_text}"
        ));
        let journal = tm::PopulateReparentJournalRequest {
            time_created_ns: run.now_ns(),
            action_name: promotion.action.clone(),
            primary_alias: Some(source_alias.clone()),
            replication_position: position,
        };
        run.rpc(
            "failed to PopulateReparentJournal on primary",
            run.tm(deadline.remaining())
                .populate_reparent_journal(plan.source, journal),
        )
        .await
    };

    // Collect replica results while the primary is handled.
    let mut succeeded: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut primary_done = !final_step;
    tokio::pin!(primary);
    if final_step {
        loop {
            tokio::select! {
                r = &mut primary, if !primary_done => {
                    if let Err(e) = r {
                        abort.cancel();
                        run.log.warn(format!("failed to promote {source_text} to primary: {e}"));
                        return Err(e);
                    }
                    primary_done = true;
                    if !succeeded.is_empty() || succeeded.len() + failed.len() == expected {
                        break;
                    }
                }
                next = rx.recv() => match next {
                    Some((alias, Ok(()))) => {
                        succeeded.push(alias);
                        if primary_done { break; }
                    }
                    Some((alias, Err(e))) => {
                        run.log.warn(format!("tablet {alias} SetReplicationSource failed: {e}"));
                        failed.push(e);
                        if primary_done && succeeded.len() + failed.len() == expected { break; }
                    }
                    None => {
                        if primary_done { break; }
                        // Every replica answered; only the primary is left.
                        let r = (&mut primary).await;
                        if let Err(e) = r {
                            run.log.warn(format!("failed to promote {source_text} to primary: {e}"));
                            return Err(e);
                        }
                        break;
                    }
                }
            }
        }
    } else {
        loop {
            tokio::select! {
                biased;
                () = run.lock_token.cancelled() => {
                    abort.cancel();
                    return Err(ReparentError::LockLost("the shard lock was lost while repointing replicas".into()));
                }
                () = run.cancel.cancelled() => {
                    abort.cancel();
                    return Err(ReparentError::Cancelled("repointing replicas".into()));
                }
                next = rx.recv() => match next {
                    Some((alias, Ok(()))) => succeeded.push(alias),
                    Some((alias, Err(e))) => {
                        run.log.warn(format!("tablet {alias} SetReplicationSource failed: {e}"));
                        failed.push(e);
                    }
                    None => break,
                }
            }
        }
    }

    if expected > 0 && succeeded.is_empty() && failed.len() >= expected {
        if plan.shard_size <= 2 {
            run.log.warn(format!(
                "failed to set the replication source during ERS, but with only one other tablet it is \
                 assumed to be the failed one: {}",
                failed.join("; ")
            ));
            return Ok(succeeded);
        }
        return Err(ReparentError::Tablets {
            context: format!("{expected} replica(s) failed"),
            errors: failed.join("; "),
            retryable: true,
        });
    }
    Ok(succeeded)
}

/// One `SetReplicationSource`, reporting to `tx`; stops when `abort` fires.
async fn repoint_one(
    tmc: Arc<dyn TabletManager>,
    tablet: Tablet,
    alias: String,
    request: tm::SetReplicationSourceRequest,
    timeout: Duration,
    abort: CancellationToken,
    tx: mpsc::UnboundedSender<ReplicaResult>,
) {
    let client = tmc.with_timeout(timeout);
    let result = tokio::select! {
        () = abort.cancelled() => Err("cancelled: the promotion failed".to_string()),
        r = client.set_replication_source(&tablet, request) => r.map_err(|e| e.to_string()),
    };
    // The receiver is gone when the reparent already returned.
    let _ = tx.send((alias, result));
}

/// Step 16: waits until `better` has everything the intermediate `source`
/// has (`PrimaryPosition` + `WaitForPosition` within the wait bound).
pub(crate) async fn wait_for_catch_up(run: &Run<'_>, better: &Tablet, source: &Tablet) -> ReparentResult<()> {
    let better_alias = better.alias.as_ref().map(ToString::to_string).unwrap_or_default();
    let source_alias = source.alias.as_ref().map(ToString::to_string).unwrap_or_default();
    run.log.info(format!(
        "waiting for {better_alias} to catch up to {source_alias}"
    ));
    let position = run
        .rpc(
            format!("reading the position of the intermediate source {source_alias}"),
            run.tm(run.bounds.remote).primary_position(source),
        )
        .await?;
    run.rpc(
        format!("{better_alias} did not catch up to {source_alias} (position {position})"),
        run.tm(run.bounds.wait_replicas)
            .wait_for_position(better, &position),
    )
    .await
}

/// Abort path (step 5): restarts replication on the replicas whose IO thread
/// ERS stopped, with semi-sync as it was for the previous primary. Runs even
/// when the caller cancelled, bounded by `--remote-operation-timeout`;
/// skipped when the shard lock is lost (someone else may own the shard now).
pub(crate) async fn restart_stopped_replicas(
    run: &Run<'_>,
    lock_ok: bool,
    replicas: &[&Tablet],
    prev_primary: Option<&Tablet>,
    durability: Durability,
) -> Result<(), String> {
    if replicas.is_empty() {
        return Ok(());
    }
    if !lock_ok {
        run.log
            .warn("skipping replication restart cleanup because the shard lock was lost".to_string());
        return Ok(());
    }
    run.log.info(format!(
        "restarting replication on {} replicas whose IO threads were stopped by ERS",
        replicas.len()
    ));
    let deadline = Deadline::after(run.bounds.remote);
    let mut calls: FuturesUnordered<_> = replicas
        .iter()
        .map(|t| async move {
            let alias = t.alias.as_ref().map(ToString::to_string).unwrap_or_default();
            let semi_sync = prev_primary.is_some_and(|p| durability.is_replica_semi_sync(p, t));
            let client = run.tm(deadline.remaining());
            let r = tokio::select! {
                () = run.lock_token.cancelled() => Err("the shard lock was lost".to_string()),
                r = client.start_replication(t, semi_sync) => r.map_err(|e| e.to_string()),
            };
            (alias, r)
        })
        .collect();
    let mut errors = Vec::new();
    while let Some((alias, r)) = calls.next().await {
        match r {
            Ok(()) => run
                .log
                .info(format!("restarted replication on {alias} after failed ERS")),
            Err(e) => errors.push(format!(
                "failed to restart replication on {alias} after failed ERS: {e}"
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
