//! PlannedReparentShard: move the primary role to another tablet while
//! both are healthy, without losing a write (reference §7.5).
//!
//! | Phase | Reference step |
//! |---|---|
//! | [`PrsPhase::LockShard`] | 1 |
//! | [`PrsPhase::ReadShard`] | 2 |
//! | [`PrsPhase::ElectPrimary`] | 3–4 |
//! | [`PrsPhase::Promote`] | 5a (init) / 5b (no clear primary) / 5c (already primary) / 5d (graceful) |
//! | [`PrsPhase::RepointReplicas`] | 6 |
//!
//! The graceful path proves replication works (the primary-elect reaches a
//! snapshot of the primary's position), demotes the primary, waits for the
//! primary-elect to reach the demoted position and only then promotes it;
//! if the wait fails the demotion is undone. The shard lock is confirmed
//! before the demotion and before repointing.

mod elect;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::elect::{Election, elect_new_primary, find_current_primary};
use super::context::{Deadline, LockRef, Run, ShardTopology, acquire_lock};
use super::error::{ReparentError, ReparentResult};
use super::events::EventLog;
use super::options::{PlannedReparentOptions, alias_string, prs_lock_action};
use super::position::at_least;
use super::{Operation, ReparentOutcome, Reparenter};
use crate::mysql::Position;
use crate::proto::tabletmanagerdata as tm;
use crate::proto::topodata::{Tablet, TabletAlias};
use crate::tablet::TabletManager as _;
use crate::topo::ShardLock;

/// The named phases of a PRS (the `phase` of its events and spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrsPhase {
    /// Take the shard lock, or check the caller's.
    LockShard,
    /// Read the shard, durability policy and tablets; check `expected_primary`.
    ReadShard,
    /// Choose the primary-elect and find the current primary.
    ElectPrimary,
    /// Make the primary-elect the primary (one of four paths).
    Promote,
    /// Write the reparent journal and repoint every other tablet.
    RepointReplicas,
}

impl PrsPhase {
    /// Snake-case name used in events and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            PrsPhase::LockShard => "lock_shard",
            PrsPhase::ReadShard => "read_shard",
            PrsPhase::ElectPrimary => "elect_primary",
            PrsPhase::Promote => "promote",
            PrsPhase::RepointReplicas => "repoint_replicas",
        }
    }
}

async fn phase<T>(log: &EventLog, phase: PrsPhase, fut: impl Future<Output = T>) -> T {
    log.set_phase(phase.as_str());
    log.info(format!("phase {}", phase.as_str()));
    fut.instrument(tracing::info_span!("prs_phase", phase = phase.as_str()))
        .await
}

/// Which promotion path applies.
#[derive(Clone, Debug)]
enum Path {
    /// No primary ever: `InitPrimary`.
    Initial,
    /// The shard had a primary but no tablet clearly is one: demote all,
    /// promote the most advanced.
    Potential,
    /// The primary-elect already is the primary: make it writable again.
    PartialRecovery,
    /// Demote the current primary, promote the primary-elect.
    Graceful(Box<Tablet>),
}

impl Reparenter {
    /// PlannedReparentShard on `keyspace/shard`.
    ///
    /// `held`: the shard lock when the caller already holds it; otherwise
    /// it is taken here with action `PlannedReparentShard(<new>,
    /// AvoidPrimary = <avoid>)`. Steps are written to `log`.
    pub async fn planned_reparent_shard(
        &self,
        keyspace: &str,
        shard: &str,
        opts: &PlannedReparentOptions,
        held: Option<&ShardLock>,
        log: &EventLog,
    ) -> ReparentResult<ReparentOutcome> {
        let span = tracing::info_span!("planned_reparent_shard", keyspace, shard);
        let body = async {
            let action = prs_lock_action(opts.new_primary.as_ref(), opts.avoid_primary.as_ref());
            let lock = phase(
                log,
                PrsPhase::LockShard,
                acquire_lock(&self.topo, held, keyspace, shard, &action, log),
            )
            .await?;
            let run = self.run(log, &lock, opts.wait_replicas_timeout, opts.cancel.clone());
            let prs = Prs {
                run,
                opts,
                keyspace,
                shard,
            };
            let result = prs.reparent_locked(&lock).await;
            lock.release(log).await;
            result
        };
        self.run_reparent(Operation::Planned, keyspace, shard, log, span, body)
            .await
    }
}

/// One PRS in progress.
struct Prs<'a> {
    run: Run<'a>,
    opts: &'a PlannedReparentOptions,
    keyspace: &'a str,
    shard: &'a str,
}

