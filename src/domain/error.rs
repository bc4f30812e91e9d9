//! The one error type of the service and its one code table. Each front door maps it once
//! (`grpc::status`, `http::error`) by that table, so the meaning of a failure cannot drift
//! between protocols.

use std::fmt;

/// One bad field of a request, named by its path (`options.groups[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.description)
        } else {
            write!(f, "{}: {}", self.field, self.description)
        }
    }
}

/// One reason why a stored item cannot be used as asked (a task graph that cannot run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What the problem is about, e.g. `tasks.workflow_end` or `transitions.1a2b.ffff`.
    pub subject: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every bad field is listed.
    #[error("{}", summarize(violations))]
    InvalidArgument { violations: Vec<FieldViolation> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but what it refers to is not in a state to serve it.
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        problems: Vec<Problem>,
    },
    /// An idempotency key reused for a different request.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// No valid credentials; the message says what is wrong with them.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The work did not finish in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Too much work in flight; retrying later may succeed.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency (the database) cannot be reached; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the service. The cause is logged, never shown to the caller.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Kinds of failure: the rows of the one table both front doors answer by ([`Code::grpc`],
/// [`Code::http_status`]), so the meaning of a failure cannot drift between protocols. Named as
/// in `google/rpc/code.proto`, but for [`Code::IdempotencyConflict`], a kind of
/// FAILED_PRECONDITION that the REST routes answer with 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    IdempotencyConflict,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    ResourceExhausted,
    Internal,
}

/// A gRPC status code, numbered as in `google/rpc/code.proto`: the gRPC column of the table,
/// without tonic (`grpc::status` turns the number into tonic's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// Every row of the table.
    pub const ALL: [Code; 11] = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::IdempotencyConflict,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::ResourceExhausted,
        Code::Internal,
    ];

    /// The table: each kind of failure with its gRPC code and its HTTP status (that of
    /// `google/rpc/code.proto`'s mapping, but for the REST routes' 422 for a reused
    /// idempotency key).
    const fn row(self) -> (GrpcCode, u16) {
        match self {
            Code::InvalidArgument => (GrpcCode::InvalidArgument, 400),
            Code::NotFound => (GrpcCode::NotFound, 404),
            Code::AlreadyExists => (GrpcCode::AlreadyExists, 409),
            Code::FailedPrecondition => (GrpcCode::FailedPrecondition, 400),
            Code::IdempotencyConflict => (GrpcCode::FailedPrecondition, 422),
            Code::Unauthenticated => (GrpcCode::Unauthenticated, 401),
            Code::PermissionDenied => (GrpcCode::PermissionDenied, 403),
            Code::Unavailable => (GrpcCode::Unavailable, 503),
            Code::DeadlineExceeded => (GrpcCode::DeadlineExceeded, 504),
            Code::ResourceExhausted => (GrpcCode::ResourceExhausted, 429),
            Code::Internal => (GrpcCode::Internal, 500),
        }
    }

    /// The gRPC status code.
    pub const fn grpc(self) -> GrpcCode {
        self.row().0
    }

    /// The HTTP status.
    pub const fn http_status(self) -> u16 {
        self.row().1
    }
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::IdempotencyConflict(_) => Code::IdempotencyConflict,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument {
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    pub fn workflow_not_found(name: &str) -> Self {
        Error::NotFound(format!("Cannot find workflow {name}"))
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Error::Internal(error.into())
    }

    /// The error as it may be shown to a caller: at most [`MAX_LISTED`] violations or problems
    /// (a last entry says how many more there were), and every text cut to [`MAX_TEXT`]
    /// characters. Errors repeat what the caller sent (a name, a path, a key); unbounded, a
    /// 1 MiB name or 60,000 bad transitions make answers of megabytes that standard gRPC
    /// clients refuse to read, so they would never see the real error.
    pub fn bounded(self) -> Self {
        match self {
            Error::InvalidArgument { violations } => Error::InvalidArgument {
                violations: bound_list(
                    violations,
                    |v| &mut v.field,
                    |v| &mut v.description,
                    |more| FieldViolation::new("", more),
                ),
            },
            Error::FailedPrecondition { message, problems } => Error::FailedPrecondition {
                message: truncate(message),
                problems: bound_list(
                    problems,
                    |p| &mut p.subject,
                    |p| &mut p.description,
                    |more| Problem {
                        subject: String::new(),
                        description: more,
                    },
                ),
            },
            Error::NotFound(m) => Error::NotFound(truncate(m)),
            Error::AlreadyExists(m) => Error::AlreadyExists(truncate(m)),
            Error::IdempotencyConflict(m) => Error::IdempotencyConflict(truncate(m)),
            Error::Unauthenticated(m) => Error::Unauthenticated(truncate(m)),
            Error::PermissionDenied(m) => Error::PermissionDenied(truncate(m)),
            Error::DeadlineExceeded(m) => Error::DeadlineExceeded(truncate(m)),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(truncate(m)),
            Error::Unavailable(m) => Error::Unavailable(truncate(m)),
            internal @ Error::Internal(_) => internal,
        }
    }
}

