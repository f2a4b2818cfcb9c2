//! `vtctlservice.Vtctld`, the subset vtorc-rs serves: reparents through
//! [`crate::reparent`], reads through the [`Topo`], `GetFullStatus` through
//! the tablet client, and `SetVtorcEmergencyReparent` through the topo's
//! ERS-disable flag writers. Tools that speak to vtctld (`vtctldclient
//! --server <us>`, VTAdmin's reparent actions) work against it.
//!
//! Requests are validated first (INVALID_ARGUMENT naming the field); every
//! error type maps to a gRPC code in one place ([`VtctldError`]). Any other
//! Vtctld method answers UNIMPLEMENTED naming the method
//! ([`NamedUnimplemented`]).
//!
//! A reparent runs in a task this service owns, not in the request's
//! future: a client that disconnects does not cut a failover in half. The
//! service's shutdown token cancels running reparents (ERS then restarts
//! the replication it stopped).
//!
//! Every PlannedReparentShard / EmergencyReparentShard that passes
//! validation is audited in vtorc's recovery audit like vtorc's own
//! reparents ([`crate::recovery::run_operator_reparent`]): recovery type
//! `OperatorPlannedReparentShard` / `OperatorEmergencyReparentShard`, its
//! `prs:`/`ers:` steps, the outcome, and `requested_by` (the method, the
//! caller's address, the tablets it named).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::analysis::RecoveryKind;
use crate::analysis::durability::Durability;
use crate::error::WithContext;
use crate::proto::logutil;
use crate::proto::replicationdata::Status as ReplicationStatus;
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::proto::vtctldata::{
    self, EmergencyReparentShardRequest, EmergencyReparentShardResponse, GetCellInfoNamesRequest,
    GetCellInfoNamesResponse, GetCellInfoRequest, GetCellInfoResponse, GetFullStatusRequest,
    GetFullStatusResponse, GetKeyspaceRequest, GetKeyspaceResponse, GetKeyspacesRequest,
    GetKeyspacesResponse, GetShardRequest, GetShardResponse, GetTabletRequest, GetTabletResponse,
    GetTabletsRequest, GetTabletsResponse, PlannedReparentShardRequest, PlannedReparentShardResponse,
    SetVtorcEmergencyReparentRequest, SetVtorcEmergencyReparentResponse,
};
use crate::proto::vtctlservice::vtctld_server::{Vtctld, VtctldServer};
use crate::proto::vttime;
use crate::recovery::{AuditLog, OperatorReparent, OperatorRequest, run_operator_reparent};
use crate::reparent::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentError, ReparentOutcome, Reparenter,
};
use crate::tablet::{TabletError, TabletManager};
use crate::topo::{Topo, TopoError};

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vtctlservice.Vtctld";

/// The methods served; any other answers UNIMPLEMENTED.
pub const SERVED_METHODS: [&str; 23] = [
    "PlannedReparentShard",
    "EmergencyReparentShard",
    "GetTablet",
    "GetTablets",
    "GetShard",
    "GetKeyspace",
    "GetKeyspaces",
    "GetCellInfoNames",
    "GetCellInfo",
    "GetFullStatus",
    "SetVtorcEmergencyReparent",
    "FindAllShardsInKeyspace",
    "ShardReplicationPositions",
    "GetCellsAliases",
    "GetSrvKeyspaces",
    "PingTablet",
    "RefreshState",
    "RunHealthCheck",
    "SetWritable",
    "StartReplication",
    "StopReplication",
    "ReparentTablet",
    "TabletExternallyReparented",
];

/// A failed Vtctld request.
#[derive(Debug, thiserror::Error)]
pub enum VtctldError {
    /// A request field is missing or malformed.
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument {
        /// The field, as named in the proto.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A topo read or write failed.
    #[error(transparent)]
    Topo(WithContext<TopoError>),
    /// A tablet RPC failed.
    #[error(transparent)]
    Tablet(WithContext<TabletError>),
    /// The reparent failed.
    #[error(transparent)]
    Reparent(#[from] ReparentError),
    /// The server is shutting down.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
    /// The request cannot be served in the topology's current state
    /// (vtctld's FAILED_PRECONDITION, e.g. a shard without a primary).
    #[error("{0}")]
    FailedPrecondition(String),
}

impl VtctldError {
    /// The gRPC code of the error (the one mapping of this API).
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            VtctldError::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            VtctldError::Topo(e) => e.source.grpc_code(),
            VtctldError::Tablet(e) => e.source.grpc_code(),
            VtctldError::Reparent(e) => e.grpc_code(),
            VtctldError::ShuttingDown(_) => tonic::Code::Unavailable,
            VtctldError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
        }
    }

    /// True when sending the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            VtctldError::InvalidArgument { .. } => false,
            VtctldError::Topo(e) => e.source.is_retryable(),
            VtctldError::Tablet(e) => e.source.is_retryable(),
            VtctldError::Reparent(e) => e.is_retryable(),
            VtctldError::ShuttingDown(_) => true,
            VtctldError::FailedPrecondition(_) => false,
        }
    }

    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        VtctldError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    fn topo(context: impl Into<String>, source: TopoError) -> Self {
        VtctldError::Topo(WithContext::new(context, source))
    }

    fn tablet(context: impl Into<String>, source: TabletError) -> Self {
        VtctldError::Tablet(WithContext::new(context, source))
    }
}

