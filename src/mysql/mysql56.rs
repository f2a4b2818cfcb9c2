//! MySQL 5.6+ GTID sets: `uuid:interval[:interval]...[,uuid:...]`.
//!
//! A set is kept normalised: per server UUID the intervals are sorted,
//! disjoint and never adjacent (`1-3:4-5` is stored as `1-5`), and a UUID
//! with no interval is not stored. Two sets are therefore equal exactly when
//! they contain the same transactions, and printing is canonical: UUIDs in
//! byte order, lowercase, intervals ascending.

use std::collections::BTreeMap;
use std::fmt;

use super::position::PositionError;

/// Largest sequence number MySQL accepts (the interval end is a signed 64-bit value).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// A MySQL server UUID (`server_uuid`), the source part of a GTID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sid(pub [u8; 16]);

impl Sid {
    /// Parses the 36-character hyphenated form (`8-4-4-4-12` hex digits, any case).
    pub fn parse(text: &str) -> Result<Sid, PositionError> {
        let bad = || PositionError::InvalidUuid(text.to_string());
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b != b'-' {
                    return Err(bad());
                }
                continue;
            }
            let v = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(bad()),
            };
            let byte = &mut out[nibbles / 2];
            *byte = (*byte << 4) | v;
            nibbles += 1;
        }
        Ok(Sid(out))
    }
}

