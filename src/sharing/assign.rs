//! Who owns which shard, and what an instance watches while shards move.
//!
//! Pure: member views in, [`Assignment`]s out; time is a parameter.
//!
//! - **Ownership** is rendezvous (highest-random-weight) hashing of
//!   `keyspace/shard` over the member ids of a view: every instance that
//!   sees the same member set computes the same owner, and adding or
//!   removing one member moves only the shards that member gains or loses.
//! - **Handover**: when the member set changes, an instance keeps watching
//!   the shards it owned under the previous set(s) ("retained" views)
//!   until every member of the new set has published that it watches its
//!   shards of the new set (its record's `ready_view` equals the new set's
//!   fingerprint), or until a bound passes. So a shard moving from a live
//!   member to another one is watched by the old owner until the new owner
//!   watches it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::MemberRecord;

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is
/// not guaranteed to be), so instances of different versions agree.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no id or shard name contains, so ("a", "bc")
            // and ("ab", "c") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// splitmix64's finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous weight of `member` for shard `keyspace/shard`.
pub fn weight(member: &str, keyspace: &str, shard: &str) -> u64 {
    mix(fnv1a(&[member.as_bytes(), keyspace.as_bytes(), shard.as_bytes()]))
}

/// The owner of `keyspace/shard` among `members`: the highest weight, ties
/// (practically impossible) to the smallest id. `None` for no members.
pub fn owner_of<'a, I>(members: I, keyspace: &str, shard: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a String>,
{
    members
        .into_iter()
        .map(|m| (weight(m, keyspace, shard), std::cmp::Reverse(m.as_str())))
        .max()
        .map(|(_, std::cmp::Reverse(m))| m)
}

/// One live member as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its record.
    pub record: MemberRecord,
    /// Create revision of its key: tells two registrations of one id apart.
    pub create_revision: i64,
}

/// The live members at one etcd revision, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    /// Members by id (the key's last path component).
    pub members: BTreeMap<String, Member>,
}

impl MemberView {
    /// Identifies the member *set* (ids and registrations, not the records'
    /// other fields): equal on every instance that sees the same set,
    /// whatever revision it read it at. Never 0 (0 = "ready for nothing").
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for (id, m) in &self.members {
            h = mix(h ^ fnv1a(&[id.as_bytes(), &m.create_revision.to_be_bytes()]));
        }
        h.max(1)
    }

    /// Whether every member published that it watches its shards of this
    /// set.
    pub fn all_ready(&self) -> bool {
        let f = self.fingerprint();
        self.members.values().all(|m| m.record.ready_view == f)
    }

    /// The member ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }
}

/// What this instance watches, as a function of the shard name. Cheap to
/// evaluate: one hash per member per view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Increases with every change (discovery reports the one it applied).
    pub generation: u64,
    /// This instance's id.
    pub me: String,
    /// Member ids of the current view.
    pub current: Vec<String>,
    /// Fingerprint of the current view.
    pub fingerprint: u64,
    /// Member ids of earlier views whose shards this instance still
    /// watches during a handover.
    pub retained: Vec<Vec<String>>,
}

impl Assignment {
    /// The owner of a shard under the current view.
    pub fn owner(&self, keyspace: &str, shard: &str) -> Option<&str> {
        owner_of(&self.current, keyspace, shard)
    }

    /// Whether this instance owns the shard (current view).
    pub fn owns(&self, keyspace: &str, shard: &str) -> bool {
        self.owner(keyspace, shard) == Some(self.me.as_str())
    }

    /// Whether this instance watches the shard: it owns it, or owned it
    /// under a retained view.
    pub fn watches(&self, keyspace: &str, shard: &str) -> bool {
        self.owns(keyspace, shard)
            || self
                .retained
                .iter()
                .any(|ids| owner_of(ids, keyspace, shard) == Some(self.me.as_str()))
    }

    /// Whether `self` watches a subset of what `previous` watched, known
    /// from the views alone: then nothing has to be loaded. True when the
    /// current member set contains one of `previous`'s views (current or
    /// retained) that has this instance: members were only added to it,
    /// and adding members only takes shards away (an owner of a shard over
    /// a set is its owner over any subset it belongs to).
    pub fn is_shrink_of(&self, previous: &Assignment) -> bool {
        let covers =
            |view: &Vec<String>| view.contains(&self.me) && view.iter().all(|m| self.current.contains(m));
        let retained_ok = self
            .retained
            .iter()
            .all(|r| previous.retained.contains(r) || *r == previous.current);
        retained_ok && (covers(&previous.current) || previous.retained.iter().any(covers))
    }
}

/// The handover state machine of one instance.
#[derive(Debug)]
pub struct Handover {
    /// This instance's id.
    me: String,
    /// Longest a retained view is kept when some member never reports ready.
    bound: Duration,
    /// The assignment in force (`None` before this instance first appears
    /// in a view).
    assignment: Option<Assignment>,
    /// When the retained views are dropped regardless of readiness.
    retained_until: Option<Instant>,
}

