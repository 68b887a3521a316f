//! A deadline on every client request, from its headers to its answer:
//! the client's `grpc-timeout`, or `--request-timeout-ms` when it sets
//! none. It covers reading the request's body too, so a client that sends
//! its body slowly, or stalls half-way, releases what it holds (its
//! admission, its buffers) when its deadline passes.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tonic::body::Body;

use crate::cluster::deadline::parse_grpc_timeout;

/// Holds each request to its deadline.
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadlineLayer {
    /// `--request-timeout-ms`.
    default: Duration,
}

impl RequestDeadlineLayer {
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> tower_layer::Layer<S> for RequestDeadlineLayer {
    type Service = RequestDeadline<S>;

    fn layer(&self, inner: S) -> RequestDeadline<S> {
        RequestDeadline {
            inner,
            default: self.default,
        }
    }
}

/// A service behind [`RequestDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct RequestDeadline<S> {
    inner: S,
    default: Duration,
}

impl<S, B> tower_service::Service<http::Request<B>> for RequestDeadline<S>
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
        let from_client = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = from_client.unwrap_or(self.default);
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok(past_deadline(deadline, from_client.is_some()).into_http()),
            }
        })
    }
}

/// The answer to a request its deadline cut short.
fn past_deadline(deadline: Duration, from_client: bool) -> tonic::Status {
    let whose = if from_client {
        "its grpc-timeout"
    } else {
        "--request-timeout-ms, as it set no grpc-timeout"
    };
    tonic::Status::deadline_exceeded(format!(
        "no answer within the request's deadline of {} ms ({whose}); a write may or may not have been applied",
        deadline.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_service::Service;

    use super::*;

    /// A service that answers after `delay`.
    #[derive(Clone)]
    struct Slow(Duration);

    impl tower_service::Service<http::Request<()>> for Slow {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let delay = self.0;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(Body::new("answer".to_string())))
            })
        }
    }

    fn header<'a>(response: &'a http::Response<Body>, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn request(grpc_timeout: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(timeout) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", timeout.parse().expect("ascii"));
        }
        request
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_ends_by_its_own_deadline_or_the_default() {
        let layer = RequestDeadlineLayer::new(Duration::from_secs(10));
        let mut slow = tower_layer::Layer::layer(&layer, Slow(Duration::from_secs(30)));
        let cut = slow.call(request(None)).await.expect("an answer");
        assert_eq!(header(&cut, "grpc-status"), "4", "DEADLINE_EXCEEDED");
        let message = header(&cut, "grpc-message");
        assert!(message.contains("request-timeout-ms"), "{message}");
        let cut = slow.call(request(Some("200m"))).await.expect("an answer");
        assert_eq!(header(&cut, "grpc-status"), "4");
        assert!(header(&cut, "grpc-message").contains("grpc-timeout"));
        // A client may ask for longer than the default.
        let answered = slow.call(request(Some("40S"))).await.expect("an answer");
        assert_eq!(header(&answered, "grpc-status"), "", "answered in time");
        let mut quick = tower_layer::Layer::layer(&layer, Slow(Duration::from_secs(1)));
        let answered = quick.call(request(None)).await.expect("an answer");
        assert_eq!(header(&answered, "grpc-status"), "");
    }
}
