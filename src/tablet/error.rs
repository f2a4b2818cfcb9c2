//! Errors of tablet RPCs, classified by what they say about the RPC's effect.
//!
//! A caller that changes a tablet (ERS, PRS, fixes) must know whether a failed
//! RPC may still have run: [`TabletError::outcome`] says so. An RPC whose
//! outcome is unknown leaves the tablet's state unknown until it is re-read
//! (STYLE rule 2).

use std::{error::Error as _, time::Duration};

use crate::proto::topodata::TabletAlias;

/// What a failed RPC says about whether the tablet did the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The request certainly did not run: it was never sent, or the tablet
    /// refused it before acting.
    NotExecuted,
    /// The request may have run: it was sent and no verdict came back
    /// (deadline passed, connection lost mid-call).
    MaybeExecuted,
}

/// A fixed-cardinality label for metrics and logs: the variant of a [`TabletError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TabletErrorKind {
    /// [`TabletError::NoAddress`].
    NoAddress,
    /// [`TabletError::Unreachable`].
    Unreachable,
    /// [`TabletError::Timeout`].
    Timeout,
    /// [`TabletError::ConnectionLost`].
    ConnectionLost,
    /// [`TabletError::Rejected`].
    Rejected,
    /// [`TabletError::InvalidResponse`].
    InvalidResponse,
    /// [`TabletError::Cancelled`].
    Cancelled,
}

impl TabletErrorKind {
    /// Every kind, in declaration order (for metric arrays indexed by kind).
    pub const ALL: [TabletErrorKind; 7] = [
        TabletErrorKind::NoAddress,
        TabletErrorKind::Unreachable,
        TabletErrorKind::Timeout,
        TabletErrorKind::ConnectionLost,
        TabletErrorKind::Rejected,
        TabletErrorKind::InvalidResponse,
        TabletErrorKind::Cancelled,
    ];

    /// Lower-case label, e.g. `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            TabletErrorKind::NoAddress => "no_address",
            TabletErrorKind::Unreachable => "unreachable",
            TabletErrorKind::Timeout => "timeout",
            TabletErrorKind::ConnectionLost => "connection_lost",
            TabletErrorKind::Rejected => "rejected",
            TabletErrorKind::InvalidResponse => "invalid_response",
            TabletErrorKind::Cancelled => "cancelled",
        }
    }

    /// Position in [`TabletErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed tablet RPC (TabletManager call or health stream).
