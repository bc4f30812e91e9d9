//! The REST types: the bodies the gateway answers with, as structs that serialize to exactly
//! the shapes `/openapi.json` documents under the same names (`openapi.rs` attaches each
//! schema to its type, and the handlers return these types, so the two cannot drift apart
//! without a route's annotation naming a type it does not return).
//!
//! Keys are written in declaration order, which is the order of the reference's answers.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::domain::graph::TaskStatus;
use crate::domain::task::TaskView;
use crate::domain::Job;
use crate::engine::ControlOutcome;

/// The body of `POST /operations-manager/jobs/start`. The handler reads it field by field (the
/// reference schema's checks, every bad field named), so it has no fields here; its schema is
/// in the document.
pub struct StartJobBody;

/// The body of `POST /automation-studio/automations`: `{"automation": <workflow>}`.
pub struct CreateWorkflowBody;

/// The body of `POST /automation-studio/automations/import`: `{"automations": [<workflow>]}`.
pub struct ImportWorkflowsBody;

/// An Itential workflow document, answered as stored (free-form beyond the fields the
/// document's schema names).
pub struct Workflow;

/// The body of `POST /operations-manager/jobs/cancel|pause|resume`: `{"jobIds": [...]}`.
pub struct JobIdsBody;

/// The body of `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/finish`:
/// `{"taskData": {"finish_state", "variables"}}`.
pub struct FinishTaskBody;

/// The body of `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/retry`:
/// `{"variables": {...}}`.
pub struct RetryTaskBody;

/// The body of `POST /operations-manager/tasks/{taskId}/assign`: `{"userId": ...}`.
pub struct AssignTaskBody;

/// The REST envelope of a success: `{"message", "data", "metadata"}`.
#[derive(Debug, Serialize)]
pub struct Envelope<T, M = NoMetadata> {
    pub message: &'static str,
    pub data: T,
    pub metadata: M,
}

impl<T> Envelope<T> {
    /// An envelope whose metadata is `{}`.
    pub fn new(message: &'static str, data: T) -> Self {
        Envelope {
            message,
            data,
            metadata: NoMetadata {},
        }
    }
}

impl<T: Serialize, M: Serialize> IntoResponse for Envelope<T, M> {
    fn into_response(self) -> Response {
        // `data` is written straight into the body, with no JSON tree built in between.
        Json(self).into_response()
    }
}

/// Metadata of an answer that has none: `{}`.
#[derive(Debug, Serialize)]
pub struct NoMetadata {}

/// A started or read job.
pub type JobEnvelope = Envelope<Job>;

/// A page of jobs.
pub type JobListEnvelope = Envelope<Vec<Job>, JobListMetadata>;

/// A success with nothing to return (`"data": null`).
pub type EmptyEnvelope = Envelope<()>;

/// Imported workflow documents, as stored.
pub type WorkflowListEnvelope = Envelope<Vec<Value>>;

/// What a cancel, pause or resume did to each job, in the order of the request's ids.
pub type JobOutcomesEnvelope = Envelope<Vec<JobOutcome>>;

/// What a cancel, pause or resume did to one job: `{"_id", "ok": true, "code": 200,
/// "message": null}`, or for a job left unchanged the status and message a call for that job
/// alone would have been answered with (`{"_id", "ok": false, "code": 404, "message":
/// "Cannot find job ..."}`).
#[derive(Debug, Serialize)]
pub struct JobOutcome {
    #[serde(rename = "_id")]
    pub id: String,
    pub ok: bool,
    /// An HTTP status, by the one table of `domain::error`: 200 when ok.
    pub code: u16,
    /// Why the job was left unchanged; null when ok.
    pub message: Option<String>,
}

impl From<ControlOutcome> for JobOutcome {
    fn from((id, outcome): ControlOutcome) -> Self {
        match outcome {
            Ok(()) => JobOutcome {
                id,
                ok: true,
                code: 200,
                message: None,
            },
            Err(error) => {
                let error = error.bounded();
                if let crate::domain::Error::Internal(cause) = &error {
                    tracing::error!(error = ?cause, job_id = %id, "internal error");
                }
                JobOutcome {
                    id,
                    ok: false,
                    code: error.code().http_status(),
                    message: Some(error.to_string()),
                }
            }
        }
    }
}

/// Where a page of jobs sits among all that match.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobListMetadata {
    pub skip: i64,
    pub limit: i64,
    pub total: i64,
    pub current_page_size: i64,
    /// `skip` of the next page; none on the last page.
    pub next_page_skip: Option<i64>,
    /// `skip` of the previous page; none on the first page.
    pub previous_page_skip: Option<i64>,
}

