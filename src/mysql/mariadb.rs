//! MariaDB GTID positions: `domain-server-sequence[,domain-server-sequence]...`.
//!
//! A MariaDB position (`gtid_current_pos` / `gtid_binlog_pos`) names, for each
//! replication domain, the last transaction applied in it. Sequence numbers are
//! ordered within a domain regardless of the server that wrote them, so the
//! position stands for "every transaction of domain `d` up to sequence `n`".
//! This module treats it as a set with that meaning:
//!
//! - `contains`: for every domain of the other position, this one has the
//!   domain with a sequence at least as high (the server id is not compared,
//!   as in Vitess);
//! - `union`: per domain, the entry with the higher sequence (on a tie, the
//!   higher server id, so that union is commutative);
//! - `subtract`: the entries of `self` whose domain the other position lacks or
//!   holds at a lower sequence. The exact difference of two prefixes is a
//!   range that one GTID per domain cannot express; this keeps the last GTID
//!   of that range, which preserves the laws `a.contains(a - b)`,
//!   `(a - b).is_empty() == b.contains(a)` and `((a - b) ∪ b).contains(a)`.
//!
//! One entry per domain: a repeated domain is an error.

use std::collections::BTreeMap;
use std::fmt;

use super::position::PositionError;

/// One MariaDB GTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaDbGtid {
    /// Replication domain (`gtid_domain_id`).
    pub domain: u32,
    /// `server_id` of the server that wrote the transaction.
    pub server: u32,
    /// Sequence number within the domain.
    pub sequence: u64,
}

impl MariaDbGtid {
    /// Parses `domain-server-sequence`.
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let bad = |reason: &str| PositionError::InvalidMariaDbGtid {
            input: text.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = text.split('-');
        let (Some(d), Some(s), Some(n), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected domain-server-sequence"));
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(d) || !digits(s) || !digits(n) {
            return Err(bad("expected three decimal numbers"));
        }
        Ok(MariaDbGtid {
            domain: d.parse().map_err(|_| bad("domain out of range"))?,
            server: s.parse().map_err(|_| bad("server id out of range"))?,
            sequence: n.parse().map_err(|_| bad("sequence out of range"))?,
        })
    }
}

impl fmt::Display for MariaDbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

/// A MariaDB position: the last GTID of each domain (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MariaDbGtidSet {
    /// Last GTID per domain, keyed by domain.
    domains: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidSet {
    /// The empty position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `d-s-n,d-s-n`; whitespace around entries and empty entries are
    /// ignored; a domain given twice is an error.
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let mut out = MariaDbGtidSet::new();
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let gtid = MariaDbGtid::parse(entry)?;
            if out.domains.insert(gtid.domain, gtid).is_some() {
                return Err(PositionError::InvalidMariaDbGtid {
                    input: text.to_string(),
                    reason: format!("domain {} appears more than once", gtid.domain),
                });
            }
        }
        Ok(out)
    }

    /// Builds a position from GTIDs; a later GTID of the same domain replaces
    /// an earlier one.
    pub fn from_gtids(gtids: impl IntoIterator<Item = MariaDbGtid>) -> Self {
        MariaDbGtidSet {
            domains: gtids.into_iter().map(|g| (g.domain, g)).collect(),
        }
    }

    /// Whether no domain is present.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The GTIDs, by domain.
    pub fn gtids(&self) -> impl Iterator<Item = &MariaDbGtid> {
        self.domains.values()
    }

    /// The last GTID of a domain.
    pub fn get(&self, domain: u32) -> Option<&MariaDbGtid> {
        self.domains.get(&domain)
    }

    /// Number of domains present (MariaDB positions carry no transaction count).
    pub fn count(&self) -> u128 {
        self.domains.len() as u128
    }

    /// Whether `other`'s transactions are all in `self` (per-domain sequence comparison).
    pub fn contains(&self, other: &MariaDbGtidSet) -> bool {
        other.domains.iter().all(|(d, theirs)| {
            self.domains
                .get(d)
                .is_some_and(|ours| ours.sequence >= theirs.sequence)
        })
    }

    /// Per domain, the more advanced GTID.
    pub fn union(&self, other: &MariaDbGtidSet) -> MariaDbGtidSet {
        let mut out = self.clone();
        for (d, theirs) in &other.domains {
            let keep = match out.domains.get(d) {
                Some(ours) => (ours.sequence, ours.server) < (theirs.sequence, theirs.server),
                None => true,
            };
            if keep {
                out.domains.insert(*d, *theirs);
            }
        }
        out
    }

    /// Entries of `self` that `other` does not reach (see the module docs).
    pub fn subtract(&self, other: &MariaDbGtidSet) -> MariaDbGtidSet {
        MariaDbGtidSet {
            domains: self
                .domains
                .iter()
                .filter(|(d, ours)| {
                    other
                        .domains
                        .get(d)
                        .is_none_or(|theirs| theirs.sequence < ours.sequence)
                })
                .map(|(d, g)| (*d, *g))
                .collect(),
        }
    }

    /// The position without the domains whose last GTID was written by `server`.
    pub fn remove_server(&self, server: u32) -> MariaDbGtidSet {
        MariaDbGtidSet {
            domains: self
                .domains
                .iter()
                .filter(|(_, g)| g.server != server)
                .map(|(d, g)| (*d, *g))
                .collect(),
        }
    }
}

