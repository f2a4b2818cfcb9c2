//! Errant GTIDs of a tablet from the shard's observations (reference §4.4).

use std::collections::BTreeSet;

use super::{ShardState, TabletState};
use crate::mysql::{ErrantGtidInput, Position, PositionError, ServerIdentity, errant_gtids};
use crate::proto::topodata::TabletAlias;

fn identity(t: &TabletState) -> Option<ServerIdentity> {
    t.observation.as_ref().map(|o| ServerIdentity {
        uuid: o.server_uuid.clone(),
        server_id: o.server_id,
    })
}

impl ShardState {
    /// The observed tablet this tablet's MySQL replicates from, if it has a
    /// source and that source is a tablet of this shard.
    pub fn source_of(&self, tablet: &TabletState) -> Option<&TabletState> {
        let obs = tablet.observation.as_ref()?;
        if obs.has_no_source() {
            return None;
        }
        self.tablet_by_mysql_address(obs.source_host(), obs.source_port())
            .map(|t| t.as_ref())
    }

    /// Errant GTIDs of tablet `alias`, computed from the current observations
    /// of the shard (discovery calls this after each poll and stores the
    /// result in [`super::Observation::errant_gtids`]).
    ///
    /// - The shard record's primary has none.
    /// - A replica is compared with its source's executed position; its
    ///   ancestry is the chain of sources (within the shard).
    /// - A tablet that does not replicate is compared with the shard primary's
    ///   position, if that primary's observation shows it not replicating
    ///   (v24: catches an old primary with writes the new one lacks).
    /// - Otherwise (source unknown, nothing to compare with) there are none.
    pub fn errant_gtids_of(&self, alias: &TabletAlias) -> Result<Position, PositionError> {
        let Some(tablet) = self.tablet(alias) else {
            return Ok(Position::Empty);
        };
        let Some(obs) = tablet.observation.as_ref() else {
            return Ok(Position::Empty);
        };
        if self.primary_alias.as_ref() == Some(alias) {
            return Ok(Position::Empty);
        }
        let me = identity(tablet).unwrap_or_default();
        let mut ancestry = Vec::new();
        let mut co_primary = false;
        let (reference, source) = if obs.has_no_source() {
            let primary = self
                .primary_alias
                .as_ref()
                .and_then(|p| self.tablet(p))
                .and_then(|p| p.observation.as_ref().map(|o| (p, o)));
            match primary {
                Some((_, pobs)) if pobs.has_no_source() => (pobs.executed_position.clone(), None),
                _ => return Ok(Position::Empty),
            }
        } else {
            let Some(src) = self.source_of(tablet) else {
                return Ok(Position::Empty);
            };
            let Some(src_obs) = src.observation.as_ref() else {
                return Ok(Position::Empty);
            };
            let mut source_identity = identity(src).unwrap_or_default();
            if let Some(r) = obs.replication.as_ref() {
                if !r.source_uuid.is_empty() {
                    source_identity.uuid = r.source_uuid.clone();
                }
                if r.source_server_id != 0 {
                    source_identity.server_id = r.source_server_id;
                }
            }
            // Walk up the chain of sources; stop at a loop.
            let mut seen = BTreeSet::from([tablet.alias().clone()]);
            let mut cursor = Some(src);
            while let Some(t) = cursor {
                if !seen.insert(t.alias().clone()) {
                    break;
                }
                ancestry.extend(identity(t));
                cursor = self.source_of(t);
            }
            co_primary = self.source_of(src).is_some_and(|s| s.alias() == tablet.alias());
            (src_obs.executed_position.clone(), Some(source_identity))
        };
        errant_gtids(&ErrantGtidInput {
            executed: &obs.executed_position,
            server: &me,
            ancestry: &ancestry,
            source: source.as_ref(),
            reference: &reference,
            co_primary,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::TabletState;
    use crate::mysql::{Position, PositionError};
    use crate::proto::topodata::TabletAlias;
    use crate::testkit::{MYSQL_PORT, ShardBuilder, TabletFixture, gtids};

    #[test]
    fn replica_with_local_writes_has_errant_gtids() {
        let now = crate::clock::now();
        let (_, shard) = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .replica("zone1", 102)
            .edit("zone1", 101, |t| {
                let own = gtids(101, 2);
                let o = t.obs();
                o.executed_position = o.executed_position.union(&own).expect("same flavor");
            })
            .build_shard();
        let errant = shard
            .errant_gtids_of(&TabletAlias::new("zone1", 101))
            .expect("computes");
        assert_eq!(errant, gtids(101, 2));
        assert!(
            shard
                .errant_gtids_of(&TabletAlias::new("zone1", 102))
                .expect("computes")
                .is_empty()
        );
        assert!(
            shard
                .errant_gtids_of(&TabletAlias::new("zone1", 100))
                .expect("computes")
                .is_empty()
        );
    }

    /// The errant GTIDs of replica 101 in a shard with primary 100, after
    /// `edit` changed 101.
    fn errant_of_101(edit: impl FnOnce(&mut TabletState)) -> Result<Position, PositionError> {
        let now = crate::clock::now();
        let (_, shard) = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", 101)
            .edit("zone1", 101, edit)
            .build_shard();
        shard.errant_gtids_of(&TabletAlias::new("zone1", 101))
    }

    #[test]
    fn detached_old_primary_is_compared_with_the_shard_primary() {
        let errant = errant_of_101(|t| {
            t.no_replication();
            t.obs().executed_position = gtids(100, 100).union(&gtids(101, 1)).expect("same flavor");
        });
        assert_eq!(errant, Ok(gtids(101, 1)));
    }

    #[test]
    fn unknown_source_means_nothing_to_compare() {
        let errant = errant_of_101(|t| {
            t.replicate_from("elsewhere", MYSQL_PORT);
            t.obs().executed_position = gtids(101, 1);
        });
        assert_eq!(errant, Ok(Position::Empty));
    }
}
