//! Group-based access holds on every path that can show or confirm an item: an idempotent
//! replay shows a job only to a caller who may still see it, and a workflow name taken by a
//! workflow the caller cannot see confirms nothing about it.

use job_service::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{send, small_workflow, start_request, to_struct, TestApp};

const GROUP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const GROUP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

fn workflow_in(name: &str, group: &str) -> serde_json::Value {
    let mut workflow = small_workflow(name);
    workflow["groups"] = json!([group]);
    workflow
}

/// A start without `options.groups`: the job takes the workflow's groups.
fn options() -> pb::JobOptions {
    pb::JobOptions {
        variables: Some(to_struct(&json!({"device": "r1"}))),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_replayed_key_shows_the_job_only_to_a_caller_who_may_still_see_it() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow_in("W", GROUP_A)).await;
    // The same person (same username, so the same sub) before and after leaving group A.
    let member = app.token("pat", &["operations"], &[GROUP_A]);
    let moved = app.token("pat", &["operations"], &[GROUP_B]);

    let started = app
        .jobs_as(&member)
        .start_job(start_request("W", options(), Some("nightly-1")))
        .await
        .unwrap()
        .into_inner();
    assert!(started.created);
    let id = started.job.unwrap().id;

    let get = app
        .jobs_as(&moved)
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let replay = app
        .jobs_as(&moved)
        .start_job(start_request("W", options(), Some("nightly-1")))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::NotFound, "{replay:?}");
    assert!(!replay.message().contains(&id), "{}", replay.message());

    let (status, body) = send(
        app.http
            .post(format!("{}/operations-manager/jobs/start", app.http_url))
            .bearer_auth(&moved)
            .header("idempotency-key", "nightly-1")
            .json(&json!({"workflow": "W", "options": {"variables": {"device": "r1"}}})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["data"], json!(null));
    assert!(!body.to_string().contains(&id), "{body}");

    // While the caller still sees it, the replay returns the job, as before.
    let again = app
        .jobs_as(&member)
        .start_job(start_request("W", options(), Some("nightly-1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.job.unwrap().id, id);
    assert_eq!(app.stored_jobs().await, 1);
}

#[tokio::test]
async fn a_workflow_name_held_by_a_hidden_workflow_confirms_nothing_about_it() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow_in("Secret plan", GROUP_A))
        .await;
    let outsider = app.token("sam", &["engineering"], &[GROUP_B]);
    let insider = app.token("kim", &["engineering"], &[GROUP_A]);

    let create = app
        .workflows_as(&outsider)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&workflow_in("Secret plan", GROUP_B))),
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::PermissionDenied, "{create:?}");
    assert!(!create.message().contains("exists"), "{}", create.message());

    let import = app
        .workflows_as(&outsider)
        .import_workflows(pb::ImportWorkflowsRequest {
            workflows: vec![
                to_struct(&workflow_in("Open plan", GROUP_B)),
                to_struct(&workflow_in("Secret plan", GROUP_B)),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(import.code(), Code::PermissionDenied, "{import:?}");
    assert!(!import.message().contains("exists"), "{}", import.message());

    let (status, body) = send(
        app.http
            .post(format!("{}/automation-studio/automations", app.http_url))
            .bearer_auth(&outsider)
            .json(&json!({"automation": workflow_in("Secret plan", GROUP_B)})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        !body["message"].as_str().unwrap().contains("exists"),
        "{body}"
    );

    // Nothing of the import was stored, and the hidden workflow is unchanged.
    let names: Vec<String> = sqlx::query_scalar("select name from workflows order by name")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(names, ["Secret plan"]);
    let groups: Vec<String> = sqlx::query_scalar("select unnest(groups) from workflows")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(groups, [GROUP_A]);

    // A caller who sees the workflow hears that it exists.
    let visible = app
        .workflows_as(&insider)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&workflow_in("Secret plan", GROUP_A))),
        })
        .await
        .unwrap_err();
    assert_eq!(visible.code(), Code::AlreadyExists, "{visible:?}");
}
