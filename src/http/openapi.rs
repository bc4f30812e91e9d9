//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route annotations and the
//! schemas below, so the document and the routes cannot drift apart silently (a test calls
//! every documented operation and checks the answer's status is documented, and
//! `scripts/schemathesis` checks generated requests against the real binary).
//!
//! The schemas are written as JSON Schema rather than derived from Rust types: the handlers
//! read bodies as JSON and check them field by field, and what they accept (patterns, bounds,
//! which nulls, which unknown keys) is more than a derive can say.

use std::borrow::Cow;

use serde_json::{json, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::rest::{
    CreateWorkflowBody, CreatedWorkflow, EmptyEnvelope, ErrorEnvelope, FieldError, FinishTaskBody,
    HealthStatus, ImportWorkflowsBody, JobEnvelope, JobIdsBody, JobListEnvelope, JobListMetadata,
    JobOutcome, JobOutcomesEnvelope, RetryTaskBody, StartJobBody, Workflow, WorkflowListEnvelope,
    WorkflowPage,
};
use crate::domain::run::MAX_JOB_IDS;
use crate::domain::workflow::{TRANSITION_STATES, TRANSITION_TYPES};
use crate::domain::Job;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "job-service JSON gateway",
        description = "The Operations Manager and Automation Studio REST routes, mirrored over the job service. \
                       Every route but health, metrics and this document needs `Authorization: Bearer <JWT>`. \
                       Every error answer is the envelope `{\"message\", \"data\": null, \"metadata\": {\"errors\": [{\"field\", \"description\"}]}}`. \
                       A documented path called with another method answers 405, an unknown path 404, both with the envelope. \
                       Strings the service stores or searches by must not hold U+0000."
    ),
    paths(
        super::jobs::start_job,
        super::jobs::get_job,
        super::jobs::list_jobs,
        super::control::cancel_jobs,
        super::control::pause_jobs,
        super::control::resume_jobs,
        super::control::finish_task,
        super::control::retry_task,
        super::workflows::create,
        super::workflows::import,
        super::workflows::list,
        super::workflows::get,
        super::workflows::delete,
        super::health::live,
        super::health::ready,
        super::observe::metrics,
        document,
    ),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "jobs", description = "Start and read jobs; cancel, pause and resume them; finish and retry their tasks"),
        (name = "workflows", description = "Store, read and delete workflows"),
        (name = "health", description = "Liveness, readiness, metrics and this document")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The error answers many routes give, declared once here rather than in each annotation: 504
/// when a request outlives `--http-request-timeout` (every route); on the routes that need a
/// token, 401 and 403, 429 when `--max-in-flight` calls are already running and 503 when the
/// database does not answer; on the routes that take a body, 413 and 415.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorEnvelope",
                        ))))
                        .build(),
                )
                .build()
                .into()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 4] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if operation.security.is_some() {
                    responses
                        .entry("401".to_owned())
                        .or_insert_with(|| error("Missing or invalid bearer token"));
                    responses
                        .entry("403".to_owned())
                        .or_insert_with(|| error("The caller's roles or groups do not allow it"));
                    responses.entry("429".to_owned()).or_insert_with(|| {
                        error("Too many calls in flight (--max-in-flight): retry later")
                    });
                    responses.entry("503".to_owned()).or_insert_with(|| {
                        error("The database does not answer, or the service is shutting down")
                    });
                }
                if operation.request_body.is_some() {
                    responses
                        .entry("413".to_owned())
                        .or_insert_with(|| error("Body over 4 MiB"));
                    responses
                        .entry("415".to_owned())
                        .or_insert_with(|| error("Body not sent as application/json"));
                }
                responses.entry("504".to_owned()).or_insert_with(|| {
                    error("The request took longer than --http-request-timeout and was cancelled")
                });
            }
        }
    }
}

