//! ERS steps 6–14: candidate positions, split-brain suspicion, relay-log
//! waits, the errant-GTID filter, the most advanced tablet and the final
//! candidate filters. Everything but the two waits is synchronous and pure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use super::super::context::{Deadline, Run};
use super::super::error::{ReparentError, ReparentResult};
use super::super::position::{RelayLogPositions, SourceIdentity, at_least, compare, find_errant, is_gtid};
use super::stop::StopSnapshot;
use crate::analysis::durability::{Durability, PromotionRule};
use crate::mysql::Position;
use crate::proto::replicationdata::StopReplicationStatus;
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::tablet::TabletManager as _;

/// One tablet that may become the intermediate source or the new primary.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    /// Alias text.
    pub alias: String,
    /// Its topo record.
    pub tablet: Tablet,
    /// What it received and applied.
    pub positions: RelayLogPositions,
    /// Its stop-replication answer; `None` for a tablet that said it was a
    /// primary and was demoted (it has no relay log to apply).
    pub stop_status: Option<StopReplicationStatus>,
}

fn parse(alias: &str, what: &str, text: &str) -> ReparentResult<Position> {
    Position::parse(text)
        .map_err(|e| ReparentError::position(format!("tablet {alias}: cannot decode {what} {text:?}"), e))
}

/// Step 6–7: the candidates and whether the shard replicates by GTID.
///
/// `binlog`: MariaDB replicas' own binlog positions (`gtid_binlog_pos`),
/// merged into both positions: MariaDB's `Gtid_Slave_Pos` and relay
/// position leave out transactions the replica wrote itself, which are
/// exactly the errant ones.
///
/// GTID replicas: combined = relay-log position, executed = executed set;
/// file-position replicas: combined = executed file position; demoted
/// primaries: combined = their executed position. Mixing GTID and file
/// positions, or a GTID shard where a replica reports no relay-log position,
/// is an error. BACKUP, RESTORE and DRAINED tablets are dropped.
pub(crate) fn build_candidates(
    snapshot: &StopSnapshot,
    tablets: &BTreeMap<String, Tablet>,
    binlog: &BTreeMap<String, Position>,
) -> ReparentResult<(Vec<Candidate>, bool)> {
    let mut gtid = false;
    let mut non_gtid = false;
    let mut empty_relay: Option<String> = None;
    let mut parsed = Vec::new();
    for (alias, status) in &snapshot.status {
        let after = status.after.as_ref().ok_or_else(|| {
            ReparentError::Internal(format!(
                "tablet {alias} returned no replication status after stopping"
            ))
        })?;
        let mut executed = parse(alias, "position", &after.position)?;
        let mut relay = parse(alias, "relay log position", &after.relay_log_position)?;
        // MariaDB: what the replica wrote itself is only in its binlog.
        if let Some(own) = binlog.get(alias) {
            let merge = |p: &Position| {
                p.union(own).map_err(|e| {
                    ReparentError::position(format!("tablet {alias}: merging its binlog position"), e)
                })
            };
            executed = merge(&executed)?;
            relay = merge(&relay)?;
        }
        if is_gtid(&relay) && !relay.is_empty() {
            gtid = true;
        } else {
            non_gtid = true;
        }
        if relay.is_empty() && empty_relay.is_none() {
            empty_relay = Some(alias.clone());
        }
        parsed.push((alias.clone(), executed, relay, Some(status.clone())));
    }
    if gtid && let Some(alias) = empty_relay {
        return Err(ReparentError::FailedPrecondition(format!(
            "encountered tablet {alias} with no relay log position, when at least one other tablet \
             in the status map has GTID based relay log positions"
        )));
    }
    if gtid && non_gtid {
        return Err(ReparentError::FailedPrecondition(
            "encountered mix of GTID-based and non GTID-based relay logs".into(),
        ));
    }
    let mut candidates = Vec::new();
    for (alias, executed, relay, stop_status) in parsed {
        let positions = if gtid {
            RelayLogPositions {
                combined: relay,
                executed,
            }
        } else {
            RelayLogPositions {
                combined: executed,
                executed: Position::Empty,
            }
        };
        push_candidate(&mut candidates, tablets, alias, positions, stop_status)?;
    }
    for (alias, ps) in &snapshot.primary_status {
        let combined = parse(alias, "primary position", &ps.position)?;
        let positions = RelayLogPositions {
            combined,
            executed: Position::Empty,
        };
        push_candidate(&mut candidates, tablets, alias.clone(), positions, None)?;
    }
    Ok((candidates, gtid))
}

