//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route annotations and the
//! schema types below, so the document and the routes cannot drift apart silently (a test calls
//! every documented operation and checks the answer's status is documented).

#![allow(dead_code)] // The types here describe bodies for the document; handlers read JSON.

use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "job-service JSON gateway",
        description = "The Operations Manager and Automation Studio REST routes, mirrored over the job service. \
                       Every route but health and this document needs `Authorization: Bearer <JWT>`."
    ),
    paths(
        super::jobs::start_job,
        super::jobs::get_job,
        super::jobs::list_jobs,
        super::workflows::create,
        super::workflows::import,
        super::workflows::list,
        super::workflows::get,
        super::workflows::delete,
        super::health::live,
        super::health::ready,
        document,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Start and read jobs"),
        (name = "workflows", description = "Store, read and delete workflows"),
        (name = "health", description = "Liveness and readiness")
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

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Body of `POST /operations-manager/jobs/start`. Unknown keys are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartJobBody {
    /// Name of the workflow to start the job from.
    workflow: String,
    options: JobOptionsBody,
}

/// Options of the new job. Other keys are accepted, as the reference schema allows: they are
/// not stored, and each is named in the job's `warnings` (`option X is not supported and was
/// ignored`).
#[derive(Deserialize, ToSchema)]
pub struct JobOptionsBody {
    /// Description of the job (default empty).
    description: Option<String>,
    /// Job type (default the workflow's).
    #[serde(rename = "type")]
    job_type: Option<String>,
    /// Variables, checked against the workflow's inputSchema.
    variables: Option<Value>,
    /// Group ids (24 lowercase hex) that may see the job; default the workflow's.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    groups: Option<Vec<String>>,
}

/// A job document with the REST field names (`_id`, `tasks`, `transitions`, `variables`,
/// `metrics`, `created`, `created_by`, ...).
#[derive(ToSchema)]
pub struct Job(Value);

#[derive(ToSchema)]
pub struct JobEnvelope {
    message: String,
    data: Job,
    metadata: Value,
}

#[derive(ToSchema)]
pub struct JobListEnvelope {
    message: String,
    data: Vec<Job>,
    /// `skip`, `limit`, `total`, `currentPageSize`, `nextPageSkip`, `previousPageSkip`.
    metadata: Value,
}

/// One bad field.
#[derive(ToSchema)]
pub struct FieldError {
    /// Path of the field, e.g. `options.groups[1]`.
    field: String,
    description: String,
}

#[derive(ToSchema)]
pub struct ErrorMetadata {
    errors: Vec<FieldError>,
}

/// Every error answer.
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    message: String,
    /// Always null.
    data: Option<Value>,
    metadata: ErrorMetadata,
}

#[derive(ToSchema)]
pub struct EmptyEnvelope {
    message: String,
    data: Option<Value>,
    metadata: Value,
}

/// Body of `POST /automation-studio/automations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflowBody {
    /// An Itential workflow document.
    automation: Value,
}

/// Body of `POST /automation-studio/automations/import`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportWorkflowsBody {
    /// Itential workflow documents with distinct names.
    automations: Vec<Value>,
}

#[derive(ToSchema)]
pub struct CreatedWorkflow {
    /// The workflow document as stored.
    created: Value,
    /// Where to edit it.
    edit: String,
}

#[derive(ToSchema)]
pub struct WorkflowListEnvelope {
    message: String,
    data: Vec<Value>,
    metadata: Value,
}

#[derive(ToSchema)]
pub struct WorkflowPage {
    items: Vec<Value>,
    count: i64,
    skip: i64,
    limit: i64,
    total: i64,
}

#[derive(ToSchema)]
pub struct HealthStatus {
    status: String,
}
