//! EmergencyReparentShard: promote the most advanced replica when the
//! primary is gone, without losing a committed write or creating a second
//! primary (reference §7.4).
//!
//! | Phase | Reference step | File |
//! |---|---|---|
//! | [`ErsPhase::LockShard`] | 1 | `context.rs` |
//! | [`ErsPhase::ReadShard`] | 2–3 | here, `context.rs` |
//! | [`ErsPhase::StopReplication`] | 4–5 | `stop.rs` |
//! | [`ErsPhase::FindCandidates`] | 6–8 | `candidates.rs` |
//! | [`ErsPhase::WaitForRelayLogs`] | 9 | `candidates.rs` |
//! | [`ErsPhase::FilterErrantGtids`] | 10–11 | `candidates.rs` |
//! | [`ErsPhase::ElectIntermediateSource`] | 12–14 | `candidates.rs` |
//! | [`ErsPhase::RepointToIntermediateSource`] | 16 | `promote.rs` |
//! | [`ErsPhase::Promote`] | 17 | `promote.rs` |
//! | [`ErsPhase::RestartReplication`] | 5 (abort) | `promote.rs` |
//!
//! The shard lock is confirmed with etcd after stopping replication, before
//! repointing anything, and after the catch-up; its cancellation token
//! aborts any RPC in flight at once.

mod candidates;
mod promote;
mod stop;
#[cfg(test)]
mod tests;

use std::future::Future;

use tracing::Instrument;

use self::candidates::{Candidate, ErrantFilter};
use self::promote::{Promotion, Repoint};
use self::stop::{StopPlan, StopSnapshot};
use super::context::{LockRef, Run, ShardTopology, acquire_lock, read_tablet};
use super::error::{ReparentError, ReparentResult};
use super::events::EventLog;
use super::options::{EmergencyReparentOptions, ers_lock_action};
use super::{Operation, ReparentOutcome, Reparenter};
use crate::proto::topodata::{Tablet, TabletAlias};
use crate::topo::ShardLock;

/// The named phases of an ERS (the `phase` of its events and spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErsPhase {
    /// Take the shard lock, or check the caller's.
    LockShard,
    /// Read the shard, its durability policy, the previous primary and the tablets.
    ReadShard,
    /// Stop replication everywhere; demote tablets that claim to be primary;
    /// check revocation.
    StopReplication,
    /// Compute positions; drop tablets of unpromotable types; suspect split brains.
    FindCandidates,
    /// Let every candidate apply its relay logs.
    WaitForRelayLogs,
    /// Drop candidates with errant GTIDs; check the required position.
    FilterErrantGtids,
    /// Pick the most advanced tablet and the final candidate.
    ElectIntermediateSource,
    /// Replicate from the intermediate source and catch the better candidate up.
    RepointToIntermediateSource,
    /// Promote, write the reparent journal, repoint every replica.
    Promote,
    /// Abort path: restart the replication ERS stopped.
    RestartReplication,
}

impl ErsPhase {
    /// Snake-case name used in events and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            ErsPhase::LockShard => "lock_shard",
            ErsPhase::ReadShard => "read_shard",
            ErsPhase::StopReplication => "stop_replication",
            ErsPhase::FindCandidates => "find_candidates",
            ErsPhase::WaitForRelayLogs => "wait_for_relay_logs",
            ErsPhase::FilterErrantGtids => "filter_errant_gtids",
            ErsPhase::ElectIntermediateSource => "elect_intermediate_source",
            ErsPhase::RepointToIntermediateSource => "repoint_to_intermediate_source",
            ErsPhase::Promote => "promote",
            ErsPhase::RestartReplication => "restart_replication",
        }
    }
}

/// Runs `fut` as phase `phase`: events are tagged with it and it gets a span.
async fn phase<T>(log: &EventLog, phase: ErsPhase, fut: impl Future<Output = T>) -> T {
    log.set_phase(phase.as_str());
    log.info(format!("phase {}", phase.as_str()));
    fut.instrument(tracing::info_span!("ers_phase", phase = phase.as_str()))
        .await
}

