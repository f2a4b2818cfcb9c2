//! MariaDB GTID positions in Vitess's text form, `MariaDB/<d>-<s>-<n>[,...]`.
//!
//! A position keeps the last GTID per replication domain and stands for
//! "every transaction of domain `d` up to sequence `n`". Containment compares
//! sequences per domain and ignores the server id, as Vitess's MariaDB flavor
//! does. Empty positions encode as `MariaDB/` (what vttablet returns for an
//! empty `gtid_binlog_pos`); the empty string decodes to the empty position.

use std::collections::BTreeMap;
use std::fmt;

use super::error::AgentError;

/// The flavor prefix of MariaDB positions.
pub const MARIADB_FLAVOR: &str = "MariaDB";

/// One MariaDB GTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    /// Replication domain (`gtid_domain_id`).
    pub domain: u32,
    /// `server_id` of the writer.
    pub server: u32,
    /// Sequence number within the domain.
    pub sequence: u64,
}

/// A MariaDB position: the last GTID of each domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariaDbPosition {
    /// Domain → its last GTID.
    gtids: BTreeMap<u32, Gtid>,
}

impl MariaDbPosition {
    /// Parses MariaDB's own list form (`0-100-5,1-101-7`, or empty), as in
    /// `@@gtid_binlog_pos`.
    pub fn parse_mariadb(text: &str) -> Result<Self, AgentError> {
        let mut gtids = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || AgentError::InvalidArgument(format!("parse error: invalid MariaDB GTID {part:?}"));
            let mut fields = part.split('-');
            let (Some(d), Some(s), Some(n), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad());
            };
            let gtid = Gtid {
                domain: d.parse().map_err(|_| bad())?,
                server: s.parse().map_err(|_| bad())?,
                sequence: n.parse().map_err(|_| bad())?,
            };
            if gtids.insert(gtid.domain, gtid).is_some() {
                return Err(AgentError::InvalidArgument(format!(
                    "parse error: duplicate MariaDB GTID domain {} in {text:?}",
                    gtid.domain
                )));
            }
        }
        Ok(MariaDbPosition { gtids })
    }

    /// Decodes Vitess's encoded form: `""` is the empty position,
    /// `MariaDB/<list>` a MariaDB position, and a string without a flavor is
    /// read as a MariaDB list (this tablet's default flavor). Other flavors
    /// cannot describe a MariaDB server and are rejected.
    pub fn decode(text: &str) -> Result<Self, AgentError> {
        let text = text.trim();
        match text.split_once('/') {
            None => MariaDbPosition::parse_mariadb(text),
            Some((MARIADB_FLAVOR, list)) => MariaDbPosition::parse_mariadb(list),
            Some((flavor, _)) => Err(AgentError::InvalidArgument(format!(
                "parse error: position {text:?} has flavor {flavor:?}, but this tablet runs MariaDB"
            ))),
        }
    }

    /// Vitess's encoded form, `MariaDB/<list>`.
    pub fn encode(&self) -> String {
        format!("{MARIADB_FLAVOR}/{self}")
    }

    /// True when there is no GTID.
    pub fn is_empty(&self) -> bool {
        self.gtids.is_empty()
    }

    /// The GTIDs, ordered by domain.
    pub fn gtids(&self) -> impl Iterator<Item = &Gtid> {
        self.gtids.values()
    }

    /// The last GTID of `domain`.
    pub fn get(&self, domain: u32) -> Option<&Gtid> {
        self.gtids.get(&domain)
    }

    /// True when every domain of `other` is here at an equal or higher sequence.
    pub fn contains(&self, other: &MariaDbPosition) -> bool {
        other.gtids.values().all(|g| {
            self.gtids
                .get(&g.domain)
                .is_some_and(|mine| mine.sequence >= g.sequence)
        })
    }

    /// Per domain, the GTID with the higher sequence.
    pub fn union(&self, other: &MariaDbPosition) -> MariaDbPosition {
        let mut gtids = self.gtids.clone();
        for g in other.gtids.values() {
            let keep_mine = gtids
                .get(&g.domain)
                .is_some_and(|mine| mine.sequence >= g.sequence);
            if !keep_mine {
                gtids.insert(g.domain, *g);
            }
        }
        MariaDbPosition { gtids }
    }

    /// The GTIDs here that `other` lacks: domains `other` does not have or
    /// has at a lower sequence.
    pub fn ahead_of(&self, other: &MariaDbPosition) -> MariaDbPosition {
        let gtids = self
            .gtids
            .values()
            .filter(|g| other.gtids.get(&g.domain).is_none_or(|o| o.sequence < g.sequence))
            .map(|g| (g.domain, *g))
            .collect();
        MariaDbPosition { gtids }
    }

    /// This position without the GTIDs last written by `server`.
    pub fn without_server(&self, server: u32) -> MariaDbPosition {
        let gtids = self
            .gtids
            .iter()
            .filter(|(_, g)| g.server != server)
            .map(|(d, g)| (*d, *g))
            .collect();
        MariaDbPosition { gtids }
    }
}

/// MariaDB's list form, `0-100-5,1-101-7` (empty for no GTID).
impl fmt::Display for MariaDbPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.gtids.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}-{}", g.domain, g.server, g.sequence)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str) -> MariaDbPosition {
        MariaDbPosition::decode(text).expect("valid position")
    }

    #[test]
    fn positions_round_trip_through_vitess_text() {
        assert_eq!(pos("MariaDB/0-100-5,1-101-7").encode(), "MariaDB/0-100-5,1-101-7");
        assert_eq!(pos("1-101-7,0-100-5").encode(), "MariaDB/0-100-5,1-101-7");
        assert_eq!(pos("").encode(), "MariaDB/");
        assert!(pos("MariaDB/").is_empty());
    }

    #[test]
    fn bad_positions_are_rejected() {
        for bad in [
            "MySQL56/3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
            "MariaDB/0-1",
            "0-1-x",
            "0-1-2,0-1-3",
        ] {
            assert!(MariaDbPosition::decode(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn containment_compares_sequences_per_domain() {
        assert!(pos("0-101-12").contains(&pos("0-100-11")));
        assert!(!pos("0-100-11").contains(&pos("0-101-12")));
        assert!(!pos("0-100-11").contains(&pos("1-100-1")));
        assert!(pos("0-100-11").contains(&pos("")));
        assert_eq!(
            pos("0-100-11,1-5-3").union(&pos("0-101-12")),
            pos("0-101-12,1-5-3")
        );
        assert_eq!(pos("0-100-11,1-5-3").ahead_of(&pos("0-101-12")), pos("1-5-3"));
        assert_eq!(pos("0-100-11,1-5-3").without_server(5), pos("0-100-11"));
    }
}
