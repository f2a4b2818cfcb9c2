//! The problem catalogue (reference §5.3–§5.6): every analysis code with its
//! priority, ordering links, recovery and flags, plus the structure warnings.
//!
//! Names are Go VTOrc's (they appear in metrics, logs and the HTTP API); the
//! descriptions are our own words.

use std::fmt;

use serde::Serialize;

/// Priority of a problem; lower sorts first. `ShardWideAction` problems
/// repair the whole shard and only one of them runs per shard and pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// 0: a shard-wide repair (failover and the like).
    ShardWideAction = 0,
    /// 1
    Critical = 1,
    /// 2
    High = 2,
    /// 3
    Medium = 3,
    /// 4
    Low = 4,
}

/// Serialized as its number, as Go does.
impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// Which recovery function handles a code, by Go VTOrc's `RecoveryType`
/// metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum RecoveryKind {
    /// No recovery: skipped with reason `NoRecoveryAction`.
    None,
    /// `CheckAndRecoverGenericProblem`: takes the shard lock, then does nothing.
    Generic,
    /// `RecoverDeadPrimary`: EmergencyReparentShard.
    RecoverDeadPrimary,
    /// `RecoverIncapacitatedPrimary`: Ping, PRS, fallback ERS.
    RecoverIncapacitatedPrimary,
    /// `RecoverPrimaryHasPrimary`: reset replication parameters on the primary.
    RecoverPrimaryHasPrimary,
    /// `FixPrimary`: read-write, semi-sync, tablet type on the primary.
    FixPrimary,
    /// `FixReplica`: read-only, semi-sync, replication source on a replica.
    FixReplica,
    /// `ReconcileStaleTopoPrimary`: demote a stale topo primary.
    ReconcileStaleTopoPrimary,
    /// `RecoverErrantGTIDDetected`: change the tablet to DRAINED (opt-in).
    RecoverErrantGtidDetected,
    /// `ElectNewPrimary`: PlannedReparentShard on a shard without primary.
    ElectNewPrimary,
    /// `RecoverPrimaryTabletDeleted`: ERS waiting for all tablets.
    RecoverPrimaryTabletDeleted,
    /// `RestartArbitraryDirectReplica`.
    RestartArbitraryDirectReplica,
    /// `RestartAllDirectReplicas`.
    RestartAllDirectReplicas,
    /// Ours: a PlannedReparentShard an operator requested through the
    /// Vtctld service (VTAdmin, `vtctldclient`). Never chosen by analysis;
    /// only names audit records of operator-requested reparents.
    OperatorPlannedReparentShard,
    /// Ours: an EmergencyReparentShard an operator requested through the
    /// Vtctld service. Never chosen by analysis.
    OperatorEmergencyReparentShard,
}

impl RecoveryKind {
    /// Go's `RecoveryType` label (empty for [`RecoveryKind::None`]).
    pub fn name(self) -> &'static str {
        match self {
            RecoveryKind::None => "",
            RecoveryKind::Generic => "CheckAndRecoverGenericProblem",
            RecoveryKind::RecoverDeadPrimary => "RecoverDeadPrimary",
            RecoveryKind::RecoverIncapacitatedPrimary => "RecoverIncapacitatedPrimary",
            RecoveryKind::RecoverPrimaryHasPrimary => "RecoverPrimaryHasPrimary",
            RecoveryKind::FixPrimary => "FixPrimary",
            RecoveryKind::FixReplica => "FixReplica",
            RecoveryKind::ReconcileStaleTopoPrimary => "ReconcileStaleTopoPrimary",
            RecoveryKind::RecoverErrantGtidDetected => "RecoverErrantGTIDDetected",
            RecoveryKind::ElectNewPrimary => "ElectNewPrimary",
            RecoveryKind::RecoverPrimaryTabletDeleted => "RecoverPrimaryTabletDeleted",
            RecoveryKind::RestartArbitraryDirectReplica => "RestartArbitraryDirectReplica",
            RecoveryKind::RestartAllDirectReplicas => "RestartAllDirectReplicas",
            RecoveryKind::OperatorPlannedReparentShard => "OperatorPlannedReparentShard",
            RecoveryKind::OperatorEmergencyReparentShard => "OperatorEmergencyReparentShard",
        }
    }

    /// Whether the reparent was requested by an operator through the
    /// Vtctld service rather than run by vtorc's recovery engine.
    pub fn is_operator_request(self) -> bool {
        matches!(
            self,
            RecoveryKind::OperatorPlannedReparentShard | RecoveryKind::OperatorEmergencyReparentShard
        )
    }

    /// Whether the recovery runs EmergencyReparentShard (skipped when ERS is disabled).
    pub fn uses_ers(self) -> bool {
        matches!(
            self,
            RecoveryKind::RecoverDeadPrimary | RecoveryKind::RecoverPrimaryTabletDeleted
        )
    }
}