/// The parameters of each operation are written here as JSON rather than in the route
/// annotations: the searches take `deepObject` parameters (`equals[name]=...`), and every
/// parameter has the bounds and patterns the handler checks, which the annotations cannot all say.
/// The parameters of the operation `operation_id`, or null for none.
fn parameters(method: &str, operation_id: &str) -> Value {
    let query = |name: &str, description: &str, schema: Value| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": schema})
    };
    let search = |name: &str, description: &str, schema: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "style": "deepObject", "explode": true, "schema": reference(schema)})
    };
    let limit = query(
        "limit",
        "Page size, 1 to 1000 (default 50); a page of large items may hold fewer (--max-page-bytes)",
        json!({"type": "integer", "minimum": 1, "maximum": 1000}),
    );
    let skip = query(
        "skip",
        "Items to skip (default 0)",
        json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
    );
    match (method, operation_id) {
        ("post", "startJob") => json!([{
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A retry with the same key and body returns the first job, with Idempotent-Replayed: true",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
        }]),
        ("get", "getJob") => json!([{
            "name": "id", "in": "path", "required": true, "description": "Job id",
            "schema": {"type": "string", "pattern": OBJECT_ID},
        }]),
        ("get", "listJobs") => json!([
            search(
                "equals",
                "Jobs whose field equals the value: equals[name]=Port Turn Up",
                "JobTextSearch"
            ),
            search(
                "in",
                "Jobs whose field is one of the comma-separated values: in[status]=running,paused",
                "JobListSearch"
            ),
            search(
                "starts-with",
                "Jobs whose field starts with the value: starts-with[name]=Port",
                "JobPrefixSearch"
            ),
            search(
                "gt",
                "Jobs whose time is after the value: gt[created]=2026-01-01T00:00:00Z",
                "JobTimeSearch"
            ),
            search(
                "lt",
                "Jobs whose time is before the value: lt[last_updated]=1767225600000",
                "JobTimeSearch"
            ),
            limit,
            skip,
            query(
                "sort",
                "Field to sort by (default created)",
                json!({"type": "string", "enum": JOB_SORT_FIELDS})
            ),
            query(
                "order",
                "Sort order (default desc)",
                json!({"type": "string", "enum": ["asc", "desc", "1", "-1"]})
            ),
        ]),
        ("get", "listWorkflows") => json!([
            search(
                "equals",
                "The workflow with this name: equals[name]=Port Turn Up",
                "WorkflowNameSearch"
            ),
            search(
                "starts-with",
                "Workflows whose name starts with this text: starts-with[name]=Port",
                "WorkflowNameSearch"
            ),
            limit,
            skip,
        ]),
        ("post", "finishTask") | ("post", "retryTask") => json!([
            {"name": "jobId", "in": "path", "required": true, "description": "Job id",
             "schema": {"type": "string", "pattern": OBJECT_ID}},
            {"name": "taskId", "in": "path", "required": true,
             "description": "Task id: a key of the job's tasks",
             "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL}},
        ]),
        ("get", "getWorkflow") | ("delete", "deleteWorkflow") => json!([{
            "name": "name", "in": "path", "required": true, "description": "Workflow name",
            "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL},
        }]),
        _ => Value::Null,
    }
}