impl From<VtctldError> for Status {
    fn from(e: VtctldError) -> Status {
        let code = e.grpc_code();
        match &e {
            VtctldError::Reparent(r) if r.is_cancelled() => tracing::info!("vtctld request cancelled: {e}"),
            VtctldError::InvalidArgument { .. } => tracing::info!("rejected vtctld request: {e}"),
            _ => tracing::warn!("failed to serve vtctld request: {e:#}"),
        }
        Status::new(
            code,
            super::query::bounded(&e.to_string(), super::query::ERROR_MAX),
        )
    }
}

type VtctldResult<T> = Result<T, VtctldError>;

fn required(field: &'static str, value: &str) -> VtctldResult<()> {
    if value.is_empty() {
        return Err(VtctldError::invalid(field, "is required"));
    }
    Ok(())
}

fn alias(field: &'static str, value: Option<&TabletAlias>) -> VtctldResult<Option<TabletAlias>> {
    match value {
        None => Ok(None),
        Some(a) if a.cell.is_empty() => Err(VtctldError::invalid(field, "tablet alias has an empty cell")),
        Some(a) => Ok(Some(a.clone())),
    }
}

fn required_alias(field: &'static str, value: Option<&TabletAlias>) -> VtctldResult<TabletAlias> {
    alias(field, value)?.ok_or_else(|| VtctldError::invalid(field, "is required"))
}

/// A `vttime.Duration` as an optional duration (absent or zero = default).
fn duration(field: &'static str, value: Option<&vttime::Duration>) -> VtctldResult<Option<Duration>> {
    let Some(d) = value else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(VtctldError::invalid(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(VtctldError::invalid(field, "nanos must be below 1e9"));
    }
    let seconds = u64::try_from(d.seconds).map_err(|_| VtctldError::invalid(field, "out of range"))?;
    let nanos = u32::try_from(d.nanos).map_err(|_| VtctldError::invalid(field, "out of range"))?;
    let out = Duration::new(seconds, nanos);
    Ok((!out.is_zero()).then_some(out))
}

/// Converts a `PlannedReparentShardRequest` (validated) into options.
pub fn planned_options(req: &PlannedReparentShardRequest) -> VtctldResult<PlannedReparentOptions> {
    required("keyspace", &req.keyspace)?;
    required("shard", &req.shard)?;
    Ok(PlannedReparentOptions {
        new_primary: alias("new_primary", req.new_primary.as_ref())?,
        avoid_primary: alias("avoid_primary", req.avoid_primary.as_ref())?,
        wait_replicas_timeout: duration("wait_replicas_timeout", req.wait_replicas_timeout.as_ref())?,
        tolerable_replication_lag: duration(
            "tolerable_replication_lag",
            req.tolerable_replication_lag.as_ref(),
        )?,
        allow_cross_cell_promotion: req.allow_cross_cell_promotion,
        expected_primary: alias("expected_primary", req.expected_primary.as_ref())?,
        cancel: CancellationToken::new(),
    })
}

/// Converts an `EmergencyReparentShardRequest` (validated) into options.
pub fn emergency_options(req: &EmergencyReparentShardRequest) -> VtctldResult<EmergencyReparentOptions> {
    required("keyspace", &req.keyspace)?;
    required("shard", &req.shard)?;
    let mut ignore = BTreeSet::new();
    for a in &req.ignore_replicas {
        if let Some(a) = alias("ignore_replicas", Some(a))? {
            ignore.insert(a);
        }
    }
    Ok(EmergencyReparentOptions {
        new_primary: alias("new_primary", req.new_primary.as_ref())?,
        ignore_replicas: ignore,
        wait_replicas_timeout: duration("wait_replicas_timeout", req.wait_replicas_timeout.as_ref())?,
        prevent_cross_cell_promotion: req.prevent_cross_cell_promotion,
        wait_for_all_tablets: req.wait_for_all_tablets,
        expected_primary: alias("expected_primary", req.expected_primary.as_ref())?,
        required_position: None,
        cancel: CancellationToken::new(),
    })
}

/// The Vtctld service. Cheap to clone.
#[derive(Clone)]
pub struct VtctldService {
    /// Shared state.
    inner: Arc<Inner>,
}

struct Inner {
    /// The topology.
    topo: Topo,
    /// The tablet client (GetFullStatus).
    tmc: Arc<dyn TabletManager>,
    /// The reparent engine (shared with the recovery engine).
    reparenter: Arc<Reparenter>,
    /// The recovery audit: operator-requested reparents are recorded in it.
    audit: Arc<AuditLog>,
    /// Running reparents; dropping the service aborts them. A
    /// `std::sync::Mutex`: held to spawn or reap, never across an `.await`.
    tasks: Mutex<JoinSet<()>>,
    /// Cancels running reparents and refuses new ones.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for VtctldService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VtctldService").finish_non_exhaustive()
    }
}

impl VtctldService {
    /// A service over `topo`, `tmc` and `reparenter`, recording the
    /// reparents operators request in `audit` (the recovery engine's, see
    /// [`crate::recovery::RecoveryHandle::audit`]); `shutdown` cancels the
    /// reparents it runs.
    pub fn new(
        topo: Topo,
        tmc: Arc<dyn TabletManager>,
        reparenter: Arc<Reparenter>,
        audit: Arc<AuditLog>,
        shutdown: CancellationToken,
    ) -> Self {
        VtctldService {
            inner: Arc::new(Inner {
                topo,
                tmc,
                reparenter,
                audit,
                tasks: Mutex::new(JoinSet::new()),
                shutdown,
            }),
        }
    }

    /// The tonic server, answering UNIMPLEMENTED with the method's name for
    /// methods we do not serve.
    pub fn into_server(self) -> NamedUnimplemented<VtctldServer<VtctldService>> {
        NamedUnimplemented {
            inner: VtctldServer::new(self),
        }
    }

