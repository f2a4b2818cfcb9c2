//! Talking to tablets: TabletManager RPCs and `StreamHealth` subscriptions.
//!
//! - [`TabletManager`]: the client seam (one required method, typed RPC
//!   helpers on top); [`GrpcTabletManager`] is the tonic implementation with
//!   one cached, lazily connected channel per tablet and a deadline on every
//!   call.
//! - [`HealthStreams`]: one health stream per tablet, reconnecting with
//!   back-off, feeding [`HealthEvent`]s to discovery.
//! - [`TabletError`]: every failure, classified as certainly-not-executed or
//!   maybe-executed (see `docs` on [`CallOutcome`]).

pub mod error;
pub mod grpc;
pub mod health;
pub mod rpc;

pub use error::{CallOutcome, TabletError, TabletErrorKind};
pub use grpc::{GrpcTabletManager, TabletClientConfig};
pub use health::{
    Backoff, HealthEvent, HealthEventKind, HealthSource, HealthStream, HealthStreamConfig,
    HealthStreamMetrics, HealthStreams,
};
pub use rpc::{TabletManager, TabletManagerExt, TmRequest, TmResponse, WithTimeout, tablet_address};
