//! What one successful `FullStatus` poll said about a tablet's MySQL.

use serde::Serialize;

use crate::mysql::{FilePos, Position};
use crate::proto::replicationdata::{FullStatus, Status};
use crate::proto::topodata::TabletType;

/// State of a replication thread (IO or SQL), from FullStatus `io_state` / `sql_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum ThreadState {
    /// No replication configured, or the state is unknown (wire value 0 or anything unexpected).
    #[default]
    NoThread,
    /// The thread is stopped (wire value 1).
    Stopped,
    /// The IO thread is trying to connect (wire value 2); counts as *not* running.
    Connecting,
    /// The thread runs (wire value 3).
    Running,
}

impl ThreadState {
    /// Maps Vitess's `ReplicationState` wire value.
    pub fn from_wire(value: i32) -> Self {
        match value {
            1 => ThreadState::Stopped,
            2 => ThreadState::Connecting,
            3 => ThreadState::Running,
            _ => ThreadState::NoThread,
        }
    }

    /// The Vitess `ReplicationState` wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            ThreadState::NoThread => 0,
            ThreadState::Stopped => 1,
            ThreadState::Connecting => 2,
            ThreadState::Running => 3,
        }
    }

    /// Only `Running` counts as running (as in Go VTOrc).
    pub fn is_running(self) -> bool {
        self == ThreadState::Running
    }
}

/// The replication (replica-side) part of a poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplicationObservation {
    /// Host MySQL replicates from (`""` = not configured).
    pub source_host: String,
    /// Port MySQL replicates from (0 = not configured).
    pub source_port: i32,
    /// `server_uuid` of the source, as the replica reports it (may be empty).
    pub source_uuid: String,
    /// `server_id` of the source (0 = unknown).
    pub source_server_id: u32,
    /// Replication user (`""` = no credentials configured).
    pub source_user: String,
    /// IO thread state.
    pub io_thread: ThreadState,
    /// SQL thread state.
    pub sql_thread: ThreadState,
    /// Executed (applied) position as the replication status reports it.
    pub position: Position,
    /// Received (relay log) position.
    pub relay_log_position: Position,
    /// Seconds behind the source; `None` = unknown.
    pub lag_seconds: Option<u32>,
    /// Configured `SQL_Delay` in seconds (0 = not delayed).
    pub sql_delay: u32,
    /// GTID auto-positioning in use (Go VTOrc: "oracle GTID" replica).
    pub auto_position: bool,
    /// Last IO thread error (empty = none).
    pub last_io_error: String,
    /// Last SQL thread error (empty = none).
    pub last_sql_error: String,
    /// Replication filters are configured.
    pub has_replication_filters: bool,
}

/// Semi-sync settings and status of a poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SemiSyncObservation {
    /// Semi-sync primary plugin enabled (`rpl_semi_sync_master_enabled`).
    pub primary_enabled: bool,
    /// Semi-sync primary currently on (not fallen back to async).
    pub primary_status: bool,
    /// Semi-sync replica plugin enabled.
    pub replica_enabled: bool,
    /// Semi-sync replica currently acking.
    pub replica_status: bool,
    /// Number of connected semi-sync replicas (clients).
    pub primary_clients: u32,
    /// Semi-sync wait timeout, milliseconds.
    pub primary_timeout_ms: u64,
    /// Acks required per transaction (`wait_for_replica_count`).
    pub wait_for_replica_count: u32,
    /// MySQL reports writes blocked waiting for semi-sync acks.
    pub blocked: bool,
}

