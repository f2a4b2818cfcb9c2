//! Durability policies (reference §7.2) and the safety helpers built on them (§7.3).
//!
//! A keyspace names its policy in its topo record. The policy says which
//! tablets may be promoted, how many semi-sync acks a primary needs, and which
//! replicas send them.

use std::fmt;

use thiserror::Error;

use crate::proto::topodata::{Tablet, TabletType};

/// Why a keyspace's durability policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurabilityError {
    /// The keyspace names no policy; VTOrc ignores such keyspaces.
    #[error("no durability policy is set (set one with SetKeyspaceDurabilityPolicy)")]
    NotSet,
    /// The keyspace names a policy we do not know.
    #[error("unknown durability policy {0:?}")]
    Unknown(String),
}

/// How much a tablet should be preferred as a new primary; best first
/// (`Must < Prefer < ... < MustNot` in `Ord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PromotionRule {
    /// Must be promoted if possible.
    Must,
    /// Preferred.
    Prefer,
    /// No preference.
    Neutral,
    /// Only if nothing better exists.
    PreferNot,
    /// Never promote.
    MustNot,
}

impl PromotionRule {
    /// Vitess's string value (`must`, `prefer`, `neutral`, `prefer_not`, `must_not`).
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionRule::Must => "must",
            PromotionRule::Prefer => "prefer",
            PromotionRule::Neutral => "neutral",
            PromotionRule::PreferNot => "prefer_not",
            PromotionRule::MustNot => "must_not",
        }
    }
}

impl fmt::Display for PromotionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durability policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `none`: no semi-sync.
    None,
    /// `semi_sync`: 1 ack, from PRIMARY/REPLICA tablets.
    SemiSync,
    /// `semi_sync_with_rdonly_ack`: 1 ack, from PRIMARY/REPLICA/RDONLY tablets.
    SemiSyncWithRdonlyAck,
    /// `cross_cell`: 1 ack, from PRIMARY/REPLICA tablets in another cell than the primary.
    CrossCell,
    /// `cross_cell_with_rdonly_ack`: 1 ack, from PRIMARY/REPLICA/RDONLY tablets in another cell.
    CrossCellWithRdonlyAck,
    /// `test`: like `none`, but tablet `zone2-0000000200` is preferred for promotion.
    Test,
}

/// The alias the `test` policy prefers.
const TEST_PREFERRED_CELL: &str = "zone2";
const TEST_PREFERRED_UID: u32 = 200;

impl Durability {
    /// Every policy, in the order of the reference table.
    pub const ALL: [Durability; 6] = [
        Durability::None,
        Durability::SemiSync,
        Durability::SemiSyncWithRdonlyAck,
        Durability::CrossCell,
        Durability::CrossCellWithRdonlyAck,
        Durability::Test,
    ];

    /// Reads the policy name of a keyspace record. `""` is [`DurabilityError::NotSet`].
    pub fn from_name(name: &str) -> Result<Durability, DurabilityError> {
        Ok(match name {
            "" => return Err(DurabilityError::NotSet),
            "none" => Durability::None,
            "semi_sync" => Durability::SemiSync,
            "semi_sync_with_rdonly_ack" => Durability::SemiSyncWithRdonlyAck,
            "cross_cell" => Durability::CrossCell,
            "cross_cell_with_rdonly_ack" => Durability::CrossCellWithRdonlyAck,
            "test" => Durability::Test,
            other => return Err(DurabilityError::Unknown(other.to_string())),
        })
    }

