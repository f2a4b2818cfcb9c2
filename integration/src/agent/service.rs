//! The agent's gRPC surface: `tabletmanagerservice.TabletManager` and
//! `queryservice.Query` (StreamHealth only). Each method reads the caller's
//! deadline from the `grpc-timeout` header, runs the agent operation with
//! panics caught, logs failures once and turns errors into statuses.
//! Methods not in our proto are answered `UNIMPLEMENTED` by tonic.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};
use vtorc::proto::query::{StreamHealthRequest, StreamHealthResponse};
use vtorc::proto::queryservice::query_server::{Query, QueryServer};
use vtorc::proto::tabletmanagerdata as tm;
use vtorc::proto::tabletmanagerservice::tablet_manager_server::{TabletManager, TabletManagerServer};
use vtorc::tls::ServerTls;

use super::Agent;
use super::error::AgentResult;

/// Time kept back from the caller's deadline so our own, clearer
/// deadline error reaches the caller before tonic's generic one.
const DEADLINE_MARGIN: Duration = Duration::from_millis(30);

/// Serves both services on `listener` until the agent is cancelled.
/// With `tls`, over TLS (client certificates required when it has a CA).
pub(super) async fn serve(agent: Arc<Agent>, listener: TcpListener, tls: Option<ServerTls>) {
    let cancel = agent.cancel.clone();
    let alias = agent.alias.clone();
    let router = tonic::transport::Server::builder()
        .add_service(TabletManagerServer::new(TabletManagerService {
            agent: agent.clone(),
        }))
        .add_service(QueryServer::new(QueryService { agent }));
    let result = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), cancel.cancelled_owned())
                .await
        }
        None => {
            // TCP_NODELAY, as Go (vttablet) sets on every accepted
            // connection: without it a response's frames written apart
            // wait for the client's delayed ACK (about 40 ms per RPC).
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
        }
    };
    if let Err(e) = result {
        warn!(tablet = %alias, "failed to serve gRPC: {e}");
    }
}

/// The caller's deadline (minus a small margin), if it sent one.
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let timeout = super::parse_grpc_timeout(value)?;
    Some(Instant::now() + timeout.saturating_sub(DEADLINE_MARGIN))
}

/// Runs one operation: panics become `INTERNAL`, errors become statuses.
async fn run<T>(
    agent: &Agent,
    method: &str,
    op: impl Future<Output = AgentResult<T>>,
) -> Result<Response<T>, Status> {
    match AssertUnwindSafe(op).catch_unwind().await {
        Ok(Ok(value)) => {
            debug!(tablet = %agent.alias, method, "rpc ok");
            Ok(Response::new(value))
        }
        Ok(Err(e)) => {
            debug!(tablet = %agent.alias, method, "rpc failed: {e}");
            Err(e.into())
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            warn!(tablet = %agent.alias, method, "rpc panicked: {text}");
            Err(Status::internal(format!("uncaught panic: {text}")))
        }
    }
}

/// `tabletmanagerservice.TabletManager` over an agent.
#[derive(Clone, Debug)]
pub struct TabletManagerService {
    /// The agent.
    agent: Arc<Agent>,
}

/// `queryservice.Query` (StreamHealth) over an agent.
#[derive(Clone, Debug)]
pub struct QueryService {
    /// The agent.
    agent: Arc<Agent>,
}

/// Implements the service: every unary method forwards to the agent
/// method of the same name with `(request, deadline)`. A method marked
/// `detached` runs on its own task, so it finishes (within the caller's
/// deadline) even when the caller stops waiting.
macro_rules! forward {
    ($($method:ident($req:ty) -> $resp:ty $(, $detached:ident)?;)*) => {
        #[tonic::async_trait]
        impl TabletManager for TabletManagerService {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let deadline = deadline_of(&request);
                    let agent = self.agent.clone();
                    let request = request.into_inner();
                    let op = async move {
                        run(&agent, stringify!($method), agent.$method(request, deadline)).await
                    };
                    forward!(@run $($detached)? op)
                }
            )*
        }
    };
    (@run detached $op:ident) => {
        tokio::spawn($op)
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("the operation's task failed: {e}"))))
    };
    (@run $op:ident) => {
        $op.await
    };
}

