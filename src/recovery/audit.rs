//! The recovery audit: every detection and every recovery, with ids,
//! timestamps, steps, outcome and skip reason.
//!
//! # What is kept
//!
//! - **Detections** (Go's `recovery_detection`): one per incident, keyed by
//!   (tablet, analysis code). The id is stable while the problem keeps being
//!   detected; a detection is *resolved* when analysis stops reporting it,
//!   when the re-check under the lock finds it already fixed
//!   (`StaleAnalysis`), or when its recovery succeeded, so the next
//!   occurrence gets a new id (v25 semantics). The last skip reason and a
//!   skip count are kept on the detection rather than as one record per
//!   pass, so a problem skipped every second does not flood the log.
//! - **Recoveries** (Go's `topology_recovery` + `topology_recovery_steps`):
//!   one per recovery function that actually ran, with the analysis it acted
//!   on (re-checked under the lock), the tablets involved, every step
//!   (including each ERS/PRS log event), outcome, error and successor.
//!
//! Both live in memory in bounded rings (oldest dropped first). Every change
//! is also an [`AuditEvent`]: broadcast to subscribers (the VTOrc API's
//! Watch) and, with `--audit-file-location`, appended to a file as one JSON
//! object per line by a writer task (steps are written as they happen, so
//! the file shows how far a recovery got even if vtorc dies in it).
//!
//! Timestamps are wall-clock (they are facts for operators, not for
//! scheduling) and come from an injectable [`WallClock`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::analysis::{AnalysisCode, DetectionAnalysis, RecoveryKind};
use crate::ids::{KeyspaceShard, alias_text};
use crate::model::TopoTime;
use crate::proto::topodata::TabletAlias;
use crate::reparent::{EventLevel, ReparentEvent, WallClock};

/// Capacity of the audit event broadcast; slower subscribers see `Lagged`.
const EVENT_BUFFER: usize = 4096;

/// Capacity of the queue of lines waiting for the audit file writer.
const FILE_BUFFER: usize = 8192;

/// Why a detected problem was not recovered (Go VTOrc's `Reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The code has no recovery, or its recovery is switched off
    /// (errant GTIDs without `--change-tablets-with-errant-gtid-to-drained`).
    NoRecoveryAction,
    /// Recoveries are disabled globally (`--allow-recovery=false` or the toggle).
    GlobalRecoveriesDisabled,
    /// ERS is disabled globally, for the keyspace or for the shard.
    EmergencyReparentShardDisabled,
    /// The re-check under the shard lock no longer finds the problem.
    StaleAnalysis,
    /// The primary needs repairing first (re-check before a replica fix).
    PrimaryRecovery,
    /// The tablet's cell is in `--cells-no-recovery` (or unknown).
    CellNoRecovery,
    /// `--cells-no-recovery` could not be validated against the topology yet.
    CellNoRecoveryUnvalidated,
    /// Ours: earlier recoveries did not clear the problem; waiting
    /// (`--recovery-backoff-initial`, `--recovery-backoff-max`).
    RecoveryBackoff,
    /// Ours (Go's deprecated `--recovery-period-block-duration`): vtorc ran
    /// an ERS of the shard recently.
    EmergencyReparentCooldown,
}

impl SkipReason {
    /// Every reason.
    pub const ALL: [SkipReason; 9] = [
        SkipReason::NoRecoveryAction,
        SkipReason::GlobalRecoveriesDisabled,
        SkipReason::EmergencyReparentShardDisabled,
        SkipReason::StaleAnalysis,
        SkipReason::PrimaryRecovery,
        SkipReason::CellNoRecovery,
        SkipReason::CellNoRecoveryUnvalidated,
        SkipReason::RecoveryBackoff,
        SkipReason::EmergencyReparentCooldown,
    ];

    /// Go VTOrc's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoRecoveryAction => "NoRecoveryAction",
            SkipReason::GlobalRecoveriesDisabled => "GlobalRecoveriesDisabled",
            SkipReason::EmergencyReparentShardDisabled => "EmergencyReparentShardDisabled",
            SkipReason::StaleAnalysis => "StaleAnalysis",
            SkipReason::PrimaryRecovery => "PrimaryRecovery",
            SkipReason::CellNoRecovery => "CellNoRecovery",
            SkipReason::CellNoRecoveryUnvalidated => "CellNoRecoveryUnvalidated",
            SkipReason::RecoveryBackoff => "RecoveryBackoff",
            SkipReason::EmergencyReparentCooldown => "EmergencyReparentCooldown",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SkipReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Severity of a recovery step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StepLevel {
    /// Progress.
    Info,
    /// Something failed but the recovery goes on.
    Warning,
    /// The recovery failed.
    Error,
}

impl From<EventLevel> for StepLevel {
    fn from(level: EventLevel) -> Self {
        match level {
            EventLevel::Info => StepLevel::Info,
            EventLevel::Warning => StepLevel::Warning,
            EventLevel::Error => StepLevel::Error,
        }
    }
}

/// One step of a recovery.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryStep {
    /// When it happened (wall clock).
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    /// The step (`SetReadOnly`, `ers:stop_replication`, ...).
    pub step: String,
    /// Severity.
    pub level: StepLevel,
    /// What happened.
    pub message: String,
}

