//! Vitess replication positions: `<flavor>/<value>`.
//!
//! | Text | Meaning |
//! |---|---|
//! | `` (empty) | no position (Vitess's zero position) |
//! | `MySQL56/<uuid>:<intervals>,...` | a MySQL GTID set ([`Mysql56GtidSet`]) |
//! | `MariaDB/<domain>-<server>-<seq>,...` | a MariaDB position ([`MariaDbGtidSet`]) |
//! | `FilePos/<file>:<pos>` | a binlog file coordinate ([`FilePos`]) |
//!
//! Every string either parses or yields a [`PositionError`] that says what is
//! wrong; nothing here panics on input. Printing is canonical, and
//! `Position::parse(&p.to_string()) == Ok(p)` for every position `p`.
//!
//! The set algebra (`contains`, `union`, `subtract`) works within one flavor;
//! mixing flavors is an error. [`Position::Empty`] behaves as the empty set of
//! any flavor.

use std::cmp::Ordering;
use std::fmt;

use thiserror::Error;

pub use super::mariadb::{MariaDbGtid, MariaDbGtidSet};
pub use super::mysql56::{Interval, Mysql56GtidSet, Sid};

/// Flavor prefix of MySQL GTID positions.
pub const MYSQL56_FLAVOR: &str = "MySQL56";
/// Flavor prefix of MariaDB GTID positions.
pub const MARIADB_FLAVOR: &str = "MariaDB";
/// Flavor prefix of file/offset positions.
pub const FILEPOS_FLAVOR: &str = "FilePos";

/// Why a position string or operation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PositionError {
    /// The text has no `<flavor>/` prefix.
    #[error("invalid position {0:?}: expected <flavor>/<value>")]
    MissingFlavor(String),
    /// The flavor prefix is not one we know.
    #[error("invalid position: unknown flavor {0:?} (expected MySQL56, MariaDB or FilePos)")]
    UnknownFlavor(String),
    /// A server UUID is malformed.
    #[error("invalid server UUID {0:?}: expected 8-4-4-4-12 hex digits")]
    InvalidUuid(String),
    /// A MySQL GTID set is malformed.
    #[error("invalid MySQL GTID set {input:?}: {reason}")]
    InvalidGtidSet {
        /// The whole set text.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A MariaDB GTID or position is malformed.
    #[error("invalid MariaDB position {input:?}: {reason}")]
    InvalidMariaDbGtid {
        /// The offending text.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A `FilePos` value is malformed.
    #[error("invalid file position {input:?}: {reason}")]
    InvalidFilePos {
        /// The offending text.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// Two positions of different flavors were combined.
    #[error("cannot combine a {left} position with a {right} position")]
    FlavorMismatch {
        /// Flavor of the left operand.
        left: &'static str,
        /// Flavor of the right operand.
        right: &'static str,
    },
    /// The operation has no meaning for this flavor.
    #[error("{op} is not defined for {flavor} positions")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The flavor.
        flavor: &'static str,
    },
}

/// A binlog file coordinate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePos {
    /// Binlog file name, e.g. `binlog.000042`.
    pub file: String,
    /// Byte offset in the file.
    pub pos: u64,
}

impl FilePos {
    /// Parses `<file>:<pos>` (the file name may itself contain `:`).
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let bad = |reason: &str| PositionError::InvalidFilePos {
            input: text.to_string(),
            reason: reason.to_string(),
        };
        let (file, pos) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected <file>:<pos>"))?;
        if file.is_empty() {
            return Err(bad("empty file name"));
        }
        if pos.is_empty() || !pos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("offset is not a decimal number"));
        }
        let pos = pos.parse().map_err(|_| bad("offset out of range"))?;
        Ok(FilePos {
            file: file.to_string(),
            pos,
        })
    }
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// A replication position of any flavor (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Position {
    /// No position: the empty string. Acts as the empty set of any flavor.
    #[default]
    Empty,
    /// A MySQL GTID set (possibly empty: `MySQL56/`).
    MySql56(Mysql56GtidSet),
    /// A MariaDB position (possibly empty: `MariaDB/`).
    MariaDb(MariaDbGtidSet),
    /// A binlog file coordinate.
    FilePos(FilePos),
}