/// Displays and serializes `$code` as its Go name (its `name()`), the
/// one spelling the APIs, logs and audit use.
macro_rules! go_named {
    ($code:ty) => {
        impl fmt::Display for $code {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $code {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

macro_rules! analysis_codes {
    ($( $(#[$doc:meta])* $code:ident = $name:literal ),* $(,)?) => {
        /// A problem VTOrc detects. Variant order is the catalogue order
        /// (reference §5.4), which breaks ties when sorting a tablet's problems.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum AnalysisCode {
            /// No problem (only reported when structure warnings exist).
            NoProblem,
            $( $(#[$doc])* $code, )*
        }

        impl AnalysisCode {
            /// The 35 problem codes, in catalogue order (Go's 34, then ours).
            pub const CATALOGUE: [AnalysisCode; 35] = [$(AnalysisCode::$code),*];

            /// Go VTOrc's name of the code.
            pub fn name(self) -> &'static str {
                match self {
                    AnalysisCode::NoProblem => "NoProblem",
                    $(AnalysisCode::$code => $name,)*
                }
            }
        }
    };
}

analysis_codes! {
    /// 1: the shard's primary was never reached.
    InvalidPrimary = "InvalidPrimary",
    /// 2: a tablet was never reached.
    InvalidReplica = "InvalidReplica",
    /// 3: the primary is unreachable and its disk is stalled.
    PrimaryDiskStalled = "PrimaryDiskStalled",
    /// 4: the primary is unreachable and has no replica.
    DeadPrimaryWithoutReplicas = "DeadPrimaryWithoutReplicas",
    /// 5: the primary is unreachable, its replicas reachable, none replicating.
    DeadPrimary = "DeadPrimary",
    /// 6: the primary and all its replicas are unreachable.
    DeadPrimaryAndReplicas = "DeadPrimaryAndReplicas",
    /// 7: the primary and some replicas are unreachable; no reachable replica replicates.
    DeadPrimaryAndSomeReplicas = "DeadPrimaryAndSomeReplicas",
    /// 8: the primary vttablet is unreachable and a replica quorum agrees (v25, opt-in).
    PrimaryTabletUnreachableByQuorum = "PrimaryTabletUnreachableByQuorum",
    /// 9: the primary keeps failing health checks (v24).
    IncapacitatedPrimary = "IncapacitatedPrimary",
    /// 10: the primary replicates from another server.
    PrimaryHasPrimary = "PrimaryHasPrimary",
    /// 11: the primary is read-only.
    PrimaryIsReadOnly = "PrimaryIsReadOnly",
    /// 12: a replica is writable.
    ReplicaIsWritable = "ReplicaIsWritable",
    /// 13: the primary should have semi-sync on and has not.
    PrimarySemiSyncMustBeSet = "PrimarySemiSyncMustBeSet",
    /// 14: the primary has semi-sync on and should not.
    PrimarySemiSyncMustNotBeSet = "PrimarySemiSyncMustNotBeSet",
    /// 15: a replica should ack semi-sync and does not.
    ReplicaSemiSyncMustBeSet = "ReplicaSemiSyncMustBeSet",
    /// 16: a replica acks semi-sync and should not.
    ReplicaSemiSyncMustNotBeSet = "ReplicaSemiSyncMustNotBeSet",
    /// 17: writes on the primary are blocked on semi-sync acks although enough ackers exist.
    PrimarySemiSyncBlocked = "PrimarySemiSyncBlocked",
    /// 18: the primary's vttablet runs as another type.
    PrimaryCurrentTypeMismatch = "PrimaryCurrentTypeMismatch",
    /// 19: a topo PRIMARY older than the shard's primary (v24).
    StaleTopoPrimary = "StaleTopoPrimary",
    /// 20: a replica has errant GTIDs.
    ErrantGtidDetected = "ErrantGTIDDetected",
    /// 21: the shard has no primary and never had one.
    ClusterHasNoPrimary = "ClusterHasNoPrimary",
    /// 22: the shard's primary tablet was deleted.
    PrimaryTabletDeleted = "PrimaryTabletDeleted",
    /// 23: a replica's replication threads are not running.
    ReplicationStopped = "ReplicationStopped",
    /// 24: a replica replicates from nowhere.
    NotConnectedToPrimary = "NotConnectedToPrimary",
    /// 25: a replica's heartbeat and net timeout disagree.
    ReplicaMisconfigured = "ReplicaMisconfigured",
    /// 26: a replica replicates from another server than the shard primary.
    ConnectedToWrongPrimary = "ConnectedToWrongPrimary",
    /// 27: unreachable primary, all replicas lagging.
    UnreachablePrimaryWithLaggingReplicas = "UnreachablePrimaryWithLaggingReplicas",
    /// 28: unreachable primary, all reachable replicas still replicating.
    UnreachablePrimary = "UnreachablePrimary",
    /// 29: unreachable primary, only some reachable replicas replicating.
    UnreachablePrimaryWithBrokenReplicas = "UnreachablePrimaryWithBrokenReplicas",
    /// 30: a semi-sync primary has fewer ack clients than it waits for.
    LockedSemiSyncPrimaryHypothesis = "LockedSemiSyncPrimaryHypothesis",
    /// 31: reachable primary whose single replica does not replicate.
    PrimarySingleReplicaNotReplicating = "PrimarySingleReplicaNotReplicating",
    /// 32: reachable primary whose single replica is unreachable.
    PrimarySingleReplicaDead = "PrimarySingleReplicaDead",
    /// 33: reachable primary, no replica replicates (all reachable).
    AllPrimaryReplicasNotReplicating = "AllPrimaryReplicasNotReplicating",
    /// 34: reachable primary, no reachable replica replicates, some unreachable.
    AllPrimaryReplicasNotReplicatingOrDead = "AllPrimaryReplicasNotReplicatingOrDead",
    /// 35 (ours, not in Go VTOrc): a replica cannot replicate because it holds
    /// transactions its primary lacks (errant GTIDs, a diverged old primary,
    /// or a position the primary can no longer serve): it needs a restore,
    /// which no replication repair can do.
    ReplicaDivergedFromPrimary = "ReplicaDivergedFromPrimary",
}

use AnalysisCode as C;

impl AnalysisCode {
    /// Looks a code up by its Go name.
    pub fn from_name(name: &str) -> Option<AnalysisCode> {
        if name == "NoProblem" {
            return Some(C::NoProblem);
        }
        C::CATALOGUE.iter().copied().find(|c| c.name() == name)
    }

    /// 1-based position in the catalogue (0 for `NoProblem`).
    pub fn catalogue_number(self) -> usize {
        C::CATALOGUE.iter().position(|c| *c == self).map_or(0, |i| i + 1)
    }

    /// Priority (reference §5.4).
    pub fn priority(self) -> Priority {
        use Priority::*;
        match self {
            C::NoProblem => Low,
            C::InvalidPrimary => Critical,
            C::InvalidReplica => Low,
            C::PrimaryDiskStalled
            | C::DeadPrimaryWithoutReplicas
            | C::DeadPrimary
            | C::DeadPrimaryAndReplicas
            | C::DeadPrimaryAndSomeReplicas
            | C::PrimaryTabletUnreachableByQuorum
            | C::IncapacitatedPrimary
            | C::PrimaryHasPrimary
            | C::PrimarySemiSyncBlocked
            | C::ClusterHasNoPrimary
            | C::PrimaryTabletDeleted => ShardWideAction,
            C::PrimaryIsReadOnly | C::StaleTopoPrimary | C::ReplicaDivergedFromPrimary => High,
            C::AllPrimaryReplicasNotReplicating | C::AllPrimaryReplicasNotReplicatingOrDead => Low,
            _ => Medium,
        }
    }

    /// Codes this one must be recovered before (`BeforeAnalyses`).
    pub fn before(self) -> &'static [AnalysisCode] {
        match self {
            C::PrimaryDiskStalled => &[
                C::DeadPrimary,
                C::DeadPrimaryAndReplicas,
                C::DeadPrimaryAndSomeReplicas,
                C::DeadPrimaryWithoutReplicas,
            ],
            C::PrimaryIsReadOnly | C::ReplicationStopped => &[C::PrimarySemiSyncBlocked],
            C::PrimarySemiSyncMustNotBeSet => &[C::ReplicaSemiSyncMustNotBeSet],
            C::ReplicaSemiSyncMustBeSet => &[C::PrimarySemiSyncMustBeSet],
            _ => &[],
        }
    }

    /// Codes that must be recovered before this one (`AfterAnalyses`).
    pub fn after(self) -> &'static [AnalysisCode] {
        match self {
            C::PrimarySemiSyncMustBeSet => &[C::ReplicaSemiSyncMustBeSet],
            C::ReplicaSemiSyncMustNotBeSet => &[C::PrimarySemiSyncMustNotBeSet],
            _ => &[],
        }
    }

    /// Whether `self` must run before `other` by an explicit Before/After link.
    pub fn must_run_before(self, other: AnalysisCode) -> bool {
        self.before().contains(&other) || other.after().contains(&self)
    }

    /// The recovery Go VTOrc picks for this code.
    pub fn recovery(self) -> RecoveryKind {
        use RecoveryKind as R;
        match self {
            C::PrimaryDiskStalled
            | C::DeadPrimary
            | C::DeadPrimaryAndSomeReplicas
            | C::PrimaryTabletUnreachableByQuorum
            | C::PrimarySemiSyncBlocked => R::RecoverDeadPrimary,
            C::DeadPrimaryAndReplicas
            | C::UnreachablePrimaryWithLaggingReplicas
            | C::AllPrimaryReplicasNotReplicating
            | C::AllPrimaryReplicasNotReplicatingOrDead => R::Generic,
            C::IncapacitatedPrimary => R::RecoverIncapacitatedPrimary,
            C::PrimaryHasPrimary => R::RecoverPrimaryHasPrimary,
            C::PrimaryIsReadOnly
            | C::PrimarySemiSyncMustBeSet
            | C::PrimarySemiSyncMustNotBeSet
            | C::PrimaryCurrentTypeMismatch => R::FixPrimary,
            C::ReplicaIsWritable
            | C::ReplicaSemiSyncMustBeSet
            | C::ReplicaSemiSyncMustNotBeSet
            | C::ReplicationStopped
            | C::NotConnectedToPrimary
            | C::ReplicaMisconfigured
            | C::ConnectedToWrongPrimary => R::FixReplica,
            C::StaleTopoPrimary => R::ReconcileStaleTopoPrimary,
            C::ErrantGtidDetected | C::ReplicaDivergedFromPrimary => R::RecoverErrantGtidDetected,
            C::ClusterHasNoPrimary => R::ElectNewPrimary,
            C::PrimaryTabletDeleted => R::RecoverPrimaryTabletDeleted,
            C::UnreachablePrimary => R::RestartArbitraryDirectReplica,
            C::UnreachablePrimaryWithBrokenReplicas => R::RestartAllDirectReplicas,
            C::NoProblem
            | C::InvalidPrimary
            | C::InvalidReplica
            | C::DeadPrimaryWithoutReplicas
            | C::LockedSemiSyncPrimaryHypothesis
            | C::PrimarySingleReplicaNotReplicating
            | C::PrimarySingleReplicaDead => R::None,
        }
    }

    /// Whether a recovery that changes something exists ("Act." column).
    pub fn is_actionable(self) -> bool {
        !matches!(self.recovery(), RecoveryKind::None | RecoveryKind::Generic)
    }

    /// Whether the recovery refreshes the whole shard before and after (`isShardWideRecovery`).
    pub fn is_shard_wide_recovery(self) -> bool {
        matches!(
            self.recovery(),
            RecoveryKind::RecoverDeadPrimary
                | RecoveryKind::RecoverIncapacitatedPrimary
                | RecoveryKind::ElectNewPrimary
                | RecoveryKind::RecoverPrimaryTabletDeleted
        )
    }

    /// Whether only one problem of this kind may act per shard and pass (priority ShardWideAction).
    pub fn is_shard_wide_action(self) -> bool {
        self.priority() == Priority::ShardWideAction
    }

    /// Whether recoveries of this code run one at a time per shard (reference §5.5).
    pub fn requires_ordered_execution(self) -> bool {
        self.is_shard_wide_action()
            || !self.before().is_empty()
            || !self.after().is_empty()
            || C::CATALOGUE
                .iter()
                .any(|c| c.before().contains(&self) || c.after().contains(&self))
    }

    /// One-line description (our wording).
    pub fn description(self) -> &'static str {
        match self {
            C::NoProblem => "no problem",
            C::InvalidPrimary => "the shard primary has not been reached once since VTOrc started",
            C::InvalidReplica => "the tablet has not been reached once since VTOrc started",
            C::PrimaryDiskStalled => "the primary is unreachable and reports a stalled disk",
            C::DeadPrimaryWithoutReplicas => "the primary is unreachable and has no replicas",
            C::DeadPrimary => "the primary is unreachable and none of its replicas replicates",
            C::DeadPrimaryAndReplicas => "the primary and all of its replicas are unreachable",
            C::DeadPrimaryAndSomeReplicas => {
                "the primary and some of its replicas are unreachable; no reachable replica replicates"
            }
            C::PrimaryTabletUnreachableByQuorum => {
                "the primary vttablet is unreachable and a quorum of shard replicas cannot reach it either"
            }
            C::IncapacitatedPrimary => "the primary keeps failing health checks",
            C::PrimaryHasPrimary => "the primary replicates from another server",
            C::PrimaryIsReadOnly => "the primary is read-only",
            C::ReplicaIsWritable => "the replica is writable",
            C::PrimarySemiSyncMustBeSet => "the primary must have semi-sync enabled",
            C::PrimarySemiSyncMustNotBeSet => "the primary must not have semi-sync enabled",
            C::ReplicaSemiSyncMustBeSet => "the replica must have semi-sync enabled",
            C::ReplicaSemiSyncMustNotBeSet => "the replica must not have semi-sync enabled",
            C::PrimarySemiSyncBlocked => {
                "primary writes are blocked waiting for semi-sync acks although enough replicas could ack"
            }
            C::PrimaryCurrentTypeMismatch => "the primary's vttablet does not run as PRIMARY",
            C::StaleTopoPrimary => "the topo lists this tablet as PRIMARY but a newer primary exists",
            C::ErrantGtidDetected => "the replica has transactions its primary does not have (errant GTIDs)",
            C::ClusterHasNoPrimary => "the shard has no primary and never had one",
            C::PrimaryTabletDeleted => "the shard's primary tablet was deleted from the topo",
            C::ReplicationStopped => "replication is stopped",
            C::NotConnectedToPrimary => "the replica does not replicate from any server",
            C::ReplicaMisconfigured => "replica_net_timeout is not twice the heartbeat interval",
            C::ConnectedToWrongPrimary => "the replica replicates from a server other than the shard primary",
            C::UnreachablePrimaryWithLaggingReplicas => "the primary is unreachable and all its replicas lag",
            C::UnreachablePrimary => {
                "the primary is unreachable but its reachable replicas still replicate (network or host issue?)"
            }
            C::UnreachablePrimaryWithBrokenReplicas => {
                "the primary is unreachable and only some of its reachable replicas replicate"
            }
            C::LockedSemiSyncPrimaryHypothesis => {
                "the semi-sync primary has fewer ack clients connected than it waits for"
            }
            C::PrimarySingleReplicaNotReplicating => {
                "the primary is reachable but its only replica does not replicate"
            }
            C::PrimarySingleReplicaDead => "the primary is reachable but its only replica is unreachable",
            C::AllPrimaryReplicasNotReplicating => {
                "the primary is reachable but none of its replicas replicates"
            }
            C::AllPrimaryReplicasNotReplicatingOrDead => {
                "the primary is reachable but none of its replicas replicates and some are unreachable"
            }
            C::ReplicaDivergedFromPrimary => {
                "the replica holds transactions its primary lacks and cannot replicate; \
                 restore this tablet from a backup (no replication repair can fix it)"
            }
        }
    }
}

go_named!(AnalysisCode);

/// Informational warnings about a primary's replica topology (reference §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StructureWarning {
    /// More than one replica, none logs its updates.
    NoLoggingReplicas,
    /// More than one replica, not all use GTID auto-positioning.
    NoFailoverSupport,
    /// STATEMENT and MIXED logging replicas together.
    StatementAndMixedLoggingReplicas,
    /// STATEMENT and ROW logging replicas together.
    StatementAndRowLoggingReplicas,
    /// MIXED and ROW logging replicas together.
    MixedAndRowLoggingReplicas,
    /// Logging replicas of more than one major version.
    MultipleMajorVersionsLoggingReplicas,
    /// Replicas whose gtid_mode differs from the tablet's.
    DifferentGtidModes,
    /// Some replica has errant GTIDs.
    ErrantGtid,
    /// The primary is read-only.
    NoWriteablePrimary,
    /// Semi-sync fell back to async for lack of ack clients.
    NotEnoughValidSemiSyncReplicas,
    /// Ours: recoveries of this problem keep running without clearing it
    /// (added by the recovery engine's back-off, not by detection).
    RecoveryNotClearingProblem,
}

impl StructureWarning {
    /// Go VTOrc's name.
    pub fn name(self) -> &'static str {
        match self {
            StructureWarning::NoLoggingReplicas => "NoLoggingReplicasStructureWarning",
            StructureWarning::NoFailoverSupport => "NoFailoverSupportStructureWarning",
            StructureWarning::StatementAndMixedLoggingReplicas => {
                "StatementAndMixedLoggingReplicasStructureWarning"
            }
            StructureWarning::StatementAndRowLoggingReplicas => {
                "StatementAndRowLoggingReplicasStructureWarning"
            }
            StructureWarning::MixedAndRowLoggingReplicas => "MixedAndRowLoggingReplicasStructureWarning",
            StructureWarning::MultipleMajorVersionsLoggingReplicas => {
                "MultipleMajorVersionsLoggingReplicasStructureWarning"
            }
            StructureWarning::DifferentGtidModes => "DifferentGTIDModesStructureWarning",
            StructureWarning::ErrantGtid => "ErrantGTIDStructureWarning",
            StructureWarning::NoWriteablePrimary => "NoWriteablePrimaryStructureWarning",
            StructureWarning::NotEnoughValidSemiSyncReplicas => {
                "NotEnoughValidSemiSyncReplicasStructureWarning"
            }
            StructureWarning::RecoveryNotClearingProblem => "RecoveryNotClearingProblem",
        }
    }
}

go_named!(StructureWarning);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_35_codes_with_unique_names_that_round_trip() {
        let mut names: Vec<&str> = C::CATALOGUE.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 35);
        for c in C::CATALOGUE {
            assert_eq!(AnalysisCode::from_name(c.name()), Some(c));
        }
        assert_eq!(C::ErrantGtidDetected.name(), "ErrantGTIDDetected");
        assert_eq!(C::CATALOGUE[7], C::PrimaryTabletUnreachableByQuorum);
        assert_eq!(C::AllPrimaryReplicasNotReplicatingOrDead.catalogue_number(), 34);
    }

    /// The catalogue's codes for which `keep` holds, in catalogue order.
    fn catalogue_where(keep: impl Fn(&AnalysisCode) -> bool) -> Vec<AnalysisCode> {
        C::CATALOGUE.iter().copied().filter(keep).collect()
    }

    #[test]
    fn priorities_match_the_reference_table() {
        let sw = catalogue_where(|c| c.is_shard_wide_action());
        assert_eq!(
            sw,
            [
                C::PrimaryDiskStalled,
                C::DeadPrimaryWithoutReplicas,
                C::DeadPrimary,
                C::DeadPrimaryAndReplicas,
                C::DeadPrimaryAndSomeReplicas,
                C::PrimaryTabletUnreachableByQuorum,
                C::IncapacitatedPrimary,
                C::PrimaryHasPrimary,
                C::PrimarySemiSyncBlocked,
                C::ClusterHasNoPrimary,
                C::PrimaryTabletDeleted,
            ]
        );
        assert_eq!(C::InvalidPrimary.priority(), Priority::Critical);
        assert_eq!(C::StaleTopoPrimary.priority(), Priority::High);
        assert_eq!(C::InvalidReplica.priority(), Priority::Low);
    }

    #[test]
    fn actionable_and_shard_wide_recovery_flags_match_the_reference_table() {
        let not_actionable = [
            C::InvalidPrimary,
            C::InvalidReplica,
            C::DeadPrimaryWithoutReplicas,
            C::DeadPrimaryAndReplicas,
            C::UnreachablePrimaryWithLaggingReplicas,
            C::LockedSemiSyncPrimaryHypothesis,
            C::PrimarySingleReplicaNotReplicating,
            C::PrimarySingleReplicaDead,
            C::AllPrimaryReplicasNotReplicating,
            C::AllPrimaryReplicasNotReplicatingOrDead,
        ];
        for c in C::CATALOGUE {
            assert_eq!(c.is_actionable(), !not_actionable.contains(&c), "{c}");
        }
        let sw_rec = catalogue_where(|c| c.is_shard_wide_recovery());
        assert_eq!(
            sw_rec,
            [
                C::PrimaryDiskStalled,
                C::DeadPrimary,
                C::DeadPrimaryAndSomeReplicas,
                C::PrimaryTabletUnreachableByQuorum,
                C::IncapacitatedPrimary,
                C::PrimarySemiSyncBlocked,
                C::ClusterHasNoPrimary,
                C::PrimaryTabletDeleted,
            ]
        );
        let ers = catalogue_where(|c| c.recovery().uses_ers());
        assert_eq!(
            ers,
            [
                C::PrimaryDiskStalled,
                C::DeadPrimary,
                C::DeadPrimaryAndSomeReplicas,
                C::PrimaryTabletUnreachableByQuorum,
                C::PrimarySemiSyncBlocked,
                C::PrimaryTabletDeleted,
            ]
        );
    }

    #[test]
    fn ordered_execution_covers_every_linked_code() {
        for c in [
            C::ReplicaSemiSyncMustBeSet,
            C::PrimarySemiSyncMustBeSet,
            C::PrimarySemiSyncMustNotBeSet,
            C::ReplicaSemiSyncMustNotBeSet,
            C::ReplicationStopped,
            C::PrimaryIsReadOnly,
            C::PrimarySemiSyncBlocked,
            C::DeadPrimaryWithoutReplicas,
        ] {
            assert!(c.requires_ordered_execution(), "{c}");
        }
        for c in [
            C::ReplicaIsWritable,
            C::ConnectedToWrongPrimary,
            C::StaleTopoPrimary,
        ] {
            assert!(!c.requires_ordered_execution(), "{c}");
        }
        assert!(C::ReplicaSemiSyncMustBeSet.must_run_before(C::PrimarySemiSyncMustBeSet));
        assert!(C::PrimarySemiSyncMustNotBeSet.must_run_before(C::ReplicaSemiSyncMustNotBeSet));
        assert!(!C::PrimarySemiSyncMustBeSet.must_run_before(C::ReplicaSemiSyncMustBeSet));
    }
}