impl JobListMetadata {
    /// The metadata of a page of `count` jobs read at `skip` with `limit`, of `total`.
    pub fn new(skip: i64, limit: i64, count: usize, total: i64) -> Self {
        let count = count as i64;
        let next = skip + count;
        JobListMetadata {
            skip,
            limit,
            total,
            current_page_size: count,
            next_page_skip: (next < total).then_some(next),
            previous_page_skip: (skip > 0).then(|| (skip - limit).max(0)),
        }
    }
}

/// A task of a job, as the task routes answer it: the workflow's task with its run state, as
/// the job document's `tasks` show it (`finish_state`, `start_time`, `end_time`, `iterations`,
/// `variables.incoming` as resolved, `variables.outgoing` once finished), plus its id across
/// jobs, its job, its groups and its owner.
#[derive(Debug, Serialize)]
pub struct TaskDocument {
    /// `<jobId>:<taskId>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// The task's key in the job's `tasks`.
    pub task: String,
    pub status: TaskStatus,
    /// Who runs it: `manual`, `automatic` (a task worker) or `operation` (the service).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When not empty, only members of these groups may claim or finish the task.
    pub groups: Vec<String>,
    pub job: TaskJobDocument,
    /// The owner's account id; null when nobody claimed it or was assigned it.
    pub owner: Option<String>,
    /// The owner's username, when they claimed the task themselves (an assignment names an
    /// account only); else null.
    pub owner_username: Option<String>,
    pub owner_assigned_by: Option<String>,
    /// RFC 3339, milliseconds.
    pub owner_assigned_at: Option<String>,
    /// The finish states a person may choose (those the task has transitions for).
    pub finish_states: Vec<&'static str>,
    /// Every other field of the workflow's task, and its run state.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}

/// The job of a task.
#[derive(Debug, Serialize)]
pub struct TaskJobDocument {
    #[serde(rename = "_id")]
    pub id: String,
    /// The workflow's name.
    pub name: String,
    pub description: String,
    pub status: crate::domain::JobStatus,
}

/// The keys [`TaskDocument`] writes itself; a workflow task's own field of the same name is
/// left out rather than written twice.
const TASK_DOCUMENT_KEYS: [&str; 11] = [
    "_id",
    "task",
    "status",
    "type",
    "groups",
    "job",
    "owner",
    "owner_username",
    "owner_assigned_by",
    "owner_assigned_at",
    "finish_states",
];

fn millis(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<TaskView> for TaskDocument {
    fn from(view: TaskView) -> Self {
        let groups = view.groups();
        let mut fields = view.fields;
        for key in TASK_DOCUMENT_KEYS {
            fields.remove(key);
        }
        // The run state, written as a job's `tasks` write it.
        if let Some(finish) = view.finish_state {
            fields.insert("finish_state".into(), Value::from(finish.as_str()));
        }
        if let Some(start) = view.start_time {
            fields.insert("start_time".into(), Value::from(millis(start)));
        }
        if let Some(end) = view.end_time {
            fields.insert("end_time".into(), Value::from(end.timestamp_millis()));
        }
        fields.insert(
            "iterations".into(),
            Value::Array((1..=view.iteration).map(Value::from).collect()),
        );
        if let Some(error) = view.error {
            fields.insert("error".into(), error);
        }
        let mut variables = match fields.remove("variables") {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        variables.insert("incoming".into(), Value::Object(view.incoming));
        if view.finish_state.is_some() {
            variables.insert("outgoing".into(), Value::Object(view.outgoing));
        }
        fields.insert("variables".into(), Value::Object(variables));
        TaskDocument {
            id: view.task.to_string(),
            task: view.task.task_id,
            status: view.status,
            kind: view.kind.as_str(),
            groups,
            job: TaskJobDocument {
                id: view.job.id,
                name: view.job.name,
                description: view.job.description,
                status: view.job.status,
            },
            owner_assigned_by: view.owner.as_ref().map(|o| o.assigned_by.clone()),
            owner_assigned_at: view.owner.as_ref().map(|o| millis(o.assigned_at)),
            owner_username: view.owner.as_ref().and_then(|o| o.who.username.clone()),
            owner: view.owner.map(|o| o.who.id),
            finish_states: view.finish_states.iter().map(|s| s.as_str()).collect(),
            fields,
        }
    }
}

/// A task read, claimed, assigned or released.
pub type TaskEnvelope = Envelope<TaskDocument>;

/// A page of tasks.
pub type TaskListEnvelope = Envelope<Vec<TaskDocument>, JobListMetadata>;

/// What a manual task shows and collects: its incoming values as resolved when it was
/// scheduled (a ViewData task's header, body, buttons, variables, ...), what it collects (the
/// workflow's outgoing values of the task) and the finish states a person may choose.
#[derive(Debug, Serialize)]
pub struct ManualController {
    /// `<jobId>:<taskId>`.
    #[serde(rename = "_id")]
    pub id: String,
    pub job: String,
    pub task: String,
    pub name: Value,
    pub summary: Value,
    pub description: Value,
    /// The task's `view`, when the workflow gives one.
    pub view: Value,
    pub status: TaskStatus,
    pub owner: Option<String>,
    pub groups: Vec<String>,
    pub incoming: serde_json::Map<String, Value>,
    pub outgoing: Value,
    pub finish_states: Vec<&'static str>,
}

impl From<TaskView> for ManualController {
    fn from(view: TaskView) -> Self {
        let groups = view.groups();
        let field = |key: &str| view.fields.get(key).cloned().unwrap_or(Value::Null);
        let outgoing = view
            .fields
            .get("variables")
            .and_then(|v| v.get("outgoing"))
            .cloned()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        ManualController {
            id: view.task.to_string(),
            job: view.task.job_id.clone(),
            task: view.task.task_id.clone(),
            name: field("name"),
            summary: field("summary"),
            description: field("description"),
            view: field("view"),
            status: view.status,
            owner: view.owner.map(|o| o.who.id),
            groups,
            incoming: view.incoming,
            outgoing,
            finish_states: view.finish_states.iter().map(|s| s.as_str()).collect(),
        }
    }
}

/// What a manual task shows.
pub type ManualControllerEnvelope = Envelope<ManualController>;

/// A page of workflow documents, in name order (Automation Studio's list, not an envelope).
#[derive(Debug, Serialize)]
pub struct WorkflowPage {
    pub items: Vec<Value>,
    pub count: usize,
    pub skip: i64,
    pub limit: i64,
    pub total: i64,
}

/// A stored workflow and where to edit it.
#[derive(Debug, Serialize)]
pub struct CreatedWorkflow {
    pub created: Value,
    pub edit: String,
}

/// Every error answer: `{"message", "data": null, "metadata": {"errors": [...]}}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope {
    pub message: String,
    pub data: (),
    pub metadata: ErrorMetadata,
}

/// The bad fields of an error answer (none for most errors).
#[derive(Debug, Serialize)]
pub struct ErrorMetadata {
    pub errors: Vec<FieldError>,
}

/// One bad field, named by its path (`options.groups[1]`; empty for the whole body).
#[derive(Debug, Serialize)]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

/// Liveness or readiness.
#[derive(Debug, Serialize)]
pub struct HealthStatus {
    pub status: &'static str,
    /// Why the service is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_metadata_points_at_the_neighbouring_pages() {
        let first = serde_json::to_value(JobListMetadata::new(0, 10, 10, 25)).unwrap();
        assert_eq!(
            first.to_string(),
            r#"{"skip":0,"limit":10,"total":25,"currentPageSize":10,"nextPageSkip":10,"previousPageSkip":null}"#
        );
        let last = JobListMetadata::new(20, 10, 5, 25);
        assert_eq!(
            (last.next_page_skip, last.previous_page_skip),
            (None, Some(10))
        );
        let short_skip = JobListMetadata::new(3, 10, 10, 25);
        assert_eq!(short_skip.previous_page_skip, Some(0));
    }

    #[test]
    fn an_error_envelope_has_null_data_and_the_bad_fields() {
        let body = ErrorEnvelope {
            message: "invalid request".into(),
            data: (),
            metadata: ErrorMetadata {
                errors: vec![FieldError {
                    field: "options".into(),
                    description: "is required".into(),
                }],
            },
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"message":"invalid request","data":null,"metadata":{"errors":[{"field":"options","description":"is required"}]}}"#
        );
    }