/// How a recovery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RecoveryOutcome {
    /// Still running.
    Running,
    /// The recovery function succeeded.
    Succeeded,
    /// The recovery function failed (see `error`).
    Failed,
}

/// Who asked for a reparent that vtorc ran on an operator's request
/// (`PlannedReparentShard` / `EmergencyReparentShard` through the Vtctld
/// service, e.g. from VTAdmin or `vtctldclient`). Never holds secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorRequest {
    /// The Vtctld method called (`PlannedReparentShard`, `EmergencyReparentShard`).
    pub method: String,
    /// The caller's address as vtorc's gRPC server saw it (`ip:port`; for
    /// VTAdmin this is the VTAdmin API server), if known.
    pub peer: Option<String>,
    /// The subject of the caller's TLS client certificate (`CN=...`), when
    /// it connected with one (`--grpc-ca`).
    pub client_identity: Option<String>,
    /// The tablet the operator asked to promote, if one was named.
    #[serde(serialize_with = "alias_text::optional")]
    pub new_primary: Option<TabletAlias>,
    /// The tablet the operator asked to move the primary away from (PRS).
    #[serde(serialize_with = "alias_text::optional")]
    pub avoid_primary: Option<TabletAlias>,
}

impl OperatorRequest {
    /// One line for logs and the record's analysis reason.
    pub fn describe(&self) -> String {
        let mut text = format!("{} requested by an operator", self.method);
        if let Some(peer) = &self.peer {
            text.push_str(&format!(" from {peer}"));
        }
        if let Some(id) = &self.client_identity {
            text.push_str(&format!(" ({id})"));
        }
        if let Some(a) = &self.new_primary {
            text.push_str(&format!(", new primary {a}"));
        }
        if let Some(a) = &self.avoid_primary {
            text.push_str(&format!(", avoiding {a}"));
        }
        text
    }
}

/// One detected problem (one incident).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectionRecord {
    /// Stable id of the incident.
    pub detection_id: u64,
    /// The vtorc instance that detected it.
    pub instance: String,
    /// The analysis code.
    pub analysis: AnalysisCode,
    /// The recovery that handles it (Go's `RecoveryType`; empty = none).
    #[serde(serialize_with = "ser_kind")]
    pub recovery_type: RecoveryKind,
    /// The analysed tablet.
    #[serde(serialize_with = "alias_text::one")]
    pub tablet_alias: TabletAlias,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// The analysis's one-line reason when first detected.
    pub reason: String,
    /// When the incident was first detected.
    #[serde(serialize_with = "ser_time")]
    pub first_detected_at: SystemTime,
    /// When it was last detected (refreshed on every pass that sees it).
    #[serde(serialize_with = "ser_time")]
    pub detected_at: SystemTime,
    /// The last reason its recovery was skipped; `None` = not skipped (yet).
    pub skip_reason: Option<SkipReason>,
    /// How many times its recovery was skipped.
    pub skip_count: u64,
    /// The last thing that stopped a recovery other than a skip (lock
    /// refused, "not attempted" with its reason, aborted refresh).
    pub note: Option<String>,
    /// Recoveries run for this incident.
    pub recovery_ids: Vec<u64>,
    /// When the incident ended (`None` = still active).
    #[serde(serialize_with = "ser_opt_time")]
    pub resolved_at: Option<SystemTime>,
    /// Why it ended (`no longer detected`, `StaleAnalysis`, `recovered`).
    pub resolution: Option<String>,
    /// The gate ladder of the engine's last attempt, up to the gate that
    /// stopped it (empty = not attempted yet).
    pub gates: Vec<super::ladder::GateResult>,
}

impl DetectionRecord {
    /// The shard of the incident.
    pub fn keyspace_shard(&self) -> KeyspaceShard {
        KeyspaceShard::new(self.keyspace.clone(), self.shard.clone())
    }
}

/// One recovery that ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryRecord {
    /// Id of the recovery (unique in this vtorc process).
    pub recovery_id: u64,
    /// The incident it recovers.
    pub detection_id: u64,
    /// The vtorc instance that ran it.
    pub instance: String,
    /// The analysis code acted on.
    pub analysis: AnalysisCode,
    /// The recovery function (Go's `RecoveryType`).
    #[serde(serialize_with = "ser_kind")]
    pub recovery_type: RecoveryKind,
    /// The analysed tablet.
    #[serde(serialize_with = "alias_text::one")]
    pub tablet_alias: TabletAlias,
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// When the incident was first detected.
    #[serde(serialize_with = "ser_time")]
    pub detected_at: SystemTime,
    /// When the recovery function started (after the gates and the lock).
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    /// When it ended (`None` = running).
    #[serde(serialize_with = "ser_opt_time")]
    pub ended_at: Option<SystemTime>,
    /// How long it ran, in milliseconds (`None` = running).
    pub duration_ms: Option<u64>,
    /// The analysis as re-checked under the shard lock.
    pub analysis_entry: DetectionAnalysis,
    /// Tablets the recovery acts on (the analysed one first).
    #[serde(serialize_with = "alias_text::list")]
    pub tablets: Vec<TabletAlias>,
    /// Steps, in order.
    pub steps: Vec<RecoveryStep>,
    /// Outcome.
    pub outcome: RecoveryOutcome,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The new primary, when the recovery promoted one.
    #[serde(serialize_with = "alias_text::optional")]
    pub successor_alias: Option<TabletAlias>,
    /// Set when an operator requested this reparent through the Vtctld
    /// service (then `recovery_type` is `OperatorPlannedReparentShard` or
    /// `OperatorEmergencyReparentShard`, `analysis` is `NoProblem` and
    /// `detection_id` is 0). Absent from the JSON for vtorc's own recoveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<OperatorRequest>,
}

