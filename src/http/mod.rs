//! The JSON gateway: the Operations Manager and Automation Studio REST routes, byte for byte in
//! field names and envelopes, over the same service layer as gRPC.

mod answer;
mod control;
mod error;
mod extract;
mod health;
mod jobs;
mod observe;
pub mod openapi;
pub mod rest;
mod tasks;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

pub use error::ApiError;

use answer::JsonGraphs;

use crate::auth::Verifier;
use crate::engine::Engine;
use crate::observe::metrics::Metrics;
use crate::service::Service;

/// Largest request body: 4 MiB, as for gRPC messages.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct HttpState {
    service: Arc<Service>,
    engine: Arc<Engine>,
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
    /// Task graphs serialized once, for StartJob's answers.
    graphs: Arc<JsonGraphs>,
}

/// Memory for serialized task graphs: a graph's JSON is about 7 KB for 10 tasks, and the
/// graphs in use are those of the workflows jobs are started from.
const JSON_GRAPH_BYTES: u64 = 16 << 20;

pub fn router(
    service: Arc<Service>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    verifier: Arc<Verifier>,
    request_timeout: Duration,
) -> Router {
    let state = HttpState {
        service,
        engine,
        verifier,
        metrics,
        graphs: Arc::new(JsonGraphs::new(JSON_GRAPH_BYTES)),
    };
    Router::new()
        .route("/operations-manager/jobs/start", post(jobs::start_job))
        .route("/operations-manager/jobs/{id}", get(jobs::get_job))
        .route("/operations-manager/jobs", get(jobs::list_jobs))
        .route(
            "/operations-manager/jobs/cancel",
            post(control::cancel_jobs),
        )
        .route("/operations-manager/jobs/pause", post(control::pause_jobs))
        .route(
            "/operations-manager/jobs/resume",
            post(control::resume_jobs),
        )
        .route(
            "/operations-manager/jobs/{jobId}/tasks/{taskId}/finish",
            post(control::finish_task),
        )
        .route(
            "/operations-manager/jobs/{jobId}/tasks/{taskId}/retry",
            post(control::retry_task),
        )
        .route(
            "/operations-manager/jobs/{jobId}/tasks/{taskId}/manual-controller",
            get(tasks::manual_controller),
        )
        .route("/operations-manager/tasks", get(tasks::list_tasks))
        .route("/operations-manager/tasks/{taskId}", get(tasks::get_task))
        .route(
            "/operations-manager/tasks/{taskId}/claim",
            post(tasks::claim_task),
        )
        .route(
            "/operations-manager/tasks/{taskId}/assign",
            post(tasks::assign_task),
        )
        .route(
            "/operations-manager/tasks/{taskId}/release",
            post(tasks::release_task),
        )
        .route("/automation-studio/automations", post(workflows::create))
        .route(
            "/automation-studio/automations/import",
            post(workflows::import),
        )
        .route("/automation-studio/workflows", get(workflows::list))
        .route(
            "/automation-studio/workflows/detailed/{name}",
            get(workflows::get),
        )
        .route(
            "/workflow_builder/workflows/delete/{name}",
            delete(workflows::delete),
        )
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(observe::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| within(request_timeout, request, next),
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Outermost, so that every answer counts, refusals and timeouts included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// Runs the request, or answers 504 with the envelope when it takes longer than `timeout`; the
/// handler's future is dropped then, which rolls back its transaction.
async fn within(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request took longer than {timeout:?} and was cancelled"),
        )
        .into_response(),
    }
}

/// Parses a StartJob HTTP body as the gateway does (for fuzzing).
pub fn parse_start_body(bytes: &[u8]) -> Result<crate::domain::StartJob, crate::domain::Error> {
    use crate::domain::json::{parse_bounded, BoundedJsonError};
    let body = parse_bounded(bytes).map_err(|error| match error {
        BoundedJsonError::Syntax(e) => {
            crate::domain::Error::invalid("", format!("the body is not valid JSON: {e}"))
        }
        BoundedJsonError::Bounds(violation) => crate::domain::Error::InvalidArgument {
            violations: vec![violation],
        },
    })?;
    jobs::parse_start(body)
}

/// Query parameters as (name, value) pairs, decoded, in order.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