fn push_candidate(
    out: &mut Vec<Candidate>,
    tablets: &BTreeMap<String, Tablet>,
    alias: String,
    positions: RelayLogPositions,
    stop_status: Option<StopReplicationStatus>,
) -> ReparentResult<()> {
    let tablet = tablets
        .get(&alias)
        .ok_or_else(|| ReparentError::Internal(format!("candidate {alias} not found in the tablet map")))?;
    if matches!(
        tablet.r#type(),
        TabletType::Backup | TabletType::Restore | TabletType::Drained
    ) {
        return Ok(());
    }
    out.push(Candidate {
        alias,
        tablet: tablet.clone(),
        positions,
        stop_status,
    });
    Ok(())
}

/// `alias=position, …` of candidates, sorted (for error messages).
pub(crate) fn describe(candidates: &[&Candidate]) -> String {
    let mut parts: Vec<String> = candidates
        .iter()
        .map(|c| format!("{}={}", c.alias, c.positions.combined))
        .collect();
    parts.sort();
    parts.join(", ")
}

/// Step 8 (v25): the leading candidates (no other candidate strictly ahead)
/// when they do not all share one position: a suspected split brain. Empty
/// when the leaders agree.
pub(crate) fn suspected_split_brain(candidates: &[Candidate]) -> ReparentResult<Vec<String>> {
    let mut leaders: Vec<&Candidate> = Vec::new();
    for c in candidates {
        let mut dominated = false;
        for other in candidates {
            if other.alias != c.alias && cmp_combined(other, c)? == Some(Ordering::Greater) {
                dominated = true;
                break;
            }
        }
        if !dominated {
            leaders.push(c);
        }
    }
    let Some(first) = leaders.first() else {
        return Ok(Vec::new());
    };
    for l in &leaders[1..] {
        if cmp_combined(l, first)? != Some(Ordering::Equal) {
            return Ok(leaders.iter().map(|c| c.alias.clone()).collect());
        }
    }
    Ok(Vec::new())
}

fn cmp_combined(a: &Candidate, b: &Candidate) -> ReparentResult<Option<Ordering>> {
    compare(&a.positions.combined, &b.positions.combined).map_err(|e| {
        ReparentError::position(format!("comparing positions of {} and {}", a.alias, b.alias), e)
    })
}

/// Step 9: every replica candidate applies what it received
/// (`WaitForPosition` on its relay-log position) within the wait bound; any
/// failure fails the reparent (v24 semantics: a tablet with unapplied
/// transactions is never promoted, and we do not guess which one to drop).
pub(crate) async fn wait_for_relay_logs(run: &Run<'_>, candidates: &[Candidate]) -> ReparentResult<()> {
    let deadline = Deadline::after(run.bounds.wait_replicas);
    let waits = candidates.iter().filter_map(|c| {
        let Some(status) = c.stop_status.as_ref() else {
            run.log.info(format!(
                "candidate {} was not replicating (it was a primary), so it has no relay logs to apply",
                c.alias
            ));
            return None;
        };
        let after = status.after.clone().unwrap_or_default();
        let target = if after.relay_log_position.is_empty() {
            after.relay_log_source_binlog_equivalent_position
        } else {
            after.relay_log_position
        };
        Some(async move {
            run.rpc(
                format!("waiting for {} to apply its relay logs up to {target}", c.alias),
                run.tm(deadline.remaining()).wait_for_position(&c.tablet, &target),
            )
            .await
        })
    });
    let results = join_all(waits).await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|e| match e {
            e @ (ReparentError::LockLost(_) | ReparentError::Cancelled(_)) => Err(e),
            e => Ok(e.to_string()),
        })
        .collect::<ReparentResult<Vec<_>>>()?;
    if errors.is_empty() {
        return Ok(());
    }
    Err(ReparentError::Timeout(format!(
        "could not apply all relay logs within the provided waitReplicasTimeout ({:?}): {}",
        run.bounds.wait_replicas,
        errors.join("; ")
    )))
}

/// Step 10: reads each candidate's reparent-journal length within the wait
/// bound; all must answer.
pub(crate) async fn read_journal_lengths(
    run: &Run<'_>,
    candidates: &[Candidate],
) -> ReparentResult<BTreeMap<String, i32>> {
    let deadline = Deadline::after(run.bounds.wait_replicas);
    let reads = candidates.iter().map(|c| async move {
        let len = run
            .rpc(
                format!("reading the reparent journal of {}", c.alias),
                run.tm(deadline.remaining()).read_reparent_journal_info(&c.tablet),
            )
            .await?;
        Ok::<_, ReparentError>((c.alias.clone(), len))
    });
    join_all(reads).await.into_iter().collect()
}

