//! Workflow routes, as Automation Studio and the workflow builder expose them.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Authenticated, JsonBody, Path};
use super::rest::{CreatedWorkflow, EmptyEnvelope, WorkflowListEnvelope, WorkflowPage};
use super::{query_pairs, HttpState};
use crate::domain::json::type_name;
use crate::domain::search::WorkflowSearch;
use crate::domain::{storable, Error, Violations, Workflow};

/// `POST /automation-studio/automations`
#[utoipa::path(
    post,
    path = "/automation-studio/automations",
    operation_id = "createWorkflow",
    tag = "workflows",
    request_body(content = super::rest::CreateWorkflowBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The stored workflow, and where to edit it", body = super::rest::CreatedWorkflow),
        (status = 400, description = "Not a workflow (field violations in metadata.errors)", body = super::rest::ErrorEnvelope),
        (status = 409, description = "A workflow with that name exists", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<CreatedWorkflow>, ApiError> {
    let mut document = only_field(body, "automation")?;
    integer_fields_as_integers(&mut document);
    let workflow = state
        .service
        .create_workflow(&caller, document, "automation")
        .await?;
    let name = workflow.document.name().to_owned();
    let edit: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    Ok(Json(CreatedWorkflow {
        created: Value::Object(workflow.document.into_document()),
        edit: format!("/automation-studio/#/edit?workflow={edit}"),
    }))
}

/// `POST /automation-studio/automations/import`
#[utoipa::path(
    post,
    path = "/automation-studio/automations/import",
    operation_id = "importWorkflows",
    tag = "workflows",
    request_body(content = super::rest::ImportWorkflowsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Every workflow stored (all or none)", body = super::rest::WorkflowListEnvelope),
        (status = 400, description = "A document is not a workflow (paths start automations[i])", body = super::rest::ErrorEnvelope),
        (status = 409, description = "A name is taken or repeated", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn import(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<WorkflowListEnvelope, ApiError> {
    let documents = match only_field(body, "automations")? {
        Value::Array(mut documents) => {
            documents.iter_mut().for_each(integer_fields_as_integers);
            documents
        }
        other => {
            return Err(Error::invalid(
                "automations",
                format!("must be an array of workflows, not {}", type_name(&other)),
            )
            .into())
        }
    };
    let workflows = state
        .service
        .import_workflows(&caller, documents, "automations")
        .await?;
    Ok(WorkflowListEnvelope::new(
        "Successfully imported the requested items",
        documents_json(workflows),
    ))
}

/// `GET /automation-studio/workflows`
#[utoipa::path(
    get,
    path = "/automation-studio/workflows",
    operation_id = "listWorkflows",
    tag = "workflows",
    responses(
        (status = 200, description = "A page of workflows in name order", body = super::rest::WorkflowPage),
        (status = 400, description = "Unknown parameter or bad value", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Json<WorkflowPage>, ApiError> {
    let search = WorkflowSearch::parse(&query_pairs(query.as_deref()))?;
    let (workflows, total) = state.service.search_workflows(&caller, &search).await?;
    let items = documents_json(workflows);
    Ok(Json(WorkflowPage {
        count: items.len(),
        items,
        skip: search.skip,
        limit: search.limit,
        total,
    }))
}

/// `GET /automation-studio/workflows/detailed/{name}`
#[utoipa::path(
    get,
    path = "/automation-studio/workflows/detailed/{name}",
    operation_id = "getWorkflow",
    tag = "workflows",
    responses(
        (status = 200, description = "The workflow document as stored", body = super::rest::Workflow),
        (status = 400, description = "A name that is not UTF-8 or holds U+0000", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such workflow the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let workflow = state
        .service
        .get_workflow(&caller, storable::text(&name, "name")?)
        .await?;
    Ok(Json(Value::Object(workflow.document.into_document())))
}

/// `DELETE /workflow_builder/workflows/delete/{name}`
#[utoipa::path(
    delete,
    path = "/workflow_builder/workflows/delete/{name}",
    operation_id = "deleteWorkflow",
    tag = "workflows",
    responses(
        (status = 200, description = "Deleted; jobs started from it are kept", body = super::rest::EmptyEnvelope),
        (status = 400, description = "A name that is not UTF-8 or holds U+0000", body = super::rest::ErrorEnvelope),
        (status = 404, description = "No such workflow the caller may see", body = super::rest::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<HttpState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<EmptyEnvelope, ApiError> {
    state
        .service
        .delete_workflow(&caller, storable::text(&name, "name")?)
        .await?;
    Ok(EmptyEnvelope::new(
        "Successfully deleted the requested item",
        (),
    ))
}

/// The integer fields of a workflow (`canvasVersion`, `encodingVersion`, `font_size`) given
/// as whole numbers written with a fraction or exponent (`3.0`, `1e3`), made integers. JSON has
/// one number type, and JSON Schema (the OpenAPI document) counts `3.0` as an integer; gRPC
/// clients, whose `Struct` numbers are all doubles, get the same treatment.
fn integer_fields_as_integers(document: &mut Value) {
    let Some(document) = document.as_object_mut() else {
        return;
    };
    for key in ["canvasVersion", "encodingVersion", "font_size"] {
        let Some(value) = document.get_mut(key) else {
            continue;
        };
        let Some(number) = value.as_f64().filter(|_| value.is_f64()) else {
            continue;
        };
        // Every whole double in (-2^63, 2^64) fits i64 or u64. The bounds themselves are left
        // out: integers just past the 64-bit range (-2^63 - 1, 2^64) parse as those doubles.
        if number.fract() != 0.0
            || number <= -9.223_372_036_854_776e18
            || number >= 1.844_674_407_370_955_2e19
        {
            continue;
        }
        *value = if number < 0.0 {
            Value::from(number as i64)
        } else {
            Value::from(number as u64)
        };
    }
}

/// The one field of a body such as `{"automation": {...}}`; other keys are refused.
fn only_field(body: Value, field: &str) -> Result<Value, Error> {
    let Value::Object(mut body) = body else {
        return Err(Error::invalid(
            "",
            format!("the body must be a JSON object, not {}", type_name(&body)),
        ));
    };
    let mut violations = Violations::default();
    for key in body.keys().filter(|k| *k != field) {
        violations.push(
            key.as_str(),
            format!("is not allowed: the body has only {field}"),
        );
    }
    let value = body.remove(field);
    if value.is_none() {
        violations.push(field, "is required");
    }
    violations.into_result(value.unwrap_or_default())
}

fn documents_json(workflows: Vec<Workflow>) -> Vec<Value> {
    workflows
        .into_iter()
        .map(|w| Value::Object(w.document.into_document()))
        .collect()
}
