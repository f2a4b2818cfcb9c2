//! The agent's error type and its mapping to gRPC statuses.
//!
//! vttablet returns vterrors codes as gRPC statuses; plain MySQL errors keep
//! MySQL's text, `<message> (errno N) (sqlstate X)`. We map them as follows:
//!
//! | variant | gRPC code | when |
//! |---|---|---|
//! | `Mysql` | `UNKNOWN` | the server answered with an error |
//! | `MysqlUnreachable` | `UNAVAILABLE` | connect failed, connection lost or a statement hung past its bound |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` | the tablet is not in a state to do it |
//! | `InvalidArgument` | `INVALID_ARGUMENT` | bad position, bad alias, bad type |
//! | `NotFound` | `NOT_FOUND` | a topo record does not exist |
//! | `DeadlineExceeded` | `DEADLINE_EXCEEDED` | the caller's deadline ran out |
//! | `Internal` | `INTERNAL` | anything else that should not happen |
//! | `Unavailable` | `UNAVAILABLE` | the topo or a peer tablet is unreachable |

use std::fmt;

use tonic::{Code, Status};

/// An error from a tablet-agent operation. Every variant carries the full,
/// caller-facing message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// MySQL answered with an error.
    Mysql(String),
    /// MySQL could not be reached or stopped answering.
    MysqlUnreachable(String),
    /// The tablet is not in a state that allows the request.
    FailedPrecondition(String),
    /// The request is malformed.
    InvalidArgument(String),
    /// A topo record does not exist.
    NotFound(String),
    /// The caller's deadline passed.
    DeadlineExceeded(String),
    /// The caller went away.
    Cancelled(String),
    /// A dependency (topo, a peer tablet) is unavailable.
    Unavailable(String),
    /// An unexpected condition.
    Internal(String),
}

/// Shorthand for agent results.
pub type AgentResult<T> = Result<T, AgentError>;

impl AgentError {
    /// The gRPC code this error is returned with.
    pub fn code(&self) -> Code {
        match self {
            AgentError::Mysql(_) => Code::Unknown,
            AgentError::MysqlUnreachable(_) | AgentError::Unavailable(_) => Code::Unavailable,
            AgentError::FailedPrecondition(_) => Code::FailedPrecondition,
            AgentError::InvalidArgument(_) => Code::InvalidArgument,
            AgentError::NotFound(_) => Code::NotFound,
            AgentError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            AgentError::Cancelled(_) => Code::Cancelled,
            AgentError::Internal(_) => Code::Internal,
        }
    }

    /// The message without the code.
    pub fn message(&self) -> &str {
        match self {
            AgentError::Mysql(m)
            | AgentError::MysqlUnreachable(m)
            | AgentError::FailedPrecondition(m)
            | AgentError::InvalidArgument(m)
            | AgentError::NotFound(m)
            | AgentError::DeadlineExceeded(m)
            | AgentError::Cancelled(m)
            | AgentError::Unavailable(m)
            | AgentError::Internal(m) => m,
        }
    }

    /// The same error with `prefix: ` in front of the message (like Go's
    /// `fmt.Errorf("prefix: %w", err)`); the code is kept.
    pub fn wrap(self, prefix: &str) -> AgentError {
        let text = |m: String| format!("{prefix}: {m}");
        match self {
            AgentError::Mysql(m) => AgentError::Mysql(text(m)),
            AgentError::MysqlUnreachable(m) => AgentError::MysqlUnreachable(text(m)),
            AgentError::FailedPrecondition(m) => AgentError::FailedPrecondition(text(m)),
            AgentError::InvalidArgument(m) => AgentError::InvalidArgument(text(m)),
            AgentError::NotFound(m) => AgentError::NotFound(text(m)),
            AgentError::DeadlineExceeded(m) => AgentError::DeadlineExceeded(text(m)),
            AgentError::Cancelled(m) => AgentError::Cancelled(text(m)),
            AgentError::Unavailable(m) => AgentError::Unavailable(text(m)),
            AgentError::Internal(m) => AgentError::Internal(text(m)),
        }
    }

    /// True for errors that say MySQL is down or hung.
    pub fn is_mysql_unreachable(&self) -> bool {
        matches!(self, AgentError::MysqlUnreachable(_))
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AgentError {}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        Status::new(e.code(), e.message().to_string())
    }
}

/// Converts a driver error, keeping MySQL's `(errno N) (sqlstate X)` text for
/// server errors; every other failure means the server is unreachable.
pub fn from_mysql(e: mysql_async::Error) -> AgentError {
    match e {
        mysql_async::Error::Server(s) => {
            AgentError::Mysql(format!("{} (errno {}) (sqlstate {})", s.message, s.code, s.state))
        }
        other => AgentError::MysqlUnreachable(format!("mysql connection failed: {other}")),
    }
}

impl From<mysql_async::Error> for AgentError {
    fn from(e: mysql_async::Error) -> AgentError {
        from_mysql(e)
    }
}
