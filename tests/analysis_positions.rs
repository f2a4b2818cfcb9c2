//! Property tests of replication positions: the set algebra against a naive
//! model, the algebra laws for both GTID flavors, print/parse round trips,
//! and a fuzz run of the parsers on arbitrary input (no panic, ever).

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use vtorc::mysql::mariadb::{MariaDbGtid, MariaDbGtidSet};
use vtorc::mysql::mysql56::{Interval, Mysql56GtidSet, Sid};
use vtorc::mysql::{ErrantGtidInput, Position, ServerIdentity, errant_gtids};

/// Cases per algebra property.
const ALGEBRA_CASES: u32 = 2_000;
/// Cases of each parser fuzz run.
const FUZZ_CASES: u32 = 30_000;

const UUIDS: [&str; 3] = [
    "00000000-0000-0000-0000-000000000001",
    "3e11fa47-71ca-11e1-9e33-c80aa9429562",
    "ffffffff-ffff-ffff-ffff-fffffffffffe",
];

fn sid(i: usize) -> Sid {
    Sid::parse(UUIDS[i]).expect("constant uuids parse")
}

/// A MySQL GTID set as (uuid index, start, len) triples.
fn mysql_set() -> impl Strategy<Value = Mysql56GtidSet> {
    prop::collection::vec((0..UUIDS.len(), 1u64..60, 0u64..15), 0..6).prop_map(|ranges| {
        let mut s = Mysql56GtidSet::new();
        for (u, start, len) in ranges {
            s.add_interval(
                sid(u),
                Interval {
                    start,
                    end: start + len,
                },
            );
        }
        s
    })
}

/// The naive model: every (uuid, sequence) pair.
fn model(s: &Mysql56GtidSet) -> BTreeSet<(Sid, u64)> {
    s.sids()
        .flat_map(|sid| {
            s.intervals(sid)
                .iter()
                .flat_map(move |iv| (iv.start..=iv.end).map(move |n| (*sid, n)))
        })
        .collect()
}

fn mariadb_set() -> impl Strategy<Value = MariaDbGtidSet> {
    prop::collection::btree_map(0u32..4, (1u32..4, 0u64..30), 0..4).prop_map(|m| {
        MariaDbGtidSet::from_gtids(m.into_iter().map(|(domain, (server, sequence))| MariaDbGtid {
            domain,
            server,
            sequence,
        }))
    })
}

