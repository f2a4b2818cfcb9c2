//! Pure detection: from a [`ClusterSnapshot`] to the problems VTOrc repairs
//! (reference §5). No I/O, no clock, not async: `now` is a parameter and the
//! same inputs always give the same output.
//!
//! - [`analyze`] looks at every shard; [`analyze_shard`] at one (the recovery
//!   loop re-checks a shard under its lock with it).
//! - Keyspaces without a durability policy are skipped with a note; an
//!   unknown policy is an error note. Neither stops other keyspaces.
//! - Problems come out grouped by shard (shards in name order), and within a
//!   shard in Go VTOrc's row order (PRIMARY tablets first, newest term first).
//!   Go orders rows of all shards together by type; grouping is what the
//!   recovery loop needs and is deterministic.

pub mod codes;
mod detect;
pub mod durability;
pub mod evidence;
mod instance;
pub mod quorum;
pub mod record;

use std::fmt;
use std::time::Duration;

pub use codes::{AnalysisCode, Priority, RecoveryKind, StructureWarning};
pub use detect::{is_replica_type, sort_analyses, sort_codes};
pub use durability::{Durability, DurabilityError, PromotionRule};
pub use instance::instance_problems;
pub use quorum::{QuorumConfig, QuorumResult};
pub use record::{DetectionAnalysis, MatchedProblem};
use tokio::time::Instant;

use crate::config::{Config, defaults};
use crate::ids::KeyspaceShard;
use crate::model::{ClusterSnapshot, KeyspaceInfo, ShardState};
use crate::proto::topodata::KeyspaceType;

/// Options that change what analysis reports (Go VTOrc flags).
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisConfig {
    /// `--instance-poll-time`: a poll hung longer than this past the last
    /// success makes the last check invalid.
    pub instance_poll_time: Duration,
    /// `--reasonable-replication-lag`: replicas lagging more count as lagging.
    pub reasonable_replication_lag: Duration,
    /// `--enable-primary-disk-stalled-recovery`: honour the disk-stalled flag.
    pub enable_primary_disk_stalled_recovery: bool,
    /// `--primary-healthcheck-timeout-window`: `IncapacitatedPrimary` window; zero disables it.
    pub primary_healthcheck_timeout_window: Duration,
    /// `PrimaryTabletUnreachableByQuorum` options (off by default).
    pub quorum: QuorumConfig,
    /// `--heartbeat-silence-threshold`: see [`evidence`]; zero disables the
    /// heartbeat evidence.
    pub heartbeat_silence_threshold: Duration,
    /// `--primary-tablet-down-grace`: see [`evidence`]; zero = never.
    pub primary_tablet_down_grace: Duration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            instance_poll_time: defaults::INSTANCE_POLL_TIME,
            reasonable_replication_lag: defaults::REASONABLE_REPLICATION_LAG,
            enable_primary_disk_stalled_recovery: defaults::ENABLE_PRIMARY_DISK_STALLED_RECOVERY,
            primary_healthcheck_timeout_window: defaults::PRIMARY_HEALTHCHECK_TIMEOUT_WINDOW,
            quorum: QuorumConfig::default(),
            heartbeat_silence_threshold: defaults::HEARTBEAT_SILENCE_THRESHOLD,
            primary_tablet_down_grace: defaults::PRIMARY_TABLET_DOWN_GRACE,
        }
    }
}

impl AnalysisConfig {
    /// The analysis options of the service configuration. The quorum flags
    /// are not in [`Config`] yet, so the quorum code stays off (its default).
    pub fn from_config(config: &Config) -> Self {
        AnalysisConfig {
            instance_poll_time: config.instance_poll_time,
            reasonable_replication_lag: config.reasonable_replication_lag,
            enable_primary_disk_stalled_recovery: config.enable_primary_disk_stalled_recovery,
            primary_healthcheck_timeout_window: config.primary_healthcheck_timeout_window,
            quorum: QuorumConfig::default(),
            heartbeat_silence_threshold: config.heartbeat_silence_threshold,
            primary_tablet_down_grace: config.primary_tablet_down_grace,
        }
    }
}

/// Why (part of) a keyspace was not analysed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyspaceNote {
    /// No durability policy set: the keyspace is ignored (as Go VTOrc does).
    NoDurabilityPolicy {
        /// Keyspace name.
        keyspace: String,
    },
    /// The durability policy is unknown: an error; the keyspace is not analysed.
    UnknownDurabilityPolicy {
        /// Keyspace name.
        keyspace: String,
        /// The policy name.
        policy: String,
    },
    /// SNAPSHOT keyspaces are never analysed.
    SnapshotKeyspace {
        /// Keyspace name.
        keyspace: String,
    },
    /// Shards exist but the keyspace record is missing: ignored.
    MissingKeyspaceRecord {
        /// Keyspace name.
        keyspace: String,
    },
}