impl Reparenter {
    /// EmergencyReparentShard on `keyspace/shard`.
    ///
    /// `held`: the shard lock when the caller already holds it (the recovery
    /// engine); otherwise the lock is taken here (blocking, `--lock-timeout`)
    /// with action `EmergencyReparentShard[(<alias>)]` and released at the
    /// end. Every step is written to `log`, which the caller keeps, so the
    /// steps of a failed reparent are not lost.
    pub async fn emergency_reparent_shard(
        &self,
        keyspace: &str,
        shard: &str,
        opts: &EmergencyReparentOptions,
        held: Option<&ShardLock>,
        log: &EventLog,
    ) -> ReparentResult<ReparentOutcome> {
        let span = tracing::info_span!("emergency_reparent_shard", keyspace, shard);
        let body = async {
            let action = ers_lock_action(opts.new_primary.as_ref());
            let lock = phase(
                log,
                ErsPhase::LockShard,
                acquire_lock(&self.topo, held, keyspace, shard, &action, log),
            )
            .await?;
            let run = self.run(log, &lock, opts.wait_replicas_timeout, opts.cancel.clone());
            let ers = Ers {
                reparenter: self,
                run,
                opts,
                keyspace,
                shard,
                action,
            };
            let result = ers.reparent_locked(&lock).await;
            lock.release(log).await;
            result.map(Some)
        };
        self.run_reparent(Operation::Emergency, keyspace, shard, log, span, body)
            .await
    }
}

/// What `ReadShard` returns.
struct ShardRead {
    /// The shard record, durability policy and tablets.
    topology: ShardTopology,
    /// The shard record's primary tablet, if it still exists.
    prev_primary: Option<Tablet>,
}

/// What `FindCandidates` returns.
struct Found {
    /// The reached tablets of promotable types, with their positions.
    candidates: Vec<Candidate>,
    /// Whether positions are GTID-based.
    gtid: bool,
    /// Leading candidates with incomparable positions (a suspected split brain).
    suspects: Vec<String>,
}

/// What `ElectIntermediateSource` returns.
struct Election {
    /// The most advanced candidate.
    source: Candidate,
    /// The candidates that may be promoted.
    valid: Vec<Candidate>,
    /// Whether `source` is also the candidate to promote.
    ideal: bool,
}

/// One ERS in progress. Each phase takes what the previous ones returned.
struct Ers<'a> {
    /// Owner of the client, topo and background calls.
    reparenter: &'a Reparenter,
    /// Shared run state.
    run: Run<'a>,
    /// The request.
    opts: &'a EmergencyReparentOptions,
    /// Keyspace.
    keyspace: &'a str,
    /// Shard.
    shard: &'a str,
    /// The lock action (also the journal's `action_name`).
    action: String,
}

