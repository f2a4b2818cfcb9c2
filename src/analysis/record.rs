//! The result of analysing one tablet (reference §5.7).
//!
//! JSON: `serde` renders the keys of Go VTOrc's `DetectionAnalysis`
//! (`AnalyzedInstanceAlias`, `CountReplicas`, ...), so the HTTP API can serve
//! it as `/api/detection-analysis` does. Aliases are `cell-0000000100`
//! strings, tablet types enum numbers, timestamps RFC 3339 (Go's zero time
//! when unset). Keys of our own: `Reason`, `IsShardWideAction`,
//! `IsShardWideRecovery`, `RecoveryType`.

use serde::{Serialize, Serializer};

use super::codes::{AnalysisCode, Priority, RecoveryKind, StructureWarning};
use super::quorum::QuorumResult;
use crate::ids::{KeyspaceShard, alias_text};
use crate::model::TopoTime;
use crate::proto::topodata::{TabletAlias, TabletType};

fn ser_time<S: Serializer>(t: &Option<TopoTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

fn ser_type<S: Serializer>(t: &TabletType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i32(*t as i32)
}

/// Go's `BinlogCoordinates`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BinlogCoordinates {
    /// Binlog file name (empty if unknown).
    pub log_file: String,
    /// Offset in the file.
    pub log_pos: u64,
    /// Always 0 (`BinaryLog`).
    #[serde(rename = "Type")]
    pub kind: u8,
}

/// One problem that matched a tablet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MatchedProblem {
    /// The code.
    pub analysis: AnalysisCode,
    /// Its description.
    pub description: &'static str,
    /// Its priority.
    pub priority: Priority,
}

impl MatchedProblem {
    /// The catalogue entry of `code`.
    pub fn of(code: AnalysisCode) -> Self {
        MatchedProblem {
            analysis: code,
            description: code.description(),
            priority: code.priority(),
        }
    }
}

