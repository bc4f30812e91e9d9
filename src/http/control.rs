//! Steering jobs while they run: `POST /operations-manager/jobs/cancel|pause|resume` and the
//! finish and retry routes of a job's task. Bodies are read field by field as the start body
//! is: every bad field named, unknown keys refused.

use axum::extract::State;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::{Authenticated, JsonBody, Path};
use super::rest::{EmptyEnvelope, JobOutcomesEnvelope};
use super::HttpState;
use crate::domain::json::{index, join, reject_nul_in, type_name};
use crate::domain::run::{check_job_ids, check_task_id, FinishState, JobControl, TaskResult};
use crate::domain::{Error, JobId, Violations};
use crate::observe::record_job_id;

/// `POST /operations-manager/jobs/cancel`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/cancel",
    operation_id = "cancelJobs",
    tag = "jobs",
    request_body(content = super::rest::JobIdsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each job's outcome, in the order of jobIds", body = super::rest::JobOutcomesEnvelope),
        (status = 400, description = "Bad body: jobIds missing, empty, over 100 ids, or an id malformed or repeated (named in metadata.errors); nothing was changed", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_jobs(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<JobOutcomesEnvelope, ApiError> {
    control_jobs(
        state,
        caller,
        body,
        JobControl::Cancel,
        "Canceled the jobs whose outcome is ok",
    )
    .await
}

/// `POST /operations-manager/jobs/pause`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/pause",
    operation_id = "pauseJobs",
    tag = "jobs",
    request_body(content = super::rest::JobIdsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each job's outcome, in the order of jobIds", body = super::rest::JobOutcomesEnvelope),
        (status = 400, description = "Bad body: jobIds missing, empty, over 100 ids, or an id malformed or repeated (named in metadata.errors); nothing was changed", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn pause_jobs(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<JobOutcomesEnvelope, ApiError> {
    control_jobs(
        state,
        caller,
        body,
        JobControl::Pause,
        "Paused the jobs whose outcome is ok",
    )
    .await
}

/// `POST /operations-manager/jobs/resume`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/resume",
    operation_id = "resumeJobs",
    tag = "jobs",
    request_body(content = super::rest::JobIdsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each job's outcome, in the order of jobIds", body = super::rest::JobOutcomesEnvelope),
        (status = 400, description = "Bad body: jobIds missing, empty, over 100 ids, or an id malformed or repeated (named in metadata.errors); nothing was changed", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn resume_jobs(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<JobOutcomesEnvelope, ApiError> {
    control_jobs(
        state,
        caller,
        body,
        JobControl::Resume,
        "Resumed the jobs whose outcome is ok",
    )
    .await
}

/// The three lifecycle routes: roles first (a caller without them is refused whatever the body
/// holds), then the body, then each job's own outcome.
async fn control_jobs(
    state: HttpState,
    caller: crate::domain::Caller,
    body: Value,
    control: JobControl,
    message: &'static str,
) -> Result<JobOutcomesEnvelope, ApiError> {
    caller.require(crate::domain::Action::ControlJobs)?;
    let ids = job_ids_body(body)?;
    let outcomes = state.engine.control_jobs(&caller, control, ids).await?;
    Ok(JobOutcomesEnvelope::new(
        message,
        outcomes.into_iter().map(Into::into).collect(),
    ))
}

/// `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/finish`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/{jobId}/tasks/{taskId}/finish",
    operation_id = "finishTask",
    tag = "jobs",
    request_body(content = super::rest::FinishTaskBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The manual task finished; the job goes on", body = super::rest::EmptyEnvelope),
        (status = 400, description = "Bad path or body (named in metadata.errors), or the task is not a manual task waiting for a person", body = super::rest::ErrorEnvelope),
        (status = 403, description = "The caller's roles do not allow it, the task is for groups the caller is not in, or someone else claimed it or was assigned it", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such job the caller may see, or no such task in it", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn finish_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path((job_id, task_id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<EmptyEnvelope, ApiError> {
    // Roles first: a caller without them is refused whatever the body holds.
    caller.require(crate::domain::Action::ControlJobs)?;
    let result = finish_body(&job_id, &task_id, body)?;
    record_job_id(&job_id);
    state
        .engine
        .finish_task(&caller, &job_id, &task_id, result)
        .await?;
    Ok(EmptyEnvelope::new("Successfully finished the task", ()))
}

/// `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/retry`
#[utoipa::path(
    post,
    path = "/operations-manager/jobs/{jobId}/tasks/{taskId}/retry",
    operation_id = "retryTask",
    tag = "jobs",
    request_body(content = super::rest::RetryTaskBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The task is scheduled to run again; the job goes on from there", body = super::rest::EmptyEnvelope),
        (status = 400, description = "Bad path or body (named in metadata.errors), or the task did not end in error", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such job the caller may see, or no such task in it", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn retry_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path((job_id, task_id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<EmptyEnvelope, ApiError> {
    // Roles first: a caller without them is refused whatever the body holds.
    caller.require(crate::domain::Action::ControlJobs)?;
    let variables = retry_body(&job_id, &task_id, body)?;
    record_job_id(&job_id);
    state
        .engine
        .retry_task(&caller, &job_id, &task_id, variables)
        .await?;
    Ok(EmptyEnvelope::new(
        "Successfully scheduled the task to run again",
        (),
    ))
}

/// The members of the object `value` at `path` (the body when empty), every key but `allowed`
/// refused; None, with a violation, when it is not an object.
fn object(
    value: Value,
    path: &str,
    allowed: &[&str],
    violations: &mut Violations,
) -> Option<Map<String, Value>> {
    let Value::Object(members) = value else {
        let description = match path {
            "" => format!("the body must be a JSON object, not {}", type_name(&value)),
            _ => format!("must be an object, not {}", type_name(&value)),
        };
        violations.push(path, description);
        return None;
    };
    let holder = match path {
        "" => "the body",
        path => path,
    };
    for key in members.keys().filter(|k| !allowed.contains(&k.as_str())) {
        violations.push(
            join(path, key),
            format!(
                "is not allowed: {holder} has only {}",
                allowed.join(" and ")
            ),
        );
    }
    Some(members)
}

/// The free-form object at `path`, when given: `{}` when absent; its strings storable.
fn variables(value: Option<Value>, path: &str, violations: &mut Violations) -> Map<String, Value> {
    match value {
        None => Map::new(),
        Some(Value::Object(map)) => {
            reject_nul_in(&map, path, violations);
            map
        }
        Some(other) => {
            violations.push(
                path,
                format!("must be an object, not {}", type_name(&other)),
            );
            Map::new()
        }
    }
}

/// The path of a task route: the job id and the task id, checked.
fn task_path(job_id: &str, task_id: &str, violations: &mut Violations) {
    if let Err(reason) = JobId::parse(job_id) {
        violations.push("jobId", reason);
    }
    check_task_id(task_id, "taskId", violations);
}

/// `{"jobIds": [...]}`: 1 to 100 job ids, none twice.
fn job_ids_body(body: Value) -> Result<Vec<String>, Error> {
    let mut violations = Violations::default();
    let Some(mut body) = object(body, "", &["jobIds"], &mut violations) else {
        return violations.into_result(Vec::new());
    };
    let ids = match body.remove("jobIds") {
        None => {
            violations.push("jobIds", "is required");
            Vec::new()
        }
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(id) => ids.push(id),
                    other => violations.push(
                        index("jobIds", i),
                        format!("must be a string, not {}", type_name(&other)),
                    ),
                }
            }
            // Ids are counted and checked once all of them are strings, so that each is named
            // by its own index.
            if violations.is_empty() {
                check_job_ids(&ids, "jobIds", &mut violations);
            }
            ids
        }
        Some(other) => {
            violations.push(
                "jobIds",
                format!("must be an array of job ids, not {}", type_name(&other)),
            );
            Vec::new()
        }
    };
    violations.into_result(ids)
}

/// `{"taskData": {"finish_state": ..., "variables": {...}}}` on a task's path: how the manual
/// task ended.
fn finish_body(job_id: &str, task_id: &str, body: Value) -> Result<TaskResult, Error> {
    let mut violations = Violations::default();
    task_path(job_id, task_id, &mut violations);
    let task_data =
        object(body, "", &["taskData"], &mut violations).and_then(|mut body| {
            match body.remove("taskData") {
                None => {
                    violations.push("taskData", "is required");
                    None
                }
                Some(value) => object(
                    value,
                    "taskData",
                    &["finish_state", "variables"],
                    &mut violations,
                ),
            }
        });
    let mut finish_state = None;
    let mut outgoing = Map::new();
    if let Some(mut task_data) = task_data {
        finish_state = match task_data.remove("finish_state") {
            None => {
                violations.push(
                    "taskData.finish_state",
                    "is required: success, failure or error",
                );
                None
            }
            Some(Value::String(text)) => {
                FinishState::parse_field(&text, "taskData.finish_state", &mut violations)
            }
            Some(other) => {
                violations.push(
                    "taskData.finish_state",
                    format!("must be a string, not {}", type_name(&other)),
                );
                None
            }
        };
        outgoing = variables(
            task_data.remove("variables"),
            "taskData.variables",
            &mut violations,
        );
    }
    // Without a finish state there is a violation (of taskData or of its finish_state), and
    // the placeholder goes nowhere.
    violations.into_result(TaskResult {
        finish_state: finish_state.unwrap_or(FinishState::Error),
        outgoing,
        error_message: String::new(),
    })
}

/// `{"variables": {...}}` on a task's path: the incoming values to override, `{}` when absent.
fn retry_body(job_id: &str, task_id: &str, body: Value) -> Result<Map<String, Value>, Error> {
    let mut violations = Violations::default();
    task_path(job_id, task_id, &mut violations);
    let overrides = object(body, "", &["variables"], &mut violations)
        .map(|mut body| variables(body.remove("variables"), "variables", &mut violations))
        .unwrap_or_default();
    violations.into_result(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JOB: &str = "0123456789abcdef01234567";

    fn fields<T: std::fmt::Debug>(parsed: Result<T, Error>) -> Vec<String> {
        match parsed {
            Err(Error::InvalidArgument { violations }) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn job_ids_are_one_to_a_hundred_distinct_job_ids() {
        let other = "aaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            job_ids_body(json!({"jobIds": [JOB, other]})).unwrap(),
            [JOB, other]
        );
        let hundred: Vec<String> = (0..100).map(|i| format!("{i:024x}")).collect();
        assert_eq!(
            job_ids_body(json!({ "jobIds": hundred })).unwrap().len(),
            100
        );

        let many: Vec<String> = (0..101).map(|i| format!("{i:024x}")).collect();
        assert_eq!(fields(job_ids_body(json!({ "jobIds": many }))), ["jobIds"]);
        assert_eq!(fields(job_ids_body(json!({"jobIds": []}))), ["jobIds"]);
        assert_eq!(
            fields(job_ids_body(json!({"jobIds": [JOB, "ABC", JOB, 7]}))),
            ["jobIds[3]"]
        );
        assert_eq!(
            fields(job_ids_body(json!({"jobIds": [JOB, "ABC", JOB]}))),
            ["jobIds[1]", "jobIds[2]"]
        );
        assert_eq!(
            fields(job_ids_body(json!({"jobIds": JOB, "force": true}))),
            ["force", "jobIds"]
        );
        assert_eq!(fields(job_ids_body(json!({}))), ["jobIds"]);
        assert_eq!(fields(job_ids_body(json!([JOB]))), [""]);
    }

    #[test]
    fn a_finish_body_names_each_bad_field() {
        let result = finish_body(
            JOB,
            "1a2b",
            json!({"taskData": {"finish_state": "failure", "variables": {"approved": false}}}),
        )
        .unwrap();
        assert_eq!(result.finish_state, FinishState::Failure);
        assert_eq!(result.outgoing["approved"], json!(false));
        assert!(
            finish_body(JOB, "t", json!({"taskData": {"finish_state": "success"}}))
                .unwrap()
                .outgoing
                .is_empty()
        );

        assert_eq!(
            fields(finish_body(
                "nope",
                "",
                json!({"taskData": {"finish_state": "done"}})
            )),
            ["jobId", "taskId", "taskData.finish_state"]
        );
        assert_eq!(
            fields(finish_body(
                JOB,
                "t",
                json!({"taskData": {"finish_state": 1, "variables": [], "note": "x"}, "extra": 1})
            )),
            [
                "extra",
                "taskData.note",
                "taskData.finish_state",
                "taskData.variables"
            ]
        );
        assert_eq!(
            fields(finish_body(JOB, "t", json!({"taskData": {}}))),
            ["taskData.finish_state"]
        );
        assert_eq!(
            fields(finish_body(
                JOB,
                "t",
                json!({"taskData": {"finish_state": "success", "variables": {"a": "x\u{0}"}}})
            )),
            ["taskData.variables.a"]
        );
        assert_eq!(fields(finish_body(JOB, "t", json!({}))), ["taskData"]);
        assert_eq!(
            fields(finish_body(JOB, "t", json!({"taskData": "success"}))),
            ["taskData"]
        );
        assert_eq!(
            fields(finish_body(JOB, "t\u{0}", json!(null))),
            ["taskId", ""]
        );
    }

    #[test]
    fn a_retry_body_holds_only_variables() {
        let overrides = retry_body(JOB, "t", json!({"variables": {"device": "r2"}})).unwrap();
        assert_eq!(overrides["device"], json!("r2"));
        assert!(retry_body(JOB, "t", json!({})).unwrap().is_empty());
        assert_eq!(
            fields(retry_body(
                JOB,
                "t",
                json!({"variables": 1, "fromTask": "x"})
            )),
            ["fromTask", "variables"]
        );
        assert_eq!(
            fields(retry_body(JOB.to_uppercase().as_str(), "t", json!({}))),
            ["jobId"]
        );
        assert_eq!(fields(retry_body(JOB, "t", json!("x"))), [""]);
    }
}
