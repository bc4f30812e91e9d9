//! The middleware around every HTTP request, refused ones and unknown routes included: it runs
//! the request in its span (request id from the `X-Request-Id` header or new, returned in the
//! response), counts it by method, route template and status and times it. And `GET /metrics`.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::HttpState;
use crate::observe::metrics::{Endpoint, HttpRoute, Outcome, CONTENT_TYPE};
use crate::observe::{call_span, request_id, Call, REQUEST_ID};

pub async fn observe(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let route = HttpRoute {
        method: method_label(request.method()).to_owned(),
        // Added with `Router::layer`, this runs after routing: the template that matched is
        // known. Unknown paths share one label.
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str)
            .to_owned(),
    };
    let request_id = request_id(request.headers());
    let span = call_span(
        "http",
        &format!("{} {}", route.method, route.route),
        &request_id,
    );
    let call = Call::start(state.metrics.clone(), Endpoint::Http(route), span.clone());
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID, request_id);
    call.finish(Outcome::Http(response.status().as_u16()));
    response
}

/// Standard methods by name; any other is `other`, so made-up methods add no label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `GET /metrics`: every metric, in OpenMetrics text (Prometheus reads it). Open to all, like
/// health: it holds counts and timings, no data.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses((status = 200, description = "Every metric, in OpenMetrics text",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
