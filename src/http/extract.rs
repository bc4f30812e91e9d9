//! Request extractors: the authenticated caller and a JSON body, each failing with the REST
//! envelope (401, 400, 413, 415) rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
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
        let caller = state.verifier.verify(header)?;
        crate::observe::record_caller(&caller);
        Ok(Authenticated(caller))
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
        let value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {error}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}