/// The links from a success of the operation `operation_id` to the operations that can take
/// what it returned (a job id, a workflow name), or null for none; generated clients and
/// schemathesis's stateful phase follow them.
fn links(operation_id: &str) -> Value {
    let workflow = |name: &str| {
        json!({
            "getWorkflow": {"operationId": "getWorkflow", "parameters": {"name": name},
                            "description": "Read the workflow"},
            "startJobFromWorkflow": {"operationId": "startJob",
                                     "requestBody": {"workflow": name, "options": {}},
                                     "description": "Start a job from the workflow"},
        })
    };
    let job = |id: &str| {
        json!({"getJob": {"operationId": "getJob", "parameters": {"id": id},
                          "description": "Read the job"}})
    };
    match operation_id {
        "startJob" => job("$response.body#/data/_id"),
        "listJobs" => job("$response.body#/data/0/_id"),
        "createWorkflow" => workflow("$response.body#/created/name"),
        "importWorkflows" => workflow("$response.body#/data/0/name"),
        "listWorkflows" => workflow("$response.body#/items/0/name"),
        _ => Value::Null,
    }
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "health",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> axum::response::Response {
    use axum::response::IntoResponse;
    // Built once: the document never changes while the process runs, and the route needs no
    // token, so building it per request would be work any caller could ask for in a loop.
    static DOCUMENT: std::sync::LazyLock<axum::body::Bytes> = std::sync::LazyLock::new(|| {
        serde_json::to_vec(&document_json())
            .expect("the document is JSON")
            .into()
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.clone(),
    )
        .into_response()
}

/// A type with its schema in the served document, written as JSON Schema.
trait Documented {
    fn json() -> Value;
}

/// Declares a schema by name, written as JSON Schema. The route annotations name the type; the
/// JSON is put into the served document by [`document_json`] (utoipa's schema types cannot hold
/// every keyword used here, such as a schema that allows any value).
///
/// `schema!(for T = ...)` documents `T`, a type the handlers answer with (the REST types of
/// `rest.rs`, the domain's `Job`); `schema!(T = ...)` declares a schema with no type of its
/// own: a request body the handler reads field by field, or a part of another schema.
macro_rules! schema {
    ($(#[$doc:meta])* for $name:ident = $schema:expr) => {
        impl Documented for $name {
            fn json() -> Value {
                $schema
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::default())
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
    ($(#[$doc:meta])* $name:ident = $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        schema!(for $name = $schema);
    };
}

/// Every schema declared with [`schema!`], by name.
fn schemas() -> Vec<(&'static str, Value)> {
    macro_rules! all {
        ($($name:ident),* $(,)?) => { vec![$((stringify!($name), <$name as Documented>::json())),*] };
    }
    all!(
        StartJobBody,
        JobOptionsBody,
        Storable,
        Job,
        JobTask,
        User,
        JobEnvelope,
        JobListEnvelope,
        JobListMetadata,
        JobIdsBody,
        JobOutcome,
        JobOutcomesEnvelope,
        FinishTaskBody,
        RetryTaskBody,
        FieldError,
        ErrorEnvelope,
        EmptyEnvelope,
        Workflow,
        CreateWorkflowBody,
        ImportWorkflowsBody,
        CreatedWorkflow,
        WorkflowListEnvelope,
        WorkflowPage,
        HealthStatus,
        JobTextSearch,
        JobListSearch,
        JobPrefixSearch,
        JobTimeSearch,
        WorkflowNameSearch,
    )
}

/// The served document: what the annotations say, with the schemas and parameters of this
/// module put in.
pub fn document_json() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    for (name, schema) in schemas() {
        document["components"]["schemas"][name] = schema;
    }
    if let Some(paths) = document["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let parameters = parameters(method, &id);
                if !parameters.is_null() {
                    operation["parameters"] = parameters;
                }
                let links = links(&id);
                if !links.is_null() {
                    operation["responses"]["200"]["links"] = links;
                }
            }
        }
    }
    document
}

/// A reference to a schema of this document.
fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A string the service can store: no U+0000.
fn text() -> Value {
    json!({"type": "string", "pattern": NO_NUL})
}

const NO_NUL: &str = "^[^\\u0000]*$";

/// An object id: 24 lowercase hex characters.
const OBJECT_ID: &str = "^[0-9a-f]{24}$";

const JOB_STATUSES: [&str; 6] = [
    "running",
    "complete",
    "error",
    "canceled",
    "paused",
    "incomplete",
];

const TASK_STATUSES: [&str; 6] = [
    "incomplete",
    "scheduled",
    "running",
    "complete",
    "error",
    "canceled",
];

/// Fields a job search can sort by (`sort`).
const JOB_SORT_FIELDS: [&str; 8] = [
    "_id",
    "name",
    "status",
    "type",
    "description",
    "created_by",
    "created",
    "last_updated",
];

schema!(
    /// Body of `POST /operations-manager/jobs/start`. Unknown keys are refused.
    for StartJobBody = json!({
        "type": "object",
        "description": "Body of a start. Keys other than workflow and options are refused.",
        "required": ["workflow", "options"],
        "additionalProperties": false,
        "properties": {
            "workflow": {"type": "string", "minLength": 1, "pattern": NO_NUL,
                         "description": "Name of the workflow to start the job from."},
            "options": reference("JobOptionsBody"),
        },
    })
);

schema!(
    /// Options of the new job.
    JobOptionsBody = json!({
        "type": "object",
        "description": "Options of the new job. Other keys are accepted, as the reference schema allows: \
                        they are not stored, and each is named in the job's warnings \
                        (`option X is not supported and was ignored`).",
        "properties": {
            "description": {"type": "string", "pattern": NO_NUL,
                            "description": "Description of the job (default empty)."},
            "type": {"type": "string", "minLength": 1, "pattern": NO_NUL,
                     "description": "Job type (default the workflow's)."},
            "variables": {
                "type": "object",
                "propertyNames": {"type": "string", "pattern": NO_NUL},
                "additionalProperties": reference("Storable"),
                "description": "Variables, checked against the workflow's inputSchema (400 naming each bad one).",
            },
            "groups": {"type": "array", "items": {"type": "string", "pattern": OBJECT_ID},
                       "description": "Group ids that may see the job; default the workflow's. The caller must be in each (else 403)."},
        },
        "propertyNames": {"type": "string", "pattern": NO_NUL},
        "additionalProperties": true,
    })
);

schema!(
    /// A job with the REST field names.
    for Job = json!({
        "type": "object",
        "description": "A job, with the REST document's field names.",
        "required": [
            "_id", "uuid", "name", "description", "type", "status", "tasks", "transitions",
            "variables", "groups", "watchers", "ancestors", "parent", "metrics", "error",
            "warnings", "created", "created_by", "last_updated", "last_updated_by",
            "canvasVersion", "encodingVersion", "font_size", "preAutomationTime", "sla",
            "decorators", "tags", "errorHandler", "createdVersion", "lastUpdatedVersion",
            "migrationVersion", "validationErrors"
        ],
        "additionalProperties": false,
        "properties": {
            "_id": {"type": "string", "pattern": OBJECT_ID},
            "uuid": {"type": "string", "description": "A UUID of the job (empty for jobs stored before it was kept)."},
            "name": {"type": "string", "description": "The workflow's name."},
            "description": {"type": "string"},
            "type": {"type": "string"},
            "status": {"type": "string", "enum": JOB_STATUSES},
            "tasks": {"type": "object", "additionalProperties": reference("JobTask"),
                      "description": "The workflow's tasks by id, with their run state."},
            "transitions": {"type": "object",
                            "description": "The workflow's transitions: source task id -> target task id -> {state, type}.",
                            "additionalProperties": {"type": "object", "additionalProperties": {"type": "object"}}},
            "variables": {"type": "object"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "watchers": {"type": "array", "items": {"type": "string"}},
            "ancestors": {"type": "array", "items": {"type": "string"}},
            "parent": {"description": "For a job a childJob task started, {\"job\": parent job id, \"task\": task id, \"iteration\": n}; null for a job started on its own."},
            "metrics": {
                "type": "object",
                "required": ["start_time", "user", "progress", "owner"],
                "properties": {
                    "start_time": {"type": "integer", "description": "Epoch milliseconds."},
                    "user": {"type": "string"},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "owner": {"type": "string"},
                },
            },
            "error": {"type": "array", "items": {}},
            "warnings": {"type": "array", "items": {}, "description": "E.g. {task: job, message: option X is not supported and was ignored}."},
            "created": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string", "description": "The account id of the caller who started the job."},
            "last_updated": {"type": "string", "format": "date-time"},
            "last_updated_by": reference("User"),
            "canvasVersion": {"type": "integer"},
            "encodingVersion": {"type": "integer"},
            "font_size": {"type": "integer"},
            "preAutomationTime": {"type": "number"},
            "sla": {"type": "number"},
            "decorators": {"type": "array", "items": {
                "type": "object", "required": ["type", "pointer"],
                "properties": {"type": {"type": "string"}, "pointer": {"type": "string"}},
            }},
            "tags": {"type": "array", "items": {}},
            "errorHandler": {"description": "The workflow's error handler, or null."},
            "createdVersion": {"type": "string"},
            "lastUpdatedVersion": {"type": "string"},
            "migrationVersion": {"type": "integer"},
            "validationErrors": {"type": "array", "items": {}},
        },
    })
);

schema!(
    /// A task of a job.
    JobTask = json!({
        "type": "object",
        "description": "A task of a job: every field of the workflow's task, plus its run state and its edges.",
        "required": ["status", "transitions", "previous"],
        "additionalProperties": true,
        "properties": {
            "status": {"type": "string", "enum": TASK_STATUSES},
            "transitions": {"type": "object", "description": "Outgoing transitions by end state.",
                            "additionalProperties": {"type": "array", "items": {
                                "type": "object", "required": ["task", "type"],
                                "properties": {"task": {"type": "string"}, "type": {"type": "string"}},
                            }}},
            "previous": {"type": "object", "description": "Ids of the tasks with a transition into this one, by end state.",
                         "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        },
    })
);

schema!(
    /// A user, as the caller's token describes them.
    User = json!({
        "type": "object",
        "description": "A user, as the caller's token describes them (jobs stored before this was kept have only _id, \
                        with an empty username and no groups or roles).",
        "required": ["_id", "username", "memberOf", "assignedRoles"],
        "properties": {
            "_id": {"type": "string", "description": "The account id (the token's sub)."},
            "username": {"type": "string"},
            "memberOf": {"type": "array", "items": {
                "type": "object", "required": ["groupId"], "properties": {"groupId": {"type": "string"}},
            }},
            "assignedRoles": {"type": "array", "items": {
                "type": "object", "required": ["roleId"], "properties": {"roleId": {"type": "string"}},
            }},
        },
    })
);

schema!(
    /// One job.
    for JobEnvelope = json!({
        "type": "object",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": reference("Job"),
            "metadata": {"type": "object"},
        },
    })
);

schema!(
    /// A page of jobs.
    for JobListEnvelope = json!({
        "type": "object",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": {"type": "array", "items": reference("Job")},
            "metadata": reference("JobListMetadata"),
        },
    })
);

schema!(
    /// Where a page of jobs is.
    for JobListMetadata = json!({
        "type": "object",
        "required": ["skip", "limit", "total", "currentPageSize", "nextPageSkip", "previousPageSkip"],
        "properties": {
            "skip": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "total": {"type": "integer", "minimum": 0},
            "currentPageSize": {"type": "integer", "minimum": 0},
            "nextPageSkip": {"type": ["integer", "null"], "description": "null on the last page"},
            "previousPageSkip": {"type": ["integer", "null"], "description": "null on the first page"},
        },
    })
);

schema!(
    /// One bad field.
    for FieldError = json!({
        "type": "object",
        "required": ["field", "description"],
        "properties": {
            "field": {"type": "string", "description": "Path of the field, e.g. options.groups[1] (empty for the whole body)."},
            "description": {"type": "string"},
        },
    })
);

schema!(
    /// Every error answer.
    for ErrorEnvelope = json!({
        "type": "object",
        "description": "Every error answer.",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": {"type": "null"},
            "metadata": {
                "type": "object",
                "required": ["errors"],
                "properties": {"errors": {"type": "array", "items": reference("FieldError")}},
            },
        },
    })
);

schema!(
    /// Body of `POST /operations-manager/jobs/cancel|pause|resume`.
    for JobIdsBody = json!({
        "type": "object",
        "required": ["jobIds"],
        "additionalProperties": false,
        "properties": {"jobIds": {
            "type": "array", "minItems": 1, "maxItems": MAX_JOB_IDS, "uniqueItems": true,
            "items": {"type": "string", "pattern": OBJECT_ID},
            "description": "Ids of the jobs, each once; each gets its own outcome.",
        }},
    })
);

schema!(
    /// What a cancel, pause or resume did to one job.
    for JobOutcome = json!({
        "type": "object",
        "required": ["_id", "ok", "code", "message"],
        "additionalProperties": false,
        "properties": {
            "_id": {"type": "string", "pattern": OBJECT_ID},
            "ok": {"type": "boolean", "description": "True when the job was changed as asked."},
            "code": {"type": "integer", "minimum": 200, "maximum": 599,
                     "description": "The HTTP status a call for this job alone would have been \
                                     answered with: 200 when ok, 404 when no job the caller may \
                                     see has that id, 400 when the job is not in a state that \
                                     allows it."},
            "message": {"type": ["string", "null"], "description": "Why the job was left unchanged; null when ok."},
        },
    })
);

schema!(
    /// Each job's outcome.
    for JobOutcomesEnvelope = json!({
        "type": "object",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": {"type": "array", "items": reference("JobOutcome"),
                     "description": "One outcome for each id of jobIds, in the same order."},
            "metadata": {"type": "object"},
        },
    })
);

schema!(
    /// Body of `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/finish`.
    for FinishTaskBody = json!({
        "type": "object",
        "required": ["taskData"],
        "additionalProperties": false,
        "properties": {"taskData": {
            "type": "object",
            "required": ["finish_state"],
            "additionalProperties": false,
            "properties": {
                "finish_state": {"type": "string", "enum": ["success", "failure", "error"],
                                 "description": "How the manual task ended; its transitions of that state fire."},
                "variables": {
                    "type": "object",
                    "propertyNames": {"type": "string", "pattern": NO_NUL},
                    "additionalProperties": reference("Storable"),
                    "description": "The task's outgoing values (default none).",
                },
            },
        }},
    })
);

schema!(
    /// Body of `POST /operations-manager/jobs/{jobId}/tasks/{taskId}/retry`.
    for RetryTaskBody = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {"variables": {
            "type": "object",
            "propertyNames": {"type": "string", "pattern": NO_NUL},
            "additionalProperties": reference("Storable"),
            "description": "Incoming values that replace the task's own for this run (default none).",
        }},
    })
);