impl Position {
    /// Parses Vitess's text form; the empty string (or only whitespace) is
    /// [`Position::Empty`].
    pub fn parse(text: &str) -> Result<Position, PositionError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Position::Empty);
        }
        let (flavor, value) = trimmed
            .split_once('/')
            .ok_or_else(|| PositionError::MissingFlavor(text.to_string()))?;
        match flavor {
            MYSQL56_FLAVOR => Ok(Position::MySql56(Mysql56GtidSet::parse(value)?)),
            MARIADB_FLAVOR => Ok(Position::MariaDb(MariaDbGtidSet::parse(value)?)),
            FILEPOS_FLAVOR => Ok(Position::FilePos(FilePos::parse(value)?)),
            other => Err(PositionError::UnknownFlavor(other.to_string())),
        }
    }

    /// The flavor name, or `""` for [`Position::Empty`].
    pub fn flavor(&self) -> &'static str {
        match self {
            Position::Empty => "",
            Position::MySql56(_) => MYSQL56_FLAVOR,
            Position::MariaDb(_) => MARIADB_FLAVOR,
            Position::FilePos(_) => FILEPOS_FLAVOR,
        }
    }

    /// Whether the position holds no transaction. A file position is never empty.
    pub fn is_empty(&self) -> bool {
        match self {
            Position::Empty => true,
            Position::MySql56(s) => s.is_empty(),
            Position::MariaDb(s) => s.is_empty(),
            Position::FilePos(_) => false,
        }
    }

    /// MySQL: number of transactions; MariaDB: number of domains; FilePos: 1.
    pub fn gtid_count(&self) -> u128 {
        match self {
            Position::Empty => 0,
            Position::MySql56(s) => s.count(),
            Position::MariaDb(s) => s.count(),
            Position::FilePos(_) => 1,
        }
    }

    fn mismatch(&self, other: &Position) -> PositionError {
        PositionError::FlavorMismatch {
            left: self.flavor(),
            right: other.flavor(),
        }
    }

    /// Whether every transaction of `other` is in `self`. For file positions:
    /// `self` is at or after `other` (same file and offset ≥, or a later file).
    pub fn contains(&self, other: &Position) -> Result<bool, PositionError> {
        match (self, other) {
            (_, o) if o.is_empty() => Ok(true),
            (Position::Empty, _) => Ok(false),
            (Position::MySql56(a), Position::MySql56(b)) => Ok(a.contains(b)),
            (Position::MariaDb(a), Position::MariaDb(b)) => Ok(a.contains(b)),
            (Position::FilePos(a), Position::FilePos(b)) => Ok(a >= b),
            (a, b) if a.is_empty() => Ok(b.is_empty()),
            (a, b) => Err(a.mismatch(b)),
        }
    }

    /// How `self` relates to `other`: `Equal`, `Greater` (strictly contains),
    /// `Less` (strictly contained) or `None` (each has something the other lacks).
    pub fn compare(&self, other: &Position) -> Result<Option<Ordering>, PositionError> {
        let ab = self.contains(other)?;
        let ba = other.contains(self)?;
        Ok(match (ab, ba) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        })
    }

    /// All transactions in either position. File positions: the later one.
    pub fn union(&self, other: &Position) -> Result<Position, PositionError> {
        match (self, other) {
            (Position::Empty, o) => Ok(o.clone()),
            (s, Position::Empty) => Ok(s.clone()),
            (Position::MySql56(a), Position::MySql56(b)) => Ok(Position::MySql56(a.union(b))),
            (Position::MariaDb(a), Position::MariaDb(b)) => Ok(Position::MariaDb(a.union(b))),
            (Position::FilePos(a), Position::FilePos(b)) => {
                Ok(Position::FilePos(if a >= b { a.clone() } else { b.clone() }))
            }
            (a, b) if a.is_empty() => Ok(b.clone()),
            (a, b) if b.is_empty() => Ok(a.clone()),
            (a, b) => Err(a.mismatch(b)),
        }
    }

    /// Transactions of `self` not in `other` (MariaDB: see [`MariaDbGtidSet::subtract`]).
    /// Not defined for file positions.
    pub fn subtract(&self, other: &Position) -> Result<Position, PositionError> {
        match (self, other) {
            (Position::FilePos(_), _) | (_, Position::FilePos(_)) => Err(PositionError::Unsupported {
                op: "subtract",
                flavor: FILEPOS_FLAVOR,
            }),
            (Position::Empty, _) => Ok(Position::Empty),
            (s, Position::Empty) => Ok(s.clone()),
            (Position::MySql56(a), Position::MySql56(b)) => Ok(Position::MySql56(a.subtract(b))),
            (Position::MariaDb(a), Position::MariaDb(b)) => Ok(Position::MariaDb(a.subtract(b))),
            (a, b) if a.is_empty() || b.is_empty() => Ok(a.clone()),
            (a, b) => Err(a.mismatch(b)),
        }
    }
}

