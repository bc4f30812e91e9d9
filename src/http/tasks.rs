//! `/operations-manager/tasks` routes (tasks across jobs, manual-task ownership) and what a
//! manual task shows (`/operations-manager/jobs/{jobId}/tasks/{taskId}/manual-controller`).
//! A task's id across jobs is `<jobId>:<taskId>` (see `domain::task`).

use axum::extract::{RawQuery, State};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Authenticated, JsonBody, Path};
use super::rest::{JobListMetadata, ManualControllerEnvelope, TaskEnvelope, TaskListEnvelope};
use super::{query_pairs, HttpState};
use crate::domain::json::type_name;
use crate::domain::run::check_task_id;
use crate::domain::search::TaskSearch;
use crate::domain::task::{parse_user_id, Ownership, TaskRef};
use crate::domain::{Action, Caller, Error, JobId, Violations};
use crate::observe::record_job_id;

/// `GET /operations-manager/tasks`
#[utoipa::path(
    get,
    path = "/operations-manager/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    responses(
        (status = 200, description = "A page of the tasks of the jobs the caller may see", body = super::rest::TaskListEnvelope),
        (status = 400, description = "Unknown parameter or bad value (named in metadata.errors)", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_tasks(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<TaskListEnvelope, ApiError> {
    caller.require(Action::ReadJobs)?;
    let search = TaskSearch::parse(&query_pairs(query.as_deref()))?;
    let (tasks, total) = state.service.search_tasks(&caller, &search).await?;
    let metadata = JobListMetadata::new(search.skip, search.limit, tasks.len(), total);
    Ok(TaskListEnvelope {
        message: "Successfully retrieved items",
        data: tasks.into_iter().map(Into::into).collect(),
        metadata,
    })
}

/// `GET /operations-manager/tasks/{taskId}`
#[utoipa::path(
    get,
    path = "/operations-manager/tasks/{taskId}",
    operation_id = "getTask",
    tag = "tasks",
    responses(
        (status = 200, description = "The task", body = super::rest::TaskEnvelope),
        (status = 400, description = "Malformed task id (not <jobId>:<taskId>)", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such task in a job the caller may see (or the job has not reached it)", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(task_id): Path<String>,
) -> Result<TaskEnvelope, ApiError> {
    caller.require(Action::ReadJobs)?;
    let task = task_ref(&task_id)?;
    let view = state.service.get_task(&caller, &task).await?;
    Ok(TaskEnvelope::new(
        "Successfully retrieved item",
        view.into(),
    ))
}

/// `POST /operations-manager/tasks/{taskId}/claim`
#[utoipa::path(
    post,
    path = "/operations-manager/tasks/{taskId}/claim",
    operation_id = "claimTask",
    tag = "tasks",
    responses(
        (status = 200, description = "The caller owns the manual task (also when it already did)", body = super::rest::TaskEnvelope),
        (status = 400, description = "Malformed task id; or the task is not a manual task waiting for a person, or someone else claimed it (the message names them)", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such task in a job the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn claim_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(task_id): Path<String>,
) -> Result<TaskEnvelope, ApiError> {
    change_owner(
        state,
        caller,
        &task_id,
        None,
        "Successfully claimed the task",
    )
    .await
}

/// `POST /operations-manager/tasks/{taskId}/assign`
#[utoipa::path(
    post,
    path = "/operations-manager/tasks/{taskId}/assign",
    operation_id = "assignTask",
    tag = "tasks",
    request_body(content = super::rest::AssignTaskBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The user owns the manual task now, whoever owned it before", body = super::rest::TaskEnvelope),
        (status = 400, description = "Malformed task id or body (named in metadata.errors); or the task is not a manual task waiting for a person", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such task in a job the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn assign_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(task_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<TaskEnvelope, ApiError> {
    caller.require(Action::ControlJobs)?;
    let user = assign_body(body)?;
    change_owner(
        state,
        caller,
        &task_id,
        Some(user),
        "Successfully assigned the task",
    )
    .await
}

/// `POST /operations-manager/tasks/{taskId}/release`
#[utoipa::path(
    post,
    path = "/operations-manager/tasks/{taskId}/release",
    operation_id = "releaseTask",
    tag = "tasks",
    responses(
        (status = 200, description = "The manual task has no owner now", body = super::rest::TaskEnvelope),
        (status = 400, description = "Malformed task id; or the task is not a manual task waiting for a person, or nobody claimed it", body = super::rest::ErrorEnvelope),
        (status = 403, description = "The caller's roles do not allow it, or someone else owns the task", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such task in a job the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn release_task(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(task_id): Path<String>,
) -> Result<TaskEnvelope, ApiError> {
    caller.require(Action::ControlJobs)?;
    let task = task_ref(&task_id)?;
    record_job_id(&task.job_id);
    let view = state
        .service
        .change_task_owner(&caller, &task, Ownership::Release)
        .await?;
    Ok(TaskEnvelope::new(
        "Successfully released the task",
        view.into(),
    ))
}

/// Claim (`user` None) or assign: roles first, then the path, then the change.
async fn change_owner(
    state: HttpState,
    caller: Caller,
    task_id: &str,
    user: Option<String>,
    message: &'static str,
) -> Result<TaskEnvelope, ApiError> {
    caller.require(Action::ControlJobs)?;
    let task = task_ref(task_id)?;
    record_job_id(&task.job_id);
    let change = match user {
        None => Ownership::Claim,
        Some(user) => Ownership::Assign(user),
    };
    let view = state
        .service
        .change_task_owner(&caller, &task, change)
        .await?;
    Ok(TaskEnvelope::new(message, view.into()))
}

/// `GET /operations-manager/jobs/{jobId}/tasks/{taskId}/manual-controller`
#[utoipa::path(
    get,
    path = "/operations-manager/jobs/{jobId}/tasks/{taskId}/manual-controller",
    operation_id = "getManualController",
    tag = "tasks",
    responses(
        (status = 200, description = "What the manual task shows and collects", body = super::rest::ManualControllerEnvelope),
        (status = 400, description = "Malformed path (named in metadata.errors), or the task is not a manual task", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such job the caller may see, or the job has not reached the task", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn manual_controller(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path((job_id, task_id)): Path<(String, String)>,
) -> Result<ManualControllerEnvelope, ApiError> {
    caller.require(Action::ReadJobs)?;
    let mut violations = Violations::default();
    if let Err(reason) = JobId::parse(&job_id) {
        violations.push("jobId", reason);
    }
    check_task_id(&task_id, "taskId", &mut violations);
    violations.into_result(())?;
    record_job_id(&job_id);
    let task = TaskRef::new(&job_id, &task_id);
    let view = state.service.manual_controller(&caller, &task).await?;
    Ok(ManualControllerEnvelope::new(
        "Successfully retrieved item",
        view.into(),
    ))
}

/// The `{taskId}` of a task route: `<jobId>:<taskId>`.
fn task_ref(text: &str) -> Result<TaskRef, Error> {
    TaskRef::parse(text, "taskId")
}

/// `{"userId": "..."}`: the account id to assign the task to; nothing else.
fn assign_body(body: Value) -> Result<String, Error> {
    let Value::Object(mut body) = body else {
        return Err(Error::invalid(
            "",
            format!("the body must be a JSON object, not {}", type_name(&body)),
        ));
    };
    let mut violations = Violations::default();
    for key in body.keys().filter(|key| *key != "userId") {
        violations.push(key.as_str(), "is not allowed: the body has only userId");
    }
    let user = match body.remove("userId") {
        None => {
            violations.push(
                "userId",
                "is required: the account id of the user to assign the task to",
            );
            None
        }
        Some(Value::String(user)) => match parse_user_id(&user, "userId") {
            Ok(user) => Some(user),
            Err(Error::InvalidArgument { violations: found }) => {
                for v in found {
                    violations.push(v.field, v.description);
                }
                None
            }
            Err(other) => return Err(other),
        },
        Some(other) => {
            violations.push(
                "userId",
                format!("must be a string, not {}", type_name(&other)),
            );
            None
        }
    };
    violations.into_result(user.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields<T: std::fmt::Debug>(parsed: Result<T, Error>) -> Vec<String> {
        match parsed {
            Err(Error::InvalidArgument { violations }) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn an_assign_body_holds_only_a_user_id() {
        assert_eq!(assign_body(json!({"userId": "abc"})).unwrap(), "abc");
        assert_eq!(fields(assign_body(json!({}))), ["userId"]);
        assert_eq!(fields(assign_body(json!({"userId": ""}))), ["userId"]);
        assert_eq!(fields(assign_body(json!({"userId": 7}))), ["userId"]);
        assert_eq!(
            fields(assign_body(json!({"userId": "a", "note": 1}))),
            ["note"]
        );
        assert_eq!(fields(assign_body(json!(["a"]))), [""]);
    }
}
