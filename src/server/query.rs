//! The query layer of the APIs: the one place that turns vtorc's state into
//! API answers, shared by the gRPC service ([`super::vtorc_grpc`]) and the
//! HTTP API ([`super::http`]). Transports decode a request, call an
//! [`ApiContext`] method and encode what it returns.
//!
//! The layer owns no state. Reads come from the snapshot discovery last
//! published and from the recovery audit; the global switch goes to the
//! recovery engine through its handle; the ERS switches are writes to the
//! topology (like `vtctldclient SetVtorcEmergencyReparent`), which discovery
//! then picks up like any other topology change.
//!
//! Errors are typed ([`ApiError`]) and mapped to a gRPC status (or an HTTP
//! status) once, at the edge. Invalid requests are `INVALID_ARGUMENT` with a
//! message that starts with the offending field.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::analysis::{self, AnalysisConfig, DetectionAnalysis, RecoveryKind, instance_problems};
use crate::config::Config;
use crate::discovery::{DiscoveryError, DiscoveryHandle};
use crate::error::WithContext;
use crate::ids::KeyspaceShard;
use crate::model::TabletState;
use crate::recovery::{AuditFilter, Decision, DetectionRecord, GateResult, RecoveryHandle, RecoveryRecord};
use crate::reparent::WallClock;
use crate::telemetry::metrics::MetricsRegistry;
use crate::topo::{Topo, TopoError};

/// The text Go VTOrc's HTTP API answers (status 400) to a shard filter
/// without a keyspace.
pub const SHARD_WITHOUT_KEYSPACE: &str = "Filtering by shard without keyspace isn't supported";

/// Handles the APIs read from and send commands to; cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    /// Discovery: snapshots and readiness.
    pub discovery: DiscoveryHandle,
    /// The recovery engine: audit, switches, explain, metrics.
    pub recovery: RecoveryHandle,
    /// The topology (ERS switches are written there).
    pub topo: Topo,
    /// vtorc's configuration (read-only).
    pub config: Arc<Config>,
    /// The metrics of this vtorc (for `/metrics`).
    pub metrics: MetricsRegistry,
    /// Host name reported by health calls.
    pub hostname: String,
    /// Wall clock for timestamps in answers.
    pub clock: WallClock,
    /// Fired when vtorc shuts down: open Watch streams end.
    pub shutdown: CancellationToken,
    /// The live configuration (dynamic keys as last read from the config file).
    pub live: tokio::sync::watch::Receiver<crate::config::dynamic::LiveConfig>,
    /// With `--sharing`: membership and ownership (`None` = every instance
    /// watches everything).
    pub sharing: Option<crate::sharing::SharingHandle>,
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid; `field` names the offending field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Discovery is stopped or does not know the object.
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    /// A topology read or write failed.
    #[error(transparent)]
    Topo(WithContext<TopoError>),
}

impl ApiError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    fn topo(context: impl Into<String>, source: TopoError) -> Self {
        ApiError::Topo(WithContext::new(context, source))
    }

    /// The gRPC code of this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            ApiError::Discovery(e) => e.grpc_code(),
            ApiError::Topo(e) => e.source.grpc_code(),
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::InvalidArgument { .. } => false,
            ApiError::Discovery(e) => e.is_retryable(),
            ApiError::Topo(e) => e.source.is_retryable(),
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> u16 {
        match self.grpc_code() {
            tonic::Code::InvalidArgument => 400,
            tonic::Code::NotFound => 404,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => 503,
            _ => 500,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.grpc_code(), bounded(&e.to_string(), ERROR_MAX))
    }
}

/// A keyspace/shard filter (empty = everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardFilter {
    /// Only this keyspace.
    pub keyspace: Option<String>,
    /// Only this shard (of `keyspace`).
    pub shard: Option<String>,
}

impl ShardFilter {
    /// Reads a filter; a shard needs a keyspace.
    pub fn parse(keyspace: &str, shard: &str) -> Result<ShardFilter, ApiError> {
        let keyspace = non_empty(keyspace);
        let shard = non_empty(shard);
        if shard.is_some() && keyspace.is_none() {
            return Err(ApiError::invalid("shard", "filtering by shard needs a keyspace"));
        }
        if let Some(k) = &keyspace {
            check_name("keyspace", k)?;
        }
        if let Some(s) = &shard {
            check_name("shard", s)?;
        }
        Ok(ShardFilter { keyspace, shard })
    }