/// What the errant-GTID filter kept and dropped.
#[derive(Debug, Default)]
pub(crate) struct ErrantFilter {
    /// Candidates without errant GTIDs.
    pub kept: Vec<Candidate>,
    /// Dropped candidates: alias → their errant GTIDs (or why).
    pub dropped: BTreeMap<String, String>,
}

/// Step 10: drops candidates with errant GTIDs (Vitess's reparent-journal
/// method). Candidates that saw the most promotions (longest journal) are
/// checked against each other, excluding what their source wrote; lagging
/// ones (shorter journal) against the longest-journal group, without that
/// exclusion. A demoted primary with the longest journal is kept as is.
pub(crate) fn filter_errant(
    candidates: Vec<Candidate>,
    journal: &BTreeMap<String, i32>,
) -> ReparentResult<ErrantFilter> {
    let max_len = candidates
        .iter()
        .filter_map(|c| journal.get(&c.alias))
        .copied()
        .max()
        .unwrap_or(0);
    let is_max = |c: &Candidate| journal.get(&c.alias).copied().unwrap_or(0) == max_len;
    let (max_group, lagging): (Vec<Candidate>, Vec<Candidate>) =
        candidates.into_iter().partition(|c| is_max(c));
    let mut out = ErrantFilter::default();
    let mut reference: Vec<Position> = Vec::new();
    for c in &max_group {
        if c.positions.is_zero() {
            out.dropped.insert(
                c.alias.clone(),
                "no position among the longest-journal tablets".into(),
            );
            continue;
        }
        let Some(status) = c.stop_status.as_ref() else {
            reference.push(c.positions.combined.clone());
            out.kept.push(c.clone());
            continue;
        };
        let others: Vec<Position> = max_group
            .iter()
            .filter(|o| o.alias != c.alias && !o.positions.is_zero())
            .map(|o| o.positions.combined.clone())
            .collect();
        let after = status.after.clone().unwrap_or_default();
        let source = SourceIdentity {
            uuid: &after.source_uuid,
            server_id: after.source_server_id,
        };
        let errant = find_errant(&c.positions.combined, source, &others)
            .map_err(|e| ReparentError::position(format!("errant GTID check of {}", c.alias), e))?;
        match errant {
            Some(set) => {
                out.dropped.insert(c.alias.clone(), set.to_string());
            }
            None => {
                reference.push(c.positions.combined.clone());
                out.kept.push(c.clone());
            }
        }
    }
    for c in lagging {
        let errant = find_errant(&c.positions.combined, SourceIdentity::default(), &reference)
            .map_err(|e| ReparentError::position(format!("errant GTID check of {}", c.alias), e))?;
        match errant {
            Some(set) => {
                out.dropped.insert(c.alias.clone(), set.to_string());
            }
            None => out.kept.push(c),
        }
    }
    Ok(out)
}

/// Sorts candidates best first: most advanced (by how many others each is
/// at least as advanced as, which respects the partial order), then by
/// promotion rule, then by alias.
pub(crate) fn sort_candidates(candidates: &mut [Candidate], durability: Durability) -> ReparentResult<()> {
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    for c in candidates.iter() {
        let mut n = 0;
        for o in candidates.iter() {
            if o.alias != c.alias
                && c.positions.at_least(&o.positions).map_err(|e| {
                    ReparentError::position(format!("comparing positions of {} and {}", c.alias, o.alias), e)
                })?
            {
                n += 1;
            }
        }
        rank.insert(c.alias.clone(), n);
    }
    candidates.sort_by(|a, b| {
        rank[&b.alias]
            .cmp(&rank[&a.alias])
            .then_with(|| {
                durability
                    .promotion_rule(&a.tablet)
                    .cmp(&durability.promotion_rule(&b.tablet))
            })
            .then_with(|| a.alias.cmp(&b.alias))
    });
    Ok(())
}