    /// Runs `work` in a task the service owns and waits for its result.
    async fn run_owned<T, F>(&self, work: F) -> VtctldResult<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = VtctldResult<T>> + Send + 'static,
    {
        if self.inner.shutdown.is_cancelled() {
            return Err(VtctldError::ShuttingDown("no new reparent is started".into()));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                let _ = tx.send(work.await);
            });
        }
        rx.await
            .map_err(|_| VtctldError::ShuttingDown("the reparent task was stopped".into()))?
    }

    /// Runs one reparent of `keyspace/shard` on an owned task (it finishes
    /// even if the caller goes away) with a fresh step log, audited as an
    /// operator request of `kind` (see [`run_operator_reparent`]); returns
    /// the promoted primary and the log's events.
    async fn reparent<F, Fut>(
        &self,
        keyspace: &str,
        shard: &str,
        kind: RecoveryKind,
        request: OperatorRequest,
        op: F,
    ) -> VtctldResult<(Option<TabletAlias>, Vec<logutil::Event>)>
    where
        F: FnOnce(Arc<Reparenter>, String, String, EventLog) -> Fut,
        Fut: std::future::Future<Output = Result<ReparentOutcome, ReparentError>> + Send + 'static,
    {
        let reparenter = self.inner.reparenter.clone();
        let log = EventLog::new(reparenter.config().clock);
        let work = op(reparenter, keyspace.to_string(), shard.to_string(), log.clone());
        let inner = Arc::clone(&self.inner);
        let (keyspace, shard) = (keyspace.to_string(), shard.to_string());
        let audit_log = log.clone();
        let outcome = self
            .run_owned(async move {
                // The record names the tablet the reparent acts on: the
                // shard's primary as the topo has it now (a read failure is
                // the reparent's to report), else the requested one.
                let current = match inner.topo.get_shard(&keyspace, &shard).await {
                    Ok(s) => s.value.primary_alias,
                    Err(_) => None,
                };
                let tablet = current
                    .or_else(|| request.new_primary.clone())
                    .unwrap_or_default();
                let op = OperatorReparent {
                    keyspace,
                    shard,
                    kind,
                    tablet,
                    request,
                };
                run_operator_reparent(&inner.audit, op, &audit_log, work)
                    .await
                    .map_err(VtctldError::from)
            })
            .await?;
        Ok((promoted(&outcome), log.to_proto()))
    }

    async fn tablets_matching(&self, req: &GetTabletsRequest) -> VtctldResult<Vec<Tablet>> {
        let topo = &self.inner.topo;
        if !req.shard.is_empty() && req.keyspace.is_empty() {
            return Err(VtctldError::invalid(
                "keyspace",
                "is required when shard is given",
            ));
        }
        let mut out = Vec::new();
        if !req.tablet_aliases.is_empty() {
            for a in &req.tablet_aliases {
                let a = required_alias("tablet_aliases", Some(a))?;
                match topo.get_tablet(&a).await {
                    Ok(t) => out.push(t.value),
                    Err(TopoError::NoNode(_)) if !req.strict => {
                        tracing::info!(alias = %a, "GetTablets: no such tablet");
                    }
                    Err(e) => return Err(VtctldError::topo(format!("failed to read tablet {a}"), e)),
                }
            }
        } else {
            let cells = if req.cells.is_empty() {
                topo.cells()
                    .await
                    .map_err(|e| VtctldError::topo("failed to list cells", e))?
            } else {
                req.cells.clone()
            };
            for cell in cells {
                match topo.tablets_by_cell(&cell).await {
                    Ok(listing) => {
                        if req.strict
                            && let Some(e) = listing.errors.first()
                        {
                            return Err(VtctldError::topo(
                                format!("partial result in cell {cell}"),
                                e.clone(),
                            ));
                        }
                        out.extend(listing.items.into_iter().map(|t| t.value));
                    }
                    Err(e) if req.strict => {
                        return Err(VtctldError::topo(
                            format!("failed to list tablets of cell {cell}"),
                            e,
                        ));
                    }
                    Err(e) => tracing::warn!(%cell, "GetTablets: skipping cell: {e}"),
                }
            }
        }
        let wanted_type = req.tablet_type;
        out.retain(|t| {
            (req.keyspace.is_empty() || t.keyspace == req.keyspace)
                && (req.shard.is_empty() || t.shard == req.shard)
                && (wanted_type == TabletType::Unknown as i32 || t.r#type == wanted_type)
        });
        out.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(out)
    }

    /// The topo record of the tablet named by `field` (required).
    async fn tablet_record(&self, field: &'static str, value: Option<&TabletAlias>) -> VtctldResult<Tablet> {
        let a = required_alias(field, value)?;
        let tablet = self
            .inner
            .topo
            .get_tablet(&a)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to get tablet {a}"), e))?;
        Ok(tablet.value)
    }

    /// The keyspace's durability policy (vtctld's `GetKeyspaceDurability`:
    /// an unset policy is `none`).
    async fn durability(&self, keyspace: &str) -> VtctldResult<Durability> {
        let ks = self
            .inner
            .topo
            .get_keyspace(keyspace)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read keyspace {keyspace}"), e))?;
        match ks.value.durability_policy.as_str() {
            "" => Ok(Durability::None),
            name => Durability::from_name(name)
                .map_err(|e| VtctldError::FailedPrecondition(format!("keyspace {keyspace}: {e}"))),
        }
    }

    /// The shard primary of `tablet`'s shard, checked the way vtctld's
    /// StartReplication and ReparentTablet check it: the shard names a
    /// primary, its record is PRIMARY and of the same keyspace/shard.
    async fn shard_primary_of(&self, tablet: &Tablet, what: &str) -> VtctldResult<Tablet> {
        let topo = &self.inner.topo;
        let shard = topo
            .get_shard(&tablet.keyspace, &tablet.shard)
            .await
            .map_err(|e| {
                VtctldError::topo(
                    format!("failed to read shard {}/{}", tablet.keyspace, tablet.shard),
                    e,
                )
            })?;
        let Some(primary_alias) = shard.value.primary_alias.clone().filter(|a| !a.cell.is_empty()) else {
            return Err(VtctldError::FailedPrecondition(format!(
                "no primary tablet for shard {}/{}",
                tablet.keyspace, tablet.shard
            )));
        };
        let primary = topo.get_tablet(&primary_alias).await.map_err(|e| {
            VtctldError::topo(
                format!(
                    "cannot lookup primary tablet {primary_alias} for shard {}/{}",
                    tablet.keyspace, tablet.shard
                ),
                e,
            )
        })?;
        let primary = primary.value;
        if primary.r#type != TabletType::Primary as i32 {
            return Err(VtctldError::FailedPrecondition(format!(
                "TopologyServer has inconsistent state for shard primary {primary_alias}"
            )));
        }
        if primary.keyspace != tablet.keyspace || primary.shard != tablet.shard {
            return Err(VtctldError::FailedPrecondition(format!(
                "primary {primary_alias} and {what} {} not in same keyspace shard ({}/{})",
                crate::tablet::rpc::alias_of(tablet),
                tablet.keyspace,
                tablet.shard
            )));
        }
        Ok(primary)
    }

    /// The tablets of a shard, as vtctld's `GetTabletMapForShard` finds
    /// them: the shard record must exist; its primary and every tablet of
    /// its replication graphs, all cells. A tablet or cell that cannot be
    /// read fails the request (vtctld: partial result).
    async fn shard_tablets(&self, keyspace: &str, shard: &str) -> VtctldResult<Vec<Tablet>> {
        let topo = &self.inner.topo;
        let record = topo
            .get_shard(keyspace, shard)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read shard {keyspace}/{shard}"), e))?;
        let listing = topo
            .tablets_by_shard(keyspace, shard)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to list tablets of {keyspace}/{shard}"), e))?;
        if let Some(e) = listing.errors.into_iter().next() {
            return Err(VtctldError::topo(
                format!("partial result listing tablets of {keyspace}/{shard}"),
                e,
            ));
        }
        let mut tablets: Vec<Tablet> = listing.items.into_iter().map(|t| t.value).collect();
        if let Some(p) = record.value.primary_alias.filter(|a| !a.cell.is_empty())
            && !tablets.iter().any(|t| t.alias.as_ref() == Some(&p))
        {
            match topo.get_tablet(&p).await {
                Ok(t) => tablets.push(t.value),
                Err(TopoError::NoNode(_)) => {}
                Err(e) => return Err(VtctldError::topo(format!("failed to read tablet {p}"), e)),
            }
        }
        tablets.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(tablets)
    }
}

