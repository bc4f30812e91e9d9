//! Errors as HTTP answers: the status by the one table (`domain::error::Code`), and the REST
//! envelope `{"message", "data": null, "metadata": {"errors": [{"field", "description"}]}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::rest::{ErrorEnvelope, ErrorMetadata, FieldError};
use crate::domain::{Error, FieldViolation};

/// An error answer of the gateway.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<FieldViolation>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: crate::domain::error::truncate(message.into()),
            errors: Vec::new(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let error = error.bounded();
        let status = StatusCode::from_u16(error.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let errors = match &error {
            Error::InvalidArgument { violations } => violations.clone(),
            Error::FailedPrecondition { problems, .. } => problems
                .iter()
                .map(|p| FieldViolation::new(p.subject.clone(), p.description.clone()))
                .collect(),
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Vec::new()
            }
            _ => Vec::new(),
        };
        ApiError {
            status,
            message: error.to_string(),
            errors,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors = self
            .errors
            .into_iter()
            .map(|v| FieldError {
                field: v.field,
                description: v.description,
            })
            .collect();
        let body = ErrorEnvelope {
            message: self.message,
            data: (),
            metadata: ErrorMetadata { errors },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_standard_table() {
        let cases = [
            (Error::invalid("options", "is required"), 400),
            (
                Error::FailedPrecondition {
                    message: "m".into(),
                    problems: vec![],
                },
                400,
            ),
            (Error::Unauthenticated("x".into()), 401),
            (Error::PermissionDenied("x".into()), 403),
            (Error::workflow_not_found("x"), 404),
            (Error::AlreadyExists("x".into()), 409),
            (Error::Unavailable("x".into()), 503),
            (Error::DeadlineExceeded("x".into()), 504),
            (Error::ResourceExhausted("x".into()), 429),
            (Error::IdempotencyConflict("x".into()), 422),
            (Error::internal(anyhow::anyhow!("boom")), 500),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }

    #[test]
    fn field_violations_go_in_metadata_errors() {
        let error = ApiError::from(Error::invalid(
            "options.groups[1]",
            "must be 24 lowercase hex characters",
        ));
        assert_eq!(error.errors[0].field, "options.groups[1]");
        assert_eq!(
            error.message,
            "invalid request: options.groups[1]: must be 24 lowercase hex characters"
        );
    }
}
