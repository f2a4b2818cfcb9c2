//! Network servers: the gRPC server on `--grpc-port` (the vtctld-compatible
//! `vtctlservice.Vtctld`, the standard health service, reflection).
//!
//! Wiring (in `app.rs`): build one [`Reparenter`](crate::reparent::Reparenter)
//! shared with the recovery engine, a [`VtctldService`], bind a listener and
//! run [`serve_grpc`] until the process's shutdown token fires.

pub mod vtctld;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use self::vtctld::{NamedUnimplemented, SERVED_METHODS, SERVICE_NAME, VtctldError, VtctldService};

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

/// Serves `vtctlservice.Vtctld`, `grpc.health.v1.Health` (reporting
/// SERVING for `""` and the Vtctld service until shutdown) and gRPC
/// reflection (v1 and v1alpha, over [`crate::proto::FILE_DESCRIPTOR_SET`]) on
/// `listener` until `shutdown` fires; in-flight calls are let finish.
pub async fn serve_grpc(
    listener: TcpListener,
    vtctld: VtctldService,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
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
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(vtctld.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
        .await?;
    Ok(())
}
