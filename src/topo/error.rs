//! Errors of the topology layer.
//!
//! The first variants carry Vitess's topo error codes and print Vitess's
//! messages (`node doesn't exist: <path>`, `node already exists: <path>`,
//! `bad node version: <path>`, `deadline exceeded: <path>`), so logs read
//! the same as vtctld's.

/// An error from the topology store or the typed topology API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopoError {
    /// The key (or directory) does not exist. Carries the path.
    #[error("node doesn't exist: {0}")]
    NoNode(String),
    /// A create found the key already there, or a try-lock found the shard
    /// locked. Carries the path or Vitess's "lock already exists at path …".
    #[error("node already exists: {0}")]
    NodeExists(String),
    /// A conditional update or delete saw another version: someone wrote
    /// the key since we read it. Re-read and retry.
    #[error("bad node version: {0}")]
    BadVersion(String),
    /// An update-fields closure decided nothing needs to change; the update
    /// functions turn it into success without a write.
    #[error("no update needed")]
    NoUpdateNeeded,
    /// The operation (or the wait for a lock) ran out of time. Whether a
    /// write took effect is unknown.
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// The caller cancelled the operation.
    #[error("interrupted: {0}")]
    Cancelled(String),
    /// A stored value does not decode. `key` is the full etcd key.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Full key of the record (root included).
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The store cannot be reached or failed (connection refused, etcd
    /// error, watch stream ended). Whether a write took effect is unknown.
    #[error("topo unavailable: {0}")]
    Unavailable(String),
    /// The lease behind a lock is gone (expired, revoked, or etcd is
    /// unreachable): the lock is no longer held.
    #[error("lock lost at {key}: {reason}")]
    LockLost {
        /// The lock key.
        key: String,
        /// What happened to the lease.
        reason: String,
    },
    /// A watch asked for a revision etcd has compacted away; re-list.
    #[error("required revision has been compacted (compact revision {0})")]
    Compacted(i64),
    /// The caller passed something unusable (bad name, bad path).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl TopoError {
    /// True when the same request may succeed if simply sent again later
    /// (timeouts and unreachable stores). `BadVersion` is not retryable as
    /// is: the caller must re-read first (the update-fields helpers do).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TopoError::Timeout(_) | TopoError::Unavailable(_))
    }

    /// True for [`TopoError::NoNode`].
    pub fn is_no_node(&self) -> bool {
        matches!(self, TopoError::NoNode(_))
    }

    /// True for [`TopoError::NodeExists`].
    pub fn is_node_exists(&self) -> bool {
        matches!(self, TopoError::NodeExists(_))
    }

    /// True for [`TopoError::BadVersion`].
    pub fn is_bad_version(&self) -> bool {
        matches!(self, TopoError::BadVersion(_))
    }

    /// The gRPC status code that best describes this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            TopoError::NoNode(_) => tonic::Code::NotFound,
            TopoError::NodeExists(_) => tonic::Code::AlreadyExists,
            TopoError::BadVersion(_) | TopoError::LockLost { .. } => tonic::Code::Aborted,
            TopoError::NoUpdateNeeded => tonic::Code::FailedPrecondition,
            TopoError::Timeout(_) => tonic::Code::DeadlineExceeded,
            TopoError::Cancelled(_) => tonic::Code::Cancelled,
            TopoError::Corrupt { .. } => tonic::Code::DataLoss,
            TopoError::Unavailable(_) => tonic::Code::Unavailable,
            TopoError::Compacted(_) => tonic::Code::OutOfRange,
            TopoError::Invalid(_) => tonic::Code::InvalidArgument,
        }
    }
}

/// Result alias for the topology layer.
pub type TopoResult<T> = Result<T, TopoError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_vitess_wording() {
        for (error, text) in [
            (TopoError::NoNode("/a".into()), "node doesn't exist: /a"),
            (TopoError::NodeExists("/a".into()), "node already exists: /a"),
            (TopoError::BadVersion("/a".into()), "bad node version: /a"),
            (TopoError::Timeout("/a".into()), "deadline exceeded: /a"),
        ] {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        assert!(TopoError::Timeout("x".into()).is_retryable());
        assert!(TopoError::Unavailable("x".into()).is_retryable());
        assert!(!TopoError::BadVersion("x".into()).is_retryable());
        assert!(!TopoError::NoNode("x".into()).is_retryable());
        assert_eq!(TopoError::NoNode("x".into()).grpc_code(), tonic::Code::NotFound);
    }
}