impl Handover {
    /// A state machine for instance `me`.
    pub fn new(me: impl Into<String>, bound: Duration) -> Self {
        Handover {
            me: me.into(),
            bound,
            assignment: None,
            retained_until: None,
        }
    }

    /// The assignment in force.
    pub fn assignment(&self) -> Option<&Assignment> {
        self.assignment.as_ref()
    }

    /// When [`Handover::on_tick`] should next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retained_until
    }

    /// A new view (set or records changed). Returns the new assignment when
    /// what this instance watches changes.
    ///
    /// A view without this instance changes nothing: it keeps watching what
    /// it watched until it is registered again (it does not act meanwhile:
    /// that is the lease deadline's business).
    pub fn on_view(&mut self, view: &MemberView, now: Instant) -> Option<Assignment> {
        if !view.members.contains_key(&self.me) {
            return None;
        }
        let fingerprint = view.fingerprint();
        let next = match &self.assignment {
            None => Assignment {
                generation: 1,
                me: self.me.clone(),
                current: view.ids(),
                fingerprint,
                retained: Vec::new(),
            },
            Some(a) if a.fingerprint != fingerprint => {
                let mut retained = vec![a.current.clone()];
                for r in &a.retained {
                    if !retained.contains(r) {
                        retained.push(r.clone());
                    }
                }
                retained.retain(|r| *r != view.ids());
                self.retained_until = Some(now + self.bound);
                Assignment {
                    generation: a.generation + 1,
                    me: self.me.clone(),
                    current: view.ids(),
                    fingerprint,
                    retained,
                }
            }
            Some(a) if !a.retained.is_empty() && view.all_ready() => Assignment {
                generation: a.generation + 1,
                retained: Vec::new(),
                ..a.clone()
            },
            Some(_) => return None,
        };
        if next.retained.is_empty() {
            self.retained_until = None;
        }
        self.assignment = Some(next.clone());
        Some(next)
    }

    /// Time passed: drops retained views past the bound.
    pub fn on_tick(&mut self, now: Instant) -> Option<Assignment> {
        let until = self.retained_until?;
        if now < until {
            return None;
        }
        self.retained_until = None;
        let a = self.assignment.as_mut()?;
        if a.retained.is_empty() {
            return None;
        }
        tracing::warn!(
            retained = a.retained.len(),
            "shard handover not confirmed by every member within its bound; dropping the previous owners' shards"
        );
        a.retained.clear();
        a.generation += 1;
        Some(a.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[(&str, i64, u64)]) -> MemberView {
        MemberView {
            members: members
                .iter()
                .map(|(id, rev, ready)| {
                    (
                        (*id).to_string(),
                        Member {
                            record: MemberRecord {
                                id: (*id).to_string(),
                                ready_view: *ready,
                                ..MemberRecord::default()
                            },
                            create_revision: *rev,
                        },
                    )
                })
                .collect(),
        }
    }

    fn ready(mut v: MemberView) -> MemberView {
        let f = v.fingerprint();
        for m in v.members.values_mut() {
            m.record.ready_view = f;
        }
        v
    }

    fn shards(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{:02x}-{:02x}", i, i + 1)).collect()
    }

    #[test]
    fn the_owner_is_deterministic_and_spreads_shards_evenly() {
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_string()).collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in shards(3000) {
            let o = owner_of(&ids, "ks", &s).expect("an owner");
            assert_eq!(
                owner_of(ids.iter().rev(), "ks", &s),
                Some(o),
                "order does not matter"
            );
            *counts.entry(o).or_default() += 1;
        }
        for (id, n) in counts {
            assert!((850..1150).contains(&n), "{id} owns {n} of 3000");
        }
        assert_eq!(owner_of(&Vec::<String>::new(), "ks", "0"), None);
    }

    #[test]
    fn adding_a_member_moves_only_the_shards_it_gains() {
        let before: Vec<String> = ["a", "b"].iter().map(|s| (*s).to_string()).collect();
        let after: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_string()).collect();
        let mut moved = 0;
        for s in shards(1000) {
            let (o1, o2) = (owner_of(&before, "ks", &s), owner_of(&after, "ks", &s));
            if o1 != o2 {
                assert_eq!(o2, Some("c"), "a shard only moves to the new member");
                moved += 1;
            }
        }
        assert!((250..420).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn the_fingerprint_depends_on_the_set_and_registrations_only() {
        let a = view(&[("a", 5, 0), ("b", 7, 0)]);
        let b = view(&[("a", 5, 99), ("b", 7, 3)]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), view(&[("a", 5, 0), ("b", 8, 0)]).fingerprint());
        assert_ne!(a.fingerprint(), view(&[("a", 5, 0)]).fingerprint());
        assert_ne!(MemberView::default().fingerprint(), 0);
    }

    #[test]
    fn a_joining_member_takes_its_shards_only_once_everyone_is_ready() {
        let now = crate::clock::now();
        let mut h = Handover::new("a", Duration::from_secs(30));
        let one = ready(view(&[("a", 1, 0)]));
        let a1 = h.on_view(&one, now).expect("first assignment");
        assert!(
            shards(50).iter().all(|s| a1.watches("ks", s)),
            "alone, a watches everything"
        );
        // b joins: a keeps watching everything (retained) until b is ready.
        let two = view(&[("a", 1, 0), ("b", 9, 0)]);
        let a2 = h.on_view(&two, now).expect("new view");
        assert!(a2.generation > a1.generation);
        assert!(shards(50).iter().all(|s| a2.watches("ks", s)));
        assert!(shards(50).iter().any(|s| !a2.owns("ks", s)), "b owns some");
        // Only a is ready: nothing changes.
        let mut partly = two.clone();
        let f = two.fingerprint();
        if let Some(m) = partly.members.get_mut("a") {
            m.record.ready_view = f;
        }
        assert_eq!(h.on_view(&partly, now), None);
        // Both ready: a drops b's shards.
        let a3 = h.on_view(&ready(two), now).expect("handover done");
        assert!(a3.retained.is_empty());
        assert!(a3.is_shrink_of(&a2));
        for s in shards(50) {
            assert_eq!(a3.watches("ks", &s), a3.owns("ks", &s));
        }
    }

    #[test]
    fn a_joining_member_loads_nothing_new_on_the_others_but_a_leaving_one_does() {
        let now = crate::clock::now();
        let mut h = Handover::new("a", Duration::from_secs(30));
        let a1 = h
            .on_view(&ready(view(&[("a", 1, 0), ("b", 2, 0)])), now)
            .expect("first");
        let a2 = h
            .on_view(&view(&[("a", 1, 0), ("b", 2, 0), ("c", 3, 0)]), now)
            .expect("c joins");
        assert!(a2.is_shrink_of(&a1), "a member joining only takes shards from a");
        let a3 = h
            .on_view(&view(&[("a", 1, 0), ("c", 3, 0)]), now)
            .expect("b leaves");
        assert!(!a3.is_shrink_of(&a2), "b's shards may come to a");
        let fresh = h
            .on_view(&ready(view(&[("a", 1, 0), ("c", 3, 0)])), now)
            .expect("settled");
        assert!(fresh.is_shrink_of(&a3));
        // Brute force: a shrink never watches a shard the previous did not.
        for (new, old) in [(&a2, &a1), (&fresh, &a3)] {
            for s in shards(300) {
                assert!(!new.watches("ks", &s) || old.watches("ks", &s), "{s}");
            }
        }
    }

    #[test]
    fn a_handover_that_is_never_confirmed_ends_at_the_bound() {
        let now = crate::clock::now();
        let mut h = Handover::new("a", Duration::from_secs(30));
        h.on_view(&ready(view(&[("a", 1, 0)])), now);
        h.on_view(&view(&[("a", 1, 0), ("b", 2, 0)]), now);
        assert_eq!(h.next_deadline(), Some(now + Duration::from_secs(30)));
        assert_eq!(h.on_tick(now + Duration::from_secs(29)), None);
        let a = h.on_tick(now + Duration::from_secs(30)).expect("dropped");
        assert!(a.retained.is_empty());
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_dead_members_shards_go_to_the_survivors() {
        let now = crate::clock::now();
        let mut ha = Handover::new("a", Duration::from_secs(30));
        let mut hb = Handover::new("b", Duration::from_secs(30));
        let three = ready(view(&[("a", 1, 0), ("b", 2, 0), ("c", 3, 0)]));
        ha.on_view(&three, now);
        hb.on_view(&three, now);
        let two = view(&[("a", 1, 0), ("b", 2, 0)]);
        let a = ha.on_view(&two, now).expect("a");
        let b = hb.on_view(&two, now).expect("b");
        for s in shards(200) {
            assert!(a.watches("ks", &s) || b.watches("ks", &s), "{s} unwatched");
            assert_ne!(a.owns("ks", &s), b.owns("ks", &s), "{s}: exactly one owner");
        }
    }

    #[test]
    fn a_view_without_this_instance_changes_nothing() {
        let now = crate::clock::now();
        let mut h = Handover::new("a", Duration::from_secs(30));
        assert_eq!(h.on_view(&view(&[("b", 1, 0)]), now), None);
        h.on_view(&view(&[("a", 1, 0), ("b", 2, 0)]), now);
        assert_eq!(h.on_view(&view(&[("b", 2, 0)]), now), None);
    }
}
