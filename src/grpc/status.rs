//! Domain errors as gRPC statuses: the one table for this front door.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::domain::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let error = error.bounded();
        match error {
            Error::InvalidArgument { ref violations } => {
                let details = ErrorDetails::with_bad_request(
                    violations
                        .iter()
                        .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
            }
            Error::NotFound(message) => Status::not_found(message),
            Error::AlreadyExists(message) => Status::already_exists(message),
            Error::FailedPrecondition { message, problems } => {
                let details = ErrorDetails::with_precondition_failure(
                    problems
                        .into_iter()
                        .map(|p| PreconditionViolation::new("TASK_GRAPH", p.subject, p.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::IdempotencyConflict(message) => Status::failed_precondition(message),
            Error::Unauthenticated(message) => Status::unauthenticated(message),
            Error::PermissionDenied(message) => Status::permission_denied(message),
            Error::Unavailable(message) => Status::unavailable(message),
            Error::DeadlineExceeded(message) => Status::deadline_exceeded(message),
            Error::ResourceExhausted(message) => Status::resource_exhausted(message),
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_carry_bad_request_field_violations() {
        let status = Status::from(Error::invalid(
            "options.groups[1]",
            "must be 24 lowercase hex characters",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("bad request detail");
        assert_eq!(bad_request.field_violations[0].field, "options.groups[1]");
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let status = Status::from(Error::internal(anyhow::anyhow!(
            "syntax error at or near \"selec\""
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn the_remaining_codes_follow_the_table() {
        assert_eq!(
            Status::from(Error::workflow_not_found("x")).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(Error::AlreadyExists("x".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            Status::from(Error::Unavailable("x".into())).code(),
            Code::Unavailable
        );
        let status = Status::from(Error::FailedPrecondition {
            message: "m".into(),
            problems: vec![],
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
}