/// Vitess's text form; [`Position::Empty`] prints as the empty string.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Empty => Ok(()),
            Position::MySql56(s) => write!(f, "{MYSQL56_FLAVOR}/{s}"),
            Position::MariaDb(s) => write!(f, "{MARIADB_FLAVOR}/{s}"),
            Position::FilePos(p) => write!(f, "{FILEPOS_FLAVOR}/{p}"),
        }
    }
}

/// Serialized as its text form.
impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serialized as `<file>:<pos>`.
impl serde::Serialize for FilePos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Position {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Position::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "00010203-0405-0607-0809-0a0b0c0d0e0f";

    fn p(text: &str) -> Position {
        Position::parse(text).expect("test input parses")
    }

    #[test]
    fn empty_string_is_the_empty_position() {
        assert_eq!(p(""), Position::Empty);
        assert_eq!(Position::Empty.to_string(), "");
        assert!(p("MySQL56/").is_empty());
        assert_eq!(p("MySQL56/").to_string(), "MySQL56/");
    }

    #[test]
    fn an_empty_mariadb_position_keeps_its_flavor() {
        let empty = p("MariaDB/");
        assert_eq!(empty, Position::MariaDb(MariaDbGtidSet::new()));
        assert_ne!(empty, Position::Empty);
        assert!(empty.is_empty());
        assert_eq!(empty.to_string(), "MariaDB/");
    }

    #[test]
    fn all_three_flavors_round_trip() {
        for text in [
            format!("MySQL56/{U1}:1-5:7"),
            "MariaDB/0-100-5,1-101-3".to_string(),
            "FilePos/binlog.000042:1234".to_string(),
        ] {
            assert_eq!(p(&text).to_string(), text);
        }
    }

    #[test]
    fn bad_positions_are_clear_errors() {
        let cases: [(&str, &str); 6] = [
            ("MySQL56", "expected <flavor>/<value>"),
            ("Oracle/1", "unknown flavor"),
            ("MySQL56/xyz:1", "invalid server UUID"),
            ("MariaDB/0-1", "invalid MariaDB position"),
            ("FilePos/binlog", "invalid file position"),
            ("FilePos/:5", "empty file name"),
        ];
        for (text, needle) in cases {
            let err = Position::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn mixing_flavors_is_an_error_but_empty_mixes_with_anything() {
        let my = p(&format!("MySQL56/{U1}:1"));
        let ma = p("MariaDB/0-1-1");
        assert!(my.contains(&ma).is_err());
        assert!(my.union(&ma).is_err());
        assert_eq!(my.union(&Position::Empty), Ok(my.clone()));
        assert_eq!(Position::Empty.contains(&p("MariaDB/")), Ok(true));
        assert_eq!(p("MySQL56/").union(&ma), Ok(ma.clone()));
    }

    #[test]
    fn compare_orders_positions() {
        let a = p(&format!("MySQL56/{U1}:1-5"));
        let b = p(&format!("MySQL56/{U1}:1-7"));
        let c = p(&format!("MySQL56/{U1}:1-4:6"));
        assert_eq!(a.compare(&b), Ok(Some(Ordering::Less)));
        assert_eq!(b.compare(&a), Ok(Some(Ordering::Greater)));
        assert_eq!(a.compare(&a), Ok(Some(Ordering::Equal)));
        assert_eq!(a.compare(&c), Ok(None));
        let f1 = p("FilePos/binlog.000001:900");
        let f2 = p("FilePos/binlog.000002:4");
        assert_eq!(f1.compare(&f2), Ok(Some(Ordering::Less)));
        assert!(f1.subtract(&f2).is_err());
    }
}