/// The replication answer of one tablet for `ShardReplicationPositions`:
/// `Ok(Some)` a status, `Ok(None)` the tablet timed out (an empty entry, as
/// vtctld records), `Err` the request fails.
async fn replication_position(
    tmc: &dyn TabletManager,
    tablet: &Tablet,
) -> Result<Option<ReplicationStatus>, (String, TabletError)> {
    let alias = crate::tablet::rpc::alias_of(tablet);
    if tablet.r#type == TabletType::Primary as i32 {
        match tmc.primary_position(tablet).await {
            Ok(position) => Ok(Some(ReplicationStatus {
                position,
                ..Default::default()
            })),
            Err(TabletError::Timeout { .. }) => {
                tracing::warn!(%alias, "ShardReplicationPositions: primary position timed out");
                Ok(None)
            }
            Err(e) => Err((format!("PrimaryPosition({alias}) failed"), e)),
        }
    } else {
        match tmc.replication_status(tablet).await {
            Ok(status) => Ok(Some(status)),
            Err(TabletError::Timeout { .. }) => {
                tracing::warn!(%alias, "ShardReplicationPositions: replication status timed out");
                Ok(None)
            }
            Err(e) => Err((format!("ReplicationStatus({alias}) failed"), e)),
        }
    }
}

/// REPLICA and RDONLY: the types vtctld asks for a replication status.
fn is_replica_type(tablet: &Tablet) -> bool {
    tablet.r#type == TabletType::Replica as i32 || tablet.r#type == TabletType::Rdonly as i32
}

/// Who called, for the audit: the caller's address as the gRPC server
/// saw it, and on TLS connections the subject of its client certificate.
fn operator_request<T>(
    method: &str,
    request: &Request<T>,
    new_primary: Option<&TabletAlias>,
    avoid_primary: Option<&TabletAlias>,
) -> OperatorRequest {
    let tls = request.extensions().get::<crate::tls::TlsConnectInfo>();
    OperatorRequest {
        method: method.to_string(),
        peer: request
            .remote_addr()
            .or_else(|| tls.and_then(|t| t.tcp.remote_addr()))
            .map(|a| a.to_string()),
        client_identity: tls
            .and_then(|t| t.identity.as_ref())
            .filter(|id| id.error.is_none())
            .map(|id| id.subject.to_string())
            .filter(|subject| !subject.is_empty()),
        new_primary: new_primary.cloned(),
        avoid_primary: avoid_primary.cloned(),
    }
}

fn promoted(outcome: &ReparentOutcome) -> Option<TabletAlias> {
    outcome.new_primary.as_ref().and_then(|t| t.alias.clone())
}