/// What the last successful `FullStatus` poll of a tablet returned, typed.
///
/// The replication source is kept as host/port: it is resolved to a tablet
/// when read ([`crate::model::ShardState::source_of`], and by analysis), from
/// the topo records current at that time, so a moved or deleted tablet never
/// leaves a stale alias behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observation {
    /// MySQL `server_id`.
    pub server_id: u32,
    /// MySQL `server_uuid` (empty on MariaDB).
    pub server_uuid: String,
    /// MySQL version, e.g. `8.0.36` or `10.11.6-MariaDB`.
    pub version: String,
    /// MySQL `version_comment`.
    pub version_comment: String,
    /// Tablet type the vttablet reports running as (`Unknown` = not reported).
    #[serde(serialize_with = "super::serialize_tablet_type")]
    pub tablet_type: TabletType,
    /// MySQL `read_only`.
    pub read_only: bool,
    /// MySQL `super_read_only`.
    pub super_read_only: bool,
    /// Binary log enabled.
    pub log_bin: bool,
    /// `log_replica_updates` enabled.
    pub log_replica_updates: bool,
    /// `binlog_format` (`ROW`, `STATEMENT`, `MIXED`).
    pub binlog_format: String,
    /// `binlog_row_image`.
    pub binlog_row_image: String,
    /// `gtid_mode` (MySQL; empty on MariaDB).
    pub gtid_mode: String,
    /// Executed position (primary status `position`): what this MySQL has applied or written.
    pub executed_position: Position,
    /// Own binlog coordinates (primary status `file_position`), if binary logging is on.
    pub binlog_coordinates: Option<FilePos>,
    /// `gtid_purged`.
    pub gtid_purged: Position,
    /// Replica-side state; `None` = the poll carried no replication status (not a replica).
    pub replication: Option<ReplicationObservation>,
    /// Semi-sync state.
    pub semi_sync: SemiSyncObservation,
    /// The vttablet reported its disk as stalled.
    pub disk_stalled: bool,
    /// Replication heartbeat interval, seconds (0 = not set).
    pub heartbeat_interval: f64,
    /// `replica_net_timeout`, seconds.
    pub replica_net_timeout: i32,
    /// Errant GTIDs (reference §4.4), computed by discovery after the poll
    /// (see [`crate::model::ShardState::errant_gtids_of`]); `Empty` = none.
    pub errant_gtids: Position,
    /// Position strings in the FullStatus that did not parse (the fields are left empty).
    pub parse_errors: Vec<String>,
}

fn parse_position(text: &str, field: &str, errors: &mut Vec<String>) -> Position {
    match Position::parse(text) {
        Ok(p) => p,
        Err(e) => {
            errors.push(format!("{field}: {e}"));
            Position::Empty
        }
    }
}

fn parse_file_position(text: &str, field: &str, errors: &mut Vec<String>) -> Option<FilePos> {
    match parse_position(text, field, errors) {
        Position::FilePos(p) => Some(p),
        Position::Empty => None,
        other => {
            errors.push(format!(
                "{field}: expected a FilePos position, got {}",
                other.flavor()
            ));
            None
        }
    }
}

impl ReplicationObservation {
    fn from_status(s: &Status, errors: &mut Vec<String>) -> Self {
        ReplicationObservation {
            source_host: s.source_host.clone(),
            source_port: s.source_port,
            source_uuid: s.source_uuid.clone(),
            source_server_id: s.source_server_id,
            source_user: s.source_user.clone(),
            io_thread: ThreadState::from_wire(s.io_state),
            sql_thread: ThreadState::from_wire(s.sql_state),
            position: parse_position(&s.position, "replication_status.position", errors),
            relay_log_position: parse_position(
                &s.relay_log_position,
                "replication_status.relay_log_position",
                errors,
            ),
            lag_seconds: (!s.replication_lag_unknown).then_some(s.replication_lag_seconds),
            sql_delay: s.sql_delay,
            auto_position: s.auto_position,
            last_io_error: s.last_io_error.clone(),
            last_sql_error: s.last_sql_error.clone(),
            has_replication_filters: s.has_replication_filters,
        }
    }
}

