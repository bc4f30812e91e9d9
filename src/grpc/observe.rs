//! The tower layer around every gRPC call, health, reflection and refused calls included: it
//! runs the call in its span (request id from the `x-request-id` metadata or new, returned in
//! the response metadata), counts it by method and status code and times it.
//!
//! A gRPC status travels in the response headers (an error answered at once, "trailers only")
//! or in the trailers after the messages; the response body is wrapped so the call ends when
//! its trailers go out.
//!
//! A call whose client went away is CANCELLED, whatever tonic then makes of it: the request
//! body is wrapped too, and a call whose body broke off (the client reset the stream or dropped
//! the connection) and did not succeed counts as cancelled, not as the UNKNOWN or INTERNAL
//! status tonic derives from the broken stream.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tracing::Instrument;

use crate::observe::metrics::{Endpoint, GrpcMethod, Metrics, Outcome};
use crate::observe::{call_span, request_id, Call, REQUEST_ID};

/// Wraps the gRPC server's routes in [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    methods: Arc<KnownMethods>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ObserveLayer {
            metrics,
            methods: Arc::new(KnownMethods::served()),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    methods: Arc<KnownMethods>,
}

impl<S, ResBody> tower::Service<Request<tonic::body::Body>> for Observe<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let endpoint = Endpoint::Grpc(self.methods.method(request.uri().path()));
        let deadline = grpc_timeout(request.headers()).map(|timeout| Instant::now() + timeout);
        let request_id = request_id(request.headers());
        let span = call_span("grpc", request.uri().path(), &request_id);
        let broke_off = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| {
            tonic::body::Body::new(WatchedBody {
                inner,
                broke_off: broke_off.clone(),
            })
        });
        let call = GrpcCall {
            call: Some(Call::start(self.metrics.clone(), endpoint, span.clone())),
            deadline,
            broke_off,
        };
        // Interceptors run here, in the call's span, as well as the handlers below.
        let response = span.in_scope(|| self.inner.call(request));
        let future = async move {
            let mut response = response.await?;
            response.headers_mut().insert(REQUEST_ID, request_id);
            let call = match grpc_status(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| ObservedBody { inner, call }))
        };
        Box::pin(future.instrument(span))
    }
}

/// A gRPC call until its status: dropped before, it was cancelled, or cut off by its deadline
/// (tonic then drops the work).
struct GrpcCall {
    call: Option<Call>,
    deadline: Option<Instant>,
    /// Set when the request body broke off: the client went away.
    broke_off: Arc<AtomicBool>,
}

impl GrpcCall {
    fn finish(mut self, code: i32) {
        if let Some(call) = self.call.take() {
            let client_gone =
                code != tonic::Code::Ok as i32 && self.broke_off.load(Ordering::Relaxed);
            call.finish(match client_gone {
                true => Outcome::Cancelled,
                false => Outcome::Grpc(code),
            });
        }
    }
}

/// A request body that notes when it breaks off with an error.
struct WatchedBody {
    inner: tonic::body::Body,
    broke_off: Arc<AtomicBool>,
}

impl Body for WatchedBody {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = <tonic::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.broke_off.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let outcome = match self.deadline {
                Some(deadline) if Instant::now() >= deadline => {
                    Outcome::Grpc(tonic::Code::DeadlineExceeded as i32)
                }
                _ => Outcome::Cancelled,
            };
            call.finish(outcome);
        }
    }
}

/// A response body that ends its call when the trailers (with `grpc-status`) go out.
pub struct ObservedBody<B> {
    inner: B,
    call: Option<GrpcCall>,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(end) = &polled {
            let code = match end {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|trailers| grpc_status(trailers).unwrap_or(tonic::Code::Unknown as i32)),
                Some(Err(_)) => Some(tonic::Code::Internal as i32),
                None => Some(tonic::Code::Unknown as i32),
            };
            if let Some(code) = code {
                if let Some(call) = this.call.take() {
                    call.finish(code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The `grpc-timeout` header: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
/// Written here because tonic parses it only inside its server, with no public function.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The paths (`/package.Service/Method`) of the methods in these encoded descriptor sets that
/// `keep` keeps.
pub(super) fn method_paths(
    sets: &[&[u8]],
    keep: impl Fn(&prost_types::MethodDescriptorProto) -> bool,
) -> HashSet<String> {
    let mut paths = HashSet::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(*set)
            .expect("the descriptor sets compiled in are valid");
        for file in set.file {
            for service in &file.service {
                let name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in service.method.iter().filter(|method| keep(method)) {
                    paths.insert(format!("/{name}/{}", method.name()));
                }
            }
        }
    }
    paths
}

/// The method paths the server answers (`/operations_manager.v1.JobService/StartJob`), so a
/// client calling made-up paths cannot grow the metrics without bound.
struct KnownMethods(HashSet<String>);

impl KnownMethods {
    fn served() -> Self {
        Self::from_descriptor_sets(&[
            super::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ])
    }

    fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        KnownMethods(method_paths(sets, |_| true))
    }

    fn method(&self, path: &str) -> GrpcMethod {
        match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if self.0.contains(path) => GrpcMethod {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            _ => GrpcMethod {
                service: "unknown".to_owned(),
                method: "unknown".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_named_and_others_are_unknown() {
        let methods = KnownMethods::served();
        let start = methods.method("/operations_manager.v1.JobService/StartJob");
        assert_eq!(start.service, "operations_manager.v1.JobService");
        assert_eq!(start.method, "StartJob");
        assert_eq!(
            methods.method("/grpc.health.v1.Health/Check").method,
            "Check"
        );
        assert_eq!(
            methods
                .method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
                .method,
            "ServerReflectionInfo"
        );
        for path in ["/operations_manager.v1.JobService/Nope", "/x/y", "/", ""] {
            assert_eq!(methods.method(path).service, "unknown", "{path}");
        }
    }

    #[test]
    fn grpc_timeouts_parse_by_unit() {
        let timeout = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("123456789S"), None);
        assert_eq!(timeout("S"), None);
        assert_eq!(timeout("5x"), None);
    }
}
