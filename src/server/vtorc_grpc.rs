//! The VTOrc gRPC API (`vtorc.v1.Vtorc`, documented in
//! `proto/vtorc/v1/vtorc.proto`): a thin transport over the query layer
//! ([`super::query`]). Each call decodes its request, asks [`ApiContext`]
//! and encodes the answer ([`convert`]); errors become a gRPC status once,
//! through `From<ApiError> for Status`.

mod convert;

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::query::{ApiContext, ShardFilter, TabletView};
use crate::discovery::DiscoveryHandle;
use crate::proto::vtorc::v1 as pb;
use crate::proto::vtorc::v1::vtorc_server::{Vtorc, VtorcServer};
use crate::recovery::AuditEvent;
use crate::reparent::WallClock;

/// The `vtorc.v1.Vtorc` service.
#[derive(Clone)]
pub struct VtorcApi {
    /// The handles.
    ctx: ApiContext,
}

impl VtorcApi {
    /// The service over `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        VtorcApi { ctx }
    }

    /// The tonic server to add to the gRPC router.
    pub fn into_server(self) -> VtorcServer<VtorcApi> {
        VtorcServer::new(self)
    }

    /// The handles the service reads.
    pub fn context(&self) -> &ApiContext {
        &self.ctx
    }
}

/// The gRPC service name of the VTOrc API.
pub const SERVICE_NAME: &str = "vtorc.v1.Vtorc";

/// Keeps the standard health service's status of `vtorc.v1.Vtorc` true:
/// NOT_SERVING until discovery is ready, SERVING after, NOT_SERVING again
/// once `shutdown` fires. Never returns (run it next to the server).
pub async fn report_readiness(
    discovery: Option<DiscoveryHandle>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) -> std::convert::Infallible {
    use tonic_health::ServingStatus;
    if let Some(discovery) = discovery {
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        let ready = tokio::select! {
            r = discovery.wait_ready() => r.is_ok(),
            _ = shutdown.cancelled() => false,
        };
        if ready && !shutdown.is_cancelled() {
            health
                .set_service_status(SERVICE_NAME, ServingStatus::Serving)
                .await;
            shutdown.cancelled().await;
        }
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
    }
    std::future::pending().await
}