schema!(
    /// A success with no data.
    for EmptyEnvelope = json!({
        "type": "object",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": {"type": "null"},
            "metadata": {"type": "object"},
        },
    })
);

/// An optional workflow field: absent, null, or of this type, with no U+0000 in it.
fn nullable(kind: &str) -> Value {
    let mut schema = match kind {
        "object" => storable_object(),
        "array" => json!({"type": "array", "items": reference("Storable")}),
        "string" => text(),
        _ => json!({"type": kind}),
    };
    schema["type"] = json!([kind, "null"]);
    schema
}

/// An optional whole number of a workflow: absent, null, or an integer that fits 64 bits
/// (signed, or unsigned when positive), written without a fraction.
fn whole_number() -> Value {
    json!({"type": ["integer", "null"], "minimum": i64::MIN, "maximum": u64::MAX})
}

/// An object with no U+0000 in its keys or anywhere in its values.
fn storable_object() -> Value {
    json!({
        "type": "object",
        "propertyNames": {"type": "string", "pattern": NO_NUL},
        "additionalProperties": reference("Storable"),
    })
}

schema!(
    /// Any JSON value the service stores.
    Storable = json!({
        "description": "Any JSON value with no U+0000 in its strings or keys, at any depth \
                        (at most 32 levels of nesting and 100,000 values in a request).",
        "pattern": NO_NUL,
        "propertyNames": {"type": "string", "pattern": NO_NUL},
        "additionalProperties": reference("Storable"),
        "items": reference("Storable"),
    })
);

