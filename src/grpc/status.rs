//! Domain errors as gRPC statuses: the code by the one table (`domain::error::Code`), the
//! message, and the details a variant carries.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::domain::{Error, GrpcCode};

impl From<GrpcCode> for Code {
    fn from(code: GrpcCode) -> Self {
        Code::from_i32(code as i32)
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let error = error.bounded();
        let code = Code::from(error.code().grpc());
        let message = error.to_string();
        match error {
            Error::InvalidArgument { violations } => {
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(code, message, details)
            }
            Error::FailedPrecondition { problems, .. } => {
                let details = ErrorDetails::with_precondition_failure(
                    problems
                        .into_iter()
                        .map(|p| PreconditionViolation::new("TASK_GRAPH", p.subject, p.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(code, message, details)
            }
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Status::new(code, message)
            }
            _ => Status::new(code, message),
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
    fn the_grpc_column_numbers_the_codes_tonic_names_alike() {
        for row in crate::domain::Code::ALL {
            let code = row.grpc();
            assert_eq!(format!("{:?}", Code::from(code)), format!("{code:?}"));
        }
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
