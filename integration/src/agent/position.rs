//! Positions on the agent's wire: `vtorc::mysql`'s [`MariaDbGtidSet`] read
//! from and written as Vitess's encoded text.
//!
//! The set algebra (per-domain `contains`, `union`, `subtract`) is the main
//! crate's; this file only holds what is the tablet's own policy:
//!
//! - decoding a request's position: `""` is the empty position, `MariaDB/<list>`
//!   a MariaDB position, and text without a flavor is read as a MariaDB list
//!   (this tablet's default flavor); other flavors cannot describe a MariaDB
//!   server and are rejected;
//! - encoding: always `MariaDB/<list>`, so an empty `gtid_binlog_pos` is
//!   `MariaDB/`, as vttablet on MariaDB returns it;
//! - bad input is `INVALID_ARGUMENT` with a `parse error: ` message.

use vtorc::mysql::position::{MARIADB_FLAVOR, MariaDbGtidSet, Position, PositionError};

use super::error::{AgentError, AgentResult};

/// A request's position as an `INVALID_ARGUMENT` error.
fn parse_error(e: PositionError) -> AgentError {
    AgentError::InvalidArgument(format!("parse error: {e}"))
}

/// Decodes Vitess's encoded form into a MariaDB position (see the module docs).
pub fn decode(text: &str) -> AgentResult<MariaDbGtidSet> {
    let text = text.trim();
    match text.split_once('/') {
        None => MariaDbGtidSet::parse(text).map_err(parse_error),
        Some((MARIADB_FLAVOR, list)) => MariaDbGtidSet::parse(list).map_err(parse_error),
        Some((flavor, _)) => Err(AgentError::InvalidArgument(format!(
            "parse error: position {text:?} has flavor {flavor:?}, but this tablet runs MariaDB"
        ))),
    }
}

/// Vitess's encoded form, `MariaDB/<list>` (`MariaDB/` when empty).
pub fn encode(position: &MariaDbGtidSet) -> String {
    Position::MariaDb(position.clone()).to_string()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn pos(text: &str) -> MariaDbGtidSet {
        decode(text).expect("valid position")
    }

    #[test]
    fn positions_round_trip_through_vitess_text() {
        assert_eq!(encode(&pos("MariaDB/0-100-5,1-101-7")), "MariaDB/0-100-5,1-101-7");
        assert_eq!(encode(&pos(" 1-101-7,0-100-5 ")), "MariaDB/0-100-5,1-101-7");
        assert_eq!(encode(&pos("")), "MariaDB/");
        assert!(pos("MariaDB/").is_empty());
        assert_eq!(pos("0-100-12").get(0).map(|g| g.sequence), Some(12));
    }

    #[test]
    fn bad_positions_are_invalid_arguments() {
        for bad in [
            "MySQL56/3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
            "FilePos/binlog.000001:4",
            "MariaDB/0-1",
            "0-1-x",
            "0-1-2,0-1-3",
        ] {
            let err = decode(bad).expect_err(bad);
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err}");
            assert!(err.message().starts_with("parse error: "), "{bad}: {err}");
        }
        let other = decode("MySQL56/3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5").expect_err("MySQL56");
        assert!(other.message().contains("this tablet runs MariaDB"), "{other}");
    }
}
