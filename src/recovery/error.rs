//! Errors of the recovery engine.
//!
//! A recovery fails for one of a few reasons: a tablet RPC failed, the
//! topology could not be read or written, the reparent library refused or
//! failed, discovery could not refresh what the recovery needs, the shard
//! lock was lost, or the engine is shutting down. [`RecoveryError::is_cancelled`]
//! tells the last two apart so they are never logged at ERROR.

use crate::discovery::DiscoveryError;
use crate::error::WithContext;
use crate::reparent::ReparentError;
use crate::tablet::TabletError;
use crate::topo::TopoError;

/// Why a recovery (or a step of the gate before it) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecoveryError {
    /// A tablet RPC failed (the context says which, as in
    /// `SetReadOnly on zone1-0000000101`).
    #[error(transparent)]
    Tablet(WithContext<TabletError>),
    /// A topology read or write failed.
    #[error(transparent)]
    Topo(WithContext<TopoError>),
    /// ERS or PRS failed.
    #[error("{context}: {source}")]
    Reparent {
        /// Which reparent (`EmergencyReparentShard`).
        context: &'static str,
        /// The reparent error.
        #[source]
        source: ReparentError,
    },
    /// Discovery could not refresh a tablet (the context says which).
    #[error(transparent)]
    Discovery(WithContext<DiscoveryError>),
    /// The recovery cannot go on with what it found (no shard primary to
    /// repoint to, no tablet record, unknown durability policy, ...).
    #[error("{0}")]
    Precondition(String),
    /// `--cells-no-recovery` names a cell the topology does not know:
    /// a configuration error, fatal as in Go VTOrc.
    #[error("--cells-no-recovery names unknown cell(s) {unknown:?}; known cells: {known:?}")]
    UnknownCells {
        /// The cells not in the topology.
        unknown: Vec<String>,
        /// The cells the topology has.
        known: Vec<String>,
    },
    /// The shard lock's lease was lost while the recovery ran.
    #[error("shard lock lost: {0}")]
    LockLost(String),
    /// The engine is shutting down (or discovery stopped).
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl RecoveryError {
    /// Wraps a tablet RPC error.
    pub fn tablet(context: impl Into<String>, source: TabletError) -> Self {
        RecoveryError::Tablet(WithContext::new(context, source))
    }

    /// Wraps a topo error.
    pub fn topo(context: impl Into<String>, source: TopoError) -> Self {
        RecoveryError::Topo(WithContext::new(context, source))
    }

    /// Wraps a discovery error.
    pub fn discovery(context: impl Into<String>, source: DiscoveryError) -> Self {
        RecoveryError::Discovery(WithContext::new(context, source))
    }

    /// True when the same recovery may succeed if tried again later without
    /// anyone changing the shard.
    pub fn is_retryable(&self) -> bool {
        match self {
            RecoveryError::Tablet(e) => e.source.is_retryable(),
            RecoveryError::Topo(e) => e.source.is_retryable(),
            RecoveryError::Reparent { source, .. } => source.is_retryable(),
            RecoveryError::Discovery(e) => e.source.is_retryable(),
            RecoveryError::LockLost(_) => true,
            RecoveryError::Precondition(_)
            | RecoveryError::UnknownCells { .. }
            | RecoveryError::Cancelled(_) => false,
        }
    }

    /// The gRPC code an API reports this error with.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            RecoveryError::Tablet(e) => e.source.grpc_code(),
            RecoveryError::Topo(e) => e.source.grpc_code(),
            RecoveryError::Reparent { source, .. } => source.grpc_code(),
            RecoveryError::Discovery(e) => e.source.grpc_code(),
            RecoveryError::Precondition(_) => tonic::Code::FailedPrecondition,
            RecoveryError::UnknownCells { .. } => tonic::Code::InvalidArgument,
            RecoveryError::LockLost(_) => tonic::Code::Aborted,
            RecoveryError::Cancelled(_) => tonic::Code::Cancelled,
        }
    }

    /// Whether this is a cancellation (shutdown, lost lock, cancelled
    /// reparent or RPC): logged at WARN at most, never at ERROR.
    pub fn is_cancelled(&self) -> bool {
        match self {
            RecoveryError::Cancelled(_) | RecoveryError::LockLost(_) => true,
            RecoveryError::Reparent { source, .. } => source.is_cancelled(),
            RecoveryError::Tablet(e) => matches!(e.source, TabletError::Cancelled { .. }),
            RecoveryError::Topo(e) => matches!(e.source, TopoError::Cancelled(_)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellations_are_classified_and_not_retryable() {
        let e = RecoveryError::Cancelled("shutdown".into());
        assert!(e.is_cancelled());
        assert!(!e.is_retryable());
        assert_eq!(e.grpc_code(), tonic::Code::Cancelled);
        let lost = RecoveryError::LockLost("lease revoked".into());
        assert!(lost.is_cancelled());
        assert!(lost.is_retryable());
        let topo = RecoveryError::topo("read shard", TopoError::Unavailable("down".into()));
        assert!(topo.is_retryable());
        assert!(!topo.is_cancelled());
        assert_eq!(topo.grpc_code(), tonic::Code::Unavailable);
        assert!(RecoveryError::topo("x", TopoError::Cancelled("x".into())).is_cancelled());
        let pre = RecoveryError::Precondition("no primary".into());
        assert_eq!(pre.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(!pre.is_retryable());
    }
}
