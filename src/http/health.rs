//! Liveness and readiness, open to all.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::HttpState;

/// `GET /health/live`
#[utoipa::path(get, path = "/health/live", operation_id = "live", tag = "health",
    responses((status = 200, description = "The process is serving", body = super::openapi::HealthStatus)))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`
#[utoipa::path(get, path = "/health/ready", operation_id = "ready", tag = "health",
    responses(
        (status = 200, description = "The database answers and takes writes", body = super::openapi::HealthStatus),
        (status = 503, description = "Shutting down, or the database does not answer or take writes (the reason says which)", body = super::openapi::HealthStatus),
    ))]
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    match state.service.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        ),
    }
}
