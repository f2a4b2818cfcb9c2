//! Position logic of the reparent: ordering candidates, spotting split
//! brains and errant GTIDs.
//!
//! # Why not `Position::contains` as is
//!
//! A MariaDB position keeps one GTID per domain, and `Position::contains`
//! compares sequence numbers only (as Vitess does). `0-101-12` and
//! `0-102-12` then "contain" each other although two different servers
//! wrote transaction 12: two histories. For a reparent that is exactly the
//! case to refuse, so here a domain is covered only by a higher sequence, or
//! by the same sequence written by the same server ([`at_least`]). MySQL GTID
//! sets need no such care: set containment is exact.
//!
//! # Errant GTIDs among candidates
//!
//! [`find_errant`] follows Vitess's rule for ERS candidates: the candidate's
//! relay-log position, minus what its replication source wrote, minus what
//! *any* of the other candidates hold; what is left exists only on this
//! candidate. With a single other candidate and one position containing the
//! other, nothing is errant (one of them may simply lag). MariaDB: "what its
//! source wrote" = the domains whose last GTID carries the source's
//! `server_id`.

use std::cmp::Ordering;

use crate::mysql::position::{MariaDbGtid, MariaDbGtidSet, Sid};
use crate::mysql::{Position, PositionError};

/// Whether `a` holds every transaction of `b` (strict for MariaDB, see the
/// module docs). Mixing GTID flavors is an error; the empty position is
/// contained in everything.
pub fn at_least(a: &Position, b: &Position) -> Result<bool, PositionError> {
    match (a, b) {
        (Position::MariaDb(a), Position::MariaDb(b)) => Ok(mariadb_at_least(a, b)),
        _ => a.contains(b),
    }
}

fn mariadb_covers(ours: Option<&MariaDbGtid>, theirs: &MariaDbGtid) -> bool {
    ours.is_some_and(|o| {
        o.sequence > theirs.sequence || (o.sequence == theirs.sequence && o.server == theirs.server)
    })
}

fn mariadb_at_least(a: &MariaDbGtidSet, b: &MariaDbGtidSet) -> bool {
    b.gtids()
        .all(|theirs| mariadb_covers(a.get(theirs.domain), theirs))
}

/// How `a` relates to `b` under [`at_least`]: `None` = neither holds the
/// other (divergent histories).
pub fn compare(a: &Position, b: &Position) -> Result<Option<Ordering>, PositionError> {
    Ok(match (at_least(a, b)?, at_least(b, a)?) {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Greater),
        (false, true) => Some(Ordering::Less),
        (false, false) => None,
    })
}

/// Whether a position is a GTID position (MySQL or MariaDB) rather than a
/// file position or nothing.
pub fn is_gtid(p: &Position) -> bool {
    matches!(p, Position::MySql56(_) | Position::MariaDb(_))
}

/// A candidate's positions (Vitess `RelayLogPositions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayLogPositions {
    /// Everything received: relay log (retrieved) ∪ executed; for a demoted
    /// primary its executed position; for file-position shards the executed
    /// file position.
    pub combined: Position,
    /// What the SQL thread applied (empty for a demoted primary and for
    /// file-position shards).
    pub executed: Position,
}

impl RelayLogPositions {
    /// True when nothing was received.
    pub fn is_zero(&self) -> bool {
        self.combined.is_empty()
    }

    /// Vitess `AtLeast`: equal combined positions are ordered by what was
    /// applied (prefers a tablet without SQL delay); otherwise by combined.
    pub fn at_least(&self, other: &RelayLogPositions) -> Result<bool, PositionError> {
        if compare(&self.combined, &other.combined)? == Some(Ordering::Equal) {
            return at_least(&self.executed, &other.executed);
        }
        at_least(&self.combined, &other.combined)
    }
}

/// Who wrote a candidate's relay log: the source whose own transactions are
/// not held against the candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceIdentity<'a> {
    /// MySQL: the source's server UUID (empty or the zero UUID = unknown).
    pub uuid: &'a str,
    /// MariaDB: the source's `server_id` (0 = unknown).
    pub server_id: u32,
}