impl Observation {
    /// Maps a FullStatus reply. Never fails: a position string that does not
    /// parse leaves that field empty and is listed in `parse_errors` (Go
    /// VTOrc likewise keeps the rest of the poll). `errant_gtids` starts empty.
    pub fn from_full_status(fs: &FullStatus) -> Observation {
        let mut errors = Vec::new();
        let (executed_position, binlog_coordinates) = match &fs.primary_status {
            Some(ps) => (
                parse_position(&ps.position, "primary_status.position", &mut errors),
                if fs.log_bin_enabled {
                    parse_file_position(&ps.file_position, "primary_status.file_position", &mut errors)
                } else {
                    None
                },
            ),
            None => (Position::Empty, None),
        };
        let replication = fs
            .replication_status
            .as_ref()
            .map(|s| ReplicationObservation::from_status(s, &mut errors));
        let gtid_purged = parse_position(&fs.gtid_purged, "gtid_purged", &mut errors);
        let (heartbeat_interval, replica_net_timeout) = fs
            .replication_configuration
            .as_ref()
            .map_or((0.0, 0), |c| (c.heartbeat_interval, c.replica_net_timeout));
        Observation {
            server_id: fs.server_id,
            server_uuid: fs.server_uuid.clone(),
            version: fs.version.clone(),
            version_comment: fs.version_comment.clone(),
            tablet_type: TabletType::try_from(fs.tablet_type).unwrap_or(TabletType::Unknown),
            read_only: fs.read_only,
            super_read_only: fs.super_read_only,
            log_bin: fs.log_bin_enabled,
            log_replica_updates: fs.log_replica_updates,
            binlog_format: fs.binlog_format.clone(),
            binlog_row_image: fs.binlog_row_image.clone(),
            gtid_mode: fs.gtid_mode.clone(),
            executed_position,
            binlog_coordinates,
            gtid_purged,
            replication,
            semi_sync: SemiSyncObservation {
                primary_enabled: fs.semi_sync_primary_enabled,
                primary_status: fs.semi_sync_primary_status,
                replica_enabled: fs.semi_sync_replica_enabled,
                replica_status: fs.semi_sync_replica_status,
                primary_clients: fs.semi_sync_primary_clients,
                primary_timeout_ms: fs.semi_sync_primary_timeout,
                wait_for_replica_count: fs.semi_sync_wait_for_replica_count,
                blocked: fs.semi_sync_blocked,
            },
            disk_stalled: fs.disk_stalled,
            heartbeat_interval,
            replica_net_timeout,
            errant_gtids: Position::Empty,
            parse_errors: errors,
        }
    }

    /// Source host (`""` when not replicating).
    pub fn source_host(&self) -> &str {
        self.replication.as_ref().map_or("", |r| r.source_host.as_str())
    }

    /// Source port (0 when not replicating).
    pub fn source_port(&self) -> i32 {
        self.replication.as_ref().map_or(0, |r| r.source_port)
    }

    /// Go VTOrc's `IsPrimary`: this MySQL has no replication source (host
    /// `""`/`_`, port 0, or a host starting with `//`).
    pub fn has_no_source(&self) -> bool {
        let host = self.source_host();
        host.is_empty() || host == "_" || self.source_port() == 0 || host.starts_with("//")
    }

