//! Liveness and readiness, open to all.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::HttpState;

/// `GET /health/live`
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is serving", body = super::openapi::HealthStatus)))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "The database answers", body = super::openapi::HealthStatus),
        (status = 503, description = "The database does not answer", body = super::openapi::HealthStatus),
    ))]
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    if state.service.ready().await {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "the database does not answer"})),
        )
    }
}