/// The Watch stream type.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Vtorc for VtorcApi {
    async fn get_health(
        &self,
        _: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        let health = self.ctx.health();
        Ok(Response::new(pb::GetHealthResponse {
            ready: health.ready,
            reason: health.reason,
            hostname: self.ctx.hostname.clone(),
            recoveries_enabled: health.recoveries_enabled,
            draining: health.draining,
            tablets_watched: health.tablets_watched as u64,
            shards_watched: health.shards_watched as u64,
        }))
    }

    async fn get_detection_analysis(
        &self,
        request: Request<pb::GetDetectionAnalysisRequest>,
    ) -> Result<Response<pb::GetDetectionAnalysisResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let analyses = self
            .ctx
            .detection_analysis(&filter)
            .iter()
            .map(convert::analysis)
            .collect();
        Ok(Response::new(pb::GetDetectionAnalysisResponse { analyses }))
    }

    async fn get_problems(
        &self,
        request: Request<pb::GetProblemsRequest>,
    ) -> Result<Response<pb::GetProblemsResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let tablets = tablets(&self.ctx.problems(&filter));
        Ok(Response::new(pb::GetProblemsResponse { tablets }))
    }

    async fn get_tablets(
        &self,
        request: Request<pb::GetTabletsRequest>,
    ) -> Result<Response<pb::GetTabletsResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let tablets = tablets(&self.ctx.tablets(&filter));
        Ok(Response::new(pb::GetTabletsResponse { tablets }))
    }

    async fn get_errant_gtids(
        &self,
        request: Request<pb::GetErrantGtidsRequest>,
    ) -> Result<Response<pb::GetErrantGtidsResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let tablets = tablets(&self.ctx.errant_gtids(&filter));
        Ok(Response::new(pb::GetErrantGtidsResponse { tablets }))
    }

    async fn get_recoveries(
        &self,
        request: Request<pb::GetRecoveriesRequest>,
    ) -> Result<Response<pb::GetRecoveriesResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let recoveries = self
            .ctx
            .recoveries(&filter, limit(r.limit))
            .iter()
            .map(convert::recovery)
            .collect();
        Ok(Response::new(pb::GetRecoveriesResponse { recoveries }))
    }

    async fn get_skipped_recoveries(
        &self,
        request: Request<pb::GetSkippedRecoveriesRequest>,
    ) -> Result<Response<pb::GetSkippedRecoveriesResponse>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        let detections = self
            .ctx
            .skipped_detections(&filter, limit(r.limit))
            .iter()
            .map(convert::detection)
            .collect();
        Ok(Response::new(pb::GetSkippedRecoveriesResponse { detections }))
    }

    async fn get_global_recoveries(
        &self,
        _: Request<pb::GetGlobalRecoveriesRequest>,
    ) -> Result<Response<pb::GetGlobalRecoveriesResponse>, Status> {
        Ok(Response::new(pb::GetGlobalRecoveriesResponse {
            state: Some(pb::GlobalRecoveriesState {
                enabled: self.ctx.recovery.global_recoveries_enabled(),
            }),
        }))
    }

    async fn enable_global_recoveries(
        &self,
        _: Request<pb::EnableGlobalRecoveriesRequest>,
    ) -> Result<Response<pb::EnableGlobalRecoveriesResponse>, Status> {
        let enabled = self.ctx.set_global_recoveries(true);
        Ok(Response::new(pb::EnableGlobalRecoveriesResponse {
            state: Some(pb::GlobalRecoveriesState { enabled }),
        }))
    }

    async fn disable_global_recoveries(
        &self,
        _: Request<pb::DisableGlobalRecoveriesRequest>,
    ) -> Result<Response<pb::DisableGlobalRecoveriesResponse>, Status> {
        let enabled = self.ctx.set_global_recoveries(false);
        Ok(Response::new(pb::DisableGlobalRecoveriesResponse {
            state: Some(pb::GlobalRecoveriesState { enabled }),
        }))
    }

    async fn get_emergency_reparent(
        &self,
        request: Request<pb::GetEmergencyReparentRequest>,
    ) -> Result<Response<pb::GetEmergencyReparentResponse>, Status> {
        let r = request.into_inner();
        let state = self.ctx.emergency_reparent_state(&r.keyspace, &r.shard).await?;
        Ok(Response::new(pb::GetEmergencyReparentResponse {
            state: Some(convert::ers_state(&state)),
        }))
    }

    async fn disable_emergency_reparent(
        &self,
        request: Request<pb::DisableEmergencyReparentRequest>,
    ) -> Result<Response<pb::DisableEmergencyReparentResponse>, Status> {
        let r = request.into_inner();
        let state = self
            .ctx
            .set_emergency_reparent(&r.keyspace, &r.shard, true)
            .await?;
        Ok(Response::new(pb::DisableEmergencyReparentResponse {
            state: Some(convert::ers_state(&state)),
        }))
    }

    async fn enable_emergency_reparent(
        &self,
        request: Request<pb::EnableEmergencyReparentRequest>,
    ) -> Result<Response<pb::EnableEmergencyReparentResponse>, Status> {
        let r = request.into_inner();
        let state = self
            .ctx
            .set_emergency_reparent(&r.keyspace, &r.shard, false)
            .await?;
        Ok(Response::new(pb::EnableEmergencyReparentResponse {
            state: Some(convert::ers_state(&state)),
        }))
    }

    async fn get_discovery_metrics(
        &self,
        _: Request<pb::GetDiscoveryMetricsRequest>,
    ) -> Result<Response<pb::GetDiscoveryMetricsResponse>, Status> {
        Ok(Response::new(convert::discovery_metrics(
            self.ctx.discovery.metrics(),
        )))
    }

    async fn get_sharing(
        &self,
        request: Request<pb::GetSharingRequest>,
    ) -> Result<Response<pb::GetSharingResponse>, Status> {
        let r = request.into_inner();
        let Some(handle) = &self.ctx.sharing else {
            return Ok(Response::new(pb::GetSharingResponse::default()));
        };
        if !r.shard.is_empty() && r.keyspace.is_empty() {
            return Err(Status::invalid_argument("shard: needs keyspace"));
        }
        let keyspace = Some(r.keyspace.as_str()).filter(|k| !k.is_empty());
        let shard = Some(r.shard.as_str()).filter(|s| !s.is_empty());
        let report = crate::sharing::report(&self.ctx.topo, handle, keyspace, shard).await;
        Ok(Response::new(convert::sharing(report)))
    }

    async fn ack_recovery(
        &self,
        request: Request<pb::AckRecoveryRequest>,
    ) -> Result<Response<pb::AckRecoveryResponse>, Status> {
        let r = request.into_inner();
        let cleared = self.ctx.acknowledge(&r.keyspace, &r.shard, &r.comment)?;
        Ok(Response::new(pb::AckRecoveryResponse {
            cleared: u32::try_from(cleared).unwrap_or(u32::MAX),
        }))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = request.into_inner();
        let explained = self.ctx.explain(&r.keyspace, &r.shard)?;
        Ok(Response::new(convert::explained(&explained)))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let filter = ShardFilter::parse(&r.keyspace, &r.shard)?;
        Ok(Response::new(watch_stream(&self.ctx, filter, r.include_active)))
    }
}

