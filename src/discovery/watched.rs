//! Which tablets and shards `--clusters-to-watch` selects.
//!
//! Empty = everything. An entry `ks` selects the whole keyspace; `ks/<shard>`
//! selects the keyspace's tablets whose key range lies inside the shard's
//! range (Go VTOrc's rule), so `ks/-80` also covers shards `-40` and `40-80`
//! after a split. An unsharded entry such as `ks/0` covers the whole key space.

use std::sync::Arc;

use crate::{
    config::{ShardRange, WatchedCluster},
    proto::topodata::{KeyRange, Tablet},
    sharing::Assignment,
};

/// The parsed `--clusters-to-watch` filter, narrowed by this instance's
/// share of the shards under `--sharing`.
#[derive(Clone, Debug, Default)]
pub struct WatchFilter {
    /// The entries; empty = watch everything.
    clusters: Vec<WatchedCluster>,
    /// With `--sharing`: the shards this instance watches.
    assignment: Option<Arc<Assignment>>,
}

impl WatchFilter {
    /// A filter from the configured entries.
    pub fn new(clusters: Vec<WatchedCluster>) -> Self {
        WatchFilter {
            clusters,
            assignment: None,
        }
    }

    /// Narrows the filter to an assignment's shards (`--sharing`).
    pub fn set_assignment(&mut self, assignment: Arc<Assignment>) {
        self.assignment = Some(assignment);
    }

    /// The assignment narrowing the filter, if any.
    pub fn assignment(&self) -> Option<&Arc<Assignment>> {
        self.assignment.as_ref()
    }

    /// Whether the assignment (if any) lets this shard through.
    fn assigned(&self, keyspace: &str, shard: &str) -> bool {
        self.assignment
            .as_ref()
            .is_none_or(|a| a.watches(keyspace, shard))
    }

    /// Whether every keyspace and shard is watched.
    pub fn watches_everything(&self) -> bool {
        self.clusters.is_empty() && self.assignment.is_none()
    }

    /// Whether any part of `keyspace` is watched (its keyspace record is kept).
    pub fn watches_keyspace(&self, keyspace: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c.keyspace == keyspace)
    }

    /// Whether the shard `keyspace/shard` is watched (its record is kept).
    /// A shard name that is not a valid range is matched by name only.
    pub fn watches_shard(&self, keyspace: &str, shard: &str) -> bool {
        if !self.assigned(keyspace, shard) {
            return false;
        }
        if self.clusters.is_empty() {
            return true;
        }
        let range = ShardRange::parse(shard).ok();
        self.clusters
            .iter()
            .filter(|c| c.keyspace == keyspace)
            .any(|c| match (&c.shard, &range) {
                (None, _) => true,
                (Some(watched), _) if watched.name == shard => true,
                (Some(watched), Some(r)) => watched.contains_range(&r.start, &r.end),
                (Some(_), None) => false,
            })
    }

    /// Whether a tablet is watched: by keyspace, and by its key range (the
    /// record's `key_range`, else the range its shard name stands for).
    pub fn watches_tablet(&self, tablet: &Tablet) -> bool {
        if !self.assigned(&tablet.keyspace, &tablet.shard) {
            return false;
        }
        if self.clusters.is_empty() {
            return true;
        }
        self.clusters
            .iter()
            .filter(|c| c.keyspace == tablet.keyspace)
            .any(|c| match &c.shard {
                None => true,
                Some(watched) if watched.name == tablet.shard => true,
                Some(watched) => match tablet_range(tablet) {
                    Some((start, end)) => watched.contains_range(&start, &end),
                    None => false,
                },
            })
    }
}

/// A tablet's key range as `(start, end)`, empty = open.
fn tablet_range(tablet: &Tablet) -> Option<(Vec<u8>, Vec<u8>)> {
    if let Some(KeyRange { start, end }) = &tablet.key_range {
        return Some((start.clone(), end.clone()));
    }
    ShardRange::parse(&tablet.shard).ok().map(|r| (r.start, r.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(entries: &[&str]) -> WatchFilter {
        WatchFilter::new(
            entries
                .iter()
                .map(|e| e.parse::<WatchedCluster>().expect("valid entry"))
                .collect(),
        )
    }

    fn tablet(keyspace: &str, shard: &str, range: Option<(&[u8], &[u8])>) -> Tablet {
        Tablet {
            keyspace: keyspace.into(),
            shard: shard.into(),
            key_range: range.map(|(s, e)| KeyRange {
                start: s.to_vec(),
                end: e.to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_filter_watches_everything() {
        let f = filter(&[]);
        assert!(f.watches_everything());
        assert!(f.watches_tablet(&tablet("any", "0", None)));
        assert!(f.watches_shard("any", "-80"));
    }

    #[test]
    fn a_keyspace_entry_watches_all_its_shards_and_nothing_else() {
        let f = filter(&["ks1"]);
        assert!(f.watches_tablet(&tablet("ks1", "-80", Some((b"", b"\x80")))));
        assert!(f.watches_tablet(&tablet("ks1", "0", None)));
        assert!(!f.watches_tablet(&tablet("ks2", "0", None)));
        assert!(f.watches_keyspace("ks1"));
        assert!(!f.watches_keyspace("ks2"));
    }

    #[test]
    fn a_shard_entry_watches_tablets_whose_range_lies_inside_it() {
        let f = filter(&["ks/-80"]);
        assert!(f.watches_tablet(&tablet("ks", "-80", Some((b"", b"\x80")))));
        assert!(f.watches_tablet(&tablet("ks", "-40", Some((b"", b"\x40")))));
        assert!(f.watches_tablet(&tablet("ks", "40-80", Some((b"\x40", b"\x80")))));
        assert!(!f.watches_tablet(&tablet("ks", "80-", Some((b"\x80", b"")))));
        assert!(!f.watches_tablet(&tablet("ks", "-", Some((b"", b"")))));
        // Without a key_range in the record, the shard name decides.
        assert!(f.watches_tablet(&tablet("ks", "-40", None)));
        assert!(!f.watches_tablet(&tablet("ks", "0", None)));
        assert!(f.watches_shard("ks", "40-80"));
        assert!(!f.watches_shard("ks", "80-"));
        assert!(f.watches_keyspace("ks"));
    }

    #[test]
    fn an_unsharded_entry_watches_its_shard_by_name() {
        let f = filter(&["ks/0"]);
        assert!(f.watches_tablet(&tablet("ks", "0", None)));
        assert!(f.watches_shard("ks", "0"));
    }
}