#[tonic::async_trait]
impl Vtctld for VtctldService {
    async fn planned_reparent_shard(
        &self,
        request: Request<PlannedReparentShardRequest>,
    ) -> Result<Response<PlannedReparentShardResponse>, Status> {
        let mut opts = planned_options(request.get_ref())?;
        let requester = operator_request(
            "PlannedReparentShard",
            &request,
            opts.new_primary.as_ref(),
            opts.avoid_primary.as_ref(),
        );
        let req = request.into_inner();
        opts.cancel = self.inner.shutdown.child_token();
        let (promoted_primary, events) = self
            .reparent(
                &req.keyspace,
                &req.shard,
                RecoveryKind::OperatorPlannedReparentShard,
                requester,
                |reparenter, ks, shard, log| async move {
                    reparenter
                        .planned_reparent_shard(&ks, &shard, &opts, None, &log)
                        .await
                },
            )
            .await?;
        Ok(Response::new(PlannedReparentShardResponse {
            keyspace: req.keyspace,
            shard: req.shard,
            promoted_primary,
            events,
        }))
    }

    async fn emergency_reparent_shard(
        &self,
        request: Request<EmergencyReparentShardRequest>,
    ) -> Result<Response<EmergencyReparentShardResponse>, Status> {
        let mut opts = emergency_options(request.get_ref())?;
        let requester = operator_request(
            "EmergencyReparentShard",
            &request,
            opts.new_primary.as_ref(),
            None,
        );
        let req = request.into_inner();
        opts.cancel = self.inner.shutdown.child_token();
        let (promoted_primary, events) = self
            .reparent(
                &req.keyspace,
                &req.shard,
                RecoveryKind::OperatorEmergencyReparentShard,
                requester,
                |reparenter, ks, shard, log| async move {
                    reparenter
                        .emergency_reparent_shard(&ks, &shard, &opts, None, &log)
                        .await
                },
            )
            .await?;
        Ok(Response::new(EmergencyReparentShardResponse {
            keyspace: req.keyspace,
            shard: req.shard,
            promoted_primary,
            events,
        }))
    }

    async fn get_tablet(
        &self,
        request: Request<GetTabletRequest>,
    ) -> Result<Response<GetTabletResponse>, Status> {
        let a = required_alias("tablet_alias", request.get_ref().tablet_alias.as_ref())?;
        let tablet = self
            .inner
            .topo
            .get_tablet(&a)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read tablet {a}"), e))?;
        Ok(Response::new(GetTabletResponse {
            tablet: Some(tablet.value),
        }))
    }

    async fn get_tablets(
        &self,
        request: Request<GetTabletsRequest>,
    ) -> Result<Response<GetTabletsResponse>, Status> {
        let tablets = self.tablets_matching(request.get_ref()).await?;
        Ok(Response::new(GetTabletsResponse { tablets }))
    }

    async fn get_shard(
        &self,
        request: Request<GetShardRequest>,
    ) -> Result<Response<GetShardResponse>, Status> {
        let req = request.into_inner();
        required("keyspace", &req.keyspace)?;
        required("shard_name", &req.shard_name)?;
        let shard = self
            .inner
            .topo
            .get_shard(&req.keyspace, &req.shard_name)
            .await
            .map_err(|e| {
                VtctldError::topo(
                    format!("failed to read shard {}/{}", req.keyspace, req.shard_name),
                    e,
                )
            })?;
        Ok(Response::new(GetShardResponse {
            shard: Some(vtctldata::Shard {
                keyspace: req.keyspace,
                name: req.shard_name,
                shard: Some(shard.value),
            }),
        }))
    }

    async fn get_keyspace(
        &self,
        request: Request<GetKeyspaceRequest>,
    ) -> Result<Response<GetKeyspaceResponse>, Status> {
        let req = request.into_inner();
        required("keyspace", &req.keyspace)?;
        let ks = self
            .inner
            .topo
            .get_keyspace(&req.keyspace)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read keyspace {}", req.keyspace), e))?;
        Ok(Response::new(GetKeyspaceResponse {
            keyspace: Some(vtctldata::Keyspace {
                name: req.keyspace,
                keyspace: Some(ks.value),
            }),
        }))
    }

    async fn get_keyspaces(
        &self,
        _request: Request<GetKeyspacesRequest>,
    ) -> Result<Response<GetKeyspacesResponse>, Status> {
        let topo = &self.inner.topo;
        let names = topo
            .keyspaces()
            .await
            .map_err(|e| VtctldError::topo("failed to list keyspaces", e))?;
        let mut keyspaces = Vec::new();
        for name in names {
            let ks = topo
                .get_keyspace(&name)
                .await
                .map_err(|e| VtctldError::topo(format!("failed to read keyspace {name}"), e))?;
            keyspaces.push(vtctldata::Keyspace {
                name,
                keyspace: Some(ks.value),
            });
        }
        Ok(Response::new(GetKeyspacesResponse { keyspaces }))
    }

    async fn get_cell_info_names(
        &self,
        _request: Request<GetCellInfoNamesRequest>,
    ) -> Result<Response<GetCellInfoNamesResponse>, Status> {
        let names = self
            .inner
            .topo
            .cells()
            .await
            .map_err(|e| VtctldError::topo("failed to list cells", e))?;
        Ok(Response::new(GetCellInfoNamesResponse { names }))
    }