forward! {
        ping(tm::PingRequest) -> tm::PingResponse;
        get_global_status_vars(tm::GetGlobalStatusVarsRequest) -> tm::GetGlobalStatusVarsResponse;
        set_read_only(tm::SetReadOnlyRequest) -> tm::SetReadOnlyResponse;
        set_read_write(tm::SetReadWriteRequest) -> tm::SetReadWriteResponse;
        change_type(tm::ChangeTypeRequest) -> tm::ChangeTypeResponse;
        refresh_state(tm::RefreshStateRequest) -> tm::RefreshStateResponse;
        replication_status(tm::ReplicationStatusRequest) -> tm::ReplicationStatusResponse;
        primary_status(tm::PrimaryStatusRequest) -> tm::PrimaryStatusResponse;
        primary_position(tm::PrimaryPositionRequest) -> tm::PrimaryPositionResponse;
        wait_for_position(tm::WaitForPositionRequest) -> tm::WaitForPositionResponse;
        stop_replication(tm::StopReplicationRequest) -> tm::StopReplicationResponse;
        stop_replication_minimum(tm::StopReplicationMinimumRequest) -> tm::StopReplicationMinimumResponse;
        start_replication(tm::StartReplicationRequest) -> tm::StartReplicationResponse;
        restart_replication(tm::RestartReplicationRequest) -> tm::RestartReplicationResponse;
        reset_replication(tm::ResetReplicationRequest) -> tm::ResetReplicationResponse;
        init_primary(tm::InitPrimaryRequest) -> tm::InitPrimaryResponse;
        populate_reparent_journal(tm::PopulateReparentJournalRequest) -> tm::PopulateReparentJournalResponse;
        read_reparent_journal_info(tm::ReadReparentJournalInfoRequest) -> tm::ReadReparentJournalInfoResponse;
        init_replica(tm::InitReplicaRequest) -> tm::InitReplicaResponse;
        // Detached: ERS abandons the call on a live old primary once enough
        // replicas answered; a demotion cut off half-way could leave it
        // writable with semi-sync off. It completes instead (not serving,
        // read-only); vttablet would revert on the cancelled context.
        demote_primary(tm::DemotePrimaryRequest) -> tm::DemotePrimaryResponse, detached;
        undo_demote_primary(tm::UndoDemotePrimaryRequest) -> tm::UndoDemotePrimaryResponse;
        replica_was_promoted(tm::ReplicaWasPromotedRequest) -> tm::ReplicaWasPromotedResponse;
        reset_replication_parameters(tm::ResetReplicationParametersRequest) -> tm::ResetReplicationParametersResponse;
        full_status(tm::FullStatusRequest) -> tm::FullStatusResponse;
        set_replication_source(tm::SetReplicationSourceRequest) -> tm::SetReplicationSourceResponse;
        replica_was_restarted(tm::ReplicaWasRestartedRequest) -> tm::ReplicaWasRestartedResponse;
        stop_replication_and_get_status(tm::StopReplicationAndGetStatusRequest) -> tm::StopReplicationAndGetStatusResponse;
        promote_replica(tm::PromoteReplicaRequest) -> tm::PromoteReplicaResponse;
        run_health_check(tm::RunHealthCheckRequest) -> tm::RunHealthCheckResponse;
}

/// The StreamHealth response stream.
type HealthStream = Pin<Box<dyn Stream<Item = Result<StreamHealthResponse, Status>> + Send>>;

/// Per-stream state of [`QueryService::stream_health`].
struct HealthCursor {
    /// Receives every change of the payload.
    rx: tokio::sync::watch::Receiver<StreamHealthResponse>,
    /// Ticks at the stream interval.
    ticker: tokio::time::Interval,
    /// Fires on agent shutdown.
    cancel: tokio_util::sync::CancellationToken,
    /// False until the first message went out.
    started: bool,
    /// True once the shutdown error was sent.
    done: bool,
}

#[tonic::async_trait]
impl Query for QueryService {
    type StreamHealthStream = HealthStream;

    /// Sends the current state at once, then on every change and at least
    /// every `health_stream_interval`; on agent shutdown it ends with
    /// `UNAVAILABLE tabletserver is shutdown`.
    async fn stream_health(
        &self,
        _request: Request<StreamHealthRequest>,
    ) -> Result<Response<Self::StreamHealthStream>, Status> {
        if self.agent.cancel.is_cancelled() {
            return Err(Status::unavailable("tabletserver is shutdown"));
        }
        let mut ticker = tokio::time::interval(self.agent.config.health_stream_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cursor = HealthCursor {
            rx: self.agent.health.subscribe(),
            ticker,
            cancel: self.agent.cancel.clone(),
            started: false,
            done: false,
        };
        let stream = futures::stream::unfold(cursor, |mut c| async move {
            if c.done {
                return None;
            }
            if c.started {
                tokio::select! {
                    _ = c.cancel.cancelled() => {
                        c.done = true;
                        return Some((Err(Status::unavailable("tabletserver is shutdown")), c));
                    }
                    changed = c.rx.changed() => {
                        if changed.is_err() {
                            c.done = true;
                            return Some((Err(Status::unavailable("tabletserver is shutdown")), c));
                        }
                    }
                    _ = c.ticker.tick() => {}
                }
            } else {
                c.started = true;
                c.ticker.reset();
            }
            let message = c.rx.borrow_and_update().clone();
            Some((Ok(message), c))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