    /// Both replication threads run.
    pub fn replication_running(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.io_thread.is_running() && r.sql_thread.is_running())
    }

    /// Go VTOrc's `ReplicationStopped`: the IO or SQL thread is not running
    /// (also true when there is no replication at all).
    pub fn replication_stopped(&self) -> bool {
        !self.replication_running()
    }

    /// Replication lag in seconds, `None` if unknown or not replicating.
    pub fn lag_seconds(&self) -> Option<u32> {
        self.replication.as_ref().and_then(|r| r.lag_seconds)
    }

    /// Configured SQL delay (0 if not replicating).
    pub fn sql_delay(&self) -> u32 {
        self.replication.as_ref().map_or(0, |r| r.sql_delay)
    }

    /// Binary log on and replica updates logged: a replica that can serve as a source.
    pub fn is_logging_replica(&self) -> bool {
        self.log_bin && self.log_replica_updates
    }

    /// Major version: the first two dot-separated parts (`8.0.36` → `8.0`).
    pub fn major_version(&self) -> &str {
        let mut dots = self.version.match_indices('.').map(|(i, _)| i);
        let _ = dots.next();
        match dots.next() {
            Some(i) => &self.version[..i],
            None => &self.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::replicationdata::{Configuration, PrimaryStatus};

    fn full_status() -> FullStatus {
        FullStatus {
            server_id: 101,
            server_uuid: "22222222-2222-2222-2222-222222222222".into(),
            version: "8.0.36".into(),
            read_only: true,
            log_bin_enabled: true,
            log_replica_updates: true,
            binlog_format: "ROW".into(),
            gtid_mode: "ON".into(),
            tablet_type: TabletType::Replica as i32,
            primary_status: Some(PrimaryStatus {
                position: "MySQL56/11111111-1111-1111-1111-111111111111:1-10".into(),
                file_position: "FilePos/binlog.000003:1234".into(),
                server_uuid: String::new(),
            }),
            replication_status: Some(Status {
                source_host: "mysql-100".into(),
                source_port: 3306,
                io_state: 3,
                sql_state: 2,
                replication_lag_seconds: 4,
                sql_delay: 0,
                position: "MySQL56/11111111-1111-1111-1111-111111111111:1-10".into(),
                relay_log_position: "garbage".into(),
                ..Default::default()
            }),
            replication_configuration: Some(Configuration {
                heartbeat_interval: 1.5,
                replica_net_timeout: 3,
            }),
            semi_sync_replica_enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn maps_a_full_status() {
        let o = Observation::from_full_status(&full_status());
        assert_eq!(o.server_id, 101);
        assert_eq!(o.tablet_type, TabletType::Replica);
        assert_eq!(o.executed_position.gtid_count(), 10);
        assert_eq!(o.binlog_coordinates.as_ref().map(|c| c.pos), Some(1234));
        assert_eq!(o.source_host(), "mysql-100");
        assert!(!o.has_no_source());
        // SQL thread "connecting" does not count as running.
        assert!(o.replication_stopped());
        assert_eq!(o.lag_seconds(), Some(4));
        assert_eq!(o.heartbeat_interval, 1.5);
        assert!(o.semi_sync.replica_enabled);
        assert_eq!(o.major_version(), "8.0");
    }

    #[test]
    fn bad_positions_are_recorded_not_fatal() {
        let o = Observation::from_full_status(&full_status());
        assert_eq!(o.parse_errors.len(), 1, "{:?}", o.parse_errors);
        assert!(o.parse_errors[0].starts_with("replication_status.relay_log_position"));
        let r = o.replication.as_ref().expect("replication");
        assert_eq!(r.relay_log_position, Position::Empty);
    }

    #[test]
    fn unknown_lag_and_missing_replication() {
        let mut fs = full_status();
        if let Some(s) = fs.replication_status.as_mut() {
            s.replication_lag_unknown = true;
        }
        assert_eq!(Observation::from_full_status(&fs).lag_seconds(), None);
        fs.replication_status = None;
        let o = Observation::from_full_status(&fs);
        assert!(o.has_no_source());
        assert!(o.replication_stopped());
    }

    #[test]
    fn source_host_conventions_for_no_source() {
        for (host, port, none) in [
            ("", 3306, true),
            ("_", 3306, true),
            ("h", 0, true),
            ("//x", 1, true),
            ("h", 1, false),
        ] {
            let mut fs = full_status();
            if let Some(s) = fs.replication_status.as_mut() {
                s.source_host = host.into();
                s.source_port = port;
            }
            assert_eq!(
                Observation::from_full_status(&fs).has_no_source(),
                none,
                "{host}:{port}"
            );
        }
    }
}