/// What analysis found for one tablet: the chosen problem, every problem that
/// matched, and the facts they were decided on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DetectionAnalysis {
    /// The chosen problem.
    pub analysis: AnalysisCode,
    /// The chosen problem's description.
    pub description: String,
    /// One line: the description and the facts that triggered it.
    pub reason: String,
    /// Whether the chosen problem has a recovery that changes something.
    #[serde(rename = "IsActionableRecovery")]
    pub actionable: bool,
    /// The chosen problem is a shard-wide action (one per shard and pass).
    #[serde(rename = "IsShardWideAction")]
    pub shard_wide_action: bool,
    /// Its recovery refreshes the whole shard before and after.
    #[serde(rename = "IsShardWideRecovery")]
    pub shard_wide_recovery: bool,
    /// Recovery that handles it.
    #[serde(rename = "RecoveryType", serialize_with = "ser_recovery")]
    pub recovery: RecoveryKind,
    /// Every matched problem, sorted (the first is the chosen one unless a
    /// shard-wide action promoted a later one).
    pub analysis_matched_problems: Vec<MatchedProblem>,
    /// Structure warnings of this tablet.
    #[serde(rename = "StructureAnalysis")]
    pub structure_analysis: Vec<StructureWarning>,

    /// The analysed tablet.
    #[serde(serialize_with = "alias_text::one")]
    pub analyzed_instance_alias: TabletAlias,
    /// The tablet its MySQL replicates from, if resolved within the shard.
    #[serde(serialize_with = "alias_text::optional")]
    pub analyzed_instance_primary_alias: Option<TabletAlias>,
    /// Keyspace.
    pub analyzed_keyspace: String,
    /// Shard.
    pub analyzed_shard: String,
    /// Cell of the tablet (for `PrimaryTabletDeleted`: of the shard record's primary).
    pub analyzed_cell: String,
    /// Topo tablet type.
    #[serde(serialize_with = "ser_type")]
    pub tablet_type: TabletType,
    /// Type the vttablet reports running as.
    #[serde(serialize_with = "ser_type")]
    pub current_tablet_type: TabletType,
    /// The tablet's primary term start time.
    #[serde(rename = "PrimaryTimeStamp", serialize_with = "ser_time")]
    pub primary_timestamp: Option<TopoTime>,
    /// The shard record's primary term start time.
    #[serde(serialize_with = "ser_time")]
    pub shard_primary_term_timestamp: Option<TopoTime>,
    /// ERS disabled on the keyspace.
    pub analyzed_keyspace_emergency_reparent_disabled: bool,
    /// ERS disabled on the shard.
    pub analyzed_shard_emergency_reparent_disabled: bool,
    /// Own binlog coordinates.
    pub analyzed_instance_binlog_coordinates: BinlogCoordinates,
    /// The topo record marks a graceful vttablet shutdown.
    pub is_tablet_shutdown: bool,

    /// MySQL does not replicate (no source).
    pub is_primary: bool,
    /// The shard's newest topo PRIMARY.
    pub is_cluster_primary: bool,
    /// Last poll valid (see [`crate::model::PollTimes::last_check_valid`]).
    pub last_check_valid: bool,
    /// The last poll got a FullStatus.
    pub last_check_partial_success: bool,
    /// The primary health window says unhealthy.
    pub primary_health_unhealthy: bool,
    /// Replicas of this MySQL.
    pub count_replicas: u32,
    /// ... whose last poll succeeded.
    pub count_valid_replicas: u32,
    /// ... valid and replicating.
    pub count_valid_replicating_replicas: u32,
    /// ... valid, replicating, semi-sync replica enabled.
    pub count_valid_semi_sync_replicating_replicas: u32,
    /// Replicas with semi-sync replica enabled.
    pub count_semi_sync_replicas_enabled: u32,
    /// Replicas lagging more than `reasonable_replication_lag`.
    pub count_lagging_replicas: u32,
    /// Replicas with an SQL delay.
    pub count_delayed_replicas: u32,
    /// Replicas logging their updates.
    pub count_logging_replicas: u32,
    /// ... with STATEMENT format.
    pub count_statement_based_logging_replicas: u32,
    /// ... with MIXED format.
    pub count_mixed_based_logging_replicas: u32,
    /// ... with ROW format.
    pub count_row_based_logging_replicas: u32,
    /// Distinct major versions among logging replicas.
    pub count_distinct_major_versions_logging_replicas: u32,
    /// REPLICA/RDONLY tablets of the shard (quorum denominator).
    pub shard_eligible_observers: u32,
    /// Replication threads not both running.
    pub replication_stopped: bool,
    /// MySQL read-only.
    pub is_read_only: bool,
    /// Disk stalled (only with `enable_primary_disk_stalled_recovery`).
    pub is_disk_stalled: bool,
    /// Errant GTIDs (position text without flavor prefix; empty = none).
    #[serde(rename = "ErrantGTID")]
    pub errant_gtid: String,
    /// `replica_net_timeout`.
    pub replica_net_timeout: i32,
    /// Heartbeat interval.
    pub heartbeat_interval: f64,
    /// All valid replicas use GTID auto-positioning.
    #[serde(rename = "OracleGTIDImmediateTopology")]
    pub oracle_gtid_immediate_topology: bool,
    /// Always false (no binlog servers in Vitess).
    pub binlog_server_immediate_topology: bool,
    /// Semi-sync primary enabled.
    pub semi_sync_primary_enabled: bool,
    /// Semi-sync primary on.
    pub semi_sync_primary_status: bool,
    /// Acks the primary waits for.
    pub semi_sync_primary_wait_for_replica_count: u32,
    /// Connected semi-sync clients.
    pub semi_sync_primary_clients: u32,
    /// Semi-sync replica enabled.
    pub semi_sync_replica_enabled: bool,
    /// MySQL reports writes blocked on semi-sync.
    pub semi_sync_blocked: bool,
    /// `gtid_mode`.
    #[serde(rename = "GTIDMode")]
    pub gtid_mode: String,
    /// Smallest replica `gtid_mode` (string order).
    #[serde(rename = "MinReplicaGTIDMode")]
    pub min_replica_gtid_mode: String,
    /// Largest replica `gtid_mode`.
    #[serde(rename = "MaxReplicaGTIDMode")]
    pub max_replica_gtid_mode: String,
    /// Largest replica errant GTID text (empty = none).
    #[serde(rename = "MaxReplicaGTIDErrant")]
    pub max_replica_gtid_errant: String,
    /// Always 0 here; the recovery assigns ids.
    pub recovery_id: i64,
    /// The quorum tally, only when `PrimaryTabletUnreachableByQuorum` was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_detail: Option<QuorumResult>,
}