#[derive(Clone, Debug, thiserror::Error)]
pub enum TabletError {
    /// The tablet record has no usable gRPC address (no alias, hostname or
    /// `grpc` port); nothing was sent.
    #[error("tablet {alias} has no usable grpc address: {reason}")]
    NoAddress {
        /// The tablet (`cell-0` when the record has no alias).
        alias: TabletAlias,
        /// What is missing.
        reason: String,
    },
    /// No connection could be made (refused, no route, name resolution,
    /// connect timeout): the request was certainly not sent.
    #[error("{method} to tablet {alias}: unreachable: {message}")]
    Unreachable {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC (`FullStatus`, `StreamHealth`, ...).
        method: &'static str,
        /// The gRPC code tonic reported (normally `Unavailable`).
        code: tonic::Code,
        /// The transport's message.
        message: String,
    },
    /// The deadline passed before the tablet answered; the RPC may have run.
    #[error("{method} to tablet {alias}: timed out after {after:?}")]
    Timeout {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC.
        method: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection broke after the request was sent (reset, closed, HTTP/2
    /// error, keep-alive timeout); the RPC may have run.
    #[error("{method} to tablet {alias}: connection lost: {code:?}: {message}")]
    ConnectionLost {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC.
        method: &'static str,
        /// The gRPC code tonic derived from the transport error.
        code: tonic::Code,
        /// The transport's message.
        message: String,
    },
    /// The tablet answered with an error status: it did not do what was asked.
    #[error("{method} to tablet {alias}: rejected: {code:?}: {message}")]
    Rejected {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC.
        method: &'static str,
        /// The gRPC code the tablet returned.
        code: tonic::Code,
        /// The tablet's message.
        message: String,
    },
    /// The tablet answered OK with something unusable (a required field
    /// missing, an unparsable value).
    #[error("{method} to tablet {alias}: invalid response: {message}")]
    InvalidResponse {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC.
        method: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The caller gave up (its cancellation token fired); the RPC may have run.
    #[error("{method} to tablet {alias}: cancelled")]
    Cancelled {
        /// The tablet.
        alias: TabletAlias,
        /// The RPC.
        method: &'static str,
    },
}

impl TabletError {
    /// Classifies a tonic status returned by a call to `alias`.
    ///
    /// Statuses produced locally by tonic carry the transport error as their
    /// source; statuses sent by the tablet have none. That is how a transport
    /// failure is told apart from the tablet's own verdict.
    pub fn from_status(
        alias: &TabletAlias,
        method: &'static str,
        timeout: Duration,
        status: tonic::Status,
    ) -> Self {
        let alias = alias.clone();
        let code = status.code();
        let message = status.message().to_string();
        let mut source = status.source();
        let mut transport = false;
        while let Some(err) = source {
            transport = true;
            if err.downcast_ref::<tonic::ConnectError>().is_some() {
                return TabletError::Unreachable {
                    alias,
                    method,
                    code,
                    message: error_chain(&status),
                };
            }
            if err.downcast_ref::<tonic::TimeoutExpired>().is_some() {
                return TabletError::Timeout {
                    alias,
                    method,
                    after: timeout,
                };
            }
            source = err.source();
        }
        if code == tonic::Code::DeadlineExceeded {
            return TabletError::Timeout {
                alias,
                method,
                after: timeout,
            };
        }
        if transport {
            return TabletError::ConnectionLost {
                alias,
                method,
                code,
                message: error_chain(&status),
            };
        }
        TabletError::Rejected {
            alias,
            method,
            code,
            message,
        }
    }

    /// An OK answer that cannot be used.
    pub fn invalid_response(alias: &TabletAlias, method: &'static str, message: impl Into<String>) -> Self {
        TabletError::InvalidResponse {
            alias: alias.clone(),
            method,
            message: message.into(),
        }
    }

    /// The tablet the error is about.
    pub fn alias(&self) -> &TabletAlias {
        match self {
            TabletError::NoAddress { alias, .. }
            | TabletError::Unreachable { alias, .. }
            | TabletError::Timeout { alias, .. }
            | TabletError::ConnectionLost { alias, .. }
            | TabletError::Rejected { alias, .. }
            | TabletError::InvalidResponse { alias, .. }
            | TabletError::Cancelled { alias, .. } => alias,
        }
    }

    /// The variant, as a metric label.
    pub fn kind(&self) -> TabletErrorKind {
        match self {
            TabletError::NoAddress { .. } => TabletErrorKind::NoAddress,
            TabletError::Unreachable { .. } => TabletErrorKind::Unreachable,
            TabletError::Timeout { .. } => TabletErrorKind::Timeout,
            TabletError::ConnectionLost { .. } => TabletErrorKind::ConnectionLost,
            TabletError::Rejected { .. } => TabletErrorKind::Rejected,
            TabletError::InvalidResponse { .. } => TabletErrorKind::InvalidResponse,
            TabletError::Cancelled { .. } => TabletErrorKind::Cancelled,
        }
    }

    /// Whether the RPC may have had its effect.
    pub fn outcome(&self) -> CallOutcome {
        match self {
            TabletError::NoAddress { .. } | TabletError::Unreachable { .. } | TabletError::Rejected { .. } => {
                CallOutcome::NotExecuted
            }
            TabletError::Timeout { .. }
            | TabletError::ConnectionLost { .. }
            | TabletError::Cancelled { .. }
            // The tablet said OK; whatever it did, it did.
            | TabletError::InvalidResponse { .. } => CallOutcome::MaybeExecuted,
        }
    }

    /// Whether trying the same RPC again may succeed. A retry after a
    /// [`CallOutcome::MaybeExecuted`] error must first re-read the tablet's state.
    pub fn is_retryable(&self) -> bool {
        match self {
            TabletError::Unreachable { .. }
            | TabletError::Timeout { .. }
            | TabletError::ConnectionLost { .. } => true,
            TabletError::Rejected { code, .. } => matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted
            ),
            TabletError::NoAddress { .. }
            | TabletError::InvalidResponse { .. }
            | TabletError::Cancelled { .. } => false,
        }
    }

    /// The gRPC code to report for this error (our API maps errors once, here).
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            TabletError::NoAddress { .. } => tonic::Code::FailedPrecondition,
            TabletError::Unreachable { .. } | TabletError::ConnectionLost { .. } => tonic::Code::Unavailable,
            TabletError::Timeout { .. } => tonic::Code::DeadlineExceeded,
            TabletError::Rejected { code, .. } => *code,
            TabletError::InvalidResponse { .. } => tonic::Code::Internal,
            TabletError::Cancelled { .. } => tonic::Code::Cancelled,
        }
    }