schema!(
    /// An Itential workflow document.
    for Workflow = {
        let mut task = storable_object();
        task["description"] = json!("A task; its fields are kept as they are.");
        let mut transition = storable_object();
        transition["required"] = json!(["state", "type"]);
        transition["properties"] = json!({
            "state": {"type": "string", "enum": TRANSITION_STATES},
            "type": {"type": "string", "enum": TRANSITION_TYPES},
        });
        let mut targets = storable_object();
        targets["additionalProperties"] = transition;
        let mut transitions = storable_object();
        transitions["additionalProperties"] = targets;
        transitions["description"] = json!("Source task id -> target task id -> {state, type}.");
        let mut tasks = storable_object();
        tasks["additionalProperties"] = task;
        tasks["description"] = json!("Tasks by id, with workflow_start and workflow_end.");
        let mut decorator = storable_object();
        decorator["required"] = json!(["type", "pointer"]);
        decorator["properties"] = json!({"type": text(), "pointer": text()});
        let mut input_schema = storable_object();
        input_schema["type"] = json!(["object", "boolean", "null"]);
        input_schema["description"] = json!(
            "A JSON Schema (draft 7 unless its $schema names another) the variables of a job \
             must match, or null for none."
        );
        let mut workflow = storable_object();
        workflow["description"] = json!(
            "An Itential workflow document. Fields not listed are kept as they are. \
             Whether its task graph can run (workflow_start, workflow_end, transitions between \
             tasks that exist) is checked when a job is started from it: StartJob answers 400 \
             naming each problem."
        );
        workflow["required"] = json!(["name", "tasks", "transitions"]);
        workflow["properties"] = json!({
            "name": {"type": "string", "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
                     "description": "Unique; not empty or only white space."},
            "type": nullable("string"),
            "description": nullable("string"),
            "groups": {"type": ["array", "null"], "items": {"type": "string", "pattern": OBJECT_ID}},
            "tasks": tasks,
            "transitions": transitions,
            "canvasVersion": whole_number(),
            "encodingVersion": whole_number(),
            "font_size": whole_number(),
            "preAutomationTime": nullable("number"),
            "sla": nullable("number"),
            "decorators": {"type": ["array", "null"], "items": decorator},
            "tags": nullable("array"),
            "inputSchema": input_schema,
            "outputSchema": nullable("object"),
        });
        workflow
    }
);