    async fn get_cell_info(
        &self,
        request: Request<GetCellInfoRequest>,
    ) -> Result<Response<GetCellInfoResponse>, Status> {
        let cell = request.into_inner().cell;
        required("cell", &cell)?;
        let info = self
            .inner
            .topo
            .get_cell_info(&cell)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read cell {cell}"), e))?;
        Ok(Response::new(GetCellInfoResponse {
            cell_info: Some(info.value),
        }))
    }

    async fn get_full_status(
        &self,
        request: Request<GetFullStatusRequest>,
    ) -> Result<Response<GetFullStatusResponse>, Status> {
        let a = required_alias("tablet_alias", request.get_ref().tablet_alias.as_ref())?;
        let tablet = self
            .inner
            .topo
            .get_tablet(&a)
            .await
            .map_err(|e| VtctldError::topo(format!("failed to read tablet {a}"), e))?;
        let status = self
            .inner
            .tmc
            .full_status(&tablet.value)
            .await
            .map_err(|e| VtctldError::tablet(format!("FullStatus of {a}"), e))?;
        Ok(Response::new(GetFullStatusResponse { status: Some(status) }))
    }

    async fn set_vtorc_emergency_reparent(
        &self,
        request: Request<SetVtorcEmergencyReparentRequest>,
    ) -> Result<Response<SetVtorcEmergencyReparentResponse>, Status> {
        let req = request.into_inner();
        required("keyspace", &req.keyspace)?;
        let topo = &self.inner.topo;
        if req.shard.is_empty() {
            topo.set_keyspace_emergency_reparent_disabled(&req.keyspace, req.disable)
                .await
                .map_err(|e| VtctldError::topo(format!("failed to update keyspace {}", req.keyspace), e))?;
        } else {
            topo.set_shard_emergency_reparent_disabled(&req.keyspace, &req.shard, req.disable)
                .await
                .map_err(|e| {
                    VtctldError::topo(
                        format!("failed to update shard {}/{}", req.keyspace, req.shard),
                        e,
                    )
                })?;
        }
        tracing::info!(
            keyspace = %req.keyspace,
            shard = %req.shard,
            disable = req.disable,
            "set vtorc emergency reparent"
        );
        Ok(Response::new(SetVtorcEmergencyReparentResponse {}))
    }

    async fn find_all_shards_in_keyspace(
        &self,
        request: Request<vtctldata::FindAllShardsInKeyspaceRequest>,
    ) -> Result<Response<vtctldata::FindAllShardsInKeyspaceResponse>, Status> {
        let keyspace = request.into_inner().keyspace;
        required("keyspace", &keyspace)?;
        let topo = &self.inner.topo;
        let listing = match topo.shards_of_keyspace(&keyspace).await {
            Ok(l) => l,
            Err(TopoError::NoNode(_)) => Default::default(),
            Err(e) => {
                return Err(VtctldError::topo(format!("FindAllShardsInKeyspace({keyspace})"), e).into());
            }
        };
        if let Some(e) = listing.errors.into_iter().next() {
            return Err(VtctldError::topo(format!("FindAllShardsInKeyspace({keyspace})"), e).into());
        }
        if listing.items.is_empty() {
            // No shards: vtctld answers NOT_FOUND unless the keyspace exists.
            topo.get_keyspace(&keyspace)
                .await
                .map_err(|e| VtctldError::topo(format!("FindAllShardsInKeyspace({keyspace})"), e))?;
        }
        let shards = listing
            .items
            .into_iter()
            .map(|(name, shard)| {
                let entry = vtctldata::Shard {
                    keyspace: keyspace.clone(),
                    name: name.clone(),
                    shard: Some(shard.value),
                };
                (name, entry)
            })
            .collect();
        Ok(Response::new(vtctldata::FindAllShardsInKeyspaceResponse {
            shards,
        }))
    }