/// Most violations or problems one error lists.
pub const MAX_LISTED: usize = 20;
/// Most characters of one text in an error (a message, a field path, a description).
pub const MAX_TEXT: usize = 300;

/// `text` cut to [`MAX_TEXT`] characters, with `...` when cut.
pub fn truncate(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_TEXT) {
        text.truncate(at);
        text.push_str("...");
    }
    text
}

/// The first [`MAX_LISTED`] items with their texts cut, then one made by `more` saying how many
/// were left out.
fn bound_list<T>(
    mut items: Vec<T>,
    first: impl Fn(&mut T) -> &mut String,
    second: impl Fn(&mut T) -> &mut String,
    more: impl FnOnce(String) -> T,
) -> Vec<T> {
    let left_out = items.len().saturating_sub(MAX_LISTED);
    items.truncate(MAX_LISTED);
    for item in &mut items {
        let text = first(item);
        *text = truncate(std::mem::take(text));
        let text = second(item);
        *text = truncate(std::mem::take(text));
    }
    if left_out > 0 {
        items.push(more(format!(
            "and {left_out} more problem{} not listed",
            if left_out == 1 { "" } else { "s" }
        )));
    }
    items
}

fn summarize(violations: &[FieldViolation]) -> String {
    match violations {
        [] => "invalid request".to_owned(),
        [only] => format!("invalid request: {only}"),
        [first, rest @ ..] => format!(
            "invalid request: {first} (and {} more problem{})",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

/// Collects field violations while a request is parsed, so that one answer lists them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was pushed, else the violations as INVALID_ARGUMENT.
    pub fn into_result<T>(self, value: T) -> Result<T, Error> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument { violations: self.0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_message_names_the_first_field_and_counts_the_rest() {
        let mut v = Violations::default();
        v.push("options.groups[0]", "must be 24 lowercase hex characters");
        v.push("options.groups[1]", "must be 24 lowercase hex characters");
        let err = v.into_result(()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request: options.groups[0]: must be 24 lowercase hex characters (and 1 more problem)"
        );
    }

    #[test]
    fn bounded_errors_list_twenty_problems_and_cut_long_texts() {
        let mut v = Violations::default();
        v.push("transitions.t0", "x".repeat(1 << 20));
        for i in 1..60_000 {
            v.push(format!("transitions.t{i}"), "leads nowhere");
        }
        let Error::InvalidArgument { violations } = v.into_result(()).unwrap_err().bounded() else {
            panic!("still invalid argument")
        };
        assert_eq!(violations.len(), MAX_LISTED + 1);
        assert!(violations[0].description.len() <= MAX_TEXT + 3);
        assert_eq!(
            violations[MAX_LISTED].description,
            "and 59980 more problems not listed"
        );
        let long = Error::workflow_not_found(&"n".repeat(1 << 20)).bounded();
        assert!(
            long.to_string().len() <= MAX_TEXT + 3,
            "{}",
            long.to_string().len()
        );
        assert!(long.to_string().starts_with("Cannot find workflow nnn"));
    }

    #[test]
    fn every_error_answers_by_its_row_of_the_one_table() {
        // One error of each variant, with the gRPC code (its number in google/rpc/code.proto)
        // and the HTTP status it is answered with.
        let table = [
            (Error::invalid("options", "is required"), 3, 400),
            (Error::workflow_not_found("x"), 5, 404),
            (Error::AlreadyExists("x".into()), 6, 409),
            (
                Error::FailedPrecondition {
                    message: "m".into(),
                    problems: vec![],
                },
                9,
                400,
            ),
            (Error::IdempotencyConflict("x".into()), 9, 422),
            (Error::Unauthenticated("x".into()), 16, 401),
            (Error::PermissionDenied("x".into()), 7, 403),
            (Error::Unavailable("x".into()), 14, 503),
            (Error::DeadlineExceeded("x".into()), 4, 504),
            (Error::ResourceExhausted("x".into()), 8, 429),
            (Error::internal(anyhow::anyhow!("boom")), 13, 500),
        ];
        let mut variants = Vec::new();
        let mut rows = Vec::new();
        for (error, grpc, http) in table {
            // Exhaustive: a new variant does not compile until it has a line above.
            variants.push(match &error {
                Error::InvalidArgument { .. } => 0,
                Error::NotFound(_) => 1,
                Error::AlreadyExists(_) => 2,
                Error::FailedPrecondition { .. } => 3,
                Error::IdempotencyConflict(_) => 4,
                Error::Unauthenticated(_) => 5,
                Error::PermissionDenied(_) => 6,
                Error::Unavailable(_) => 7,
                Error::DeadlineExceeded(_) => 8,
                Error::ResourceExhausted(_) => 9,
                Error::Internal(_) => 10,
            });
            let code = error.code();
            assert_eq!(
                (code.grpc() as i32, code.http_status()),
                (grpc, http),
                "{code:?}"
            );
            rows.push(code);
        }
        assert_eq!(variants, (0..11).collect::<Vec<_>>(), "each variant once");
        assert_eq!(rows, Code::ALL, "each row once");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = Error::internal(anyhow::anyhow!("relation \"jobs\" does not exist"));
        assert_eq!(err.to_string(), "internal error");
    }
}
