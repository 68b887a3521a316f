//! Load shedding: a node serves at most `--max-concurrent-requests` client
//! requests at once, counted from their headers until the last byte of the
//! answer has gone out. A request past the limit is answered at once with
//! `RESOURCE_EXHAUSTED`, before its body is read, so a crowd of writers
//! costs the node the bytes of the requests it admitted, not of everyone
//! who asked; the refused retry, as gRPC clients do with that code.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

/// The node-wide admission of client requests.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    shed: Counter,
}

impl AdmissionLayer {
    pub fn new(limit: usize, shed: Counter) -> Self {
        let limit = limit.max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            shed,
        }
    }
}

impl<S> tower_layer::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind [`AdmissionLayer`].
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, B> tower_service::Service<http::Request<B>> for Admission<S>
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
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            self.layer.shed.inc();
            let status = tonic::Status::resource_exhausted(format!(
                "this node is serving {} requests, its limit (--max-concurrent-requests); retry with backoff, or through another node",
                self.layer.limit
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| {
                Body::new(HeldBody {
                    inner: body,
                    _permit: permit,
                })
            }))
        })
    }
}

/// A response body that holds its request's admission until it is sent or
/// dropped: an answer waiting on a slow reader still counts.
struct HeldBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for HeldBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_service::Service;

    use super::*;

    /// A service that answers once the gate lets it.
    #[derive(Clone)]
    struct Held(Arc<Semaphore>);

    impl tower_service::Service<http::Request<()>> for Held {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let gate = self.0.clone();
            Box::pin(async move {
                if let Ok(pass) = gate.acquire().await {
                    pass.forget();
                }
                // Not empty: an empty body is dropped at once, and with it
                // its admission.
                Ok(http::Response::new(Body::new("answer".to_string())))
            })
        }
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn past_the_limit_requests_are_refused_until_an_answer_is_gone() {
        let gate = Arc::new(Semaphore::new(0));
        let shed = Counter::default();
        let mut service =
            tower_layer::Layer::layer(&AdmissionLayer::new(2, shed.clone()), Held(gate.clone()));
        let first = tokio::spawn(service.call(http::Request::new(())));
        let second = tokio::spawn(service.call(http::Request::new(())));
        let refused = service
            .call(http::Request::new(()))
            .await
            .expect("an answer");
        assert_eq!(grpc_status(&refused), Some("8"), "RESOURCE_EXHAUSTED");
        let message = refused
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(message.contains("max-concurrent-requests"), "{message}");
        assert_eq!(shed.get(), 1);
        gate.add_permits(2);
        let answered = first.await.expect("task").expect("answer");
        second.await.expect("task").expect("answer");
        // The first answer's body still holds its admission: one more fits.
        let third = tokio::spawn(service.call(http::Request::new(())));
        let refused = service
            .call(http::Request::new(()))
            .await
            .expect("an answer");
        assert_eq!(grpc_status(&refused), Some("8"));
        drop(answered);
        gate.add_permits(1);
        third.await.expect("task").expect("answer");
        let fourth = service.call(http::Request::new(()));
        gate.add_permits(1);
        let fourth = fourth.await.expect("an answer");
        assert_eq!(grpc_status(&fourth), None, "admitted once answers are gone");
    }
}