    /// Whether `keyspace/shard` passes.
    pub fn matches(&self, keyspace: &str, shard: &str) -> bool {
        self.keyspace.as_deref().is_none_or(|k| k == keyspace)
            && self.shard.as_deref().is_none_or(|s| s == shard)
    }

    fn audit(&self, limit: Option<usize>) -> AuditFilter {
        AuditFilter {
            keyspace: self.keyspace.clone(),
            shard: self.shard.clone(),
            limit,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Keyspace and shard names: no path separators or control characters.
/// At most `max` bytes of a user-supplied `s` (cut on a character
/// boundary, the cut noted), for error texts and audit lines that echo it.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Longest user-supplied name echoed in an error text.
pub(crate) const ECHO_MAX: usize = 64;

/// Longest error text returned to a caller (topo keys built from request
/// fields can echo them at any length).
pub(crate) const ERROR_MAX: usize = 1024;

fn check_name(field: &'static str, name: &str) -> Result<(), ApiError> {
    if name.contains('/') || name.chars().any(char::is_control) || name == "." || name == ".." {
        return Err(ApiError::invalid(
            field,
            format!("invalid name {:?}", bounded(name, ECHO_MAX)),
        ));
    }
    Ok(())
}

fn required(field: &'static str, value: &str) -> Result<String, ApiError> {
    let v = non_empty(value).ok_or_else(|| ApiError::invalid(field, "required"))?;
    check_name(field, &v)?;
    Ok(v)
}

/// A tablet and the instance problems vtorc sees on it.
#[derive(Clone, Debug)]
pub struct TabletView {
    /// The tablet.
    pub tablet: Arc<TabletState>,
    /// Its keyspace.
    pub keyspace: String,
    /// Its shard.
    pub shard: String,
    /// Go VTOrc's instance problem names (see [`instance_problems`]).
    pub problems: Vec<&'static str>,
    /// Go VTOrc's "last check valid" with `--instance-poll-time`.
    pub last_check_valid: bool,
}

/// Readiness as the health endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Topology loaded and one discovery round done.
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reason: String,
    /// The global recoveries switch.
    pub recoveries_enabled: bool,
    /// Whether vtorc is draining (shutting down).
    pub draining: bool,
    /// Tablets in the last snapshot.
    pub tablets_watched: usize,
    /// Shards in the last snapshot.
    pub shards_watched: usize,
}

/// What [`ApiContext::emergency_reparent_state`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErsState {
    /// Keyspace.
    pub keyspace: String,
    /// Shard (`None` = the keyspace alone).
    pub shard: Option<String>,
    /// Disabled on the keyspace record.
    pub keyspace_disabled: bool,
    /// Disabled on the shard record.
    pub shard_disabled: bool,
    /// `--allow-emergency-reparent` of this vtorc.
    pub globally_allowed: bool,
}

impl ApiContext {
    /// The configuration in effect: start-up values, with the dynamic keys
    /// as last read from the config file.
    pub fn current_config(&self) -> Arc<Config> {
        Arc::clone(&self.live.borrow().config)
    }

    /// Readiness, the recovery switches and what is watched.
    pub fn health(&self) -> Health {
        let ready = self.discovery.is_ready();
        let snapshot = self.discovery.snapshot();
        Health {
            ready,
            reason: if ready {
                String::new()
            } else {
                "the first topology load and discovery round have not completed".into()
            },
            recoveries_enabled: self.recovery.global_recoveries_enabled(),
            draining: self.recovery.is_draining(),
            tablets_watched: snapshot.tablet_count(),
            shards_watched: snapshot.shards.len(),
        }
    }

    fn analysis_config(&self) -> AnalysisConfig {
        AnalysisConfig::from_config(&self.current_config())
    }

    /// The problems analysis reports now for `filter`.
    pub fn detection_analysis(&self, filter: &ShardFilter) -> Vec<DetectionAnalysis> {
        let snapshot = self.discovery.snapshot();
        let now = crate::clock::now();
        let cfg = self.analysis_config();
        let out = match (&filter.keyspace, &filter.shard) {
            (Some(k), Some(s)) => {
                analysis::analyze_shard(&snapshot, &KeyspaceShard::new(k.clone(), s.clone()), &cfg, now)
            }
            _ => analysis::analyze(&snapshot, &cfg, now),
        };
        out.problems
            .into_iter()
            .filter(|p| filter.matches(&p.analyzed_keyspace, &p.analyzed_shard))
            .map(|mut p| {
                self.recovery.mark_not_clearing(&mut p, now);
                p
            })
            .collect()
    }