schema!(
    /// Body of `POST /automation-studio/automations`.
    for CreateWorkflowBody = json!({
        "type": "object",
        "required": ["automation"],
        "additionalProperties": false,
        "properties": {"automation": reference("Workflow")},
    })
);

schema!(
    /// Body of `POST /automation-studio/automations/import`.
    for ImportWorkflowsBody = json!({
        "type": "object",
        "required": ["automations"],
        "additionalProperties": false,
        "properties": {"automations": {
            "type": "array", "items": reference("Workflow"),
            "description": "Workflows with distinct names, stored all or none.",
        }},
    })
);

schema!(
    /// A stored workflow and where to edit it.
    for CreatedWorkflow = json!({
        "type": "object",
        "required": ["created", "edit"],
        "properties": {
            "created": reference("Workflow"),
            "edit": {"type": "string", "description": "Where to edit it."},
        },
    })
);

schema!(
    /// Workflows in the envelope.
    for WorkflowListEnvelope = json!({
        "type": "object",
        "required": ["message", "data", "metadata"],
        "properties": {
            "message": {"type": "string"},
            "data": {"type": "array", "items": reference("Workflow")},
            "metadata": {"type": "object"},
        },
    })
);

schema!(
    /// A page of workflows.
    for WorkflowPage = json!({
        "type": "object",
        "required": ["items", "count", "skip", "limit", "total"],
        "properties": {
            "items": {"type": "array", "items": reference("Workflow")},
            "count": {"type": "integer", "minimum": 0},
            "skip": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "total": {"type": "integer", "minimum": 0},
        },
    })
);

