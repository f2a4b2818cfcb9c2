//! Errors of ERS and PRS.
//!
//! Every refusal that protects data has its own variant, so callers (the
//! recovery engine, tests, the vtctld API) can tell "refused because it could
//! not prove safety" from "a tablet RPC failed". [`ReparentError::grpc_code`]
//! is the one place that maps them to gRPC codes; [`ReparentError::is_retryable`]
//! says whether running the same reparent again later may succeed.

use crate::analysis::durability::DurabilityError;
use crate::error::WithContext;
use crate::mysql::PositionError;
use crate::tablet::TabletError;
use crate::topo::TopoError;

/// Why an EmergencyReparentShard or PlannedReparentShard did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReparentError {
    /// The request itself is unusable (names another shard than the held
    /// lock, an empty keyspace, …). Nothing was done.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `expected_primary` does not match the shard record. Nothing was done.
    #[error("primary {actual} is not equal to expected alias {expected}")]
    ExpectedPrimaryMismatch {
        /// The alias the caller expected.
        expected: String,
        /// The shard record's primary alias (`<nil>` when none).
        actual: String,
    },
    /// The shard lock could not be taken (held by someone else past
    /// `--lock-timeout`, or the shard does not exist).
    #[error("cannot lock shard {keyspace_shard}: {source}")]
    Lock {
        /// `keyspace/shard`.
        keyspace_shard: String,
        /// The topo error.
        #[source]
        source: TopoError,
    },
    /// The shard lock was lost while the reparent ran; it stopped at once.
    #[error("lost topology lock, aborting: {0}")]
    LockLost(String),
    /// Too few tablets answered to be sure no tablet can still accept
    /// writes (`haveRevoked` failed). Replication was restarted where it
    /// had been stopped.
    #[error("could not reach sufficient tablets to guarantee safety: {errors}")]
    NotEnoughTabletsReached {
        /// How many tablets were reached (replication stopped or demoted).
        reached: usize,
        /// How many tablets the shard has.
        total: usize,
        /// The failures, one per unreachable tablet.
        errors: String,
    },
    /// The most advanced tablets hold histories that neither contains: a
    /// split brain. Promoting either would discard the other's writes.
    #[error("split brain detected: {0}")]
    SplitBrain(String),
    /// The requested primary, or every candidate, has errant GTIDs.
    #[error("errant GTIDs: {0}")]
    ErrantGtids(String),
    /// No tablet passed the candidate filters (type, promotion rule, cell,
    /// semi-sync ackers, errant GTIDs, …).
    #[error("no valid candidates for {operation}: {reason}")]
    NoValidCandidates {
        /// `emergency reparent` or `planned reparent`.
        operation: &'static str,
        /// What removed them.
        reason: String,
    },
    /// A precondition of the shard's state does not hold (a requested primary
    /// that is not in the shard, the tablet to avoid equals the new primary, …).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The requested primary cannot be used (must-not rule, other cell, no
    /// ackers); Vitess answers ABORTED for these.
    #[error("{0}")]
    Aborted(String),
    /// A topology read or write failed.
    #[error(transparent)]
    Topo(WithContext<TopoError>),
    /// A tablet RPC failed.
    #[error(transparent)]
    Tablet(WithContext<TabletError>),
    /// Several tablet RPCs failed (e.g. every replica refused to repoint).
    #[error("{context}: {errors}")]
    Tablets {
        /// What was being done.
        context: String,
        /// The failures, `; `-separated.
        errors: String,
        /// Whether all of them are retryable.
        retryable: bool,
    },
    /// A stage ran past its bound (`--wait-replicas-timeout` or
    /// `--remote-operation-timeout`).
    #[error("{0}")]
    Timeout(String),
    /// A tablet reported a position that does not parse, or positions of
    /// different flavors were mixed.
    #[error("{context}: {source}")]
    Position {
        /// Which tablet / what.
        context: String,
        /// The parse or flavor error.
        #[source]
        source: PositionError,
    },
    /// The keyspace's durability policy is unknown.
    #[error("durability policy: {0}")]
    Durability(#[from] DurabilityError),
    /// The caller cancelled the reparent (shutdown, client gone).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// Something that cannot happen happened.
    #[error("internal error: {0}")]
    Internal(String),
    /// The reparent failed and the clean-up afterwards (restarting the
    /// replication ERS had stopped) failed too.
    #[error("{source}, and restart replication cleanup failed: {cleanup}")]
    CleanupFailed {
        /// The original failure.
        #[source]
        source: Box<ReparentError>,
        /// What the clean-up reported.
        cleanup: String,
    },
}