    /// Acknowledges recoveries matching `filter` (see
    /// [`RecoveryHandle::acknowledge`]); returns how many back-offs and
    /// cooldowns were cleared. A keyspace without shard is refused (the
    /// state is per shard).
    pub fn acknowledge(&self, keyspace: &str, shard: &str, comment: &str) -> Result<usize, ApiError> {
        let filter = ShardFilter::parse(keyspace, shard)?;
        let comment = bounded(comment.trim(), 200);
        match (&filter.keyspace, &filter.shard) {
            (None, _) => Ok(self.recovery.acknowledge(None, &comment)),
            (Some(k), Some(s)) => Ok(self
                .recovery
                .acknowledge(Some(&KeyspaceShard::new(k.clone(), s.clone())), &comment)),
            (Some(_), None) => Err(ApiError::invalid(
                "shard",
                "acknowledging needs a keyspace and a shard",
            )),
        }
    }

    /// Every watched tablet matching `filter`, by shard then alias.
    pub fn tablets(&self, filter: &ShardFilter) -> Vec<TabletView> {
        let snapshot = self.discovery.snapshot();
        let now = crate::clock::now();
        let cfg = self.analysis_config();
        snapshot
            .shards
            .values()
            .filter(|s| filter.matches(&s.keyspace, &s.shard))
            .flat_map(|s| {
                s.tablets.iter().map(|t| TabletView {
                    tablet: Arc::clone(t),
                    keyspace: s.keyspace.clone(),
                    shard: s.shard.clone(),
                    problems: instance_problems(t, &cfg, now),
                    last_check_valid: t.poll.last_check_valid(cfg.instance_poll_time),
                })
            })
            .collect()
    }

    /// Tablets with at least one instance problem.
    pub fn problems(&self, filter: &ShardFilter) -> Vec<TabletView> {
        self.tablets(filter)
            .into_iter()
            .filter(|t| !t.problems.is_empty())
            .collect()
    }

    /// Tablets with errant GTIDs.
    pub fn errant_gtids(&self, filter: &ShardFilter) -> Vec<TabletView> {
        self.tablets(filter)
            .into_iter()
            .filter(|t| {
                t.tablet
                    .observation
                    .as_ref()
                    .is_some_and(|o| !o.errant_gtids.is_empty())
            })
            .collect()
    }

    /// The audit's recoveries of `filter`'s shards, newest first, at most
    /// `limit` (`None` = all the audit keeps).
    pub fn recoveries(&self, filter: &ShardFilter, limit: Option<usize>) -> Vec<RecoveryRecord> {
        self.recovery.recoveries(&filter.audit(limit))
    }

    /// The audit's detections of `filter`'s shards whose recovery was
    /// skipped, newest first, at most `limit`.
    pub fn skipped_detections(&self, filter: &ShardFilter, limit: Option<usize>) -> Vec<DetectionRecord> {
        let mut skipped = self.detections_where(filter, |d| d.skip_reason.is_some());
        if let Some(limit) = limit {
            skipped.truncate(limit);
        }
        skipped
    }

    /// The open incidents (detections not resolved) of `filter`'s shards,
    /// oldest first.
    pub fn open_detections(&self, filter: &ShardFilter) -> Vec<DetectionRecord> {
        let mut open = self.detections_where(filter, |d| d.resolved_at.is_none());
        open.sort_by_key(|d| d.detection_id);
        open
    }

    /// Every detection the audit keeps for `filter`'s shards that passes `keep`.
    fn detections_where(
        &self,
        filter: &ShardFilter,
        keep: impl Fn(&DetectionRecord) -> bool,
    ) -> Vec<DetectionRecord> {
        let mut all = self.recovery.detections(&filter.audit(None));
        all.retain(keep);
        all
    }

    /// Sets the global recoveries switch; returns the new state.
    pub fn set_global_recoveries(&self, enabled: bool) -> bool {
        if enabled {
            self.recovery.enable_global_recoveries()
        } else {
            self.recovery.disable_global_recoveries()
        }
    }

