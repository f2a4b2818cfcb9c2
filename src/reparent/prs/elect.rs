//! PRS step 3–4: electing the primary-elect (`ElectNewPrimary`) and finding
//! the current primary (`FindCurrentPrimary`).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::super::context::{Deadline, Run, is_not_replica};
use super::super::error::{ReparentError, ReparentResult};
use super::super::position::RelayLogPositions;
use crate::analysis::durability::Durability;
use crate::mysql::Position;
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::proto::vttime;
use crate::tablet::TabletManager as _;

/// Inputs of the election.
pub(crate) struct Election<'a> {
    /// The shard record's primary (its cell is the preferred cell).
    pub shard_primary: Option<&'a TabletAlias>,
    /// The requested primary; when set it is the only candidate.
    pub new_primary: Option<&'a TabletAlias>,
    /// The tablet to move away from.
    pub avoid: Option<&'a TabletAlias>,
    /// Allow candidates outside the shard primary's cell.
    pub allow_cross_cell: bool,
    /// Candidates lagging more are dropped (zero = no limit).
    pub tolerable_lag: Duration,
    /// Promotion rules.
    pub durability: Durability,
}

/// One candidate's replication facts.
struct Probe {
    alias: String,
    positions: RelayLogPositions,
}

/// Elects the primary-elect: REPLICA tablets in the current primary's cell
/// (unless cross-cell is allowed), not the avoided one; the requested one
/// only, when given. Each is asked for its replication status within the wait
/// bound (any failure fails the election, as in Vitess); those lagging past
/// the tolerable lag, running a backup or with unknown lag are dropped. The
/// best by promotion rule, then position, then alias wins.
pub(crate) async fn elect_new_primary(
    run: &Run<'_>,
    tablets: &BTreeMap<String, Tablet>,
    e: &Election<'_>,
) -> ReparentResult<TabletAlias> {
    let primary_cell = e.shard_primary.map(|a| a.cell.as_str());
    let mut reasons: Vec<String> = Vec::new();
    let mut candidates: Vec<(&String, &Tablet)> = Vec::new();
    for (alias, t) in tablets {
        let Some(a) = t.alias.as_ref() else { continue };
        if let Some(requested) = e.new_primary {
            if a != requested {
                reasons.push(format!("{alias} does not match the new primary alias provided"));
                continue;
            }
        } else if !e.allow_cross_cell && primary_cell.is_some_and(|c| c != a.cell) {
            reasons.push(format!("{alias} is not in the same cell as the previous primary"));
            continue;
        } else if e.avoid == Some(a) {
            reasons.push(format!("{alias} matches the primary alias to avoid"));
            continue;
        } else if t.r#type() != TabletType::Replica {
            reasons.push(format!("{alias} is not a replica"));
            continue;
        }
        candidates.push((alias, t));
    }
    if let ([(_, only)], true) = (candidates.as_slice(), e.tolerable_lag.is_zero())
        && let Some(alias) = only.alias.clone()
    {
        return Ok(alias);
    }
    let deadline = Deadline::after(run.bounds.wait_replicas);
    let probes = candidates.iter().map(|(alias, t)| async move {
        run.log.info(format!("getting replication position from {alias}"));
        let status = run
            .rpc_raw(
                &format!("replication status of {alias}"),
                run.tm(deadline.remaining()).replication_status(t),
            )
            .await?;
        match status {
            Ok(s) => {
                if s.backup_running {
                    return Ok(Err(format!("{alias} is taking a backup")));
                }
                if s.replication_lag_unknown {
                    return Ok(Err(format!(
                        "{alias} position known but unknown replication status"
                    )));
                }
                let lag = Duration::from_secs(u64::from(s.replication_lag_seconds));
                if !e.tolerable_lag.is_zero() && lag > e.tolerable_lag {
                    return Ok(Err(format!(
                        "{alias} has {lag:?} replication lag which is more than the tolerable amount"
                    )));
                }
                let parse = |what: &str, text: &str| {
                    Position::parse(text).map_err(|err| {
                        ReparentError::position(format!("cannot decode {what} {text:?} of {alias}"), err)
                    })
                };
                let executed = parse("position", &s.position)?;
                let combined = if s.relay_log_position.is_empty() {
                    executed.clone()
                } else {
                    parse("relay log position", &s.relay_log_position)?
                };
                Ok(Ok(Probe {
                    alias: (*alias).clone(),
                    positions: RelayLogPositions { combined, executed },
                }))
            }
            Err(err) if is_not_replica(&err) => {
                run.log.warn(format!(
                    "no replication status from {alias}, using empty gtid set"
                ));
                Ok(Ok(Probe {
                    alias: (*alias).clone(),
                    positions: RelayLogPositions::default(),
                }))
            }
            Err(err) => Err(ReparentError::tablet(
                format!("failed to get replication status from {alias}"),
                err,
            )),
        }
    });
    let mut valid: Vec<Probe> = Vec::new();
    for r in join_all(probes).await {
        match r? {
            Ok(p) => valid.push(p),
            Err(reason) => reasons.push(reason),
        }
    }
    if valid.is_empty() {
        return Err(ReparentError::NoValidCandidates {
            operation: "planned reparent",
            reason: format!("cannot find a tablet to reparent to: {}", reasons.join("; ")),
        });
    }
    // Rank by position: how many others each is at least as advanced as.
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    for p in &valid {
        let mut n = 0;
        for o in &valid {
            if o.alias != p.alias && p.positions.at_least(&o.positions).unwrap_or(false) {
                n += 1;
            }
        }
        rank.insert(p.alias.clone(), n);
    }
    let rule = |alias: &str| tablets.get(alias).map(|t| e.durability.promotion_rule(t));
    valid.sort_by(|a, b| {
        rule(&a.alias)
            .cmp(&rule(&b.alias))
            .then_with(|| rank[&b.alias].cmp(&rank[&a.alias]))
            .then_with(|| a.alias.cmp(&b.alias))
    });
    let best = &valid[0];
    tablets
        .get(&best.alias)
        .and_then(|t| t.alias.clone())
        .ok_or_else(|| ReparentError::Internal(format!("elected {} is not in the tablet map", best.alias)))
}

fn term(t: &Tablet) -> (i64, i32) {
    t.primary_term_start_time
        .as_ref()
        .map_or((0, 0), |vttime::Time { seconds, nanoseconds }| {
            (*seconds, *nanoseconds)
        })
}

/// The current primary: the PRIMARY-type tablet with the newest
/// `primary_term_start_time`; `None` when there is none or two tie.
pub(crate) fn find_current_primary<'t>(
    tablets: &'t BTreeMap<String, Tablet>,
    run: &Run<'_>,
) -> Option<&'t Tablet> {
    let mut current: Option<&Tablet> = None;
    for t in tablets.values().filter(|t| t.r#type() == TabletType::Primary) {
        match current {
            None => current = Some(t),
            Some(c) => match term(t).cmp(&term(c)) {
                Ordering::Greater => current = Some(t),
                Ordering::Less => {}
                Ordering::Equal => {
                    run.log.warn(format!(
                        "multiple primaries ({} and {}) are tied for primary_term_start_time; can't determine \
                         the true primary",
                        c.alias.as_ref().map(ToString::to_string).unwrap_or_default(),
                        t.alias.as_ref().map(ToString::to_string).unwrap_or_default()
                    ));
                    return None;
                }
            },
        }
    }
    current
}