impl RecoveryRecord {
    /// The shard recovered.
    pub fn keyspace_shard(&self) -> KeyspaceShard {
        KeyspaceShard::new(self.keyspace.clone(), self.shard.clone())
    }
}

/// One change of the audit, as broadcast and as written to the audit file
/// (`{"event": "RecoveryStarted", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event")]
pub enum AuditEvent {
    /// A new incident.
    DetectionOpened(DetectionRecord),
    /// An incident's recovery was skipped for a different reason than before.
    DetectionSkipped(DetectionRecord),
    /// An incident ended.
    DetectionResolved(DetectionRecord),
    /// A recovery function started.
    RecoveryStarted(RecoveryRecord),
    /// A recovery made a step.
    RecoveryStep {
        /// The recovery.
        recovery_id: u64,
        /// Its keyspace.
        keyspace: String,
        /// Its shard.
        shard: String,
        /// The step.
        step: RecoveryStep,
    },
    /// A recovery function ended.
    RecoveryFinished(RecoveryRecord),
    /// An operator acknowledged recoveries: back-offs and ERS cooldowns
    /// cleared (orchestrator's `ack-recovery`).
    Acknowledged {
        /// When.
        #[serde(serialize_with = "ser_time")]
        at: SystemTime,
        /// The vtorc instance.
        instance: String,
        /// Keyspace; empty = all.
        keyspace: String,
        /// Shard; empty = all of the keyspace (or all).
        shard: String,
        /// The operator's comment.
        comment: String,
        /// Back-offs and cooldowns cleared.
        cleared: usize,
    },
    /// A call was refused by an access policy: a gRPC call by
    /// `--grpc-auth-mode` or `--grpc-mutating-identities-file`, an HTTP
    /// request by `--security-policy`. Names only: never a key or a
    /// certificate.
    AccessDenied {
        /// When.
        #[serde(serialize_with = "ser_time")]
        at: SystemTime,
        /// The vtorc instance.
        instance: String,
        /// The call: `service/method` for gRPC (e.g.
        /// `vtctlservice.Vtctld/PlannedReparentShard`), `HTTP <verb> <path>`.
        method: String,
        /// The client's address; empty when unknown.
        peer: String,
        /// The client certificate's names, or why there are none (empty
        /// for HTTP).
        identity: String,
        /// What was answered: the gRPC code (`PERMISSION_DENIED`,
        /// `UNAUTHENTICATED`) or the HTTP status (`403 Forbidden`).
        code: String,
        /// Why, as told to the client.
        reason: String,
    },
    /// vtorc is shutting down (Go audits "Triggered via SIGTERM").
    Shutdown {
        /// When.
        #[serde(serialize_with = "ser_time")]
        at: SystemTime,
        /// The vtorc instance.
        instance: String,
        /// Why.
        message: String,
    },
}

impl AuditEvent {
    /// The shard the event is about (`None` for process events).
    pub fn keyspace_shard(&self) -> Option<KeyspaceShard> {
        match self {
            AuditEvent::DetectionOpened(d)
            | AuditEvent::DetectionSkipped(d)
            | AuditEvent::DetectionResolved(d) => Some(d.keyspace_shard()),
            AuditEvent::RecoveryStarted(r) | AuditEvent::RecoveryFinished(r) => Some(r.keyspace_shard()),
            AuditEvent::RecoveryStep { keyspace, shard, .. } => {
                Some(KeyspaceShard::new(keyspace.clone(), shard.clone()))
            }
            AuditEvent::Acknowledged { keyspace, shard, .. } if !keyspace.is_empty() => {
                Some(KeyspaceShard::new(keyspace.clone(), shard.clone()))
            }
            AuditEvent::Acknowledged { .. }
            | AuditEvent::Shutdown { .. }
            | AuditEvent::AccessDenied { .. } => None,
        }
    }
}

/// Which records a query returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this keyspace (`None` = all).
    pub keyspace: Option<String>,
    /// Only this shard (needs `keyspace`; `None` = all shards).
    pub shard: Option<String>,
    /// At most this many, newest first (`None` = all kept).
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// Everything kept.
    pub fn all() -> Self {
        AuditFilter::default()
    }

    /// One shard.
    pub fn shard(key: &KeyspaceShard) -> Self {
        AuditFilter {
            keyspace: Some(key.keyspace.clone()),
            shard: Some(key.shard.clone()),
            limit: None,
        }
    }

    /// The same filter keeping only the newest `n`.
    pub fn recent(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    fn matches(&self, keyspace: &str, shard: &str) -> bool {
        self.keyspace.as_deref().is_none_or(|k| k == keyspace)
            && self.shard.as_deref().is_none_or(|s| s == shard)
    }
}

/// Which active detections a pass covered (those not seen again are resolved).
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every shard (a full pass).
    All,
    /// One shard.
    Shard(&'a KeyspaceShard),
}

