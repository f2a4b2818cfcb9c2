//! MySQL/MariaDB replication facts that need no I/O: positions, GTID set
//! algebra and errant GTID computation.

pub mod errant;
pub mod mariadb;
pub mod mysql56;
pub mod position;

pub use errant::{ErrantGtidInput, ServerIdentity, errant_gtids};
pub use position::{FilePos, Position, PositionError};
