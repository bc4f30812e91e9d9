//! Liveness and readiness, open to all.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::rest::HealthStatus;
use super::HttpState;

/// `GET /health/live`
#[utoipa::path(get, path = "/health/live", operation_id = "live", tag = "health",
    responses((status = 200, description = "The process is serving", body = super::rest::HealthStatus)))]
pub async fn live() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "live",
        reason: None,
    })
}

/// `GET /health/ready`
#[utoipa::path(get, path = "/health/ready", operation_id = "ready", tag = "health",
    responses(
        (status = 200, description = "The database answers and takes writes", body = super::rest::HealthStatus),
        (status = 503, description = "Shutting down, or the database does not answer or take writes (the reason says which)", body = super::rest::HealthStatus),
    ))]
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<HealthStatus>) {
    match state.service.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthStatus {
                status: "ready",
                reason: None,
            }),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthStatus {
                status: "not ready",
                reason: Some(reason),
            }),
        ),
    }
}