/// Mutable audit state; behind the [`AuditLog`]'s mutex.
#[derive(Debug)]
struct AuditState {
    /// Id of the next new detection.
    next_detection_id: u64,
    /// Id of the next recovery.
    next_recovery_id: u64,
    /// Active incidents by (tablet, code).
    active: HashMap<(TabletAlias, AnalysisCode), DetectionRecord>,
    /// Resolved incidents, oldest first, at most `capacity`.
    resolved: VecDeque<DetectionRecord>,
    /// Recoveries (running and finished), oldest first, at most `capacity`.
    recoveries: VecDeque<RecoveryRecord>,
    /// Ring capacity.
    capacity: usize,
}

/// The audit log. Shared (`Arc`) by the engine, its recoveries and the APIs.
#[derive(Debug)]
pub struct AuditLog {
    /// The records. A `std::sync::Mutex`: every method holds it only to
    /// read or update records, never across an `.await`.
    state: Mutex<AuditState>,
    /// Broadcast of every change.
    events: broadcast::Sender<AuditEvent>,
    /// Lines for the audit file writer (`None` = no file).
    file: Option<mpsc::Sender<String>>,
    /// Lines dropped because the file writer fell behind.
    dropped_lines: AtomicU64,
    /// This vtorc instance's name in records.
    instance: String,
    /// Wall clock for timestamps.
    clock: WallClock,
}

/// Appends audit lines to the audit file; run it as a task and cancel it
/// (it then writes what is queued and stops).
#[derive(Debug)]
pub struct AuditFileWriter {
    /// The file, opened for appending.
    file: tokio::fs::File,
    /// Its path, for logs.
    path: PathBuf,
    /// Lines to write.
    rx: mpsc::Receiver<String>,
}

impl AuditFileWriter {
    /// Writes lines until `cancel` fires, then writes the lines already queued.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let line = tokio::select! {
                biased;
                line = self.rx.recv() => line,
                _ = cancel.cancelled() => break,
            };
            let Some(line) = line else { break };
            self.write(line).await;
            while let Ok(line) = self.rx.try_recv() {
                self.write(line).await;
            }
            if let Err(e) = self.file.flush().await {
                tracing::warn!(path = %self.path.display(), "failed to flush the audit file: {e}");
            }
        }
        while let Ok(line) = self.rx.try_recv() {
            self.write(line).await;
        }
        if let Err(e) = self.file.flush().await {
            tracing::warn!(path = %self.path.display(), "failed to flush the audit file: {e}");
        }
    }

    async fn write(&mut self, mut line: String) {
        line.push('\n');
        if let Err(e) = self.file.write_all(line.as_bytes()).await {
            tracing::warn!(path = %self.path.display(), "failed to write the audit file: {e}");
        }
    }
}

impl AuditLog {
    /// An audit log keeping `capacity` recoveries and `capacity` resolved
    /// detections, naming itself `instance`, timestamping with `clock`, and
    /// appending to `file` if given (opened now, so a bad path fails at
    /// start-up; run the returned writer as a task).
    pub fn new(
        capacity: usize,
        instance: impl Into<String>,
        clock: WallClock,
        file: Option<PathBuf>,
    ) -> std::io::Result<(AuditLog, Option<AuditFileWriter>)> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (tx, writer) = match file {
            Some(path) => {
                let std_file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let (tx, rx) = mpsc::channel(FILE_BUFFER);
                let writer = AuditFileWriter {
                    file: tokio::fs::File::from_std(std_file),
                    path,
                    rx,
                };
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        let log = AuditLog {
            state: Mutex::new(AuditState {
                next_detection_id: 1,
                next_recovery_id: 1,
                active: HashMap::new(),
                resolved: VecDeque::new(),
                recoveries: VecDeque::new(),
                capacity: capacity.max(1),
            }),
            events,
            file: tx,
            dropped_lines: AtomicU64::new(0),
            instance: instance.into(),
            clock,
        };
        Ok((log, writer))
    }

    /// The instance name written into records.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Receives every audit change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.events.subscribe()
    }