    /// Reads the ERS switches of a keyspace (and shard) from the topology.
    pub async fn emergency_reparent_state(&self, keyspace: &str, shard: &str) -> Result<ErsState, ApiError> {
        let keyspace = required("keyspace", keyspace)?;
        let shard = non_empty(shard);
        if let Some(s) = &shard {
            check_name("shard", s)?;
        }
        let ks = self
            .topo
            .get_keyspace(&keyspace)
            .await
            .map_err(|e| ApiError::topo(format!("read keyspace {keyspace}"), e))?;
        let shard_disabled = match &shard {
            Some(s) => {
                let record = self
                    .topo
                    .get_shard(&keyspace, s)
                    .await
                    .map_err(|e| ApiError::topo(format!("read shard {keyspace}/{s}"), e))?;
                crate::topo::shard_ers_disabled(&record.value)
            }
            None => false,
        };
        Ok(ErsState {
            keyspace_disabled: crate::topo::keyspace_ers_disabled(&ks.value),
            keyspace,
            shard,
            shard_disabled,
            globally_allowed: self.recovery.emergency_reparent_allowed(),
        })
    }

    /// Writes `vtorc_state.disable_emergency_reparent` of the keyspace (no
    /// shard) or of the shard; idempotent. Returns the new state.
    pub async fn set_emergency_reparent(
        &self,
        keyspace: &str,
        shard: &str,
        disabled: bool,
    ) -> Result<ErsState, ApiError> {
        let ks = required("keyspace", keyspace)?;
        match non_empty(shard) {
            Some(s) => {
                check_name("shard", &s)?;
                self.topo
                    .set_shard_emergency_reparent_disabled(&ks, &s, disabled)
                    .await
                    .map_err(|e| ApiError::topo(format!("update shard {ks}/{s}"), e))?;
            }
            None => {
                self.topo
                    .set_keyspace_emergency_reparent_disabled(&ks, disabled)
                    .await
                    .map_err(|e| ApiError::topo(format!("update keyspace {ks}"), e))?;
            }
        }
        tracing::info!(keyspace = %ks, shard = shard.trim(), disabled, "emergency reparent switch written to the topology");
        self.emergency_reparent_state(keyspace, shard).await
    }

