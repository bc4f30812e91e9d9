//! The one error type of the service. Each front door maps it once (`grpc::status`), so the
//! meaning of a failure cannot drift between protocols.

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

/// Kinds of failure, named as in `google/rpc/code.proto`. Each front door maps them once: gRPC
/// to its status codes, HTTP by the standard table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    ResourceExhausted,
    Internal,
}

impl Code {
    /// The HTTP status of `google/rpc/code.proto`'s table.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::Internal => 500,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
        }
    }
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition { .. } | Error::IdempotencyConflict(_) => {
                Code::FailedPrecondition
            }
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
    fn internal_errors_hide_their_cause() {
        let err = Error::internal(anyhow::anyhow!("relation \"jobs\" does not exist"));
        assert_eq!(err.to_string(), "internal error");
    }
}