impl ReparentError {
    /// True when running the same reparent again later may succeed without
    /// anyone changing the shard (transient unreachability, lock contention).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReparentError::Lock { source, .. } => source.is_retryable() || source.is_node_exists(),
            ReparentError::LockLost(_)
            | ReparentError::NotEnoughTabletsReached { .. }
            | ReparentError::Timeout(_) => true,
            ReparentError::Topo(e) => e.source.is_retryable(),
            ReparentError::Tablet(e) => e.source.is_retryable(),
            ReparentError::Tablets { retryable, .. } => *retryable,
            ReparentError::CleanupFailed { source, .. } => source.is_retryable(),
            ReparentError::InvalidArgument(_)
            | ReparentError::ExpectedPrimaryMismatch { .. }
            | ReparentError::SplitBrain(_)
            | ReparentError::ErrantGtids(_)
            | ReparentError::NoValidCandidates { .. }
            | ReparentError::FailedPrecondition(_)
            | ReparentError::Aborted(_)
            | ReparentError::Position { .. }
            | ReparentError::Durability(_)
            | ReparentError::Cancelled(_)
            | ReparentError::Internal(_) => false,
        }
    }

    /// The gRPC code the vtctld API answers with.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ReparentError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ReparentError::ExpectedPrimaryMismatch { .. }
            | ReparentError::NotEnoughTabletsReached { .. }
            | ReparentError::SplitBrain(_)
            | ReparentError::ErrantGtids(_)
            | ReparentError::NoValidCandidates { .. }
            | ReparentError::FailedPrecondition(_)
            | ReparentError::Durability(_) => tonic::Code::FailedPrecondition,
            ReparentError::Aborted(_) | ReparentError::LockLost(_) => tonic::Code::Aborted,
            ReparentError::Lock { source, .. } => source.grpc_code(),
            ReparentError::Topo(e) => e.source.grpc_code(),
            ReparentError::Tablet(e) => e.source.grpc_code(),
            ReparentError::Tablets { retryable, .. } => {
                if *retryable {
                    tonic::Code::Unavailable
                } else {
                    tonic::Code::Unknown
                }
            }
            ReparentError::Timeout(_) => tonic::Code::DeadlineExceeded,
            ReparentError::Position { .. } | ReparentError::Internal(_) => tonic::Code::Internal,
            ReparentError::Cancelled(_) => tonic::Code::Cancelled,
            ReparentError::CleanupFailed { source, .. } => source.grpc_code(),
        }
    }

    /// True for [`ReparentError::Cancelled`] (also under a failed clean-up):
    /// log it below ERROR.
    pub fn is_cancelled(&self) -> bool {
        match self {
            ReparentError::Cancelled(_) => true,
            ReparentError::CleanupFailed { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }

    /// Wraps a tablet RPC error with what was being done.
    pub fn tablet(context: impl Into<String>, source: TabletError) -> Self {
        ReparentError::Tablet(WithContext::new(context, source))
    }

    /// Wraps a topo error with what was being done.
    pub fn topo(context: impl Into<String>, source: TopoError) -> Self {
        ReparentError::Topo(WithContext::new(context, source))
    }

    /// Wraps a position error with what was being done.
    pub fn position(context: impl Into<String>, source: PositionError) -> Self {
        ReparentError::Position {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of the reparent module.
pub type ReparentResult<T> = Result<T, ReparentError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::topodata::TabletAlias;

    #[test]
    fn safety_refusals_are_failed_preconditions() {
        for e in [
            ReparentError::SplitBrain("a and b".into()),
            ReparentError::ErrantGtids("x".into()),
            ReparentError::ExpectedPrimaryMismatch {
                expected: "zone1-0000000100".into(),
                actual: "zone1-0000000101".into(),
            },
            ReparentError::NotEnoughTabletsReached {
                reached: 1,
                total: 3,
                errors: "boom".into(),
            },
        ] {
            assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition, "{e}");
        }
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(ReparentError::LockLost("x".into()).is_retryable());
        assert!(
            ReparentError::Lock {
                keyspace_shard: "ks/0".into(),
                source: TopoError::NodeExists("lock already exists".into()),
            }
            .is_retryable()
        );
        assert!(!ReparentError::SplitBrain("x".into()).is_retryable());
        let unreachable = TabletError::Unreachable {
            alias: TabletAlias::new("zone1", 1),
            method: "PromoteReplica",
            code: tonic::Code::Unavailable,
            message: "refused".into(),
        };
        assert!(ReparentError::tablet("promote", unreachable).is_retryable());
    }

    #[test]
    fn cancelled_is_recognised_under_a_failed_cleanup() {
        let e = ReparentError::CleanupFailed {
            source: Box::new(ReparentError::Cancelled("shutdown".into())),
            cleanup: "start replication failed".into(),
        };
        assert!(e.is_cancelled());
        assert_eq!(e.grpc_code(), tonic::Code::Cancelled);
        assert!(
            e.to_string().contains("restart replication cleanup failed"),
            "{e}"
        );
    }

    #[test]
    fn expected_primary_mismatch_reads_like_vitess() {
        let e = ReparentError::ExpectedPrimaryMismatch {
            expected: "zone1-0000000100".into(),
            actual: "zone1-0000000101".into(),
        };
        assert_eq!(
            e.to_string(),
            "primary zone1-0000000101 is not equal to expected alias zone1-0000000100"
        );
    }
}
