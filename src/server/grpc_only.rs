//! Checks in front of every call on the gRPC port, as tower layers: a
//! [`RequestGate`] either lets a request through to the services or
//! answers it at once ([`Gated`] is the one tower service that does that).
//!
//! [`GrpcOnlyLayer`]: requests that are not gRPC get the status gRPC over
//! HTTP/2 prescribes for them: 415 Unsupported Media Type when the
//! content-type does not start with `application/grpc` (tonic would
//! otherwise try to decode them as gRPC frames). The access policy
//! ([`super::auth::GrpcAccessLayer`]) is the other gate.

use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use futures::future::Either;

/// A check before a call: `None` lets `req` through, `Some` is the answer
/// it gets instead.
pub trait RequestGate {
    /// The answer that refuses `req`, if it is refused.
    fn refuse<B>(&self, req: &Request<B>) -> Option<Response<tonic::body::Body>>;
}

/// `inner` behind `gate`.
#[derive(Clone, Debug)]
pub struct Gated<G, S> {
    /// The check.
    gate: G,
    /// The services behind it.
    inner: S,
}

impl<G, S> Gated<G, S> {
    /// `inner` behind `gate`.
    pub fn new(gate: G, inner: S) -> Self {
        Gated { gate, inner }
    }
}

impl<G, S, B> tower::Service<Request<B>> for Gated<G, S>
where
    G: RequestGate,
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.gate.refuse(&req) {
            None => Either::Left(self.inner.call(req)),
            Some(answer) => Either::Right(std::future::ready(Ok(answer))),
        }
    }
}

/// The layer that answers 415 to requests that are not gRPC (see the
/// module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcOnlyLayer;

impl<S> tower::Layer<S> for GrpcOnlyLayer {
    type Service = Gated<GrpcOnlyLayer, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated::new(*self, inner)
    }
}

impl RequestGate for GrpcOnlyLayer {
    fn refuse<B>(&self, req: &Request<B>) -> Option<Response<tonic::body::Body>> {
        if is_grpc(req.headers()) {
            return None;
        }
        let mut response = Response::new(tonic::body::Body::empty());
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        response
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/grpc"));
        Some(response)
    }
}

/// Whether a request's content-type is gRPC's.
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn a_request_that_is_not_grpc_gets_415_and_grpc_goes_through() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let svc = GrpcOnlyLayer.layer(inner);
        let plain = Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .expect("request");
        let r = svc.clone().oneshot(plain).await.expect("infallible");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let none = Request::builder().body(()).expect("request");
        assert_eq!(
            svc.clone().oneshot(none).await.expect("infallible").status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let grpc = Request::builder()
            .header(header::CONTENT_TYPE, "application/grpc+proto")
            .body(())
            .expect("request");
        assert_eq!(
            svc.oneshot(grpc).await.expect("infallible").status(),
            StatusCode::OK
        );
    }
}
