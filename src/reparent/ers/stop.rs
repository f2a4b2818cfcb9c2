//! ERS step 4–5: stop replication everywhere, collect the statuses, and
//! prove that no tablet can still accept writes (revocation).

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::super::context::{Deadline, Run, is_not_replica};
use super::super::error::{ReparentError, ReparentResult};
use crate::analysis::durability::Durability;
use crate::proto::replicationdata::{PrimaryStatus, Status, StopReplicationMode, StopReplicationStatus};
use crate::proto::topodata::{Tablet, TabletAlias};
use crate::tablet::TabletManager as _;

/// `replicationdata` thread state `Running`.
pub(crate) const THREAD_RUNNING: i32 = 3;
/// `replicationdata` thread state `Connecting`.
pub(crate) const THREAD_CONNECTING: i32 = 2;

/// What stopping replication found.
#[derive(Clone, Debug, Default)]
pub(crate) struct StopSnapshot {
    /// Replicas whose IO thread was stopped: their status before and after.
    pub status: BTreeMap<String, StopReplicationStatus>,
    /// Tablets that answered "not a replica" and were demoted: their
    /// primary status at demotion.
    pub primary_status: BTreeMap<String, PrimaryStatus>,
    /// Every tablet reached (either map), by alias text.
    pub reachable: Vec<String>,
    /// Whether a reached replica was running a backup.
    pub backup_running: BTreeMap<String, bool>,
}

impl StopSnapshot {
    /// Replicas whose IO thread was healthy before ERS stopped it: restart
    /// them if ERS fails before repointing.
    pub(crate) fn replicas_with_stopped_io<'t>(
        &self,
        tablets: &'t BTreeMap<String, Tablet>,
    ) -> Vec<&'t Tablet> {
        self.status
            .iter()
            .filter(|(_, s)| s.before.as_ref().is_some_and(io_healthy))
            .filter_map(|(alias, _)| tablets.get(alias))
            .collect()
    }
}

/// Vitess `IOHealthy`: running, or connecting without an error.
pub(crate) fn io_healthy(s: &Status) -> bool {
    s.io_state == THREAD_RUNNING || (s.io_state == THREAD_CONNECTING && s.last_io_error.is_empty())
}

/// Vitess `ReplicaWasRunning`: either thread was running before the stop.
pub(crate) fn replica_was_running(s: &StopReplicationStatus) -> bool {
    s.before
        .as_ref()
        .is_some_and(|b| b.io_state == THREAD_RUNNING || b.sql_state == THREAD_RUNNING)
}

/// One tablet's answer.
enum Answer {
    /// Replication stopped.
    Stopped(Box<StopReplicationStatus>),
    /// It was not a replica and got demoted.
    Demoted(PrimaryStatus),
    /// It could not be stopped or demoted.
    Failed(String),
}

/// Files one answer; true when the tablet was reached.
fn record(
    snapshot: &mut StopSnapshot,
    errors: &mut Vec<(String, String)>,
    alias: String,
    answer: Answer,
) -> bool {
    match answer {
        Answer::Stopped(status) => {
            let backup = status
                .after
                .as_ref()
                .or(status.before.as_ref())
                .is_some_and(|s| s.backup_running);
            snapshot.backup_running.insert(alias.clone(), backup);
            snapshot.status.insert(alias.clone(), *status);
            snapshot.reachable.push(alias);
            true
        }
        Answer::Demoted(ps) => {
            snapshot.primary_status.insert(alias.clone(), ps);
            snapshot.reachable.push(alias);
            true
        }
        Answer::Failed(e) => {
            errors.push((alias, e));
            false
        }
    }
}

/// How many answers the stop phase waits for.
#[derive(Clone, Debug)]
pub(crate) struct StopPlan<'a> {
    /// The shard record's primary (its failure alone is tolerated).
    pub shard_primary: Option<&'a TabletAlias>,
    /// Tablets not to touch.
    pub ignore: &'a std::collections::BTreeSet<TabletAlias>,
    /// A tablet whose answer must be awaited (the requested new primary).
    pub must_wait_for: Option<&'a TabletAlias>,
    /// Wait for every tablet instead of all but one.
    pub wait_for_all: bool,
    /// The durability policy, for the revocation check.
    pub durability: Durability,
}