/// The errant GTIDs of a candidate (module docs); `None` when there are none.
pub fn find_errant(
    candidate: &Position,
    source: SourceIdentity<'_>,
    others: &[Position],
) -> Result<Option<Position>, PositionError> {
    if others.is_empty() || candidate.is_empty() {
        return Ok(None);
    }
    if let [only] = others
        && (at_least(candidate, only)? || at_least(only, candidate)?)
    {
        return Ok(None);
    }
    let rest = match candidate {
        Position::MySql56(set) => {
            let mut diff = match Sid::parse(source.uuid) {
                Ok(sid) => set.remove_sid(&sid),
                Err(_) => set.clone(),
            };
            for other in others {
                match other {
                    Position::MySql56(o) => diff = diff.subtract(o),
                    Position::Empty => {}
                    o => {
                        return Err(PositionError::FlavorMismatch {
                            left: candidate.flavor(),
                            right: o.flavor(),
                        });
                    }
                }
            }
            Position::MySql56(diff)
        }
        Position::MariaDb(set) => {
            let diff = if source.server_id != 0 {
                set.remove_server(source.server_id)
            } else {
                set.clone()
            };
            let mut remaining: Vec<MariaDbGtid> = diff.gtids().copied().collect();
            for other in others {
                match other {
                    Position::MariaDb(o) => remaining.retain(|g| !mariadb_covers(o.get(g.domain), g)),
                    Position::Empty => {}
                    o => {
                        return Err(PositionError::FlavorMismatch {
                            left: candidate.flavor(),
                            right: o.flavor(),
                        });
                    }
                }
            }
            Position::MariaDb(MariaDbGtidSet::from_gtids(remaining))
        }
        // File positions carry no transaction identities.
        Position::FilePos(_) | Position::Empty => return Ok(None),
    };
    Ok(if rest.is_empty() { None } else { Some(rest) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "00000000-0000-0000-0000-000000000001";
    const U2: &str = "00000000-0000-0000-0000-000000000002";
    const U3: &str = "00000000-0000-0000-0000-000000000003";

    fn p(text: &str) -> Position {
        Position::parse(text).expect("test position parses")
    }

    #[test]
    fn mariadb_same_sequence_from_two_servers_is_divergence() {
        let a = p("MariaDB/0-101-12");
        let b = p("MariaDB/0-102-12");
        assert_eq!(compare(&a, &b), Ok(None));
        assert_eq!(compare(&a, &p("MariaDB/0-101-11")), Ok(Some(Ordering::Greater)));
        assert_eq!(compare(&a, &p("MariaDB/0-102-13")), Ok(Some(Ordering::Less)));
        assert_eq!(compare(&a, &a), Ok(Some(Ordering::Equal)));
        // Different domains ahead on each side: divergent.
        assert_eq!(
            compare(&p("MariaDB/0-101-12,1-103-1"), &p("MariaDB/0-102-13")),
            Ok(None)
        );
    }

    #[test]
    fn mysql_sets_compare_by_containment() {
        let a = p(&format!("MySQL56/{U1}:1-10"));
        let b = p(&format!("MySQL56/{U1}:1-8"));
        let c = p(&format!("MySQL56/{U1}:1-8,{U2}:1"));
        assert_eq!(compare(&a, &b), Ok(Some(Ordering::Greater)));
        assert_eq!(compare(&a, &c), Ok(None));
        assert!(compare(&a, &p("MariaDB/0-1-1")).is_err());
    }

    #[test]
    fn relay_positions_break_ties_on_what_was_applied() {
        let received = p(&format!("MySQL56/{U1}:1-10"));
        let fast = RelayLogPositions {
            combined: received.clone(),
            executed: received.clone(),
        };
        let delayed = RelayLogPositions {
            combined: received,
            executed: p(&format!("MySQL56/{U1}:1-4")),
        };
        assert_eq!(fast.at_least(&delayed), Ok(true));
        assert_eq!(delayed.at_least(&fast), Ok(false));
    }

    #[test]
    fn mysql_errant_gtids_are_those_no_other_candidate_has() {
        let cand = p(&format!("MySQL56/{U1}:1-10,{U3}:1-2"));
        let others = [p(&format!("MySQL56/{U1}:1-10")), p(&format!("MySQL56/{U1}:1-9"))];
        let source = SourceIdentity {
            uuid: U1,
            server_id: 0,
        };
        assert_eq!(
            find_errant(&cand, source, &others),
            Ok(Some(p(&format!("MySQL56/{U3}:1-2"))))
        );
        // A transaction another candidate has is not errant.
        let others = [
            p(&format!("MySQL56/{U1}:1-10,{U3}:1-2")),
            p(&format!("MySQL56/{U1}:1-9")),
        ];
        assert_eq!(find_errant(&cand, source, &others), Ok(None));
    }

    #[test]
    fn a_single_comparable_peer_is_never_evidence() {
        let cand = p(&format!("MySQL56/{U1}:1-10,{U3}:1"));
        let lagging = [p(&format!("MySQL56/{U1}:1-9"))];
        assert_eq!(find_errant(&cand, SourceIdentity::default(), &lagging), Ok(None));
        // Incomparable single peer: the extra transaction is errant.
        let diverged = [p(&format!("MySQL56/{U1}:1-10,{U2}:1"))];
        assert_eq!(
            find_errant(&cand, SourceIdentity::default(), &diverged),
            Ok(Some(p(&format!("MySQL56/{U3}:1"))))
        );
    }

    #[test]
    fn the_sources_own_transactions_are_not_errant() {
        let cand = p(&format!("MySQL56/{U1}:1-12"));
        let others = [p(&format!("MySQL56/{U1}:1-10")), p(&format!("MySQL56/{U1}:1-9"))];
        assert_eq!(
            find_errant(
                &cand,
                SourceIdentity {
                    uuid: U1,
                    server_id: 0
                },
                &others
            ),
            Ok(None)
        );
        // Without the source exclusion (a lagging candidate) it would count.
        assert!(
            find_errant(&cand, SourceIdentity::default(), &others)
                .expect("same flavor")
                .is_some()
        );
    }

    #[test]
    fn mariadb_errant_gtids_use_server_ids() {
        // Replica 102 wrote 0-102-13 locally; its source is 101.
        let cand = p("MariaDB/0-102-13");
        let others = [p("MariaDB/0-101-12"), p("MariaDB/0-101-12")];
        let source = SourceIdentity {
            uuid: "",
            server_id: 101,
        };
        assert_eq!(
            find_errant(&cand, source, &others),
            Ok(Some(p("MariaDB/0-102-13")))
        );
        // Received from the source (last GTID written by 101): not errant.
        let cand = p("MariaDB/0-101-14");
        assert_eq!(find_errant(&cand, source, &others), Ok(None));
        // Same sequence, other server: another history, errant.
        let cand = p("MariaDB/0-103-12");
        assert_eq!(
            find_errant(&cand, source, &others),
            Ok(Some(p("MariaDB/0-103-12")))
        );
    }
}
