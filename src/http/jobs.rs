//! `/operations-manager/jobs` routes.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::{Authenticated, JsonBody, Path};
use super::rest::{JobEnvelope, JobListEnvelope, JobListMetadata};
use super::{query_pairs, HttpState};
use crate::domain::json::{index, type_name};
use crate::domain::search::JobSearch;
use crate::domain::{Error, IdempotencyKey, RawJobOptions, RawStartJob, StartJob, Violations};
use crate::observe::record_job_id;

/// `POST /operations-manager/jobs/start`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/start",
    operation_id = "startJob",
    tag = "jobs",
    request_body(content = super::rest::StartJobBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The job, started and stored (or, on an idempotent replay, the first job)", body = super::rest::JobEnvelope),
        (status = 422, description = "The idempotency key was used for a different request", body = super::rest::ErrorEnvelope),
        (status = 400, description = "Bad input (field violations in metadata.errors), or a task graph that cannot run", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such workflow", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn start_job(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(IdempotencyKey::from_header(value.as_bytes())?),
    };
    let start = parse_start(body)?;
    let started = state.service.start_job(&caller, start, key).await?;
    state.metrics.job_started(started.created);
    record_job_id(&started.job.id);
    let json = state
        .graphs
        .envelope("Successfully created the requested item", started.job)
        .map_err(|error| Error::internal(anyhow::Error::new(error)))?;
    let mut body = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response();
    if !started.created {
        body.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(body)
}

/// `GET /operations-manager/jobs/{id}`
#[utoipa::path(
    get,
    path = "/operations-manager/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    responses(
        (status = 200, description = "The job", body = super::rest::JobEnvelope),
        (status = 400, description = "Malformed id", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such job the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<JobEnvelope, ApiError> {
    let job = state.service.get_job(&caller, &id).await?;
    record_job_id(&job.id);
    Ok(JobEnvelope::new("Successfully retrieved item", job))
}

/// `GET /operations-manager/jobs`
#[utoipa::path(
    get,
    path = "/operations-manager/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    responses(
        (status = 200, description = "A page of jobs", body = super::rest::JobListEnvelope),
        (status = 400, description = "Unknown parameter or bad value (named in metadata.errors)", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<JobListEnvelope, ApiError> {
    let search = JobSearch::parse(&query_pairs(query.as_deref()))?;
    let (jobs, total) = state.service.search_jobs(&caller, &search).await?;
    let metadata = JobListMetadata::new(search.skip, search.limit, jobs.len(), total);
    Ok(JobListEnvelope {
        message: "Successfully retrieved items",
        data: jobs,
        metadata,
    })
}

/// A start request body, checked and parsed.
pub(super) fn parse_start(body: Value) -> Result<StartJob, Error> {
    StartJob::parse(raw_start_job(body)?)
}

/// The body of a start request, checked as the reference schema says: an object with exactly
/// `workflow` (string) and `options` (object); inside `options`, `description` and `type`
/// strings, `variables` an object, `groups` an array of strings. Unknown keys are refused, not
/// ignored.
fn raw_start_job(body: Value) -> Result<RawStartJob, Error> {
    let mut violations = Violations::default();
    let Value::Object(mut body) = body else {
        return Err(Error::invalid(
            "",
            format!("the body must be a JSON object, not {}", type_name(&body)),
        ));
    };
    for key in body.keys() {
        if key != "workflow" && key != "options" {
            violations.push(
                key.as_str(),
                "is not allowed: the body has only workflow and options",
            );
        }
    }
    let workflow = match body.remove("workflow") {
        None => {
            violations.push("workflow", "is required");
            String::new()
        }
        Some(Value::String(name)) => name,
        Some(other) => {
            violations.push(
                "workflow",
                format!("must be a string, not {}", type_name(&other)),
            );
            String::new()
        }
    };
    let options = match body.remove("options") {
        None => {
            violations.push("options", "is required");
            None
        }
        Some(Value::Object(options)) => Some(raw_options(options, &mut violations)),
        Some(other) => {
            violations.push(
                "options",
                format!("must be an object, not {}", type_name(&other)),
            );
            None
        }
    };
    violations.into_result(RawStartJob { workflow, options })
}

fn raw_options(mut options: Map<String, Value>, violations: &mut Violations) -> RawJobOptions {
    let mut string = |key: &str, violations: &mut Violations| match options.remove(key) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            violations.push(
                format!("options.{key}"),
                format!("must be a string, not {}", type_name(&other)),
            );
            None
        }
    };
    let description = string("description", violations);
    let job_type = string("type", violations);
    let variables = match options.remove("variables") {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            violations.push(
                "options.variables",
                format!("must be an object, not {}", type_name(&other)),
            );
            None
        }
    };
    let groups = match options.remove("groups") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::String(s) => Some(s),
                    other => {
                        violations.push(
                            index("options.groups", i),
                            format!("must be a string, not {}", type_name(&other)),
                        );
                        None
                    }
                })
                .collect(),
        ),
        Some(other) => {
            violations.push(
                "options.groups",
                format!("must be an array of group ids, not {}", type_name(&other)),
            );
            None
        }
    };
    // The reference schema of `options` allows other keys: they are accepted, kept out of the
    // job and named in its `warnings`, in name order.
    let mut ignored: Vec<String> = options.into_iter().map(|(key, _)| key).collect();
    ignored.sort_unstable();
    RawJobOptions {
        description,
        job_type,
        variables,
        groups,
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(body: Value) -> Vec<String> {
        match raw_start_job(body).and_then(StartJob::parse) {
            Err(Error::InvalidArgument { violations }) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn the_reference_example_parses() {
        let body = json!({
            "workflow": "velit esse consequat ad dolore",
            "options": {
                "description": "Example job description",
                "type": "automation",
                "groups": ["b0bc20ec3a3e5e90bac881e7", "7d5f0cb5c6a629ea14324d9b"]
            }
        });
        let start = StartJob::parse(raw_start_job(body).unwrap()).unwrap();
        assert_eq!(start.workflow, "velit esse consequat ad dolore");
        assert_eq!(start.options.groups.unwrap().len(), 2);
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_named() {
        assert_eq!(fields(json!({"workflow": 5, "options": {}})), ["workflow"]);
        assert_eq!(
            fields(json!({"workflow": "w", "options": [], "extra": 1})),
            ["extra", "options"]
        );
        assert_eq!(
            fields(
                json!({"workflow": "w", "options": {"description": 1, "variables": [], "groups": "g", "priority": 1}})
            ),
            ["options.description", "options.variables", "options.groups"]
        );
        assert_eq!(
            fields(json!({"workflow": "w", "options": {"groups": [1, "nope"]}})),
            ["options.groups[0]"]
        );
        assert_eq!(fields(json!({"workflow": "w"})), ["options"]);
        assert_eq!(fields(json!({})), ["workflow", "options"]);
        assert_eq!(fields(json!([1])), [""]);
    }
}