/// Prints the lowercase hyphenated form.
impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An inclusive range of sequence numbers, `1 <= start <= end <= MAX_SEQUENCE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    /// First sequence number in the range.
    pub start: u64,
    /// Last sequence number in the range (inclusive).
    pub end: u64,
}

impl Interval {
    /// Number of transactions in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: an interval holds at least one transaction.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A normalised MySQL GTID set (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mysql56GtidSet {
    /// Per server UUID, sorted disjoint non-adjacent intervals; never an empty list.
    sets: BTreeMap<Sid, Vec<Interval>>,
}

fn parse_seq(text: &str, whole: &str) -> Result<u64, PositionError> {
    let invalid = |why: &str| PositionError::InvalidGtidSet {
        input: whole.to_string(),
        reason: format!("{why} in interval {text:?}"),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        if text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(PositionError::InvalidGtidSet {
                input: whole.to_string(),
                reason: format!("tagged GTIDs ({text:?}) are not supported"),
            });
        }
        return Err(invalid("expected a decimal number"));
    }
    let v: u64 = text.parse().map_err(|_| invalid("number out of range"))?;
    if v > MAX_SEQUENCE {
        return Err(invalid("number out of range"));
    }
    Ok(v)
}

impl Mysql56GtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses MySQL's text form. Whitespace around entries (MySQL prints
    /// `gtid_executed` with newlines) and empty entries are ignored, a UUID may
    /// appear more than once, intervals may overlap or come in any order, and
    /// an interval whose end is below its start is dropped (as MySQL does).
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let mut set = Mysql56GtidSet::new();
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let mut parts = entry.split(':');
            let uuid = parts.next().unwrap_or_default().trim();
            let sid = Sid::parse(uuid)?;
            let mut any = false;
            for iv in parts {
                any = true;
                let iv = iv.trim();
                let (start, end) = match iv.split_once('-') {
                    Some((a, b)) => (parse_seq(a, text)?, parse_seq(b, text)?),
                    None => {
                        let v = parse_seq(iv, text)?;
                        (v, v)
                    }
                };
                if start == 0 {
                    return Err(PositionError::InvalidGtidSet {
                        input: text.to_string(),
                        reason: format!("interval {iv:?} starts at 0"),
                    });
                }
                if end < start {
                    continue;
                }
                set.add_interval(sid, Interval { start, end });
            }
            if !any {
                return Err(PositionError::InvalidGtidSet {
                    input: text.to_string(),
                    reason: format!("entry {entry:?} has no interval (expected uuid:interval)"),
                });
            }
        }
        Ok(set)
    }

    /// Whether the set holds no transaction.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Number of transactions in the set.
    pub fn count(&self) -> u128 {
        self.sets
            .values()
            .flat_map(|ivs| ivs.iter())
            .map(|iv| u128::from(iv.len()))
            .sum()
    }

    /// Server UUIDs present, in order.
    pub fn sids(&self) -> impl Iterator<Item = &Sid> {
        self.sets.keys()
    }

    /// The intervals of one server UUID (empty if absent).
    pub fn intervals(&self, sid: &Sid) -> &[Interval] {
        self.sets.get(sid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Adds a range of transactions of `sid`.
    pub fn add_interval(&mut self, sid: Sid, iv: Interval) {
        let merged = union_intervals(self.intervals(&sid), &[iv]);
        self.sets.insert(sid, merged);
    }

    /// Whether the single transaction `sid:seq` is in the set.
    pub fn contains_gtid(&self, sid: &Sid, seq: u64) -> bool {
        self.intervals(sid)
            .iter()
            .any(|iv| iv.start <= seq && seq <= iv.end)
    }

    /// Whether every transaction of `other` is in `self`.
    pub fn contains(&self, other: &Mysql56GtidSet) -> bool {
        other.sets.iter().all(|(sid, theirs)| {
            let ours = self.intervals(sid);
            theirs.iter().all(|t| {
                // `ours` is sorted and disjoint: the only candidate is the
                // last interval starting at or before `t.start`.
                let idx = ours.partition_point(|o| o.start <= t.start);
                idx > 0 && ours[idx - 1].end >= t.end
            })
        })
    }

    /// All transactions in either set.
    pub fn union(&self, other: &Mysql56GtidSet) -> Mysql56GtidSet {
        let mut out = self.clone();
        for (sid, ivs) in &other.sets {
            let merged = union_intervals(out.intervals(sid), ivs);
            out.sets.insert(*sid, merged);
        }
        out
    }

    /// Transactions in `self` that are not in `other`.
    pub fn subtract(&self, other: &Mysql56GtidSet) -> Mysql56GtidSet {
        let mut out = Mysql56GtidSet::new();
        for (sid, ivs) in &self.sets {
            let rest = subtract_intervals(ivs, other.intervals(sid));
            if !rest.is_empty() {
                out.sets.insert(*sid, rest);
            }
        }
        out
    }

    /// The set without any transaction of `sid`.
    pub fn remove_sid(&self, sid: &Sid) -> Mysql56GtidSet {
        let mut out = self.clone();
        out.sets.remove(sid);
        out
    }
}

/// Canonical text: `uuid:1-5:7,uuid2:3`, empty string for the empty set.
impl fmt::Display for Mysql56GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (sid, ivs)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{sid}")?;
            for iv in ivs {
                if iv.start == iv.end {
                    write!(f, ":{}", iv.start)?;
                } else {
                    write!(f, ":{}-{}", iv.start, iv.end)?;
                }
            }
        }
        Ok(())
    }
}

/// Merges two normalised interval lists into one.
fn union_intervals(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut all: Vec<Interval> = a.iter().chain(b.iter()).copied().collect();
    all.sort_by_key(|iv| iv.start);
    let mut out: Vec<Interval> = Vec::with_capacity(all.len());
    for iv in all {
        match out.last_mut() {
            // Overlapping or adjacent (end + 1 cannot overflow: end <= i64::MAX).
            Some(last) if iv.start <= last.end + 1 => last.end = last.end.max(iv.end),
            _ => out.push(iv),
        }
    }
    out
}

/// `a` minus `b`, both normalised.
fn subtract_intervals(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut j = 0;
    for iv in a {
        let mut start = iv.start;
        // Cuts that end before this interval cannot touch it or any later one.
        while j < b.len() && b[j].end < start {
            j += 1;
        }
        let mut covered_to_end = false;
        for cut in &b[j..] {
            if cut.start > iv.end {
                break;
            }
            if cut.start > start {
                out.push(Interval {
                    start,
                    end: cut.start - 1,
                });
            }
            if cut.end >= iv.end {
                covered_to_end = true;
                break;
            }
            start = cut.end + 1;
        }
        if !covered_to_end {
            out.push(Interval { start, end: iv.end });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "00010203-0405-0607-0809-0a0b0c0d0e0f";
    const U2: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn set(text: &str) -> Mysql56GtidSet {
        Mysql56GtidSet::parse(text).expect("test input parses")
    }

    #[test]
    fn parses_and_prints_canonically() {
        let s = set(&format!(" {U2}:7:1-5 ,\n{U1}:10-20:3 "));
        assert_eq!(s.to_string(), format!("{U1}:3:10-20,{U2}:1-5:7"));
        assert_eq!(s.count(), 11 + 1 + 5 + 1);
    }

    #[test]
    fn merges_repeated_uuids_and_adjacent_intervals() {
        let s = set(&format!("{U1}:1-5,{U1}:6-8:10,{U1}:3-4"));
        assert_eq!(s.to_string(), format!("{U1}:1-8:10"));
    }

    #[test]
    fn uppercase_uuid_is_accepted_and_printed_lowercase() {
        let s = set(&format!("{}:1", U2.to_uppercase()));
        assert_eq!(s.to_string(), format!("{U2}:1"));
    }

    #[test]
    fn reversed_interval_is_dropped_like_mysql() {
        assert!(set(&format!("{U1}:5-3")).is_empty());
    }

    #[test]
    fn bad_sets_are_errors() {
        for bad in [
            "x",
            "nonsense:1",
            U1,
            &format!("{U1}:"),
            &format!("{U1}:0"),
            &format!("{U1}:a-3"),
            &format!("{U1}:1-"),
            &format!("{U1}:99999999999999999999"),
            &format!("{U1}:9223372036854775808"),
            &format!("{U1}:tag:1-3"),
        ] {
            assert!(Mysql56GtidSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tagged_gtids_get_a_clear_error() {
        let err = Mysql56GtidSet::parse(&format!("{U1}:mytag:1-3")).expect_err("tag");
        assert!(err.to_string().contains("tagged GTIDs"), "{err}");
    }

    #[test]
    fn contains_union_subtract() {
        let a = set(&format!("{U1}:1-10,{U2}:1-3"));
        let b = set(&format!("{U1}:3-5:8"));
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert_eq!(a.subtract(&b).to_string(), format!("{U1}:1-2:6-7:9-10,{U2}:1-3"));
        assert_eq!(
            b.union(&set(&format!("{U1}:6-7"))).to_string(),
            format!("{U1}:3-8")
        );
        assert!(a.subtract(&a).is_empty());
        assert_eq!(
            a.remove_sid(&Sid::parse(U2).expect("uuid")).to_string(),
            format!("{U1}:1-10")
        );
    }
}