    /// The policy's name as stored in the topo.
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::SemiSync => "semi_sync",
            Durability::SemiSyncWithRdonlyAck => "semi_sync_with_rdonly_ack",
            Durability::CrossCell => "cross_cell",
            Durability::CrossCellWithRdonlyAck => "cross_cell_with_rdonly_ack",
            Durability::Test => "test",
        }
    }

    /// Whether the policy uses semi-sync at all.
    pub fn has_semi_sync(self) -> bool {
        !matches!(self, Durability::None | Durability::Test)
    }

    /// Promotion rule of a tablet: PRIMARY/REPLICA are neutral, anything else
    /// must not be promoted (`test`: `zone2-0000000200` is preferred). A tablet
    /// record without an alias must not be promoted.
    pub fn promotion_rule(self, tablet: &Tablet) -> PromotionRule {
        let Some(alias) = tablet.alias.as_ref() else {
            return PromotionRule::MustNot;
        };
        if self == Durability::Test && alias.cell == TEST_PREFERRED_CELL && alias.uid == TEST_PREFERRED_UID {
            return PromotionRule::Prefer;
        }
        match tablet.r#type() {
            TabletType::Primary | TabletType::Replica => PromotionRule::Neutral,
            _ => PromotionRule::MustNot,
        }
    }

    /// Semi-sync acks `tablet` needs when it is the primary (0 = async).
    pub fn semi_sync_ackers(self, _tablet: &Tablet) -> u32 {
        u32::from(self.has_semi_sync())
    }

    /// Whether `replica` should send semi-sync acks when `primary` is the
    /// primary. False if either record has no alias.
    pub fn is_replica_semi_sync(self, primary: &Tablet, replica: &Tablet) -> bool {
        let (Some(p), Some(r)) = (primary.alias.as_ref(), replica.alias.as_ref()) else {
            return false;
        };
        let (rdonly_acks, cross_cell) = match self {
            Durability::None | Durability::Test => return false,
            Durability::SemiSync => (false, false),
            Durability::SemiSyncWithRdonlyAck => (true, false),
            Durability::CrossCell => (false, true),
            Durability::CrossCellWithRdonlyAck => (true, true),
        };
        let type_acks = match replica.r#type() {
            TabletType::Primary | TabletType::Replica => true,
            TabletType::Rdonly => rdonly_acks,
            _ => false,
        };
        type_acks && (!cross_cell || p.cell != r.cell)
    }

    /// The tablets of `candidates` (other than `primary` itself) that would
    /// ack for `primary`.
    pub fn semi_sync_ackers_for<'a>(self, primary: &Tablet, candidates: &[&'a Tablet]) -> Vec<&'a Tablet> {
        candidates
            .iter()
            .copied()
            .filter(|t| t.alias != primary.alias && self.is_replica_semi_sync(primary, t))
            .collect()
    }

    /// Whether `tablet` can no longer accept writes given the tablets that
    /// were reached (stopped / made read-only): it was reached itself, or
    /// fewer of its possible ackers than it needs are left unreached.
    pub fn have_revoked_for_tablet(self, tablet: &Tablet, reached: &[&Tablet], all: &[&Tablet]) -> bool {
        if contains_alias(reached, tablet) {
            return true;
        }
        let ackers_reached = self.semi_sync_ackers_for(tablet, reached).len();
        let ackers_all = self.semi_sync_ackers_for(tablet, all).len();
        let required = self.semi_sync_ackers(tablet) as usize;
        ackers_all.saturating_sub(ackers_reached) < required
    }

    /// `haveRevoked`: no promotable tablet of `all` can accept a write any more.
    pub fn have_revoked(self, reached: &[&Tablet], all: &[&Tablet]) -> bool {
        all.iter()
            .filter(|t| self.promotion_rule(t) != PromotionRule::MustNot)
            .all(|t| self.have_revoked_for_tablet(t, reached, all))
    }

    /// `canEstablishForTablet`: `tablet` was reached and enough reached tablets
    /// would ack for it, so it can accept writes once promoted.
    pub fn can_establish(self, tablet: &Tablet, reached: &[&Tablet]) -> bool {
        contains_alias(reached, tablet)
            && self.semi_sync_ackers_for(tablet, reached).len() >= self.semi_sync_ackers(tablet) as usize
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn contains_alias(list: &[&Tablet], tablet: &Tablet) -> bool {
    tablet.alias.is_some() && list.iter().any(|t| t.alias == tablet.alias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::topodata::TabletAlias;

    fn t(cell: &str, uid: u32, ty: TabletType) -> Tablet {
        Tablet {
            alias: Some(TabletAlias::new(cell, uid)),
            r#type: ty as i32,
            ..Default::default()
        }
    }

    #[test]
    fn names_round_trip_and_unknown_or_missing_are_errors() {
        for d in Durability::ALL {
            assert_eq!(Durability::from_name(d.name()), Ok(d));
        }
        assert_eq!(Durability::from_name(""), Err(DurabilityError::NotSet));
        assert_eq!(
            Durability::from_name("semi-sync"),
            Err(DurabilityError::Unknown("semi-sync".into()))
        );
    }

    #[test]
    fn promotion_rules() {
        for d in Durability::ALL {
            assert_eq!(
                d.promotion_rule(&t("zone1", 1, TabletType::Primary)),
                PromotionRule::Neutral
            );
            assert_eq!(
                d.promotion_rule(&t("zone1", 1, TabletType::Replica)),
                PromotionRule::Neutral
            );
            assert_eq!(
                d.promotion_rule(&t("zone1", 1, TabletType::Rdonly)),
                PromotionRule::MustNot
            );
            assert_eq!(d.promotion_rule(&Tablet::default()), PromotionRule::MustNot);
        }
        assert_eq!(
            Durability::Test.promotion_rule(&t("zone2", 200, TabletType::Rdonly)),
            PromotionRule::Prefer
        );
        assert_eq!(
            Durability::None.promotion_rule(&t("zone2", 200, TabletType::Rdonly)),
            PromotionRule::MustNot
        );
        assert!(PromotionRule::Must < PromotionRule::MustNot);
    }

    #[test]
    fn required_ackers_and_who_acks() {
        let p = t("zone1", 100, TabletType::Primary);
        let same_replica = t("zone1", 101, TabletType::Replica);
        let other_replica = t("zone2", 102, TabletType::Replica);
        let same_rdonly = t("zone1", 103, TabletType::Rdonly);
        let other_rdonly = t("zone2", 104, TabletType::Rdonly);
        let other_drained = t("zone2", 105, TabletType::Drained);
        let table: [(Durability, u32, [bool; 5]); 6] = [
            (Durability::None, 0, [false, false, false, false, false]),
            (Durability::SemiSync, 1, [true, true, false, false, false]),
            (
                Durability::SemiSyncWithRdonlyAck,
                1,
                [true, true, true, true, false],
            ),
            (Durability::CrossCell, 1, [false, true, false, false, false]),
            (
                Durability::CrossCellWithRdonlyAck,
                1,
                [false, true, false, true, false],
            ),
            (Durability::Test, 0, [false, false, false, false, false]),
        ];
        for (d, ackers, acks) in table {
            assert_eq!(d.semi_sync_ackers(&p), ackers, "{d}");
            let got = [
                &same_replica,
                &other_replica,
                &same_rdonly,
                &other_rdonly,
                &other_drained,
            ]
            .map(|r| d.is_replica_semi_sync(&p, r));
            assert_eq!(got, acks, "{d}");
        }
    }

    #[test]
    fn have_revoked_needs_every_promotable_tablet_cut_off() {
        let p = t("zone1", 100, TabletType::Primary);
        let r1 = t("zone1", 101, TabletType::Replica);
        let r2 = t("zone1", 102, TabletType::Replica);
        let ro = t("zone1", 103, TabletType::Rdonly);
        let all = [&p, &r1, &r2, &ro];
        // semi_sync: reaching both replicas cuts off the unreachable primary's acks.
        assert!(Durability::SemiSync.have_revoked(&[&r1, &r2], &all));
        // Reaching one replica leaves the other able to ack for the primary.
        assert!(!Durability::SemiSync.have_revoked(&[&r1], &all));
        // none: every promotable tablet must be reached itself.
        assert!(!Durability::None.have_revoked(&[&r1, &r2], &all));
        assert!(Durability::None.have_revoked(&[&p, &r1, &r2], &all));
    }

    #[test]
    fn can_establish_needs_the_tablet_and_its_ackers_reached() {
        let r1 = t("zone1", 101, TabletType::Replica);
        let r2 = t("zone2", 102, TabletType::Replica);
        let r3 = t("zone1", 103, TabletType::Replica);
        assert!(Durability::SemiSync.can_establish(&r1, &[&r1, &r3]));
        assert!(!Durability::SemiSync.can_establish(&r1, &[&r1]));
        assert!(!Durability::SemiSync.can_establish(&r1, &[&r3]));
        assert!(!Durability::CrossCell.can_establish(&r1, &[&r1, &r3]));
        assert!(Durability::CrossCell.can_establish(&r1, &[&r1, &r2]));
        assert!(Durability::None.can_establish(&r1, &[&r1]));
    }
}