impl Ers<'_> {
    async fn reparent_locked(&self, lock: &LockRef<'_>) -> ReparentResult<Tablet> {
        let log = self.run.log;
        log.info(format!(
            "will initiate emergency reparent shard in keyspace - {}, shard - {}",
            self.keyspace, self.shard
        ));
        let read = phase(log, ErsPhase::ReadShard, self.read_shard()).await?;
        let (snapshot, stopped) = phase(
            log,
            ErsPhase::StopReplication,
            self.stop_replication(&read.topology),
        )
        .await;
        let elected = match stopped {
            Ok(()) => self.elect_before_repointing(lock, &read, &snapshot).await,
            Err(e) => Err(e),
        };
        let election = match elected {
            Ok(election) => election,
            Err(e) => return self.abort(lock, &read, &snapshot, e).await,
        };
        // From here on replicas are repointed, so a failure no longer
        // restarts the old replication.
        let mut new_primary = election.source.clone();
        if !election.ideal {
            new_primary = phase(
                log,
                ErsPhase::RepointToIntermediateSource,
                self.via_intermediate_source(&election, &snapshot, &read.topology),
            )
            .await?;
            self.run.check_lock(lock).await?;
        }
        phase(
            log,
            ErsPhase::Promote,
            self.promote(&new_primary, &snapshot, &read.topology),
        )
        .await?;
        Ok(new_primary.tablet)
    }

    /// The phases after stopping replication and before repointing: a
    /// failure here restarts the replication ERS stopped.
    async fn elect_before_repointing(
        &self,
        lock: &LockRef<'_>,
        read: &ShardRead,
        snapshot: &StopSnapshot,
    ) -> ReparentResult<Election> {
        let log = self.run.log;
        self.run.check_lock(lock).await?;
        let found = phase(
            log,
            ErsPhase::FindCandidates,
            self.find_candidates(snapshot, &read.topology),
        )
        .await?;
        phase(
            log,
            ErsPhase::WaitForRelayLogs,
            candidates::wait_for_relay_logs(&self.run, &found.candidates),
        )
        .await?;
        let filtered = phase(log, ErsPhase::FilterErrantGtids, self.filter_errant(found)).await?;
        let election = phase(log, ErsPhase::ElectIntermediateSource, async {
            self.elect(filtered, snapshot, read)
        })
        .await?;
        log.info(format!(
            "intermediate source is ideal candidate - {}",
            election.ideal
        ));
        self.run.check_lock(lock).await?;
        Ok(election)
    }

    async fn read_shard(&self) -> ReparentResult<ShardRead> {
        let topology = self
            .run
            .read_shard(self.keyspace, self.shard, self.opts.expected_primary.as_ref())
            .await?;
        let mut prev_primary = None;
        if let Some(alias) = topology.primary_alias() {
            prev_primary = read_tablet(self.run.topo, alias, self.run.bounds.remote).await?;
            if prev_primary.is_none() {
                self.run.log.warn(format!(
                    "the previous primary {alias} has no tablet record any more"
                ));
            }
        }
        if let Some(requested) = &self.opts.new_primary
            && !topology.tablets.contains_key(&requested.to_string())
        {
            return Err(ReparentError::FailedPrecondition(format!(
                "primary-elect tablet {requested} is not in the shard"
            )));
        }
        Ok(ShardRead {
            topology,
            prev_primary,
        })
    }

    /// What replication was stopped on (also when stopping failed, for the
    /// abort path), and whether enough of it was.
    async fn stop_replication(&self, topology: &ShardTopology) -> (StopSnapshot, ReparentResult<()>) {
        let plan = StopPlan {
            shard_primary: topology.primary_alias(),
            ignore: &self.opts.ignore_replicas,
            must_wait_for: self.opts.new_primary.as_ref(),
            wait_for_all: self.opts.wait_for_all_tablets,
            durability: topology.durability,
        };
        let (snapshot, result) =
            stop::stop_replication_and_build_status_maps(&self.run, &topology.tablets, &plan).await;
        let result = result.map_err(|e| match e {
            e @ (ReparentError::NotEnoughTabletsReached { .. }
            | ReparentError::LockLost(_)
            | ReparentError::Cancelled(_)) => e,
            e => ReparentError::FailedPrecondition(format!(
                "failed to stop replication and build status maps: {e}"
            )),
        });
        (snapshot, result)
    }

    async fn find_candidates(
        &self,
        snapshot: &StopSnapshot,
        topology: &ShardTopology,
    ) -> ReparentResult<Found> {
        let mariadb = candidates::mariadb_replicas(snapshot, &topology.tablets);
        let binlog = candidates::read_binlog_positions(&self.run, &mariadb).await?;
        let (candidates, gtid) = candidates::build_candidates(snapshot, &topology.tablets, &binlog)?;
        if candidates.is_empty() {
            return Err(ReparentError::NoValidCandidates {
                operation: "emergency reparent",
                reason: "no reached tablet is of a promotable type".into(),
            });
        }
        for c in &candidates {
            self.run.log.info(format!(
                "candidate {} at position {}",
                c.alias, c.positions.combined
            ));
        }
        let suspects = if gtid {
            candidates::suspected_split_brain(&candidates)?
        } else {
            Vec::new()
        };
        if !suspects.is_empty() {
            let leaders: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| suspects.contains(&c.alias))
                .collect();
            self.run.log.warn(format!(
                "suspected split brain: leading candidates have incomparable positions: {}",
                candidates::describe(&leaders)
            ));
        }
        Ok(Found {
            candidates,
            gtid,
            suspects,
        })
    }

    async fn filter_errant(&self, found: Found) -> ReparentResult<ErrantFilter> {
        let Found {
            candidates,
            gtid,
            suspects,
        } = found;
        let filtered = if gtid {
            let journal = candidates::read_journal_lengths(&self.run, &candidates).await?;
            let all = candidates.clone();
            let filtered = candidates::filter_errant(candidates, &journal)?;
            for (alias, set) in &filtered.dropped {
                self.run.log.warn(format!(
                    "skipping {alias} because we detected errant GTIDs - {set}"
                ));
            }
            if !suspects.is_empty() {
                let surviving: Vec<&String> = suspects
                    .iter()
                    .filter(|a| filtered.kept.iter().any(|c| &c.alias == *a))
                    .collect();
                if surviving.len() != 1 {
                    let leaders: Vec<&Candidate> =
                        all.iter().filter(|c| suspects.contains(&c.alias)).collect();
                    return Err(ReparentError::SplitBrain(format!(
                        "leading candidates have incomparable GTID positions: {}; refusing to choose which \
                         history to discard",
                        candidates::describe(&leaders)
                    )));
                }
            }
            if filtered.kept.is_empty() {
                return Err(ReparentError::ErrantGtids(format!(
                    "no valid candidates for emergency reparent: all candidates have errant GTIDs ({})",
                    filtered
                        .dropped
                        .iter()
                        .map(|(a, s)| format!("{a}: {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            filtered
        } else {
            ErrantFilter {
                kept: candidates,
                dropped: Default::default(),
            }
        };
        if let Some(required) = &self.opts.required_position {
            candidates::check_required_position(&filtered.kept, required)?;
            self.run
                .log
                .info(format!("required position {required} was received"));
        }
        Ok(filtered)
    }

    fn elect(
        &self,
        mut filtered: ErrantFilter,
        snapshot: &StopSnapshot,
        read: &ShardRead,
    ) -> ReparentResult<Election> {
        let topology = &read.topology;
        candidates::sort_candidates(&mut filtered.kept, topology.durability)?;
        for c in &filtered.kept {
            self.run.log.info(format!(
                "finding intermediate source - sorted replica: {}",
                c.alias
            ));
        }
        let source = candidates::find_most_advanced(
            &filtered.kept,
            self.opts.new_primary.as_ref(),
            &filtered.dropped,
        )?
        .clone();
        self.run
            .log
            .info(format!("intermediate source selected - {}", source.alias));
        let non_ackers = candidates::non_ackers(snapshot);
        let ackers = candidates::ackers(snapshot, &topology.tablets, &non_ackers);
        let valid = candidates::filter_valid_candidates(
            &filtered.kept,
            &candidates::FilterInputs {
                ackers: &ackers,
                prev_primary: read.prev_primary.as_ref(),
                new_primary: self.opts.new_primary.as_ref(),
                prevent_cross_cell: self.opts.prevent_cross_cell_promotion,
                durability: topology.durability,
                backup_running: &snapshot.backup_running,
            },
            self.run.log,
        )?;
        if valid.is_empty() && !filtered.dropped.is_empty() {
            return Err(ReparentError::ErrantGtids(format!(
                "no valid candidates for emergency reparent: candidates with errant GTIDs were dropped \
                 ({}) and the remaining ones cannot be promoted ({})",
                filtered
                    .dropped
                    .iter()
                    .map(|(a, s)| format!("{a}: {s}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                candidates::aliases(&filtered.kept).join(", ")
            )));
        }
        self.run.log.info(format!(
            "valid candidates for promotion: {}",
            candidates::aliases(&valid).join(", ")
        ));
        let ideal = candidates::identify_primary_candidate(
            &source,
            &valid,
            self.opts.new_primary.as_ref(),
            topology.durability,
        )?
        .alias
            == source.alias;
        Ok(Election { source, valid, ideal })
    }

    async fn via_intermediate_source(
        &self,
        election: &Election,
        snapshot: &StopSnapshot,
        topology: &ShardTopology,
    ) -> ReparentResult<Candidate> {
        let Election { source, valid, .. } = election;
        let mut to_repoint = std::collections::BTreeMap::new();
        for c in valid {
            to_repoint.insert(c.alias.clone(), c.tablet.clone());
        }
        let reached = promote::reparent_replicas(
            &self.run,
            &self.reparenter.tmc,
            &self.reparenter.stragglers,
            Repoint {
                source: &source.tablet,
                tablets: &to_repoint,
                status: &snapshot.status,
                durability: topology.durability,
                promotion: None,
                shard_size: topology.tablets.len(),
            },
        )
        .await?;
        let reachable: Vec<Candidate> = valid
            .iter()
            .filter(|c| c.alias == source.alias || reached.contains(&c.alias))
            .cloned()
            .collect();
        let better = candidates::identify_primary_candidate(
            source,
            &reachable,
            self.opts.new_primary.as_ref(),
            topology.durability,
        )?
        .clone();
        self.run
            .log
            .info(format!("found better candidate - {}", better.alias));
        if better.alias != source.alias {
            promote::wait_for_catch_up(&self.run, &better.tablet, &source.tablet).await?;
        }
        Ok(better)
    }

    async fn promote(
        &self,
        new_primary: &Candidate,
        snapshot: &StopSnapshot,
        topology: &ShardTopology,
    ) -> ReparentResult<()> {
        let tablets: std::collections::BTreeMap<String, Tablet> = topology
            .tablets
            .iter()
            .filter(|(_, t)| {
                t.alias
                    .as_ref()
                    .is_none_or(|a: &TabletAlias| !self.opts.ignore_replicas.contains(a))
            })
            .map(|(a, t)| (a.clone(), t.clone()))
            .collect();
        promote::reparent_replicas(
            &self.run,
            &self.reparenter.tmc,
            &self.reparenter.stragglers,
            Repoint {
                source: &new_primary.tablet,
                tablets: &tablets,
                status: &snapshot.status,
                durability: topology.durability,
                promotion: Some(Promotion {
                    action: self.action.clone(),
                    init: topology.primary_alias().is_none(),
                }),
                shard_size: topology.tablets.len(),
            },
        )
        .await?;
        self.run
            .log
            .info(format!("promoted {} to primary", new_primary.alias));
        Ok(())
    }

    /// On failure before repointing: restart the replication ERS stopped
    /// (after confirming the lock), and report both failures if that fails too.
    async fn abort(
        &self,
        lock: &LockRef<'_>,
        read: &ShardRead,
        snapshot: &StopSnapshot,
        error: ReparentError,
    ) -> ReparentResult<Tablet> {
        let replicas = snapshot.replicas_with_stopped_io(&read.topology.tablets);
        if replicas.is_empty() {
            return Err(error);
        }
        let log = self.run.log;
        log.set_phase(ErsPhase::RestartReplication.as_str());
        let lock_ok = !lock.token().is_cancelled() && self.run.check_lock_ignoring_cancel(lock).await;
        let cleanup = promote::restart_stopped_replicas(
            &self.run,
            lock_ok,
            &replicas,
            read.prev_primary.as_ref(),
            read.topology.durability,
        )
        .instrument(tracing::info_span!(
            "ers_phase",
            phase = ErsPhase::RestartReplication.as_str()
        ))
        .await;
        match cleanup {
            Ok(()) => Err(error),
            Err(cleanup) => Err(ReparentError::CleanupFailed {
                source: Box::new(error),
                cleanup,
            }),
        }
    }
}