/// Step 12: the intermediate source (most advanced; the requested primary
/// instead when it is at least as advanced). Fails on a split brain: the
/// most advanced tablet must hold everything every other candidate holds.
/// `candidates` must be sorted by [`sort_candidates`].
pub(crate) fn find_most_advanced<'c>(
    candidates: &'c [Candidate],
    new_primary: Option<&TabletAlias>,
    errant: &BTreeMap<String, String>,
) -> ReparentResult<&'c Candidate> {
    let winner = candidates
        .first()
        .ok_or_else(|| ReparentError::NoValidCandidates {
            operation: "emergency reparent",
            reason: "no candidate is left".into(),
        })?;
    for c in &candidates[1..] {
        let ok = winner
            .positions
            .at_least(&c.positions)
            .map_err(|e| ReparentError::position(format!("comparing {} and {}", winner.alias, c.alias), e))?;
        if !ok {
            return Err(ReparentError::SplitBrain(format!(
                "between servers {} ({}) and {} ({})",
                winner.alias, winner.positions.combined, c.alias, c.positions.combined
            )));
        }
    }
    let Some(requested) = new_primary else {
        return Ok(winner);
    };
    let requested = requested.to_string();
    let Some(req) = candidates.iter().find(|c| c.alias == requested) else {
        if let Some(set) = errant.get(&requested) {
            return Err(ReparentError::ErrantGtids(format!(
                "requested primary elect {requested} has errant GTIDs: {set}"
            )));
        }
        return Err(ReparentError::FailedPrecondition(format!(
            "requested primary elect {requested} is not a valid candidate (not reached, or of a type that cannot be promoted)"
        )));
    };
    let caught_up = req
        .positions
        .at_least(&winner.positions)
        .map_err(|e| ReparentError::position(format!("comparing {} and {}", req.alias, winner.alias), e))?;
    Ok(if caught_up { req } else { winner })
}

/// What the final candidate filter looks at.
#[derive(Clone, Copy)]
pub(crate) struct FilterInputs<'a> {
    /// Tablets that will replicate (and ack) after the reparent.
    pub ackers: &'a [&'a Tablet],
    /// The previous primary (its cell).
    pub prev_primary: Option<&'a Tablet>,
    /// The requested primary.
    pub new_primary: Option<&'a TabletAlias>,
    /// Only promote in the previous primary's cell.
    pub prevent_cross_cell: bool,
    /// Promotion rules and ackers.
    pub durability: Durability,
    /// Replicas running a backup.
    pub backup_running: &'a BTreeMap<String, bool>,
}

/// Step 13: keeps the candidates that may become primary: not `must_not`,
/// in the previous primary's cell when cross-cell promotion is prevented,
/// and able to get enough semi-sync acks from the tablets that will
/// replicate (`ackers`). Tablets running a backup are used only if nothing
/// else is left. The requested primary failing a filter aborts the reparent.
pub(crate) fn filter_valid_candidates(
    sorted: &[Candidate],
    inputs: &FilterInputs<'_>,
    log: &super::super::events::EventLog,
) -> ReparentResult<Vec<Candidate>> {
    let FilterInputs {
        ackers,
        prev_primary,
        new_primary,
        prevent_cross_cell,
        durability,
        backup_running,
    } = *inputs;
    let requested = new_primary.map(ToString::to_string);
    let is_requested = |c: &Candidate| requested.as_deref() == Some(c.alias.as_str());
    let prev_cell = prev_primary
        .and_then(|p| p.alias.as_ref())
        .map(|a| a.cell.clone());
    let mut preferred = Vec::new();
    let mut backing_up = Vec::new();
    // Why `c` cannot be promoted, if it cannot: (the reason it leaves the
    // candidates, what an explicit request for it is refused with).
    let excluded = |c: &Candidate| {
        if durability.promotion_rule(&c.tablet) == PromotionRule::MustNot {
            return Some(("its promotion rule is must_not", "has a must not promotion rule"));
        }
        let cell = c.tablet.alias.as_ref().map(|a| a.cell.clone());
        if prevent_cross_cell && prev_cell.is_some() && cell != prev_cell {
            return Some((
                "it is not in the previous primary's cell",
                "is in a different cell than the previous primary",
            ));
        }
        // The candidate itself was reached; the others count only if they
        // will replicate (and so ack) after the reparent.
        let mut reached: Vec<&Tablet> = ackers.to_vec();
        if !reached.iter().any(|t| t.alias == c.tablet.alias) {
            reached.push(&c.tablet);
        }
        if !durability.can_establish(&c.tablet, &reached) {
            return Some((
                "it would not get enough semi-sync acks from the tablets that will replicate from it",
                "will not be able to make forward progress on being promoted",
            ));
        }
        None
    };
    for c in sorted {
        if let Some((reason, refusal)) = excluded(c) {
            log.info(format!("removing {} from the candidates: {reason}", c.alias));
            if is_requested(c) {
                return Err(ReparentError::Aborted(format!(
                    "proposed primary {} {refusal}",
                    c.alias
                )));
            }
            continue;
        }
        if backup_running.get(&c.alias).copied().unwrap_or(false) {
            backing_up.push(c.clone());
        } else {
            preferred.push(c.clone());
        }
    }
    Ok(if preferred.is_empty() {
        backing_up
    } else {
        preferred
    })
}