/// Stops replication (IO thread) on every non-ignored tablet, demoting the
/// ones that say they are not replicas, within `--remote-operation-timeout`.
///
/// Returns the snapshot even on failure, so the caller can restart what was
/// stopped. Fails when (a) no tablet is left to stop, or (b) some tablets
/// failed, it is not just the shard's primary, and the tablets reached do
/// not revoke every possible writer (`haveRevoked`).
pub(crate) async fn stop_replication_and_build_status_maps(
    run: &Run<'_>,
    tablets: &BTreeMap<String, Tablet>,
    plan: &StopPlan<'_>,
) -> (StopSnapshot, ReparentResult<()>) {
    let mut snapshot = StopSnapshot::default();
    let deadline = Deadline::after(run.bounds.remote);
    let must_wait = plan.must_wait_for.map(ToString::to_string);
    let mut pending: FuturesUnordered<_> = tablets
        .iter()
        .filter(|(_, t)| t.alias.as_ref().is_none_or(|a| !plan.ignore.contains(a)))
        .map(|(alias, tablet)| async move {
            run.log.info(format!("getting replication position from {alias}"));
            let stop = run
                .tm(deadline.remaining())
                .stop_replication_and_get_status(tablet, StopReplicationMode::Iothreadonly)
                .await;
            let answer = match stop {
                Ok(status) => Answer::Stopped(Box::new(status)),
                Err(e) if is_not_replica(&e) => {
                    match run.tm(deadline.remaining()).demote_primary(tablet, true).await {
                        Ok(ps) => Answer::Demoted(ps),
                        Err(e) => {
                            let msg = format!(
                                "replica {alias} thinks it's primary but we failed to demote it: {e}"
                            );
                            run.log.warn(msg.clone());
                            Answer::Failed(msg)
                        }
                    }
                }
                Err(e) => {
                    run.log
                        .warn(format!("failed to get replication status from {alias}: {e}"));
                    Answer::Failed(format!(
                        "error when getting replication status for alias {alias}: {e}"
                    ))
                }
            };
            (alias.clone(), answer)
        })
        .collect();
    let started = pending.len();
    if started == 0 {
        return (
            snapshot,
            Err(ReparentError::FailedPrecondition(format!(
                "no tablets available to stop replication on ({} tablets in map, {} ignored)",
                tablets.len(),
                plan.ignore.len()
            ))),
        );
    }
    let required = if plan.wait_for_all { started } else { started - 1 };
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut successes = 0usize;
    let mut must_wait_answered = must_wait.is_none();
    let mut answered: Vec<String> = Vec::new();
    while !pending.is_empty() {
        let next = tokio::select! {
            biased;
            () = run.lock_token.cancelled() => {
                return (snapshot, Err(ReparentError::LockLost("the shard lock was lost while stopping replication".into())));
            }
            () = run.cancel.cancelled() => {
                return (snapshot, Err(ReparentError::Cancelled("stopping replication".into())));
            }
            // The RPC deadlines end every call by then; this only guards a
            // client that ignores its deadline.
            () = tokio::time::sleep_until(deadline.instant() + run.bounds.remote) => None,
            next = pending.next() => next,
        };
        let Some((alias, answer)) = next else { break };
        if must_wait.as_deref() == Some(alias.as_str()) {
            must_wait_answered = true;
        }
        answered.push(alias.clone());
        if record(&mut snapshot, &mut errors, alias, answer) {
            successes += 1;
        }
        if successes >= required && must_wait_answered {
            // Enough: take the answers that are already in, abandon the rest.
            while let Some(Some((alias, answer))) = futures::FutureExt::now_or_never(pending.next()) {
                answered.push(alias.clone());
                record(&mut snapshot, &mut errors, alias, answer);
            }
            break;
        }
    }
    // Calls still running are abandoned (enough tablets answered, or the
    // deadline passed); like Vitess, each counts as an error.
    drop(pending);
    for (alias, _) in tablets.iter() {
        let ignored = tablets
            .get(alias)
            .and_then(|t| t.alias.as_ref())
            .is_some_and(|a| plan.ignore.contains(a));
        if !ignored && !answered.contains(alias) {
            errors.push((
                alias.clone(),
                format!("{alias}: no answer before enough tablets answered or the deadline passed"),
            ));
        }
    }
    if errors.is_empty() {
        return (snapshot, Ok(()));
    }
    if let (Some(primary), [(alias, _)]) = (plan.shard_primary, errors.as_slice())
        && primary.to_string() == *alias
    {
        run.log.info(format!(
            "the shard primary {alias} could not be reached, as expected"
        ));
        return (snapshot, Ok(()));
    }
    let all: Vec<&Tablet> = tablets.values().collect();
    let reached: Vec<&Tablet> = snapshot.reachable.iter().filter_map(|a| tablets.get(a)).collect();
    if plan.durability.have_revoked(&reached, &all) {
        run.log.warn(format!(
            "{} tablet(s) could not be reached, but the {} reached ones revoke every possible writer",
            errors.len(),
            reached.len()
        ));
        return (snapshot, Ok(()));
    }
    let text: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();
    let err = ReparentError::NotEnoughTabletsReached {
        reached: reached.len(),
        total: all.len(),
        errors: text.join("; "),
    };
    run.log.warn(err.to_string());
    (snapshot, Err(err))
}
