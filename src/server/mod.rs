//! Network servers: the gRPC server on `--grpc-port` (the vtctld-compatible
//! `vtctlservice.Vtctld`, the VTOrc API, the standard health service,
//! reflection) and the HTTP API on `--port`.
//!
//! Layers: [`query`] turns vtorc's state into API answers; [`vtorc_grpc`]
//! and [`http`] are thin transports over it (decode, query, encode);
//! [`vtctld`] serves the reparent RPCs; [`auth`] and [`grpc_only`] guard
//! the gRPC port.
//!
//! Wiring (in `app.rs`): build one [`Reparenter`](crate::reparent::Reparenter)
//! shared with the recovery engine, a [`VtctldService`], bind a listener and
//! run [`serve_grpc`] until the process's shutdown token fires.

pub mod auth;
pub mod grpc_only;
pub mod http;
pub mod query;
pub mod vtctld;
pub mod vtorc_grpc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use self::query::ApiContext;
pub use self::vtctld::{NamedUnimplemented, SERVED_METHODS, SERVICE_NAME, VtctldError, VtctldService};
pub use self::vtorc_grpc::VtorcApi;

/// Why the gRPC server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not load our descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Reflection over our descriptors and the health service's, listing only
/// the services this server serves (not the tablet-side ones whose
/// descriptors we also compile).
fn reflection(with_vtorc: bool) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVICE_NAME)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    if with_vtorc {
        builder.with_service_name(vtorc_grpc::SERVICE_NAME)
    } else {
        builder
    }
}

/// Serves `vtctlservice.Vtctld`, `grpc.health.v1.Health` (reporting
/// SERVING for `""` and the Vtctld service until shutdown) and gRPC
/// reflection (v1 and v1alpha, over [`crate::proto::FILE_DESCRIPTOR_SET`]) on
/// `listener` until `shutdown` fires; in-flight calls are let finish.
pub async fn serve_grpc(
    listener: TcpListener,
    vtctld: VtctldService,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    serve_grpc_with(listener, vtctld, None, shutdown).await
}

/// [`serve_grpc`] plus, when given, the VTOrc API (`vtorc.v1.Vtorc`) on the
/// same port; its health status is NOT_SERVING until discovery is ready
/// (see [`vtorc_grpc::report_readiness`]).
pub async fn serve_grpc_with(
    listener: TcpListener,
    vtctld: VtctldService,
    vtorc: Option<VtorcApi>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    serve_grpc_tls(listener, vtctld, vtorc, None, shutdown).await
}

/// [`serve_grpc_with`] over TLS when `tls` is given (`--grpc-cert`,
/// `--grpc-key`; with `--grpc-ca` clients must present a certificate it
/// signed, checked against `--grpc-crl`). Certificate files replaced on
/// disk are used from the next connection on.
pub async fn serve_grpc_tls(
    listener: TcpListener,
    vtctld: VtctldService,
    vtorc: Option<VtorcApi>,
    tls: Option<crate::tls::ServerTls>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    serve_grpc_guarded(listener, vtctld, vtorc, tls, None, shutdown).await
}

/// [`serve_grpc_tls`] with an access policy (`--grpc-auth-mode`,
/// `--grpc-mutating-identities-file`; see [`auth`]) checked before every
/// call. The identities file is also looked at every second, so a bad edit
/// is logged at once.
pub async fn serve_grpc_guarded(
    listener: TcpListener,
    vtctld: VtctldService,
    vtorc: Option<VtorcApi>,
    tls: Option<crate::tls::ServerTls>,
    access: Option<std::sync::Arc<auth::GrpcAccess>>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let watch_identities = {
        let access = access.clone();
        async move {
            let Some(access) = access else {
                return std::future::pending::<std::convert::Infallible>().await;
            };
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                access.refresh();
            }
        }
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let readiness = vtorc_grpc::report_readiness(
        vtorc.as_ref().map(|v| v.context().discovery.clone()),
        health.clone(),
        shutdown.clone(),
    );
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection_v1 = reflection(vtorc.is_some()).build_v1()?;
    let reflection_v1alpha = reflection(vtorc.is_some()).build_v1alpha()?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "grpc server listening");
    }
    let stopping = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        async move {
            shutdown.cancelled().await;
            health.set_service_status("", ServingStatus::NotServing).await;
            health
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
            tracing::info!("grpc server stopping");
        }
    };
    if access.is_some() {
        tracing::info!("grpc access policy on (--grpc-auth-mode / --grpc-mutating-identities-file)");
    }
    let router = tonic::transport::Server::builder()
        .layer(grpc_only::GrpcOnlyLayer)
        .layer(auth::GrpcAccessLayer { access })
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(vtctld.into_server())
        .add_optional_service(vtorc.map(VtorcApi::into_server));
    let server: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match tls {
        Some(tls) => {
            tracing::info!(
                client_certificates = tls.requires_client_certificates(),
                "grpc server uses TLS"
            );
            Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), stopping))
        }
        None => {
            // TCP_NODELAY, as Go servers (vtctld, Go VTOrc) set on every
            // accepted connection: without it a response's frames written
            // apart wait for the client's delayed ACK (about 40 ms).
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, stopping))
        }
    };
    tokio::select! {
        served = server => served?,
        never = readiness => match never {},
        never = watch_identities => match never {},
    }
    Ok(())
}