/// The Watch stream: (optionally) the open incidents, then every audit
/// event of the filter's shards until the client goes away, vtorc shuts
/// down, or the audit closes. No task is spawned: the stream is polled by
/// the connection that carries it.
fn watch_stream(ctx: &ApiContext, filter: ShardFilter, include_active: bool) -> WatchStream {
    // Subscribe before listing, so nothing between the two is lost.
    let rx = ctx.recovery.subscribe();
    let clock = ctx.clock;
    let initial: Vec<Result<pb::WatchEvent, Status>> = if include_active {
        ctx.open_detections(&filter)
            .into_iter()
            .map(|d| Ok(convert::watch_event(&AuditEvent::DetectionOpened(d), clock())))
            .collect()
    } else {
        Vec::new()
    };
    struct State {
        rx: tokio::sync::broadcast::Receiver<AuditEvent>,
        filter: ShardFilter,
        shutdown: CancellationToken,
        clock: WallClock,
        done: bool,
    }
    let state = State {
        rx,
        filter,
        shutdown: ctx.shutdown.clone(),
        clock,
        done: false,
    };
    let live = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let received = tokio::select! {
                r = s.rx.recv() => r,
                _ = s.shutdown.cancelled() => return None,
            };
            match received {
                Ok(event) => {
                    let relevant = match event.keyspace_shard() {
                        Some(key) => s.filter.matches(&key.keyspace, &key.shard),
                        None => true,
                    };
                    if !relevant {
                        continue;
                    }
                    if matches!(event, AuditEvent::Shutdown { .. }) {
                        s.done = true;
                    }
                    let out = convert::watch_event(&event, (s.clock)());
                    return Some((Ok(out), s));
                }
                Err(RecvError::Lagged(missed)) => {
                    let out = pb::WatchEvent {
                        at: Some((s.clock)().into()),
                        event: Some(pb::watch_event::Event::Lagged(pb::LaggedEvent { missed })),
                    };
                    return Some((Ok(out), s));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Box::pin(futures::stream::iter(initial).chain(live))
}

/// The tablets of a view as `vtorc.v1` messages.
fn tablets(views: &[TabletView]) -> Vec<pb::TabletStatus> {
    let now = crate::clock::now();
    views.iter().map(|t| convert::tablet(t, now)).collect()
}

/// A request's `limit` (0 = none).
fn limit(limit: u32) -> Option<usize> {
    (limit > 0).then_some(limit as usize)
}

/// Age of a monotonic instant at `now` (zero if in the future).
fn age(now: Instant, then: Instant) -> Duration {
    now.saturating_duration_since(then)
}