/// Canonical text: entries sorted by domain, comma-separated.
impl fmt::Display for MariaDbGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str) -> MariaDbGtidSet {
        MariaDbGtidSet::parse(text).expect("test input parses")
    }

    #[test]
    fn parses_and_prints_sorted_by_domain() {
        assert_eq!(pos(" 1-2-3 , 0-100-5").to_string(), "0-100-5,1-2-3");
    }

    #[test]
    fn bad_positions_are_errors() {
        for bad in [
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0--2",
            "0-1-",
            "4294967296-1-1",
            "0-1-5,0-2-6",
            "-1-2",
        ] {
            assert!(MariaDbGtidSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contains_compares_sequences_per_domain() {
        assert!(pos("0-1-10,1-1-3").contains(&pos("0-2-9")));
        assert!(pos("0-1-10").contains(&pos("0-2-10")));
        assert!(!pos("0-1-10").contains(&pos("0-1-11")));
        assert!(!pos("0-1-10").contains(&pos("1-1-1")));
    }

    #[test]
    fn union_and_subtract() {
        assert_eq!(
            pos("0-1-10,1-1-3").union(&pos("0-2-12,2-5-1")).to_string(),
            "0-2-12,1-1-3,2-5-1"
        );
        assert_eq!(pos("0-1-10,1-1-3").subtract(&pos("0-2-12")).to_string(), "1-1-3");
        assert_eq!(
            pos("0-1-10,1-1-3").subtract(&pos("0-2-9,1-1-3")).to_string(),
            "0-1-10"
        );
        assert_eq!(pos("0-1-10,1-7-3").remove_server(7).to_string(), "0-1-10");
    }

    #[test]
    fn the_empty_position_is_in_every_position_and_holds_none() {
        let empty = MariaDbGtidSet::new();
        assert_eq!(pos(""), empty);
        assert_eq!(pos(" , "), empty);
        assert!(pos("0-100-11").contains(&empty));
        assert!(empty.contains(&empty));
        assert!(!empty.contains(&pos("0-100-1")));
        assert_eq!(empty.union(&pos("0-100-11")), pos("0-100-11"));
        assert_eq!(pos("0-100-11").subtract(&empty), pos("0-100-11"));
        assert!(pos("0-100-11").subtract(&pos("0-101-11")).is_empty());
    }

    #[test]
    fn union_on_equal_sequences_keeps_the_higher_server_either_way() {
        assert_eq!(pos("0-100-12").union(&pos("0-101-12")), pos("0-101-12"));
        assert_eq!(pos("0-101-12").union(&pos("0-100-12")), pos("0-101-12"));
    }
}