    /// What vtorc would do for one shard now (see [`Explained`]).
    pub fn explain(&self, keyspace: &str, shard: &str) -> Result<Explained, ApiError> {
        let key = KeyspaceShard::new(required("keyspace", keyspace)?, required("shard", shard)?);
        let snapshot = self.discovery.snapshot();
        if snapshot.shard(&key).is_none() {
            return Err(ApiError::Discovery(DiscoveryError::UnknownShard(key)));
        }
        let notes = analysis::analyze_shard(&snapshot, &key, &self.analysis_config(), crate::clock::now())
            .notes
            .iter()
            .map(ToString::to_string)
            .collect();
        let problems = self
            .recovery
            .explain(&key)
            .into_iter()
            .map(|e| ExplainedProblem {
                action: action_text(&e.analysis, &key),
                analysis: e.analysis,
                decision: e.decision,
                gates: e.gates,
            })
            .collect();
        Ok(Explained {
            key,
            ready: self.discovery.is_ready(),
            problems,
            notes,
        })
    }
}

/// What a recovery does, in words.
fn action_text(a: &DetectionAnalysis, key: &KeyspaceShard) -> String {
    let tablet = &a.analyzed_instance_alias;
    match a.recovery {
        RecoveryKind::None => "nothing (no recovery for this problem)".into(),
        RecoveryKind::Generic => "take the shard lock and re-check; no repair action".into(),
        RecoveryKind::RecoverDeadPrimary => format!(
            "EmergencyReparentShard on {key}: promote the most advanced eligible replica in place of {tablet} (WaitAllTablets=false)"
        ),
        RecoveryKind::RecoverPrimaryTabletDeleted => format!(
            "EmergencyReparentShard on {key}: elect a new primary for the deleted {tablet} (WaitAllTablets=true)"
        ),
        RecoveryKind::RecoverIncapacitatedPrimary => format!(
            "Ping {tablet}; PlannedReparentShard on {key} avoiding it; EmergencyReparentShard if that fails and ERS is allowed"
        ),
        RecoveryKind::ElectNewPrimary => format!("PlannedReparentShard on {key} to elect a first primary"),
        RecoveryKind::RecoverPrimaryHasPrimary => format!("ResetReplicationParameters on primary {tablet}"),
        RecoveryKind::FixPrimary => {
            format!("UndoDemotePrimary on {tablet} (read-write, semi-sync per durability)")
        }
        RecoveryKind::FixReplica => {
            format!("SetReadOnly and SetReplicationSource(shard primary) on {tablet}")
        }
        RecoveryKind::ReconcileStaleTopoPrimary => format!(
            "demote {tablet} (DemotePrimary + SetReplicationSource, best effort) and set its topo type to REPLICA"
        ),
        RecoveryKind::RecoverErrantGtidDetected => format!("ChangeType {tablet} to DRAINED"),
        RecoveryKind::RestartArbitraryDirectReplica => {
            format!("RestartReplication on one direct replica of {tablet}")
        }
        RecoveryKind::RestartAllDirectReplicas => {
            format!("RestartReplication on every direct replica of {tablet}")
        }
        RecoveryKind::OperatorPlannedReparentShard | RecoveryKind::OperatorEmergencyReparentShard => {
            "nothing by itself (only an operator's request through the Vtctld service runs it)".into()
        }
    }
}

/// One problem of an explanation.
#[derive(Clone, Debug)]
pub struct ExplainedProblem {
    /// The problem.
    pub analysis: DetectionAnalysis,
    /// The engine's decision.
    pub decision: Decision,
    /// What the recovery does.
    pub action: String,
    /// Every gate, from the engine's ladder.
    pub gates: Vec<GateResult>,
}

/// What vtorc would do for one shard now.
#[derive(Clone, Debug)]
pub struct Explained {
    /// The shard.
    pub key: KeyspaceShard,
    /// Whether discovery is ready.
    pub ready: bool,
    /// Problems, in handling order.
    pub problems: Vec<ExplainedProblem>,
    /// Why the shard is not analysed, if it is not.
    pub notes: Vec<String>,
}

impl Explained {
    /// One line summing up.
    pub fn summary(&self) -> String {
        if !self.notes.is_empty() {
            return format!("{} is not analysed: {}", self.key, self.notes.join("; "));
        }
        let Some(first) = self.problems.first() else {
            return format!("{} has no problem; vtorc would do nothing", self.key);
        };
        let a = &first.analysis;
        match &first.decision {
            Decision::Recover(kind) => format!(
                "would run {} for {} on {}",
                kind.name(),
                a.analysis,
                a.analyzed_instance_alias
            ),
            Decision::Skip(reason) => format!(
                "would skip {} for {} on {}: {}",
                a.recovery.name(),
                a.analysis,
                a.analyzed_instance_alias,
                reason
            ),
            Decision::Stopped(why) => format!(
                "the last attempt at {} for {} on {} stopped: {why}",
                a.recovery.name(),
                a.analysis,
                a.analyzed_instance_alias
            ),
            Decision::NoAction => format!(
                "would lock the shard for {} on {} and take no action",
                a.analysis, a.analyzed_instance_alias
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_that_echo_request_fields_are_bounded() {
        let long = "k".repeat(10_000);
        let status: Status = ShardFilter::parse(&format!("a/{long}"), "")
            .expect_err("a slash is invalid")
            .into();
        assert!(
            status.message().len() < ECHO_MAX + 200,
            "{}",
            status.message().len()
        );
        assert!(status.message().contains("bytes)"), "{}", status.message());
        assert_eq!(bounded("é".repeat(10).as_str(), 3), "é... (20 bytes)");
    }

    #[test]
    fn a_shard_filter_needs_a_keyspace_and_names_the_field() {
        let err = ShardFilter::parse("", "0").expect_err("shard without keyspace");
        assert!(err.to_string().starts_with("shard: "), "{err}");
        assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
        let err = ShardFilter::parse("a/b", "").expect_err("bad name");
        assert!(err.to_string().starts_with("keyspace: "), "{err}");
        let f = ShardFilter::parse("ks", "").expect("valid");
        assert!(f.matches("ks", "0") && f.matches("ks", "-80") && !f.matches("other", "0"));
        let f = ShardFilter::parse(" ks ", "0").expect("valid");
        assert!(f.matches("ks", "0") && !f.matches("ks", "1"));
        assert!(ShardFilter::parse("", "").expect("all").matches("any", "thing"));
    }

    #[test]
    fn api_errors_map_to_grpc_and_http_codes_once() {
        let e = ApiError::topo("read keyspace x", TopoError::NoNode("/x".into()));
        assert_eq!(e.grpc_code(), tonic::Code::NotFound);
        assert_eq!(e.http_status(), 404);
        let e = ApiError::topo("update", TopoError::Unavailable("down".into()));
        assert_eq!(e.http_status(), 503);
        assert!(e.is_retryable());
        let e = ApiError::Discovery(DiscoveryError::Stopped);
        assert_eq!(Status::from(e).code(), tonic::Code::Unavailable);
    }
}
