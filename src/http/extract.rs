//! Request extractors: the authenticated caller, path parameters and a JSON body, each failing
//! with the REST envelope (401, 400, 413, 415) rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::HttpState;
use crate::domain::{Caller, Error};

/// The caller named by the `Authorization: Bearer` header.
pub struct Authenticated(pub Caller);

impl FromRequestParts<HttpState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                Error::Unauthenticated("malformed authorization: not ASCII".into())
            })?),
        };
        let caller = state.verifier.verify(header).await?;
        crate::observe::record_caller(&caller);
        Ok(Authenticated(caller))
    }
}

/// The parameters of the route's path, as axum's `Path` reads them. A segment it cannot read
/// (not UTF-8 once percent-decoded, or not of the type asked for) is 400 with the envelope
/// naming the parameter, as any other bad field.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(parts, rejection).into()),
        }
    }
}

/// The error of a path axum could not read, naming the parameter.
fn path_rejection(parts: &Parts, rejection: PathRejection) -> Error {
    let PathRejection::FailedToDeserializePathParams(failed) = rejection else {
        // The route has no parameters for its handler: a fault of the service, not the caller.
        return Error::internal(anyhow::anyhow!("{rejection}"));
    };
    let (field, description) = match failed.into_kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => {
            (key, "must be UTF-8 once percent-decoded".to_owned())
        }
        ErrorKind::ParseErrorAtKey {
            key, expected_type, ..
        } => (key, format!("must be {expected_type}")),
        ErrorKind::DeserializeError { key, message, .. } => (key, message),
        ErrorKind::ParseError { expected_type, .. } => {
            (only_parameter(parts), format!("must be {expected_type}"))
        }
        other @ (ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. }) => {
            return Error::internal(anyhow::anyhow!("{other}"));
        }
        other => (only_parameter(parts), other.to_string()),
    };
    Error::invalid(field, description)
}

/// The name of the route's one path parameter (`name` of `/workflows/detailed/{name}`), or ""
/// when it has none or several.
fn only_parameter(parts: &Parts) -> String {
    let Some(path) = parts.extensions.get::<MatchedPath>() else {
        return String::new();
    };
    let mut names = path.as_str().split('/').filter_map(|segment| {
        segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .map(|name| name.trim_start_matches('*'))
    });
    match (names.next(), names.next()) {
        (Some(name), None) => name.to_owned(),
        _ => String::new(),
    }
}

/// A JSON request body: `Content-Type: application/json`, at most the body limit, valid JSON.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let is_json = content_type
            .split(';')
            .next()
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is larger than {} bytes", super::BODY_LIMIT),
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {rejection}"),
                    )
                }
            })?;
        let value = parse_body(&bytes)?;
        Ok(JsonBody(value))
    }
}

/// A JSON body within the service's bounds on nesting and size (`domain::json`).
fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    use crate::domain::json::{parse_bounded, BoundedJsonError};
    parse_bounded(bytes).map_err(|error| match error {
        BoundedJsonError::Syntax(error) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {error}"),
        ),
        BoundedJsonError::Bounds(violation) => Error::InvalidArgument {
            violations: vec![violation],
        }
        .into(),
    })
}