    /// Audit lines dropped because the file writer fell behind.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuditState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Broadcasts an event and queues it for the file. Called with the
    /// state lock held, so events come out in the order of the changes.
    fn emit(&self, event: AuditEvent) {
        if let Some(tx) = &self.file {
            match serde_json::to_string(&event) {
                Ok(line) => {
                    if tx.try_send(line).is_err() {
                        self.dropped_lines.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => tracing::warn!("failed to serialize an audit event: {e}"),
            }
        }
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Records that `analysis` was detected now: opens an incident or
    /// refreshes the open one. Returns the detection id.
    pub fn observe(&self, analysis: &DetectionAnalysis) -> u64 {
        let now = self.now();
        let mut state = self.lock();
        let key = (analysis.analyzed_instance_alias.clone(), analysis.analysis);
        if let Some(d) = state.active.get_mut(&key) {
            d.detected_at = now;
            return d.detection_id;
        }
        let id = state.next_detection_id;
        state.next_detection_id += 1;
        let record = DetectionRecord {
            detection_id: id,
            instance: self.instance.clone(),
            analysis: analysis.analysis,
            recovery_type: analysis.recovery,
            tablet_alias: analysis.analyzed_instance_alias.clone(),
            keyspace: analysis.analyzed_keyspace.clone(),
            shard: analysis.analyzed_shard.clone(),
            reason: analysis.reason.clone(),
            first_detected_at: now,
            detected_at: now,
            skip_reason: None,
            skip_count: 0,
            note: None,
            recovery_ids: Vec::new(),
            resolved_at: None,
            resolution: None,
            gates: Vec::new(),
        };
        tracing::info!(
            keyspace = %record.keyspace,
            shard = %record.shard,
            tablet = %record.tablet_alias,
            analysis = %record.analysis,
            detection_id = id,
            "problem detected: {}",
            record.reason
        );
        state.active.insert(key, record.clone());
        self.emit(AuditEvent::DetectionOpened(record));
        id
    }

    /// Records every problem of a pass and resolves the active incidents in
    /// `scope` that the pass no longer reports.
    pub fn observe_pass(&self, scope: Scope<'_>, problems: &[DetectionAnalysis]) {
        for p in problems {
            if p.analysis != AnalysisCode::NoProblem {
                self.observe(p);
            }
        }
        let present: std::collections::HashSet<(&TabletAlias, AnalysisCode)> = problems
            .iter()
            .map(|p| (&p.analyzed_instance_alias, p.analysis))
            .collect();
        // An incident whose recovery still runs stays open (the recovery's
        // end resolves it); one a recovery of its own fixed is "recovered"
        // even when a pass sees it gone before the recovery says so.
        let gone: Vec<(TabletAlias, AnalysisCode, &str)> = {
            let state = self.lock();
            let outcome_of = |id: &u64| {
                state
                    .recoveries
                    .iter()
                    .find(|r| r.recovery_id == *id)
                    .map(|r| r.outcome)
            };
            state
                .active
                .iter()
                .filter(|(_, d)| match scope {
                    Scope::All => true,
                    Scope::Shard(key) => d.keyspace == key.keyspace && d.shard == key.shard,
                })
                .filter(|((alias, code), _)| !present.contains(&(alias, *code)))
                .filter(|(_, d)| {
                    !d.recovery_ids
                        .iter()
                        .any(|id| outcome_of(id) == Some(RecoveryOutcome::Running))
                })
                .map(|(k, d)| {
                    let recovered = d
                        .recovery_ids
                        .iter()
                        .any(|id| outcome_of(id) == Some(RecoveryOutcome::Succeeded));
                    let why = if recovered {
                        "recovered"
                    } else {
                        "no longer detected"
                    };
                    (k.0.clone(), k.1, why)
                })
                .collect()
        };
        for (alias, code, why) in gone {
            self.resolve(&alias, code, why);
        }
    }

    /// Ends the incident of (`alias`, `code`), if open.
    pub fn resolve(&self, alias: &TabletAlias, code: AnalysisCode, why: &str) {
        let now = self.now();
        let mut state = self.lock();
        let Some(mut record) = state.active.remove(&(alias.clone(), code)) else {
            return;
        };
        record.resolved_at = Some(now);
        record.resolution = Some(why.to_string());
        tracing::info!(
            keyspace = %record.keyspace,
            shard = %record.shard,
            tablet = %record.tablet_alias,
            analysis = %record.analysis,
            detection_id = record.detection_id,
            "problem resolved: {why}"
        );
        state.resolved.push_back(record.clone());
        while state.resolved.len() > state.capacity {
            state.resolved.pop_front();
        }
        self.emit(AuditEvent::DetectionResolved(record));
    }

    /// Records that the recovery of (`alias`, `code`) was skipped for
    /// `reason`. Emits an event only when the reason changed.
    pub fn note_skip(&self, alias: &TabletAlias, code: AnalysisCode, reason: SkipReason) {
        let mut state = self.lock();
        let Some(d) = state.active.get_mut(&(alias.clone(), code)) else {
            return;
        };
        d.skip_count += 1;
        if d.skip_reason == Some(reason) {
            return;
        }
        d.skip_reason = Some(reason);
        let record = d.clone();
        self.emit(AuditEvent::DetectionSkipped(record));
    }

    /// Records the gate ladder of the engine's last attempt on the incident.
    pub fn note_gates(&self, alias: &TabletAlias, code: AnalysisCode, gates: Vec<super::ladder::GateResult>) {
        let mut state = self.lock();
        if let Some(d) = state.active.get_mut(&(alias.clone(), code)) {
            d.gates = gates;
        }
    }

    /// Records an acknowledgement (see [`AuditEvent::Acknowledged`]).
    pub fn acknowledged(&self, keyspace: &str, shard: &str, comment: &str, cleared: usize) {
        let _state = self.lock();
        tracing::info!(keyspace, shard, cleared, "recoveries acknowledged: {comment}");
        self.emit(AuditEvent::Acknowledged {
            at: self.now(),
            instance: self.instance.clone(),
            keyspace: keyspace.to_string(),
            shard: shard.to_string(),
            comment: comment.to_string(),
            cleared,
        });
    }

    /// Notes on the incident what stopped its recovery other than a skip.
    pub fn note(&self, alias: &TabletAlias, code: AnalysisCode, note: impl Into<String>) {
        let mut state = self.lock();
        if let Some(d) = state.active.get_mut(&(alias.clone(), code)) {
            d.note = Some(note.into());
        }
    }

    /// Starts a recovery record for `analysis` (the entry re-checked under
    /// the lock) and returns its id.
    pub fn start_recovery(&self, analysis: &DetectionAnalysis, tablets: Vec<TabletAlias>) -> u64 {
        self.start(analysis, tablets, None)
    }

    /// Starts the record of a reparent an operator requested through the
    /// Vtctld service and returns its id: no detection (`detection_id` 0),
    /// `kind` an operator kind ([`RecoveryKind::is_operator_request`]),
    /// `tablet` the one it acts on (the shard's primary when it had one),
    /// `tablets` every tablet named (the acted-on one first).
    pub fn start_operator_reparent(
        &self,
        keyspace: &str,
        shard: &str,
        kind: RecoveryKind,
        tablet: TabletAlias,
        tablets: Vec<TabletAlias>,
        request: OperatorRequest,
    ) -> u64 {
        let entry = DetectionAnalysis::operator_request(keyspace, shard, tablet, kind, request.describe());
        self.start(&entry, tablets, Some(request))
    }

    fn start(
        &self,
        analysis: &DetectionAnalysis,
        tablets: Vec<TabletAlias>,
        requested_by: Option<OperatorRequest>,
    ) -> u64 {
        let now = self.now();
        let mut state = self.lock();
        let key = (analysis.analyzed_instance_alias.clone(), analysis.analysis);
        let id = state.next_recovery_id;
        state.next_recovery_id += 1;
        let detection = if requested_by.is_some() {
            None
        } else {
            state.active.get_mut(&key)
        };
        let (detection_id, detected_at) = match detection {
            Some(d) => {
                d.recovery_ids.push(id);
                (d.detection_id, d.first_detected_at)
            }
            None => (0, now),
        };
        let record = RecoveryRecord {
            recovery_id: id,
            detection_id,
            instance: self.instance.clone(),
            analysis: analysis.analysis,
            recovery_type: analysis.recovery,
            tablet_alias: analysis.analyzed_instance_alias.clone(),
            keyspace: analysis.analyzed_keyspace.clone(),
            shard: analysis.analyzed_shard.clone(),
            detected_at,
            started_at: now,
            ended_at: None,
            duration_ms: None,
            analysis_entry: analysis.clone(),
            tablets,
            steps: Vec::new(),
            outcome: RecoveryOutcome::Running,
            error: None,
            successor_alias: None,
            requested_by,
        };
        state.recoveries.push_back(record.clone());
        while state.recoveries.len() > state.capacity {
            state.recoveries.pop_front();
        }
        self.emit(AuditEvent::RecoveryStarted(record));
        id
    }

    /// Appends a step to a recovery.
    pub fn step(
        &self,
        recovery_id: u64,
        step: impl Into<String>,
        level: StepLevel,
        message: impl Into<String>,
    ) {
        let step = RecoveryStep {
            at: self.now(),
            step: step.into(),
            level,
            message: message.into(),
        };
        self.push_step(recovery_id, step);
    }

    /// Appends an ERS/PRS log event as a step named `<prefix>:<phase>`.
    pub fn reparent_step(&self, recovery_id: u64, prefix: &str, event: &ReparentEvent) {
        let step = RecoveryStep {
            at: event.time,
            step: format!("{prefix}:{}", event.phase.unwrap_or("start")),
            level: event.level.into(),
            message: event.message.clone(),
        };
        self.push_step(recovery_id, step);
    }

    fn push_step(&self, recovery_id: u64, step: RecoveryStep) {
        let mut state = self.lock();
        let Some(r) = state
            .recoveries
            .iter_mut()
            .rev()
            .find(|r| r.recovery_id == recovery_id)
        else {
            return;
        };
        r.steps.push(step.clone());
        let (keyspace, shard) = (r.keyspace.clone(), r.shard.clone());
        self.emit(AuditEvent::RecoveryStep {
            recovery_id,
            keyspace,
            shard,
            step,
        });
    }

    /// Ends a recovery. `elapsed` is measured by the caller on the monotonic clock.
    pub fn finish_recovery(
        &self,
        recovery_id: u64,
        result: Result<Option<TabletAlias>, String>,
        elapsed: Duration,
    ) -> Option<RecoveryRecord> {
        let now = self.now();
        let mut state = self.lock();
        let r = state
            .recoveries
            .iter_mut()
            .rev()
            .find(|r| r.recovery_id == recovery_id)?;
        r.ended_at = Some(now);
        r.duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        match result {
            Ok(successor) => {
                r.outcome = RecoveryOutcome::Succeeded;
                r.successor_alias = successor;
            }
            Err(e) => {
                r.outcome = RecoveryOutcome::Failed;
                r.error = Some(e);
            }
        }
        let record = r.clone();
        self.emit(AuditEvent::RecoveryFinished(record.clone()));
        Some(record)
    }

    /// Audits a refused call (see [`AuditEvent::AccessDenied`]).
    pub fn access_denied(&self, method: &str, peer: &str, identity: &str, code: &str, reason: &str) {
        let _state = self.lock();
        tracing::warn!(method, peer, identity, code, "call denied: {reason}");
        self.emit(AuditEvent::AccessDenied {
            at: self.now(),
            instance: self.instance.clone(),
            method: method.to_string(),
            peer: peer.to_string(),
            identity: identity.to_string(),
            code: code.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Audits vtorc's shutdown.
    pub fn shutdown(&self, message: &str) {
        let _state = self.lock();
        self.emit(AuditEvent::Shutdown {
            at: self.now(),
            instance: self.instance.clone(),
            message: message.to_string(),
        });
    }

    /// Recoveries matching `filter`, newest first.
    pub fn recoveries(&self, filter: &AuditFilter) -> Vec<RecoveryRecord> {
        let state = self.lock();
        state
            .recoveries
            .iter()
            .rev()
            .filter(|r| filter.matches(&r.keyspace, &r.shard))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// One recovery by id, if still kept.
    pub fn recovery(&self, recovery_id: u64) -> Option<RecoveryRecord> {
        let state = self.lock();
        state
            .recoveries
            .iter()
            .rev()
            .find(|r| r.recovery_id == recovery_id)
            .cloned()
    }

    /// Detections matching `filter`: active ones (by detection id, newest
    /// first), then resolved ones (newest first).
    pub fn detections(&self, filter: &AuditFilter) -> Vec<DetectionRecord> {
        let state = self.lock();
        let mut active: Vec<&DetectionRecord> = state
            .active
            .values()
            .filter(|d| filter.matches(&d.keyspace, &d.shard))
            .collect();
        active.sort_by_key(|d| std::cmp::Reverse(d.detection_id));
        active
            .into_iter()
            .chain(
                state
                    .resolved
                    .iter()
                    .rev()
                    .filter(|d| filter.matches(&d.keyspace, &d.shard)),
            )
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// The open incident of (`alias`, `code`), if any.
    pub fn active_detection(&self, alias: &TabletAlias, code: AnalysisCode) -> Option<DetectionRecord> {
        self.lock().active.get(&(alias.clone(), code)).cloned()
    }
}

fn ser_kind<S: Serializer>(k: &RecoveryKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// RFC 3339 text of a wall-clock time.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    TopoTime {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
    .to_string()
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reparent::system_wall_clock;
    use crate::testkit::{ShardBuilder, TabletFixture};

    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn problem(code: AnalysisCode, uid: u32) -> DetectionAnalysis {
        let now = crate::clock::now();
        let snapshot = ShardBuilder::new("ks", "0", "none", now)
            .primary("zone1", 100)
            .replica("zone1", uid)
            .edit("zone1", uid, |t| t.stop_replication())
            .build();
        let mut p = crate::analysis::analyze(&snapshot, &crate::analysis::AnalysisConfig::default(), now)
            .problems
            .into_iter()
            .find(|p| p.analyzed_instance_alias.uid == uid)
            .expect("the fixture has a stopped replica");
        p.choose(code);
        p
    }

    #[test]
    fn a_detection_keeps_its_id_until_resolved_and_then_gets_a_new_one() {
        let (log, _) = AuditLog::new(10, "vtorc-a", fixed_clock, None).expect("no file");
        let mut events = log.subscribe();
        let p = problem(AnalysisCode::ReplicationStopped, 101);
        let id = log.observe(&p);
        assert_eq!(log.observe(&p), id);
        assert!(matches!(events.try_recv(), Ok(AuditEvent::DetectionOpened(d)) if d.detection_id == id));
        assert!(events.try_recv().is_err(), "a refresh is not an event");
        log.note_skip(
            &p.analyzed_instance_alias,
            p.analysis,
            SkipReason::GlobalRecoveriesDisabled,
        );
        log.note_skip(
            &p.analyzed_instance_alias,
            p.analysis,
            SkipReason::GlobalRecoveriesDisabled,
        );
        assert!(matches!(events.try_recv(), Ok(AuditEvent::DetectionSkipped(d)) if d.skip_count == 1));
        assert!(
            events.try_recv().is_err(),
            "the same skip reason again is not an event"
        );
        let d = log
            .active_detection(&p.analyzed_instance_alias, p.analysis)
            .expect("active");
        assert_eq!(d.skip_count, 2);
        log.observe_pass(Scope::All, &[]);
        assert!(matches!(events.try_recv(), Ok(AuditEvent::DetectionResolved(d)) if d.detection_id == id));
        let next = log.observe(&p);
        assert_ne!(next, id);
        let all = log.detections(&AuditFilter::all());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].detection_id, next, "active first");
        assert_eq!(all[1].resolution.as_deref(), Some("no longer detected"));
    }

    #[test]
    fn a_shard_pass_only_resolves_detections_of_that_shard() {
        let (log, _) = AuditLog::new(10, "vtorc-a", system_wall_clock, None).expect("no file");
        let p = problem(AnalysisCode::ReplicationStopped, 101);
        log.observe(&p);
        log.observe_pass(Scope::Shard(&KeyspaceShard::new("other", "0")), &[]);
        assert!(
            log.active_detection(&p.analyzed_instance_alias, p.analysis)
                .is_some()
        );
        log.observe_pass(Scope::Shard(&KeyspaceShard::new("ks", "0")), &[]);
        assert!(
            log.active_detection(&p.analyzed_instance_alias, p.analysis)
                .is_none()
        );
    }

    #[test]
    fn recoveries_are_bounded_filtered_and_carry_steps_and_outcome() {
        let (log, _) = AuditLog::new(2, "vtorc-a", fixed_clock, None).expect("no file");
        let p = problem(AnalysisCode::ReplicationStopped, 101);
        let detection = log.observe(&p);
        let ids: Vec<u64> = (0..3)
            .map(|_| log.start_recovery(&p, vec![p.analyzed_instance_alias.clone()]))
            .collect();
        log.step(ids[2], "SetReadOnly", StepLevel::Info, "ok");
        let done = log
            .finish_recovery(ids[2], Err("boom".into()), Duration::from_millis(12))
            .expect("kept");
        assert_eq!(done.outcome, RecoveryOutcome::Failed);
        assert_eq!(done.duration_ms, Some(12));
        assert_eq!(done.detection_id, detection);
        assert_eq!(done.steps.len(), 1);
        let kept = log.recoveries(&AuditFilter::all());
        assert_eq!(
            kept.iter().map(|r| r.recovery_id).collect::<Vec<_>>(),
            vec![ids[2], ids[1]]
        );
        assert!(
            log.recoveries(&AuditFilter::shard(&KeyspaceShard::new("x", "0")))
                .is_empty()
        );
        assert_eq!(log.recoveries(&AuditFilter::all().recent(1)).len(), 1);
        let json = serde_json::to_value(&done).expect("serializes");
        assert_eq!(json["recovery_type"], "FixReplica");
        assert_eq!(json["tablet_alias"], "zone1-0000000101");
        assert_eq!(json["started_at"], "2023-11-14T22:13:20Z");
        assert_eq!(json["analysis_entry"]["Analysis"], "ReplicationStopped");
    }

    #[test]
    fn an_operator_reparent_is_a_recovery_record_marked_as_requested() {
        let (log, _) = AuditLog::new(10, "vtorc-a", fixed_clock, None).expect("no file");
        let mut events = log.subscribe();
        // An incident with the same key (tablet, NoProblem) is open: the
        // operator's record does not attach to it.
        let primary = TabletAlias::new("zone1", 100);
        let mut p = problem(AnalysisCode::ReplicationStopped, 101);
        p.analyzed_instance_alias = primary.clone();
        p.choose(AnalysisCode::NoProblem);
        let detection = log.observe(&p);
        let target = TabletAlias::new("zone1", 101);
        let id = log.start_operator_reparent(
            "ks",
            "0",
            RecoveryKind::OperatorPlannedReparentShard,
            primary.clone(),
            vec![primary.clone(), target.clone()],
            OperatorRequest {
                method: "PlannedReparentShard".into(),
                peer: Some("127.0.0.1:5555".into()),
                client_identity: None,
                new_primary: Some(target.clone()),
                avoid_primary: None,
            },
        );
        let done = log
            .finish_recovery(id, Ok(Some(target.clone())), Duration::from_millis(7))
            .expect("kept");
        assert_eq!(done.detection_id, 0);
        assert!(
            log.active_detection(&p.analyzed_instance_alias, p.analysis)
                .is_some_and(|d| d.detection_id == detection && d.recovery_ids.is_empty())
        );
        assert!(matches!(events.try_recv(), Ok(AuditEvent::DetectionOpened(_))));
        assert!(matches!(events.try_recv(), Ok(AuditEvent::RecoveryStarted(r)) if r.recovery_id == id));
        assert!(
            matches!(events.try_recv(), Ok(AuditEvent::RecoveryFinished(r)) if r.successor_alias == Some(target.clone()))
        );
        let json = serde_json::to_value(&done).expect("serializes");
        assert_eq!(json["recovery_type"], "OperatorPlannedReparentShard");
        assert_eq!(json["analysis"], "NoProblem");
        assert_eq!(json["tablet_alias"], "zone1-0000000100");
        assert_eq!(json["successor_alias"], "zone1-0000000101");
        assert_eq!(json["requested_by"]["method"], "PlannedReparentShard");
        assert_eq!(json["requested_by"]["peer"], "127.0.0.1:5555");
        assert_eq!(json["requested_by"]["new_primary"], "zone1-0000000101");
        assert_eq!(json["requested_by"]["avoid_primary"], serde_json::Value::Null);
        assert_eq!(
            json["analysis_entry"]["RecoveryType"],
            "OperatorPlannedReparentShard"
        );
        assert!(
            json["analysis_entry"]["Reason"]
                .as_str()
                .is_some_and(|r| r.contains("requested by an operator from 127.0.0.1:5555")),
            "{json}"
        );
        // vtorc's own recoveries keep their JSON shape: no `requested_by`.
        let own = log.start_recovery(&p, vec![]);
        let own = serde_json::to_value(log.recovery(own).expect("kept")).expect("serializes");
        assert!(own.get("requested_by").is_none(), "{own}");
    }

    #[tokio::test]
    async fn the_audit_file_gets_one_json_object_per_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let (log, writer) = AuditLog::new(10, "vtorc-a", fixed_clock, Some(path.clone())).expect("opens");
        let writer = writer.expect("a file was given");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        let p = problem(AnalysisCode::ReplicationStopped, 101);
        log.observe(&p);
        let id = log.start_recovery(&p, vec![]);
        log.step(id, "SetReadOnly", StepLevel::Info, "ok");
        log.finish_recovery(id, Ok(None), Duration::from_millis(5));
        log.shutdown("Triggered via SIGTERM");
        cancel.cancel();
        task.await.expect("writer ends");
        let text = std::fs::read_to_string(&path).expect("written");
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or("")).collect();
        assert_eq!(
            kinds,
            [
                "DetectionOpened",
                "RecoveryStarted",
                "RecoveryStep",
                "RecoveryFinished",
                "Shutdown"
            ]
        );
        assert_eq!(events[3]["outcome"], "Succeeded");
    }
}