/// Step 14 and 16: the candidate to promote among `valid` (sorted): the
/// requested one if given (it must be valid), else the best promotion-rule
/// tier, preferring `source` within it (no catch-up needed), else the
/// tier's most advanced.
pub(crate) fn identify_primary_candidate<'c>(
    source: &Candidate,
    valid: &'c [Candidate],
    new_primary: Option<&TabletAlias>,
    durability: Durability,
) -> ReparentResult<&'c Candidate> {
    if valid.is_empty() {
        return Err(ReparentError::NoValidCandidates {
            operation: "emergency reparent",
            reason: "every candidate was removed by the promotion-rule, cell or semi-sync filters".into(),
        });
    }
    if let Some(requested) = new_primary {
        let requested = requested.to_string();
        return valid.iter().find(|c| c.alias == requested).ok_or_else(|| {
            ReparentError::Aborted(format!(
                "requested candidate {requested} is not in valid candidates list"
            ))
        });
    }
    for rule in [
        PromotionRule::Must,
        PromotionRule::Prefer,
        PromotionRule::Neutral,
        PromotionRule::PreferNot,
        PromotionRule::MustNot,
    ] {
        let tier: Vec<&Candidate> = valid
            .iter()
            .filter(|c| durability.promotion_rule(&c.tablet) == rule)
            .collect();
        if let Some(c) = tier.iter().find(|c| c.alias == source.alias) {
            return Ok(c);
        }
        if let Some(c) = tier.first() {
            return Ok(c);
        }
    }
    Err(ReparentError::Internal(
        "did not find a valid primary candidate even though the valid candidate list was non-empty".into(),
    ))
}

/// v25 `RequiredPosition`: some candidate must have received `required`.
pub(crate) fn check_required_position(candidates: &[Candidate], required: &str) -> ReparentResult<()> {
    let required_pos = Position::parse(required)
        .map_err(|e| ReparentError::position(format!("required position {required:?}"), e))?;
    for c in candidates {
        if at_least(&c.positions.combined, &required_pos).unwrap_or(false) {
            return Ok(());
        }
    }
    Err(ReparentError::FailedPrecondition(format!(
        "no reachable candidate has received the required position {required}"
    )))
}

/// Tablets that will not send semi-sync acks after the reparent: replicas
/// whose replication was not running before ERS (they are repointed but not
/// started).
pub(crate) fn non_ackers(snapshot: &StopSnapshot) -> BTreeSet<String> {
    snapshot
        .status
        .iter()
        .filter(|(_, s)| !super::stop::replica_was_running(s))
        .map(|(a, _)| a.clone())
        .collect()
}

/// Reached tablets that will send acks.
pub(crate) fn ackers<'t>(
    snapshot: &StopSnapshot,
    tablets: &'t BTreeMap<String, Tablet>,
    exclude: &BTreeSet<String>,
) -> Vec<&'t Tablet> {
    snapshot
        .reachable
        .iter()
        .filter(|a| !exclude.contains(*a))
        .filter_map(|a| tablets.get(a))
        .collect()
}

/// MariaDB replicas (by the flavor of their relay-log position): their
/// binlog positions are read to see their own writes.
pub(crate) fn mariadb_replicas<'t>(
    snapshot: &StopSnapshot,
    tablets: &'t BTreeMap<String, Tablet>,
) -> Vec<(String, &'t Tablet)> {
    snapshot
        .status
        .iter()
        .filter(|(_, s)| {
            s.after.as_ref().is_some_and(|a| {
                a.relay_log_position
                    .starts_with(crate::mysql::position::MARIADB_FLAVOR)
            })
        })
        .filter_map(|(a, _)| tablets.get(a).map(|t| (a.clone(), t)))
        .collect()
}

/// Reads the binlog position (`PrimaryPosition`) of each MariaDB replica,
/// within `--remote-operation-timeout`; every one must answer.
pub(crate) async fn read_binlog_positions(
    run: &Run<'_>,
    replicas: &[(String, &Tablet)],
) -> ReparentResult<BTreeMap<String, Position>> {
    let deadline = Deadline::after(run.bounds.remote);
    let reads = replicas.iter().map(|(alias, t)| async move {
        let text = run
            .rpc(
                format!("reading the binlog position of {alias}"),
                run.tm(deadline.remaining()).primary_position(t),
            )
            .await?;
        let pos = parse(alias, "binlog position", &text)?;
        Ok::<_, ReparentError>((alias.clone(), pos))
    });
    join_all(reads).await.into_iter().collect()
}

/// Alias texts of candidates.
pub(crate) fn aliases(candidates: &[Candidate]) -> Vec<String> {
    candidates.iter().map(|c| c.alias.clone()).collect()
}