/// Checks `property` on [`ALGEBRA_CASES`] random values of `strategy`;
/// fails the test with the (shrunk) counterexample.
fn holds<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> TestCaseResult) {
    runner(ALGEBRA_CASES)
        .run(&strategy, property)
        .expect("property holds");
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn mysql_set_operations_agree_with_the_naive_model() {
    holds((mysql_set(), mysql_set()), |(a, b)| {
        let (ma, mb) = (model(&a), model(&b));
        prop_assert_eq!(
            model(&a.union(&b)),
            ma.union(&mb).copied().collect::<BTreeSet<_>>()
        );
        prop_assert_eq!(
            model(&a.subtract(&b)),
            ma.difference(&mb).copied().collect::<BTreeSet<_>>()
        );
        prop_assert_eq!(a.contains(&b), mb.is_subset(&ma));
        prop_assert_eq!(a.count(), ma.len() as u128);
        prop_assert_eq!(a.is_empty(), ma.is_empty());
        Ok(())
    });
}

#[test]
fn mysql_sets_are_canonical_so_equal_sets_compare_equal() {
    holds((mysql_set(), mysql_set()), |(a, b)| {
        prop_assert_eq!(a == b, model(&a) == model(&b));
        prop_assert_eq!(
            Mysql56GtidSet::parse(&a.to_string()).expect("printed sets parse"),
            a
        );
        Ok(())
    });
}

/// The laws both flavors satisfy, checked through `Position`.
fn check_laws(a: &Position, b: &Position, c: &Position) -> Result<(), TestCaseError> {
    let u = |x: &Position, y: &Position| x.union(y).expect("same flavor");
    let sub = |x: &Position, y: &Position| x.subtract(y).expect("same flavor");
    let has = |x: &Position, y: &Position| x.contains(y).expect("same flavor");
    // Union: commutative, associative, idempotent, an upper bound.
    prop_assert_eq!(u(a, b), u(b, a));
    prop_assert_eq!(u(&u(a, b), c), u(a, &u(b, c)));
    prop_assert_eq!(u(a, a), a.clone());
    prop_assert!(has(&u(a, b), a) && has(&u(a, b), b));
    // Contains: reflexive, transitive, and the order union induces.
    prop_assert!(has(a, a));
    if has(a, b) && has(b, c) {
        prop_assert!(has(a, c));
    }
    // (MariaDB: equal sequences from different servers are mutually contained
    // but distinct values, so this is stated with `contains`, not `==`.)
    prop_assert_eq!(has(a, b), has(a, &u(a, b)));
    // Subtract: what is left is in `a`, empty exactly when `b` covers `a`,
    // and adding `b` back covers `a`.
    prop_assert!(has(a, &sub(a, b)));
    prop_assert_eq!(sub(a, b).is_empty(), has(b, a));
    prop_assert!(has(&u(&sub(a, b), b), a));
    prop_assert!(sub(a, a).is_empty());
    // Compare is antisymmetric.
    let ab = a.compare(b).expect("same flavor");
    let ba = b.compare(a).expect("same flavor");
    prop_assert_eq!(ab.map(|o| o.reverse()), ba);
    // Printing round-trips.
    prop_assert_eq!(
        Position::parse(&a.to_string()).expect("printed positions parse"),
        a.clone()
    );
    Ok(())
}

/// [`check_laws`] on random triples of sets drawn from `sets()`, each made a position by
/// `position`.
fn algebra_laws<S: Strategy>(sets: impl Fn() -> S, position: fn(S::Value) -> Position) {
    holds((sets(), sets(), sets()), |(a, b, c)| {
        check_laws(&position(a), &position(b), &position(c))
    });
}

#[test]
fn mysql_position_algebra_laws() {
    algebra_laws(mysql_set, Position::MySql56);
}

#[test]
fn mysql_subtract_is_exact() {
    holds((mysql_set(), mysql_set()), |(a, b)| {
        prop_assert_eq!(a.subtract(&b).union(&b), a.union(&b));
        prop_assert!(a.subtract(&b).subtract(&a).is_empty());
        Ok(())
    });
}

#[test]
fn mariadb_position_algebra_laws() {
    algebra_laws(mariadb_set, Position::MariaDb);
}

#[test]
fn empty_position_is_the_identity_of_union_and_contained_in_everything() {
    holds((mysql_set(), mariadb_set()), |(a, b)| {
        for p in [Position::MySql56(a.clone()), Position::MariaDb(b.clone())] {
            prop_assert_eq!(p.union(&Position::Empty).expect("empty mixes"), p.clone());
            prop_assert_eq!(Position::Empty.union(&p).expect("empty mixes"), p.clone());
            prop_assert!(p.contains(&Position::Empty).expect("empty mixes"));
            prop_assert_eq!(p.subtract(&Position::Empty).expect("empty mixes"), p.clone());
        }
        Ok(())
    });
}

#[test]
fn mysql_errant_gtids_are_own_writes_missing_from_the_source() {
    // executed = source's part ∪ own writes; reference = source's set:
    // errant = own writes the reference lacks.
    let me = ServerIdentity {
        uuid: UUIDS[1].to_string(),
        server_id: 2,
    };
    let source = ServerIdentity {
        uuid: UUIDS[0].to_string(),
        server_id: 1,
    };
    holds(
        (mysql_set(), mysql_set(), mysql_set()),
        |(from_source, own, reference)| {
            let src_sid = sid(0);
            let own_sid = sid(1);
            let keep = |s: &Mysql56GtidSet, keep: &Sid| {
                let mut out = Mysql56GtidSet::new();
                for iv in s.intervals(keep) {
                    out.add_interval(*keep, *iv);
                }
                out
            };
            let executed = keep(&from_source, &src_sid).union(&keep(&own, &own_sid));
            let executed = Position::MySql56(executed);
            let reference_pos = Position::MySql56(reference.clone());
            let ancestry = [source.clone()];
            let errant = errant_gtids(&ErrantGtidInput {
                executed: &executed,
                server: &me,
                ancestry: &ancestry,
                source: Some(&source),
                reference: &reference_pos,
                co_primary: false,
            })
            .expect("same flavor");
            // An empty reference means "nothing to compare with": no errant GTIDs.
            let expected = if reference.is_empty() {
                Mysql56GtidSet::new()
            } else {
                keep(&own, &own_sid).subtract(&reference)
            };
            // An empty result may come back as `Empty` (nothing to compare).
            prop_assert_eq!(errant.is_empty(), expected.is_empty());
            if !expected.is_empty() {
                prop_assert_eq!(errant, Position::MySql56(expected));
            }
            Ok(())
        },
    );
}

/// Fragments that make near-valid position strings.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("MySQL56/".to_string()),
        Just("MariaDB/".to_string()),
        Just("FilePos/".to_string()),
        Just("/".to_string()),
        Just(":".to_string()),
        Just(",".to_string()),
        Just("-".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("9223372036854775807".to_string()),
        Just("4294967295".to_string()),
        Just("tag_1".to_string()),
        Just("é".to_string()),
        Just("😀".to_string()),
        (0..UUIDS.len()).prop_map(|i| UUIDS[i].to_string()),
        (0..UUIDS.len()).prop_map(|i| UUIDS[i][..35].to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (1u64..100).prop_map(|n| n.to_string()),
        "[0-9a-fA-F-]{1,40}",
        ".{0,3}",
    ]
}

fn parse_never_panics_and_round_trips(text: &str) -> Result<(), TestCaseError> {
    match Position::parse(text) {
        Ok(p) => {
            let printed = p.to_string();
            prop_assert_eq!(Position::parse(&printed).expect("printed positions parse"), p);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    let _ = Mysql56GtidSet::parse(text);
    let _ = MariaDbGtidSet::parse(text);
    let _ = Sid::parse(text);
    Ok(())
}

#[test]
fn position_parsers_never_panic_on_arbitrary_strings() {
    runner(FUZZ_CASES)
        .run(&any::<String>(), |s| parse_never_panics_and_round_trips(&s))
        .expect("no panic, printed positions parse back");
}

#[test]
fn position_parsers_never_panic_on_near_valid_strings() {
    runner(FUZZ_CASES)
        .run(&prop::collection::vec(fragment(), 0..12), |parts| {
            parse_never_panics_and_round_trips(&parts.concat())
        })
        .expect("no panic, printed positions parse back");
}

#[test]
fn position_parsers_never_panic_on_arbitrary_bytes_as_lossy_text() {
    runner(FUZZ_CASES)
        .run(&prop::collection::vec(any::<u8>(), 0..64), |bytes| {
            parse_never_panics_and_round_trips(&String::from_utf8_lossy(&bytes))
        })
        .expect("no panic, printed positions parse back");
}