impl Prs<'_> {
    async fn reparent_locked(&self, lock: &LockRef<'_>) -> ReparentResult<Option<Tablet>> {
        let log = self.run.log;
        let state = phase(log, PrsPhase::ReadShard, self.read_shard()).await?;
        let mut avoid = self.opts.avoid_primary.clone();
        if self.opts.new_primary.is_none() && avoid.is_none() {
            avoid = state.primary_alias().cloned();
        }

        let elected = phase(
            log,
            PrsPhase::ElectPrimary,
            self.preflight(&state, avoid.as_ref()),
        )
        .await?;
        let Some((elect, path)) = elected else {
            return Ok(None);
        };

        let (position, needs_refresh) =
            phase(log, PrsPhase::Promote, self.promote(lock, &state, &elect, path)).await?;

        self.run.check_lock(lock).await?;
        phase(
            log,
            PrsPhase::RepointReplicas,
            self.reparent_tablets(&state, &elect, &position),
        )
        .await?;
        if needs_refresh
            && let Err(e) = self
                .run
                .rpc(
                    "RefreshState on the new primary",
                    self.run.tm(self.run.bounds.remote).refresh_state(&elect),
                )
                .await
        {
            log.warn(format!("RefreshState failed: {e}"));
        }
        Ok(Some(elect))
    }

    async fn read_shard(&self) -> ReparentResult<ShardTopology> {
        self.run
            .read_shard(self.keyspace, self.shard, self.opts.expected_primary.as_ref())
            .await
    }

    /// Step 3–4: `None` when there is nothing to do.
    async fn preflight(
        &self,
        state: &ShardTopology,
        avoid: Option<&TabletAlias>,
    ) -> ReparentResult<Option<(Tablet, Path)>> {
        let log = self.run.log;
        if let (Some(new), Some(avoid)) = (&self.opts.new_primary, avoid)
            && new == avoid
        {
            return Err(ReparentError::FailedPrecondition(format!(
                "primary-elect tablet {new} is the same as the tablet to avoid"
            )));
        }
        if self.opts.new_primary.is_none()
            && let Some(primary) = state.primary_alias()
            && avoid != Some(primary)
        {
            log.info("current primary is different than tablet to avoid, nothing to do");
            return Ok(None);
        }
        if let Some(new) = &self.opts.new_primary
            && !state.tablets.contains_key(&new.to_string())
        {
            return Err(ReparentError::FailedPrecondition(format!(
                "primary-elect tablet {new} is not in the shard"
            )));
        }
        log.info("searching for primary candidate");
        let elect_alias = elect_new_primary(
            &self.run,
            &state.tablets,
            &Election {
                shard_primary: state.primary_alias(),
                new_primary: self.opts.new_primary.as_ref(),
                avoid,
                allow_cross_cell: self.opts.allow_cross_cell_promotion,
                tolerable_lag: self.opts.tolerable_replication_lag.unwrap_or_default(),
                durability: state.durability,
            },
        )
        .await?;
        let elect = state
            .tablets
            .get(&elect_alias.to_string())
            .cloned()
            .ok_or_else(|| {
                ReparentError::FailedPrecondition(format!(
                    "primary-elect tablet {elect_alias} is not in the shard"
                ))
            })?;
        log.info(format!("elected new primary candidate {elect_alias}"));
        let current = find_current_primary(&state.tablets, &self.run).cloned();
        let path = match (current, state.primary_alias()) {
            (None, None) => Path::Initial,
            (None, Some(_)) => Path::Potential,
            (Some(c), _) if c.alias.as_ref() == Some(&elect_alias) => Path::PartialRecovery,
            (Some(c), _) => Path::Graceful(Box::new(c)),
        };
        Ok(Some((elect, path)))
    }

    /// Step 5: returns the position for the journal and whether the new
    /// primary needs a `RefreshState`.
    async fn promote(
        &self,
        lock: &LockRef<'_>,
        state: &ShardTopology,
        elect: &Tablet,
        path: Path,
    ) -> ReparentResult<(String, bool)> {
        let run = &self.run;
        let elect_alias = alias_string(elect.alias.as_ref());
        let semi_sync = state.durability.semi_sync_ackers(elect) > 0;
        match path {
            Path::Initial => {
                run.log
                    .info(format!("no primary was ever elected: initializing {elect_alias}"));
                let pos = run
                    .rpc(
                        format!("primary-elect tablet {elect_alias} failed to be promoted to primary"),
                        run.tm(run.bounds.wait_replicas).init_primary(elect, semi_sync),
                    )
                    .await?;
                Ok((pos, true))
            }
            Path::PartialRecovery => {
                run.log.info(format!(
                    "{elect_alias} already is the primary: making sure it is writable and fixing the replicas"
                ));
                run.rpc(
                    format!("failed to SetReadWrite on current primary {elect_alias}"),
                    run.tm(run.bounds.remote).set_read_write(elect),
                )
                .await?;
                let pos = run
                    .rpc(
                        format!("failed to get replication position of current primary {elect_alias}"),
                        run.tm(run.bounds.remote).primary_position(elect),
                    )
                    .await?;
                Ok((pos, false))
            }
            Path::Potential => self
                .potential_promotion(lock, state, elect)
                .await
                .map(|p| (p, false)),
            Path::Graceful(current) => self
                .graceful_promotion(lock, state, &current, elect)
                .await
                .map(|p| (p, false)),
        }
    }

    /// Step 5b: no clear primary. Demote every tablet (all must answer),
    /// then promote the elect only if it holds everything any tablet holds.
    async fn potential_promotion(
        &self,
        lock: &LockRef<'_>,
        state: &ShardTopology,
        elect: &Tablet,
    ) -> ReparentResult<String> {
        let run = &self.run;
        let elect_alias = alias_string(elect.alias.as_ref());
        run.log.info(format!(
            "no clear winner found for current primary term; checking if it's safe to recover by electing {elect_alias}"
        ));
        let deadline = Deadline::after(run.bounds.remote);
        let demotions = state.tablets.iter().map(|(alias, t)| async move {
            run.log.info(format!("demoting tablet {alias}"));
            let status = run
                .rpc(
                    format!("DemotePrimary({alias}) failed on contested primary"),
                    run.tm(deadline.remaining()).demote_primary(t, false),
                )
                .await?;
            let pos = Position::parse(&status.position).map_err(|e| {
                ReparentError::position(
                    format!("cannot decode replication position of demoted tablet {alias}"),
                    e,
                )
            })?;
            Ok::<_, ReparentError>((alias.clone(), pos))
        });
        let mut positions: BTreeMap<String, Position> = BTreeMap::new();
        let mut errors = Vec::new();
        for r in join_all(demotions).await {
            match r {
                Ok((a, p)) => {
                    positions.insert(a, p);
                }
                Err(e @ (ReparentError::LockLost(_) | ReparentError::Cancelled(_))) => return Err(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(ReparentError::Tablets {
                context: "failed to demote all tablets".into(),
                errors: errors.join("; "),
                retryable: true,
            });
        }
        let elect_pos = positions.get(&elect_alias).cloned().ok_or_else(|| {
            ReparentError::FailedPrecondition(format!(
                "primary-elect tablet {elect_alias} not found in tablet map"
            ))
        })?;
        for (alias, pos) in &positions {
            let ok = at_least(&elect_pos, pos)
                .map_err(|e| ReparentError::position(format!("comparing {elect_alias} and {alias}"), e))?;
            if !ok {
                return Err(ReparentError::FailedPrecondition(format!(
                    "tablet {alias} (position: {pos}) contains transactions not found in primary-elect \
                     {elect_alias} (position: {elect_pos})"
                )));
            }
        }
        run.check_lock(lock).await?;
        self.promote_elect(
            state,
            elect,
            run.bounds.remote,
            format!("failed to promote {elect_alias} to primary"),
        )
        .await
    }

    /// Step 5d: the graceful switch.
    async fn graceful_promotion(
        &self,
        lock: &LockRef<'_>,
        state: &ShardTopology,
        current: &Tablet,
        elect: &Tablet,
    ) -> ReparentResult<String> {
        let run = &self.run;
        let elect_alias = alias_string(elect.alias.as_ref());
        let current_alias = alias_string(current.alias.as_ref());
        run.log
            .info(format!("checking replication on primary-elect {elect_alias}"));
        let snapshot = run
            .rpc(
                format!(
                    "cannot get replication position on current primary {current_alias}; current primary must be \
                     healthy to perform PlannedReparent"
                ),
                run.tm(run.bounds.remote).primary_position(current),
            )
            .await?;
        let request = tm::SetReplicationSourceRequest {
            parent: current.alias.clone(),
            time_created_ns: 0,
            force_start_replication: true,
            wait_position: snapshot.clone(),
            semi_sync: state.durability.is_replica_semi_sync(current, elect),
            heartbeat_interval: 0.0,
        };
        run.rpc(
            format!(
                "replication on primary-elect {elect_alias} did not catch up in time; replication must be healthy \
                 to perform PlannedReparent"
            ),
            run.tm(run.bounds.wait_replicas).set_replication_source(elect, request),
        )
        .await?;
        run.check_lock(lock).await?;

        run.log.info(format!("demoting current primary: {current_alias}"));
        let demoted = run
            .rpc(
                format!("failed to DemotePrimary on current primary {current_alias}"),
                run.tm(run.bounds.remote).demote_primary(current, false),
            )
            .await?;
        run.log.info(format!(
            "waiting for {elect_alias} to reach the demoted position {}",
            demoted.position
        ));
        let wait = run
            .rpc(
                format!(
                    "primary-elect tablet {elect_alias} failed to catch up with replication {}",
                    demoted.position
                ),
                run.tm(run.bounds.wait_replicas)
                    .wait_for_position(elect, &demoted.position),
            )
            .await;
        if let Err(e) = wait {
            // Roll back to the known good primary. Not abandoned on lock loss
            // or cancellation: a half-done rollback is worse than none.
            let semi_sync = state.durability.semi_sync_ackers(current) > 0;
            run.log
                .warn(format!("undoing the demotion of {current_alias}: {e}"));
            let undo = run
                .tm(run.bounds.remote)
                .undo_demote_primary(current, semi_sync)
                .await;
            return Err(match undo {
                Ok(()) => e,
                Err(u) => ReparentError::Tablets {
                    context: e.to_string(),
                    errors: format!(
                        "encountered error while performing UndoDemotePrimary({current_alias}): {u}"
                    ),
                    retryable: false,
                },
            });
        }
        run.log.info(format!("promoting {elect_alias}"));
        self.promote_elect(
            state,
            elect,
            run.bounds.wait_replicas,
            format!("primary-elect tablet {elect_alias} failed to be promoted to primary; please try again"),
        )
        .await
    }

    /// `PromoteReplica` on the primary-elect, bounded by `timeout`, with
    /// semi-sync on when the durability policy gives it ackers; `failure`
    /// prefixes its error. Returns the new primary's position.
    async fn promote_elect(
        &self,
        state: &ShardTopology,
        elect: &Tablet,
        timeout: Duration,
        failure: String,
    ) -> ReparentResult<String> {
        let run = &self.run;
        run.rpc(
            failure,
            run.tm(timeout)
                .promote_replica(elect, state.durability.semi_sync_ackers(elect) > 0),
        )
        .await
    }

    /// Step 6: journal on the new primary, concurrently with repointing
    /// every other tablet (which waits for the journal row); all must succeed.
    async fn reparent_tablets(
        &self,
        state: &ShardTopology,
        elect: &Tablet,
        position: &str,
    ) -> ReparentResult<()> {
        let run = &self.run;
        let elect_alias = alias_string(elect.alias.as_ref());
        let deadline = Deadline::after(run.bounds.wait_replicas);
        let ts = run.now_ns();
        let elect_text = elect_alias.as_str();
        // Fires when the journal write fails: the replicas would wait for a
        // journal row that never comes.
        let journal_failed = CancellationToken::new();
        let journal_failed = &journal_failed;
        let replicas = state
            .tablets
            .iter()
            .filter(|(a, _)| a.as_str() != elect_text)
            .map(|(alias, t)| async move {
                run.log.info(format!("setting new primary on replica {alias}"));
                let request = tm::SetReplicationSourceRequest {
                    parent: elect.alias.clone(),
                    time_created_ns: ts,
                    force_start_replication: false,
                    wait_position: String::new(),
                    semi_sync: state.durability.is_replica_semi_sync(elect, t),
                    heartbeat_interval: 0.0,
                };
                let context = format!("tablet {alias} failed to SetReplicationSource({elect_text})");
                let client = run.tm(deadline.remaining());
                let call = run.rpc(context.clone(), client.set_replication_source(t, request));
                tokio::select! {
                    () = journal_failed.cancelled() => Err(ReparentError::Tablets {
                        context,
                        errors: "abandoned: the reparent journal could not be written".into(),
                        retryable: true,
                    }),
                    r = call => r,
                }
            });
        let journal = async {
            run.log.info(format!(
                "populating reparent journal on new primary {elect_alias}"
            ));
            let result = run
                .rpc(
                    format!("failed PopulateReparentJournal(primary={elect_alias}, ts={ts}, pos={position})"),
                    run.tm(deadline.remaining()).populate_reparent_journal(
                        elect,
                        tm::PopulateReparentJournalRequest {
                            time_created_ns: ts,
                            action_name: "PlannedReparentShard".into(),
                            primary_alias: elect.alias.clone(),
                            replication_position: position.to_string(),
                        },
                    ),
                )
                .await;
            if result.is_err() {
                journal_failed.cancel();
            }
            result
        };
        let (journal, replicas) = tokio::join!(journal, join_all(replicas));
        journal?;
        let mut errors = Vec::new();
        for r in replicas {
            match r {
                Ok(()) => {}
                Err(e @ (ReparentError::LockLost(_) | ReparentError::Cancelled(_))) => return Err(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(ReparentError::Tablets {
            context: format!(
                "some replicas failed to reparent; retry PlannedReparentShard with the same new primary alias \
                 ({elect_alias}) to retry failed replicas"
            ),
            errors: errors.join("; "),
            retryable: true,
        })
    }
}
