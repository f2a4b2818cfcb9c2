//! vtorc-rs: VTOrc for Vitess, in Rust.
//!
//! See `ARCHITECTURE.md` for the module map and the data flow.

pub mod analysis;
pub mod app;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod error;
pub mod ids;
pub mod model;
pub mod mysql;
pub mod proto;
pub mod recovery;
pub mod reparent;
pub mod runtime;
pub mod server;
pub mod sharing;
pub mod tablet;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod topo;
