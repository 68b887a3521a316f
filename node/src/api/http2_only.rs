//! gRPC runs over HTTP/2 only. A client that speaks HTTP/1.1 to the client
//! port (curl without `--http2-prior-knowledge`, a browser, a load
//! balancer's HTTP/1 health check) gets `505 HTTP Version Not Supported`
//! with a sentence saying so, instead of a bare TCP reset.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;

/// What an HTTP/1 client reads.
pub const HTTP1_REFUSAL: &str = "ringkv serves gRPC, which runs over HTTP/2 only; this request came over HTTP/1. Use a gRPC client (grpcurl, the ringkv CLI, or any gRPC library).\n";

/// Answers requests that did not come over HTTP/2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http2OnlyLayer;

impl<S> tower_layer::Layer<S> for Http2OnlyLayer {
    type Service = Http2Only<S>;

    fn layer(&self, inner: S) -> Http2Only<S> {
        Http2Only { inner }
    }
}

/// A service behind [`Http2OnlyLayer`].
#[derive(Clone, Debug)]
pub struct Http2Only<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Http2Only<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.version() == http::Version::HTTP_2 {
            return Box::pin(self.inner.call(request));
        }
        let mut refusal = http::Response::new(Body::new(HTTP1_REFUSAL.to_string()));
        *refusal.status_mut() = http::StatusCode::HTTP_VERSION_NOT_SUPPORTED;
        refusal.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Box::pin(async move { Ok(refusal) })
    }
}