    async fn shard_replication_positions(
        &self,
        request: Request<vtctldata::ShardReplicationPositionsRequest>,
    ) -> Result<Response<vtctldata::ShardReplicationPositionsResponse>, Status> {
        let req = request.into_inner();
        required("keyspace", &req.keyspace)?;
        required("shard", &req.shard)?;
        let tablets = self.shard_tablets(&req.keyspace, &req.shard).await?;
        let tmc = self.inner.tmc.clone();
        let asked: Vec<Tablet> = tablets
            .into_iter()
            .filter(|t| t.r#type == TabletType::Primary as i32 || is_replica_type(t))
            .collect();
        let answers = futures::future::join_all(asked.iter().map(|t| {
            let tmc = tmc.clone();
            async move { replication_position(tmc.as_ref(), t).await }
        }))
        .await;
        let mut resp = vtctldata::ShardReplicationPositionsResponse::default();
        for (tablet, answer) in asked.into_iter().zip(answers) {
            let key = crate::tablet::rpc::alias_of(&tablet).to_string();
            let status = answer.map_err(|(context, source)| VtctldError::tablet(context, source))?;
            resp.replication_statuses
                .insert(key.clone(), status.unwrap_or_default());
            resp.tablet_map.insert(key, tablet);
        }
        Ok(Response::new(resp))
    }

    async fn get_cells_aliases(
        &self,
        _request: Request<vtctldata::GetCellsAliasesRequest>,
    ) -> Result<Response<vtctldata::GetCellsAliasesResponse>, Status> {
        let aliases = self
            .inner
            .topo
            .cells_aliases()
            .await
            .map_err(|e| VtctldError::topo("failed to read cells aliases", e))?;
        Ok(Response::new(vtctldata::GetCellsAliasesResponse {
            aliases: aliases.into_iter().collect(),
        }))
    }

    async fn get_srv_keyspaces(
        &self,
        request: Request<vtctldata::GetSrvKeyspacesRequest>,
    ) -> Result<Response<vtctldata::GetSrvKeyspacesResponse>, Status> {
        let req = request.into_inner();
        required("keyspace", &req.keyspace)?;
        let topo = &self.inner.topo;
        let cells = if req.cells.is_empty() {
            topo.cells()
                .await
                .map_err(|e| VtctldError::topo("failed to list cells", e))?
        } else {
            req.cells
        };
        let mut resp = vtctldata::GetSrvKeyspacesResponse::default();
        for cell in cells {
            match topo.get_srv_keyspace(&cell, &req.keyspace).await {
                Ok(srv) => {
                    resp.srv_keyspaces.insert(cell, srv.value);
                }
                // vtctld keeps the cell with an empty entry.
                Err(TopoError::NoNode(_)) => {
                    tracing::info!(%cell, keyspace = %req.keyspace, "GetSrvKeyspaces: no SrvKeyspace");
                    resp.srv_keyspaces.insert(cell, Default::default());
                }
                Err(e) => {
                    return Err(VtctldError::topo(
                        format!("failed to read SrvKeyspace {} in cell {cell}", req.keyspace),
                        e,
                    )
                    .into());
                }
            }
        }
        Ok(Response::new(resp))
    }

    async fn ping_tablet(
        &self,
        request: Request<vtctldata::PingTabletRequest>,
    ) -> Result<Response<vtctldata::PingTabletResponse>, Status> {
        let tablet = self
            .tablet_record("tablet_alias", request.get_ref().tablet_alias.as_ref())
            .await?;
        self.inner
            .tmc
            .ping(&tablet)
            .await
            .map_err(|e| VtctldError::tablet("Ping", e))?;
        Ok(Response::new(vtctldata::PingTabletResponse {}))
    }

    async fn refresh_state(
        &self,
        request: Request<vtctldata::RefreshStateRequest>,
    ) -> Result<Response<vtctldata::RefreshStateResponse>, Status> {
        let tablet = self
            .tablet_record("tablet_alias", request.get_ref().tablet_alias.as_ref())
            .await?;
        self.inner
            .tmc
            .refresh_state(&tablet)
            .await
            .map_err(|e| VtctldError::tablet("RefreshState", e))?;
        Ok(Response::new(vtctldata::RefreshStateResponse {}))
    }

    async fn run_health_check(
        &self,
        request: Request<vtctldata::RunHealthCheckRequest>,
    ) -> Result<Response<vtctldata::RunHealthCheckResponse>, Status> {
        let tablet = self
            .tablet_record("tablet_alias", request.get_ref().tablet_alias.as_ref())
            .await?;
        self.inner
            .tmc
            .run_health_check(&tablet)
            .await
            .map_err(|e| VtctldError::tablet("RunHealthCheck", e))?;
        Ok(Response::new(vtctldata::RunHealthCheckResponse {}))
    }

    async fn set_writable(
        &self,
        request: Request<vtctldata::SetWritableRequest>,
    ) -> Result<Response<vtctldata::SetWritableResponse>, Status> {
        let req = request.into_inner();
        let tablet = self
            .tablet_record("tablet_alias", req.tablet_alias.as_ref())
            .await?;
        let result = if req.writable {
            self.inner.tmc.set_read_write(&tablet).await
        } else {
            self.inner.tmc.set_read_only(&tablet).await
        };
        result.map_err(|e| {
            VtctldError::tablet(
                if req.writable {
                    "SetReadWrite"
                } else {
                    "SetReadOnly"
                },
                e,
            )
        })?;
        Ok(Response::new(vtctldata::SetWritableResponse {}))
    }

    async fn start_replication(
        &self,
        request: Request<vtctldata::StartReplicationRequest>,
    ) -> Result<Response<vtctldata::StartReplicationResponse>, Status> {
        let tablet = self
            .tablet_record("tablet_alias", request.get_ref().tablet_alias.as_ref())
            .await?;
        let primary = self.shard_primary_of(&tablet, "replica").await?;
        let durability = self.durability(&tablet.keyspace).await?;
        self.inner
            .tmc
            .start_replication(&tablet, durability.is_replica_semi_sync(&primary, &tablet))
            .await
            .map_err(|e| VtctldError::tablet("StartReplication", e))?;
        Ok(Response::new(vtctldata::StartReplicationResponse {}))
    }

    async fn stop_replication(
        &self,
        request: Request<vtctldata::StopReplicationRequest>,
    ) -> Result<Response<vtctldata::StopReplicationResponse>, Status> {
        let tablet = self
            .tablet_record("tablet_alias", request.get_ref().tablet_alias.as_ref())
            .await?;
        self.inner
            .tmc
            .stop_replication(&tablet)
            .await
            .map_err(|e| VtctldError::tablet("StopReplication", e))?;
        Ok(Response::new(vtctldata::StopReplicationResponse {}))
    }

    async fn reparent_tablet(
        &self,
        request: Request<vtctldata::ReparentTabletRequest>,
    ) -> Result<Response<vtctldata::ReparentTabletResponse>, Status> {
        let tablet = self
            .tablet_record("tablet", request.get_ref().tablet.as_ref())
            .await?;
        let primary = self.shard_primary_of(&tablet, "potential replica").await?;
        if primary.alias == tablet.alias {
            return Err(VtctldError::FailedPrecondition(format!(
                "cannot ReparentTablet current shard primary ({}) onto itself",
                crate::tablet::rpc::alias_of(&tablet)
            ))
            .into());
        }
        let durability = self.durability(&tablet.keyspace).await?;
        self.inner
            .tmc
            .set_replication_source(
                &tablet,
                crate::proto::tabletmanagerdata::SetReplicationSourceRequest {
                    parent: primary.alias.clone(),
                    semi_sync: durability.is_replica_semi_sync(&primary, &tablet),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| VtctldError::tablet("SetReplicationSource", e))?;
        Ok(Response::new(vtctldata::ReparentTabletResponse {
            keyspace: tablet.keyspace,
            shard: tablet.shard,
            primary: primary.alias,
        }))
    }

    async fn tablet_externally_reparented(
        &self,
        request: Request<vtctldata::TabletExternallyReparentedRequest>,
    ) -> Result<Response<vtctldata::TabletExternallyReparentedResponse>, Status> {
        let tablet = self
            .tablet_record("tablet", request.get_ref().tablet.as_ref())
            .await?;
        let shard = self
            .inner
            .topo
            .get_shard(&tablet.keyspace, &tablet.shard)
            .await
            .map_err(|e| {
                VtctldError::topo(
                    format!("failed to read shard {}/{}", tablet.keyspace, tablet.shard),
                    e,
                )
            })?;
        let resp = vtctldata::TabletExternallyReparentedResponse {
            keyspace: tablet.keyspace.clone(),
            shard: tablet.shard.clone(),
            new_primary: tablet.alias.clone(),
            old_primary: shard.value.primary_alias.clone(),
        };
        // Already PRIMARY in the topo: nothing to do (as vtctld).
        if tablet.r#type == TabletType::Primary as i32 {
            return Ok(Response::new(resp));
        }
        let durability = self.durability(&tablet.keyspace).await?;
        tracing::info!(
            tablet = %crate::tablet::rpc::alias_of(&tablet),
            "TabletExternallyReparented: changing the tablet's type to PRIMARY"
        );
        self.inner
            .tmc
            .change_type(
                &tablet,
                TabletType::Primary,
                durability.semi_sync_ackers(&tablet) > 0,
            )
            .await
            .map_err(|e| VtctldError::tablet("ChangeType(PRIMARY)", e))?;
        Ok(Response::new(resp))
    }
}

/// Wraps a tonic server so that a call to a method it does not serve
/// answers UNIMPLEMENTED with a message naming the method (the generated
/// server answers UNIMPLEMENTED without a message).
#[derive(Clone, Debug)]
pub struct NamedUnimplemented<S> {
    /// The generated server.
    inner: S,
}

impl<S> Service<http::Request<Body>> for NamedUnimplemented<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if SERVED_METHODS.contains(&method.as_str()) {
            return Box::pin(self.inner.call(req));
        }
        let status = Status::unimplemented(format!(
            "{SERVICE_NAME}/{method} is not implemented by vtorc-rs (served: {})",
            SERVED_METHODS.join(", ")
        ));
        Box::pin(async move { Ok(status.into_http()) })
    }
}

