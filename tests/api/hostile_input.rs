//! Input the database cannot take (U+0000 in text, times outside its range, path segments that
//! are not UTF-8), sent through every edge where caller text or times become SQL parameters:
//! each is the caller's error, naming the field, never an internal one.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use job_service::grpc::pb;
use serde_json::{json, Value};

use crate::helpers::{send, small_workflow, violated_fields, TestApp};

/// A page token as the service would issue it, naming a time and a job id it never stored.
fn job_token(micros: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("j1:{micros}:0123456789abcdef01234567"))
}

/// A workflow page token naming `name`.
fn workflow_token(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("w1:{name}"))
}

fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[tokio::test]
async fn grpc_fields_the_database_cannot_take_are_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let list_jobs = |request: pb::ListJobsRequest| {
        let mut jobs = app.jobs.clone();
        async move { jobs.list_jobs(request).await.map(|_| ()) }
    };
    let list_workflows = |request: pb::ListWorkflowsRequest| {
        let mut workflows = app.workflows.clone();
        async move { workflows.list_workflows(request).await.map(|_| ()) }
    };
    let cases: Vec<(&str, Result<(), tonic::Status>, &str)> = vec![
        (
            "ListJobs.workflow with U+0000",
            list_jobs(pb::ListJobsRequest {
                workflow: "W\0".into(),
                ..Default::default()
            })
            .await,
            "workflow",
        ),
        (
            // 7537 BC: a time chrono holds and PostgreSQL does not (its earliest is 4713 BC).
            "ListJobs page token with a time before year 1",
            list_jobs(pb::ListJobsRequest {
                page_token: job_token(-300_000_000_000_000_000),
                ..Default::default()
            })
            .await,
            "page_token",
        ),
        (
            "ListJobs page token with a time after year 9999",
            list_jobs(pb::ListJobsRequest {
                page_token: job_token(253_402_300_800_000_000),
                ..Default::default()
            })
            .await,
            "page_token",
        ),
        (
            "ListJobs.created_after far before year 1",
            list_jobs(pb::ListJobsRequest {
                created_after: timestamp(-8_000_000_000_000),
                ..Default::default()
            })
            .await,
            "created_after",
        ),
        (
            "ListJobs.created_before after year 9999",
            list_jobs(pb::ListJobsRequest {
                created_before: timestamp(253_402_300_800),
                ..Default::default()
            })
            .await,
            "created_before",
        ),
        (
            "GetWorkflow.name with U+0000",
            app.workflows
                .clone()
                .get_workflow(pb::GetWorkflowRequest { name: "W\0".into() })
                .await
                .map(|_| ()),
            "name",
        ),
        (
            "DeleteWorkflow.name with U+0000",
            app.workflows
                .clone()
                .delete_workflow(pb::DeleteWorkflowRequest { name: "W\0".into() })
                .await
                .map(|_| ()),
            "name",
        ),
        (
            "ListWorkflows.name_prefix with U+0000",
            list_workflows(pb::ListWorkflowsRequest {
                name_prefix: "\0".into(),
                ..Default::default()
            })
            .await,
            "name_prefix",
        ),
        (
            "ListWorkflows page token naming a workflow with U+0000",
            list_workflows(pb::ListWorkflowsRequest {
                page_token: workflow_token("a\0b"),
                ..Default::default()
            })
            .await,
            "page_token",
        ),
        (
            "GetJob.id with U+0000",
            app.jobs
                .clone()
                .get_job(pb::GetJobRequest {
                    id: "0123456789abcdef0123456\0".into(),
                })
                .await
                .map(|_| ()),
            "id",
        ),
        (
            "StartJob.workflow with U+0000",
            app.start_job("W\0", json!({"device": "r1"}))
                .await
                .map(|_| ()),
            "workflow",
        ),
    ];
    for (case, result, field) in cases {
        let status = result.expect_err(case);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{case}: {status:?}"
        );
        assert_eq!(violated_fields(&status), [field], "{case}");
    }
    // Nothing was deleted, and the service still answers.
    app.workflows
        .clone()
        .get_workflow(pb::GetWorkflowRequest { name: "W".into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn gateway_parameters_the_database_cannot_take_are_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let cases = [
        (
            "GET",
            "/operations-manager/jobs?equals[name]=a%00b",
            "equals[name]",
        ),
        (
            "GET",
            "/operations-manager/jobs?in[name]=W,a%00b",
            "in[name]",
        ),
        (
            "GET",
            "/operations-manager/jobs?equals[_id]=%00",
            "equals[_id]",
        ),
        (
            "GET",
            "/operations-manager/jobs?starts-with[description]=%00",
            "starts-with[description]",
        ),
        (
            "GET",
            "/operations-manager/jobs?gt[created]=-99999999999999999",
            "gt[created]",
        ),
        // Epoch milliseconds in 7537 BC, before PostgreSQL's earliest time (4713 BC).
        (
            "GET",
            "/operations-manager/jobs?lt[created]=-300000000000000",
            "lt[created]",
        ),
        // One millisecond before 0001-01-01T00:00:00Z.
        (
            "GET",
            "/operations-manager/jobs?gt[last_updated]=-62135596800001",
            "gt[last_updated]",
        ),
        // The year 294277, past PostgreSQL's latest time.
        (
            "GET",
            "/operations-manager/jobs?lt[last_updated]=9224318016000000",
            "lt[last_updated]",
        ),
        (
            "GET",
            "/automation-studio/workflows?equals[name]=%00",
            "equals[name]",
        ),
        (
            "GET",
            "/automation-studio/workflows?starts-with[name]=W%00",
            "starts-with[name]",
        ),
        ("GET", "/automation-studio/workflows/detailed/a%00b", "name"),
        ("DELETE", "/workflow_builder/workflows/delete/a%00b", "name"),
        ("GET", "/operations-manager/jobs/a%00b", "id"),
        // Path segments that are not UTF-8 once percent-decoded.
        ("GET", "/automation-studio/workflows/detailed/%FF", "name"),
        ("DELETE", "/workflow_builder/workflows/delete/W%C3", "name"),
        ("GET", "/operations-manager/jobs/%FF", "id"),
    ];
    for (method, path, field) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = send(app.request(method, path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["data"], Value::Null, "{path}: {body}");
        let errors = body["metadata"]["errors"].as_array().expect(path);
        assert_eq!(errors.len(), 1, "{path}: {body}");
        assert_eq!(errors[0]["field"], field, "{path}: {body}");
        assert!(
            errors[0]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{path}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(field), "{path}: {message}");
    }
    // The workflow is still there.
    let (status, _) = app.get("/automation-studio/workflows/detailed/W").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn times_at_the_edges_of_the_stored_range_are_searched_not_refused() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    app.start_job("W", json!({"device": "r1"})).await.unwrap();
    let (status, body) = app
        .get("/operations-manager/jobs?gt[created]=0001-01-01T00:00:00Z&lt[created]=9999-12-31T23:59:59.999999Z")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["total"], 1);
    let jobs = app
        .jobs
        .clone()
        .list_jobs(pb::ListJobsRequest {
            created_after: timestamp(-62_135_596_800),
            created_before: Some(prost_types::Timestamp {
                seconds: 253_402_300_799,
                nanos: 999_999_999,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs.jobs.len(), 1);
}

#[tokio::test]
async fn a_value_the_database_refuses_past_the_edge_checks_is_invalid_argument_not_internal() {
    let app = TestApp::spawn().await;
    // PostgreSQL refuses a value as it does U+0000 in jsonb (SQLSTATE 22P05), for a value no
    // edge check knows of.
    for statement in [
        "create function refuse_value() returns trigger language plpgsql as $$
         begin
             raise exception 'unsupported Unicode escape sequence'
                 using errcode = 'untranslatable_character';
         end $$",
        "create trigger workflows_refuse_value before insert on workflows
         for each statement execute function refuse_value()",
    ] {
        sqlx::query(statement).execute(&app.db).await.unwrap();
    }
    let status = app
        .workflows
        .clone()
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(crate::helpers::to_struct(&small_workflow("W"))),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), [""]);
    assert!(
        !status.message().contains("Unicode") && !status.message().contains("internal"),
        "{status:?}"
    );
    let (status, body) = app
        .post(
            "/automation-studio/automations",
            &json!({"automation": small_workflow("W")}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["metadata"]["errors"][0]["field"], "", "{body}");
}