fn ser_recovery<S: Serializer>(r: &RecoveryKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.name())
}

impl DetectionAnalysis {
    /// The shard analysed.
    pub fn keyspace_shard(&self) -> KeyspaceShard {
        KeyspaceShard::new(self.analyzed_keyspace.clone(), self.analyzed_shard.clone())
    }

    /// Whether ERS is disabled for this shard by the keyspace or the shard record.
    pub fn emergency_reparent_disabled(&self) -> bool {
        self.analyzed_keyspace_emergency_reparent_disabled || self.analyzed_shard_emergency_reparent_disabled
    }

    /// The entry of an audit record of a reparent an operator requested
    /// (`kind` is an operator kind, see [`RecoveryKind::is_operator_request`]):
    /// no problem was detected (`NoProblem`), `alias` is the tablet the
    /// reparent acts on, `reason` says who asked for what. Every fact field
    /// is zero: vtorc analysed nothing.
    pub fn operator_request(
        keyspace: &str,
        shard: &str,
        alias: TabletAlias,
        kind: RecoveryKind,
        reason: String,
    ) -> DetectionAnalysis {
        DetectionAnalysis {
            analysis: AnalysisCode::NoProblem,
            description: String::from("Reparent requested by an operator"),
            reason,
            actionable: true,
            shard_wide_action: true,
            shard_wide_recovery: true,
            recovery: kind,
            analysis_matched_problems: Vec::new(),
            structure_analysis: Vec::new(),
            analyzed_cell: alias.cell.clone(),
            analyzed_instance_alias: alias,
            analyzed_instance_primary_alias: None,
            analyzed_keyspace: keyspace.to_string(),
            analyzed_shard: shard.to_string(),
            tablet_type: TabletType::Unknown,
            current_tablet_type: TabletType::Unknown,
            primary_timestamp: None,
            shard_primary_term_timestamp: None,
            analyzed_keyspace_emergency_reparent_disabled: false,
            analyzed_shard_emergency_reparent_disabled: false,
            analyzed_instance_binlog_coordinates: BinlogCoordinates::default(),
            is_tablet_shutdown: false,
            is_primary: false,
            is_cluster_primary: false,
            last_check_valid: false,
            last_check_partial_success: false,
            primary_health_unhealthy: false,
            count_replicas: 0,
            count_valid_replicas: 0,
            count_valid_replicating_replicas: 0,
            count_valid_semi_sync_replicating_replicas: 0,
            count_semi_sync_replicas_enabled: 0,
            count_lagging_replicas: 0,
            count_delayed_replicas: 0,
            count_logging_replicas: 0,
            count_statement_based_logging_replicas: 0,
            count_mixed_based_logging_replicas: 0,
            count_row_based_logging_replicas: 0,
            count_distinct_major_versions_logging_replicas: 0,
            shard_eligible_observers: 0,
            replication_stopped: false,
            is_read_only: false,
            is_disk_stalled: false,
            errant_gtid: String::new(),
            replica_net_timeout: 0,
            heartbeat_interval: 0.0,
            oracle_gtid_immediate_topology: false,
            binlog_server_immediate_topology: false,
            semi_sync_primary_enabled: false,
            semi_sync_primary_status: false,
            semi_sync_primary_wait_for_replica_count: 0,
            semi_sync_primary_clients: 0,
            semi_sync_replica_enabled: false,
            semi_sync_blocked: false,
            gtid_mode: String::new(),
            min_replica_gtid_mode: String::new(),
            max_replica_gtid_mode: String::new(),
            max_replica_gtid_errant: String::new(),
            recovery_id: 0,
            quorum_detail: None,
        }
    }

    /// Makes `code` the chosen problem (description and flags follow; the
    /// caller sets `reason`).
    pub(crate) fn choose(&mut self, code: AnalysisCode) {
        self.analysis = code;
        self.description = code.description().to_string();
        self.actionable = code.is_actionable();
        self.shard_wide_action = code.is_shard_wide_action();
        self.shard_wide_recovery = code.is_shard_wide_recovery();
        self.recovery = code.recovery();
    }
}
