//! The gRPC front door: generated code, thin adapters, proto <-> domain conversions. Generated
//! `pb` types never leave this module.

mod answer;
pub mod codec;
mod convert;
mod jobs;
mod observe;
mod status;
mod tasks;
mod unary;
mod workers;
mod workflows;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use crate::auth::Verifier;
use crate::domain::{Caller, Error};
use crate::engine::Engine;
use crate::observe::metrics::Metrics;
use crate::service::Service;
use answer::EncodedGraphs;

/// Code generated from `proto/operations_manager/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("operations_manager.v1");
}

/// The servers generated on `pb`'s messages, with StartJob answered by [`answer::StartJobAnswer`].
mod servers {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/servers/operations_manager.v1.rs"
    ));
}

/// The encoded descriptor set of our protos (and the well-known types they import), for
/// server reflection and for the strict codec.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/operations_manager_descriptor.bin"
));

/// JSON <-> `google.protobuf.Struct`/`Value`, as the service converts them (whole numbers come
/// back as integers), for clients written in Rust.
pub use convert::{json_to_proto, map_to_struct, proto_to_json, struct_to_map};
pub use observe::ObserveLayer;
pub use pb::job_service_client::JobServiceClient;
pub use pb::task_service_client::TaskServiceClient;
pub use pb::worker_service_client::WorkerServiceClient;
pub use pb::workflow_service_client::WorkflowServiceClient;
pub use servers::job_service_server::JobServiceServer;
pub use servers::task_service_server::TaskServiceServer;
pub use servers::worker_service_server::WorkerServiceServer;
pub use servers::workflow_service_server::WorkflowServiceServer;

/// What every adapter holds: the use cases, the engine that runs jobs, and the metrics they
/// add to.
#[derive(Clone)]
pub struct GrpcApi {
    service: Arc<Service>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    /// The task graphs of started jobs, encoded once each for StartJob's answers.
    graphs: Arc<EncodedGraphs>,
}

/// Memory for encoded task graphs: an encoded graph is about the size of its JSON (a 10-task
/// graph takes 7 KB), and the graphs in use are those of the workflows jobs are started from.
const ENCODED_GRAPH_BYTES: u64 = 16 << 20;

/// The messages of a server-streaming method, as tonic sends them.
pub type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// What the engine streams (PollTasks' tasks, WatchJob's events) as a method's messages. An
/// error ends the call with its status; the engine stops when the client goes away and the
/// receiver is dropped with the call.
fn stream_of<D, P>(items: mpsc::Receiver<Result<D, Error>>) -> Streamed<P>
where
    D: Send + 'static,
    P: From<D> + Send + 'static,
{
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(items)
            .map(|item| item.map(P::from).map_err(tonic::Status::from)),
    )
}

impl GrpcApi {
    pub fn new(service: Arc<Service>, engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        GrpcApi {
            service,
            engine,
            metrics,
            graphs: Arc::new(EncodedGraphs::new(ENCODED_GRAPH_BYTES)),
        }
    }

    /// The identity a call acts for, put there by [`Authenticate`].
    fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("missing credentials"))
    }
}

/// Checks the bearer token of every call to our services and hands the caller to the adapters
/// (in the request's extensions). Health and reflection are not wrapped: they are open to all.
///
/// A tower layer rather than tonic's interceptor: an interceptor cannot wait, and checking a
/// token may wait for the identity provider's key set to be fetched again (a key it has just
/// published).
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for Authenticate<S>
where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        // The ready service answers this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let header = request.headers().get(axum::http::header::AUTHORIZATION);
            let checked = match header.map(|value| value.to_str()) {
                Some(Err(_)) => Err(tonic::Status::unauthenticated(
                    "malformed authorization: not ASCII",
                )),
                Some(Ok(value)) => verifier.verify(Some(value)).await.map_err(Into::into),
                None => verifier.verify(None).await.map_err(Into::into),
            };
            match checked {
                Ok(caller) => {
                    crate::observe::record_caller(&caller);
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl<S> Authenticate<S> {
    fn new(inner: S, verifier: Arc<Verifier>) -> Self {
        Authenticate { inner, verifier }
    }
}

/// The router with our services, health and reflection (v1 and v1alpha, so every grpcurl
/// version works). Unary and server-streaming methods must send their one request message
/// within `request_body_timeout` (see `unary`); the token is checked first, so a caller without
/// one is refused before its message is read.
pub fn router(
    service: Arc<Service>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    verifier: Arc<Verifier>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    request_body_timeout: Duration,
) -> anyhow::Result<tonic::service::Routes> {
    let api = GrpcApi::new(service, engine, metrics);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(unary::UnaryCalls::new(health, request_body_timeout))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(Authenticate::new(
            unary::UnaryCalls::new(JobServiceServer::new(api.clone()), request_body_timeout),
            verifier.clone(),
        ))
        .add_service(Authenticate::new(
            unary::UnaryCalls::new(TaskServiceServer::new(api.clone()), request_body_timeout),
            verifier.clone(),
        ))
        .add_service(Authenticate::new(
            unary::UnaryCalls::new(
                WorkflowServiceServer::new(api.clone()),
                request_body_timeout,
            ),
            verifier.clone(),
        ))
        .add_service(Authenticate::new(
            unary::UnaryCalls::new(WorkerServiceServer::new(api), request_body_timeout),
            verifier,
        ));
    Ok(routes.routes())
}

/// tonic answers a request over the message size limit with OUT_OF_RANGE; the gRPC convention,
/// and our contract, is RESOURCE_EXHAUSTED. Rewrites that one answer on its way out.
pub fn oversize_is_resource_exhausted<B>(
    mut response: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let headers = response.headers();
    let oversize = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if oversize {
        response
            .headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    response
}

/// A StartJob request as gRPC bytes, decoded strictly, converted and parsed as the front door
/// does (for fuzzing); None when the bytes are not a StartJobRequest.
pub fn parse_start_request(
    bytes: &[u8],
) -> Option<Result<crate::domain::StartJob, crate::domain::Error>> {
    let request =
        codec::decode_strict::<pb::StartJobRequest>(prost::bytes::Bytes::copy_from_slice(bytes))
            .ok()?;
    Some(crate::domain::RawStartJob::try_from(request).and_then(crate::domain::StartJob::parse))
}

/// A job as its gRPC message (for fuzzing: the conversion must take every job).
pub fn job_message(job: crate::domain::Job) -> impl prost::Message {
    pb::Job::from(job)
}