schema!(
    /// Liveness or readiness.
    for HealthStatus = json!({
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["live", "ready", "not ready"]},
            "reason": {"type": "string", "description": "Why the service is not ready."},
        },
    })
);

/// The text fields of a job a search can name, each a string of this schema.
fn job_text_fields(value: Value, status: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "_id": value, "name": value, "type": value, "description": value, "created_by": value,
            "status": status,
        },
    })
}

schema!(
    /// `equals[field]=value`.
    JobTextSearch = job_text_fields(text(), json!({"type": "string", "enum": JOB_STATUSES}))
);

schema!(
    /// `in[field]=a,b,c`.
    JobListSearch = job_text_fields(
        json!({"type": "string", "pattern": NO_NUL, "description": "Comma-separated values"}),
        json!({"type": "string", "pattern": format!("^({s})(,({s}))*$", s = JOB_STATUSES.join("|")),
               "description": "Comma-separated statuses"}),
    )
);

schema!(
    /// `starts-with[field]=prefix`.
    JobPrefixSearch = job_text_fields(text(), text())
);

schema!(
    /// `gt[field]=time`, `lt[field]=time`.
    JobTimeSearch = {
        let time = json!({
            "description": "An RFC 3339 time or epoch milliseconds, from year 1 to 9999",
            "anyOf": [
                {"type": "string", "pattern": epoch_millis_pattern()},
                {"type": "string", "format": "date-time"},
            ],
        });
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"created": time, "last_updated": time},
        })
    }
);