    /// Whether the tablet could not be reached at all (no connection, no
    /// answer in time, connection lost): the kind of failure that makes a
    /// tablet unreachable rather than unhealthy.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TabletError::Unreachable { .. }
                | TabletError::Timeout { .. }
                | TabletError::ConnectionLost { .. }
        )
    }

    /// The connection was refused: the tablet's host answered and nothing
    /// listens on its gRPC port (the tablet server is down, its host is up).
    /// A frozen host or dropped packets give a timeout instead.
    pub fn is_refused(&self) -> bool {
        matches!(self, TabletError::Unreachable { message, .. } if message.contains("Connection refused"))
    }
}

/// `message: cause: cause ...`, the status message followed by its sources.
fn error_chain(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`TabletError::from_status`] of a `method` call to zone1-100 with a
    /// deadline of `secs` seconds.
    fn from_status(method: &'static str, secs: u64, status: tonic::Status) -> TabletError {
        TabletError::from_status(
            &TabletAlias::new("zone1", 100),
            method,
            Duration::from_secs(secs),
            status,
        )
    }

    #[test]
    fn a_status_sent_by_the_tablet_is_a_rejection_that_certainly_did_not_run() {
        let e = from_status(
            "SetReadOnly",
            1,
            tonic::Status::failed_precondition("not a replica"),
        );
        assert_eq!(e.kind(), TabletErrorKind::Rejected);
        assert_eq!(e.outcome(), CallOutcome::NotExecuted);
        assert!(!e.is_retryable());
        assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("not a replica"), "{e}");
    }

    #[test]
    fn an_unavailable_status_from_the_tablet_is_a_retryable_rejection() {
        let e = from_status("FullStatus", 1, tonic::Status::unavailable("mysql down"));
        assert_eq!(e.kind(), TabletErrorKind::Rejected);
        assert!(e.is_retryable());
    }

    #[test]
    fn deadline_exceeded_means_maybe_executed() {
        let e = from_status("PromoteReplica", 2, tonic::Status::deadline_exceeded("too slow"));
        assert_eq!(e.kind(), TabletErrorKind::Timeout);
        assert_eq!(e.outcome(), CallOutcome::MaybeExecuted);
        assert!(e.is_retryable());
        assert_eq!(e.grpc_code(), tonic::Code::DeadlineExceeded);
    }

    #[test]
    fn a_status_with_a_transport_source_is_a_lost_connection() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let status = tonic::Status::from_error(Box::new(io));
        let e = from_status("FullStatus", 1, status);
        assert_eq!(e.kind(), TabletErrorKind::ConnectionLost, "{e:?}");
        assert_eq!(e.outcome(), CallOutcome::MaybeExecuted);
        assert!(e.is_unreachable());
    }

    #[test]
    fn a_connect_error_means_unreachable_and_not_executed() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        let e = from_status("FullStatus", 1, status);
        assert_eq!(e.kind(), TabletErrorKind::Unreachable, "{e:?}");
        assert_eq!(e.outcome(), CallOutcome::NotExecuted);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[test]
    fn kinds_index_their_position_in_all() {
        for (i, k) in TabletErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
