use job_service::grpc::pb;
use serde_json::{json, Value};
use sqlx::Row;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{from_struct, small_workflow, to_struct, violated_fields, TestApp};

#[tokio::test]
async fn start_job_returns_the_stored_job_with_its_task_graph() {
    // Jobs stay as started: the stored job is compared with the one StartJob returned.
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("Port Turn Up")).await;

    let response = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "Port Turn Up".into(),
            options: Some(pb::JobOptions {
                description: Some("Example job description".into()),
                r#type: Some("resource:compliance".into()),
                variables: Some(to_struct(&json!({"device": "r1", "count": 1}))),
                groups: vec![
                    "b0bc20ec3a3e5e90bac881e7".into(),
                    "7d5f0cb5c6a629ea14324d9b".into(),
                ],
            }),
        })
        .await
        .expect("job started")
        .into_inner();
    assert!(response.created);
    let job = response.job.unwrap();

    assert_eq!(job.id.len(), 24);
    assert_eq!(job.name, "Port Turn Up");
    assert_eq!(job.description, "Example job description");
    assert_eq!(job.r#type, "resource:compliance");
    assert_eq!(job.status(), pb::JobStatus::Running);
    assert_eq!(
        job.groups,
        ["b0bc20ec3a3e5e90bac881e7", "7d5f0cb5c6a629ea14324d9b"]
    );
    assert_eq!(job.ancestors, std::slice::from_ref(&job.id));
    assert_eq!(job.watchers.len(), 1);
    assert_eq!(job.created_by, job.watchers[0]);
    let variables = from_struct(job.variables.as_ref().unwrap());
    assert_eq!(
        variables,
        json!({"device": "r1", "count": 1, "_id": job.id, "initiator": "admin"})
    );
    assert_eq!(job.tasks.len(), 3);
    assert_eq!(
        job.tasks["workflow_start"].status(),
        pb::TaskStatus::Complete
    );
    let a1 = &job.tasks["a1"];
    assert_eq!(a1.status(), pb::TaskStatus::Incomplete);
    assert_eq!(a1.app, "WorkFlowEngine");
    assert_eq!(
        a1.transitions["success"].transitions[0].task,
        "workflow_end"
    );
    assert_eq!(a1.previous["success"].tasks, ["workflow_start"]);
    let extra = from_struct(a1.extra.as_ref().unwrap());
    assert_eq!(extra["nodeLocation"], json!({"x": 1, "y": 1}));
    assert_eq!(
        job.transitions["workflow_start"].targets["a1"].state,
        "success"
    );

    // The job is in the database, as the REST document, exactly as returned.
    let row = sqlx::query(
        "select status, workflow_name, groups, document from job_documents where id = $1",
    )
    .bind(&job.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("status"), "running");
    assert_eq!(row.get::<String, _>("workflow_name"), "Port Turn Up");
    assert_eq!(row.get::<Vec<String>, _>("groups"), job.groups);
    let document: Value = row.get("document");
    assert_eq!(document["_id"], json!(job.id));
    assert_eq!(
        document["variables"]["count"].to_string(),
        "1",
        "whole numbers stay integers"
    );
    assert_eq!(
        document["tasks"]["a1"]["transitions"],
        json!({"success": [{"task": "workflow_end", "type": "standard"}]})
    );
    assert_eq!(document["metrics"]["progress"], json!(0));

    let fetched = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(fetched, job);
}

#[tokio::test]
async fn start_job_defaults_come_from_the_workflow() {
    let app = TestApp::spawn().await;
    let mut workflow = small_workflow("Grouped");
    workflow["groups"] = json!(["aaaaaaaaaaaaaaaaaaaaaaaa"]);
    workflow["type"] = json!("automation");
    app.create_workflow(&workflow).await;
    let job = app
        .start_job("Grouped", json!({"device": "r1"}))
        .await
        .unwrap();
    assert_eq!(job.description, "");
    assert_eq!(job.r#type, "automation");
    assert_eq!(job.groups, ["aaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert_eq!(job.canvas_version, 3);
}

#[tokio::test]
async fn start_job_requires_a_workflow_name() {
    let app = TestApp::spawn().await;
    let status = app.start_job("", json!({})).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["workflow"]);
}

#[tokio::test]
async fn start_job_requires_options() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let status = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["options"]);
}