/// Epoch milliseconds the service can compare: an integer as Rust reads one (a sign, leading
/// zeros) from year 1 (-62135596800000) to the end of year 9999 (253402300799999).
fn epoch_millis_pattern() -> String {
    format!(
        "^(\\+?0*({})|-0*({}))$",
        at_most("253402300799999"),
        at_most("62135596800000")
    )
}

/// A regular expression of the digit strings without leading zeros from 0 to `limit`.
fn at_most(limit: &str) -> String {
    let digits: Vec<u32> = limit.chars().map(|c| c.to_digit(10).unwrap()).collect();
    // Shorter numbers, then for each position: the same digits before it, a smaller one there,
    // any digits after it; and the limit itself.
    let mut choices = vec![format!("0|[1-9][0-9]{{0,{}}}", digits.len() - 2)];
    for (i, &digit) in digits.iter().enumerate() {
        let lowest = u32::from(i == 0);
        if digit > lowest {
            choices.push(format!(
                "{}[{}-{}][0-9]{{{}}}",
                &limit[..i],
                lowest,
                digit - 1,
                digits.len() - i - 1
            ));
        }
    }
    choices.push(limit.to_owned());
    choices.join("|")
}

schema!(
    /// `equals[name]=...` or `starts-with[name]=...` of a workflow search.
    WorkflowNameSearch = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {"name": text()},
    })
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_pattern_takes_what_the_search_takes() {
        let pattern = jsonschema::validator_for(
            &json!({"type": "string", "pattern": epoch_millis_pattern()}),
        )
        .unwrap();
        for (text, ok) in [
            ("0", true),
            ("1767225600000", true),
            ("+0001767225600000", true),
            ("253402300799999", true),
            ("253402300800000", false),
            ("-62135596800000", true),
            ("-62135596800001", false),
            ("-0", true),
            ("99999999999999", true),
            ("999999999999999", false),
            ("1e3", false),
            ("", false),
        ] {
            assert_eq!(pattern.is_valid(&json!(text)), ok, "{text}");
            let search = crate::domain::search::JobSearch::parse(&[(
                "gt[created]".to_owned(),
                text.to_owned(),
            )]);
            assert_eq!(search.is_ok(), ok, "{text}: the search disagrees");
        }
    }

    /// Every `$ref` in `value`.
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let document = document_json();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 20);
        for target in found {
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                document["components"]["schemas"][name].is_object(),
                "{target} is not in the document"
            );
        }
    }

    #[test]
    fn every_search_field_the_document_names_is_one_the_search_takes() {
        let document = document_json();
        let schemas = &document["components"]["schemas"];
        for (operator, schema, value) in [
            ("equals", "JobTextSearch", "running"),
            ("in", "JobListSearch", "running,paused"),
            ("starts-with", "JobPrefixSearch", "run"),
            ("gt", "JobTimeSearch", "2026-01-01T00:00:00Z"),
            ("lt", "JobTimeSearch", "1767225600000"),
        ] {
            let fields = schemas[schema]["properties"].as_object().unwrap();
            assert!(!fields.is_empty());
            for field in fields.keys() {
                let name = format!("{operator}[{field}]");
                let parsed =
                    crate::domain::search::JobSearch::parse(&[(name.clone(), value.to_owned())]);
                assert!(parsed.is_ok(), "{name}={value}: {parsed:?}");
            }
        }
        for field in JOB_SORT_FIELDS {
            let parsed =
                crate::domain::search::JobSearch::parse(&[("sort".to_owned(), field.to_owned())]);
            assert!(parsed.is_ok(), "sort={field}: {parsed:?}");
        }
        let parameters = document["paths"]["/operations-manager/jobs"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let deep: Vec<&str> = parameters
            .iter()
            .filter(|p| p["style"] == "deepObject")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(deep, ["equals", "in", "starts-with", "gt", "lt"]);
    }
}