    #[test]
    fn each_job_outcome_has_its_own_status_by_the_one_table() {
        let done = JobOutcome::from(("0123456789abcdef01234567".to_owned(), Ok(())));
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"_id":"0123456789abcdef01234567","ok":true,"code":200,"message":null}"#
        );
        let missing = JobOutcome::from((
            "aaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
            Err(crate::domain::Error::NotFound(
                "Cannot find job aaaaaaaaaaaaaaaaaaaaaaaa".into(),
            )),
        ));
        assert_eq!(
            serde_json::to_string(&missing).unwrap(),
            r#"{"_id":"aaaaaaaaaaaaaaaaaaaaaaaa","ok":false,"code":404,"message":"Cannot find job aaaaaaaaaaaaaaaaaaaaaaaa"}"#
        );
        let broken = JobOutcome::from((
            "bbbbbbbbbbbbbbbbbbbbbbbb".to_owned(),
            Err(crate::domain::Error::internal(anyhow::anyhow!(
                "relation jobs"
            ))),
        ));
        assert_eq!(
            (broken.code, broken.message.as_deref()),
            (500, Some("internal error"))
        );
    }

    #[test]
    fn an_empty_envelope_has_null_data_and_empty_metadata() {
        let body = serde_json::to_string(&EmptyEnvelope::new("done", ())).unwrap();
        assert_eq!(body, r#"{"message":"done","data":null,"metadata":{}}"#);
    }
}