impl KeyspaceNote {
    /// The keyspace concerned.
    pub fn keyspace(&self) -> &str {
        match self {
            KeyspaceNote::NoDurabilityPolicy { keyspace }
            | KeyspaceNote::UnknownDurabilityPolicy { keyspace, .. }
            | KeyspaceNote::SnapshotKeyspace { keyspace }
            | KeyspaceNote::MissingKeyspaceRecord { keyspace } => keyspace,
        }
    }

    /// Whether this is an error (to be logged as such) rather than an expected skip.
    pub fn is_error(&self) -> bool {
        matches!(self, KeyspaceNote::UnknownDurabilityPolicy { .. })
    }
}

impl fmt::Display for KeyspaceNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyspaceNote::NoDurabilityPolicy { keyspace } => {
                write!(f, "keyspace {keyspace} ignored: {}", DurabilityError::NotSet)
            }
            KeyspaceNote::UnknownDurabilityPolicy { keyspace, policy } => write!(
                f,
                "keyspace {keyspace} not analysed: {}",
                DurabilityError::Unknown(policy.clone())
            ),
            KeyspaceNote::SnapshotKeyspace { keyspace } => {
                write!(f, "keyspace {keyspace} ignored: it is a SNAPSHOT keyspace")
            }
            KeyspaceNote::MissingKeyspaceRecord { keyspace } => {
                write!(
                    f,
                    "keyspace {keyspace} ignored: its shards are known but its keyspace record is not"
                )
            }
        }
    }
}

/// What one analysis pass found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnalysisOutput {
    /// One entry per tablet with a problem or a structure warning.
    pub problems: Vec<DetectionAnalysis>,
    /// Keyspaces skipped, and why (one note per keyspace).
    pub notes: Vec<KeyspaceNote>,
}

impl AnalysisOutput {
    /// Problems of one shard, in order.
    pub fn for_shard<'a>(
        &'a self,
        key: &'a KeyspaceShard,
    ) -> impl Iterator<Item = &'a DetectionAnalysis> + 'a {
        self.problems
            .iter()
            .filter(move |p| p.analyzed_keyspace == key.keyspace && p.analyzed_shard == key.shard)
    }
}

/// Checks a keyspace: its record and policy, or the note explaining why it is skipped.
fn keyspace_policy<'a>(
    name: &str,
    keyspace: Option<&'a KeyspaceInfo>,
) -> Result<(&'a KeyspaceInfo, Durability), KeyspaceNote> {
    let keyspace = keyspace.ok_or_else(|| KeyspaceNote::MissingKeyspaceRecord {
        keyspace: name.to_string(),
    })?;
    if keyspace.keyspace_type == KeyspaceType::Snapshot {
        return Err(KeyspaceNote::SnapshotKeyspace {
            keyspace: name.to_string(),
        });
    }
    let durability = Durability::from_name(&keyspace.durability_policy).map_err(|e| match e {
        DurabilityError::NotSet => KeyspaceNote::NoDurabilityPolicy {
            keyspace: name.to_string(),
        },
        DurabilityError::Unknown(policy) => KeyspaceNote::UnknownDurabilityPolicy {
            keyspace: name.to_string(),
            policy,
        },
    })?;
    Ok((keyspace, durability))
}

fn analyze_one(
    snapshot: &ClusterSnapshot,
    shard: &ShardState,
    cfg: &AnalysisConfig,
    now: Instant,
    out: &mut AnalysisOutput,
    last_note: &mut Option<String>,
    scratch: &mut detect::Scratch,
) {
    let keyspace = snapshot.keyspaces.get(&shard.keyspace).map(|k| k.as_ref());
    match keyspace_policy(&shard.keyspace, keyspace) {
        Ok((keyspace, durability)) => {
            let input = detect::ShardInput {
                keyspace,
                shard,
                durability,
                cfg,
                now,
            };
            out.problems.extend(detect::analyze_shard_rows(&input, scratch));
        }
        Err(note) => {
            if last_note.as_deref() != Some(shard.keyspace.as_str()) {
                *last_note = Some(shard.keyspace.clone());
                out.notes.push(note);
            }
        }
    }
}

/// Analyses every shard of the snapshot.
pub fn analyze(snapshot: &ClusterSnapshot, cfg: &AnalysisConfig, now: Instant) -> AnalysisOutput {
    let mut out = AnalysisOutput::default();
    let mut last_note = None;
    let mut scratch = detect::Scratch::default();
    for shard in snapshot.shards.values() {
        analyze_one(snapshot, shard, cfg, now, &mut out, &mut last_note, &mut scratch);
    }
    out
}

/// Analyses one shard (empty output if the snapshot does not have it).
pub fn analyze_shard(
    snapshot: &ClusterSnapshot,
    key: &KeyspaceShard,
    cfg: &AnalysisConfig,
    now: Instant,
) -> AnalysisOutput {
    let mut out = AnalysisOutput::default();
    if let Some(shard) = snapshot.shard(key) {
        analyze_one(
            snapshot,
            shard,
            cfg,
            now,
            &mut out,
            &mut None,
            &mut detect::Scratch::default(),
        );
    }
    out
}