#[tokio::test]
async fn start_job_rejects_group_ids_that_are_not_object_ids() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let status = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: Some(pb::JobOptions {
                variables: Some(to_struct(&json!({"device": "r1"}))),
                groups: vec![
                    "b0bc20ec3a3e5e90bac881e7".into(),
                    "B0BC20EC3A3E5E90BAC881E7".into(),
                    "admins".into(),
                ],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["options.groups[1]", "options.groups[2]"]
    );
    let count: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "no job is stored for a bad request");
}

#[tokio::test]
async fn start_job_rejects_an_empty_type() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let status = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: Some(pb::JobOptions {
                r#type: Some(String::new()),
                variables: Some(to_struct(&json!({"device": "r1"}))),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["options.type"]);
}

/// A StartJobRequest from a client built from a newer .proto, with fields this service lacks.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerStartJobRequest {
    #[prost(string, tag = "1")]
    workflow: String,
    #[prost(message, optional, tag = "2")]
    options: Option<NewerJobOptions>,
    #[prost(string, tag = "15")]
    priority: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NewerJobOptions {
    #[prost(message, optional, tag = "3")]
    variables: Option<prost_types::Struct>,
    #[prost(bool, tag = "12")]
    dry_run: bool,
}

#[tokio::test]
async fn start_job_rejects_fields_it_does_not_know() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let mut grpc = tonic::client::Grpc::new(app.channel());
    grpc.ready().await.unwrap();
    let request = NewerStartJobRequest {
        workflow: "W".into(),
        options: Some(NewerJobOptions {
            variables: Some(to_struct(&json!({"device": "r1"}))),
            dry_run: true,
        }),
        priority: "high".into(),
    };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", app.admin_token).parse().unwrap(),
    );
    let status = grpc
        .unary::<_, pb::StartJobResponse, _>(
            request,
            "/operations_manager.v1.JobService/StartJob"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["#15", "options.#12"]);
    let count: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn start_job_checks_variables_against_the_input_schema() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;

    let missing = app.start_job("W", json!({"count": 2})).await.unwrap_err();
    assert_eq!(violated_fields(&missing), ["options.variables.device"]);
    assert!(
        missing.message().contains("device"),
        "{}",
        missing.message()
    );

    let wrong_types = app
        .start_job("W", json!({"device": 7, "count": "two"}))
        .await
        .unwrap_err();
    let mut fields = violated_fields(&wrong_types);
    fields.sort();
    assert_eq!(
        fields,
        ["options.variables.count", "options.variables.device"]
    );
}

#[tokio::test]
async fn start_job_reports_an_unknown_workflow_as_not_found() {
    let app = TestApp::spawn().await;
    let status = app
        .start_job("No Such Workflow", json!({}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "Cannot find workflow No Such Workflow");
}

#[tokio::test]
async fn start_job_refuses_a_task_graph_that_cannot_run() {
    let app = TestApp::spawn().await;
    let mut broken = small_workflow("Broken");
    // a1 leads nowhere that exists, b2 has no transitions entry, and the end is unreachable.
    broken["transitions"]["a1"] = json!({"ffff": {"state": "success", "type": "standard"}});
    broken["tasks"]["b2"] = json!({"name": "orphan"});
    app.create_workflow(&broken).await;

    let status = app
        .start_job("Broken", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    let mut subjects: Vec<_> = details
        .precondition_failure()
        .expect("a google.rpc.PreconditionFailure detail")
        .violations
        .iter()
        .map(|v| v.subject.clone())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "tasks.workflow_end",
            "transitions.a1.ffff",
            "transitions.b2"
        ]
    );
    assert!(
        status.message().contains("workflow_end cannot be reached"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn start_job_rejects_strings_holding_nul() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let status = app
        .start_job("W", json!({"device": "r1", "note": {"text": "a\u{0}b"}}))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["options.variables.note.text"]);
}

#[tokio::test]
async fn get_job_distinguishes_malformed_and_unknown_ids() {
    let app = TestApp::spawn().await;
    let malformed = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { id: "42".into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&malformed), ["id"]);
    let unknown = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest {
            id: "0123456789abcdef01234567".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