impl<S> NamedService for NamedUnimplemented<S> {
    const NAME: &'static str = SERVICE_NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let req = PlannedReparentShardRequest {
            keyspace: "ks".into(),
            ..Default::default()
        };
        let err = planned_options(&req).expect_err("no shard");
        assert!(
            matches!(err, VtctldError::InvalidArgument { field: "shard", .. }),
            "{err:?}"
        );
        assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
        let req = EmergencyReparentShardRequest {
            keyspace: "ks".into(),
            shard: "0".into(),
            wait_replicas_timeout: Some(vttime::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let err = emergency_options(&req).expect_err("negative timeout");
        assert!(err.to_string().contains("wait_replicas_timeout"), "{err}");
        let req = EmergencyReparentShardRequest {
            keyspace: "ks".into(),
            shard: "0".into(),
            new_primary: Some(TabletAlias::new("", 1)),
            ..Default::default()
        };
        let err = emergency_options(&req).expect_err("empty cell");
        assert!(err.to_string().contains("new_primary"), "{err}");
    }

    #[test]
    fn request_fields_become_options() {
        let req = EmergencyReparentShardRequest {
            keyspace: "ks".into(),
            shard: "0".into(),
            new_primary: Some(TabletAlias::new("zone1", 101)),
            ignore_replicas: vec![TabletAlias::new("zone1", 102)],
            wait_replicas_timeout: Some(vttime::Duration {
                seconds: 3,
                nanos: 500,
            }),
            prevent_cross_cell_promotion: true,
            wait_for_all_tablets: true,
            expected_primary: Some(TabletAlias::new("zone1", 100)),
        };
        let opts = emergency_options(&req).expect("valid");
        assert_eq!(opts.new_primary, Some(TabletAlias::new("zone1", 101)));
        assert!(opts.ignore_replicas.contains(&TabletAlias::new("zone1", 102)));
        assert_eq!(opts.wait_replicas_timeout, Some(Duration::new(3, 500)));
        assert!(opts.prevent_cross_cell_promotion && opts.wait_for_all_tablets);
        assert_eq!(opts.expected_primary, Some(TabletAlias::new("zone1", 100)));
        let prs = planned_options(&PlannedReparentShardRequest {
            keyspace: "ks".into(),
            shard: "0".into(),
            tolerable_replication_lag: Some(vttime::Duration { seconds: 0, nanos: 0 }),
            allow_cross_cell_promotion: true,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(prs.tolerable_replication_lag, None);
        assert!(prs.allow_cross_cell_promotion);
    }

    #[test]
    fn reparent_errors_keep_their_codes() {
        let status = Status::from(VtctldError::Reparent(ReparentError::ExpectedPrimaryMismatch {
            expected: "zone1-0000000100".into(),
            actual: "zone1-0000000101".into(),
        }));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("is not equal to expected alias"));
    }
}
