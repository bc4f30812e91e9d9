use job_service::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{
    corpus_workflow, from_struct, small_workflow, to_struct, violated_fields, TestApp,
};

#[tokio::test]
async fn a_created_workflow_comes_back_unchanged_with_fields_the_service_does_not_model() {
    let app = TestApp::spawn().await;
    let document = corpus_workflow("cisco-ios", "port-turn-up.json");
    let created = app.create_workflow(&document).await;
    assert_eq!(created.name, "Port Turn Up");
    assert_eq!(created.r#type, "automation");
    assert_eq!(
        created.task_count,
        document["tasks"].as_object().unwrap().len() as i32
    );
    assert_eq!(from_struct(created.document.as_ref().unwrap()), document);

    let fetched = app
        .workflows
        .clone()
        .get_workflow(pb::GetWorkflowRequest {
            name: "Port Turn Up".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .workflow
        .unwrap();
    assert_eq!(from_struct(fetched.document.as_ref().unwrap()), document);
    assert_eq!(
        fetched.document.unwrap().fields["createdVersion"],
        created.document.unwrap().fields["createdVersion"]
    );
}

#[tokio::test]
async fn a_duplicate_workflow_name_already_exists() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("Twice")).await;
    let status = app
        .workflows
        .clone()
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("Twice"))),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("Twice"));
}

#[tokio::test]
async fn a_malformed_workflow_is_rejected_naming_each_field() {
    let app = TestApp::spawn().await;
    let mut document = small_workflow("Bad");
    document["tasks"] = json!([]);
    document["groups"] = json!(["not-a-group"]);
    document["transitions"]["a1"]["workflow_end"]["type"] = json!("sideways");
    let status = app
        .workflows
        .clone()
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&document)),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "workflow.groups[0]",
            "workflow.tasks",
            "workflow.transitions.a1.workflow_end.type"
        ]
    );
    let missing = app
        .workflows
        .clone()
        .create_workflow(pb::CreateWorkflowRequest { workflow: None })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&missing), ["workflow"]);
}

#[tokio::test]
async fn deleting_a_workflow_keeps_the_jobs_started_from_it() {
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("Short Lived")).await;
    let job = app
        .start_job("Short Lived", json!({"device": "r1"}))
        .await
        .unwrap();

    app.workflows
        .clone()
        .delete_workflow(pb::DeleteWorkflowRequest {
            name: "Short Lived".into(),
        })
        .await
        .unwrap();

    let gone = app
        .workflows
        .clone()
        .get_workflow(pb::GetWorkflowRequest {
            name: "Short Lived".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(gone.message(), "Cannot find workflow Short Lived");
    let kept = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(kept.tasks, job.tasks);
    let again = app
        .workflows
        .clone()
        .delete_workflow(pb::DeleteWorkflowRequest {
            name: "Short Lived".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn import_stores_all_workflows_or_none() {
    let app = TestApp::spawn().await;
    let mut bad = small_workflow("Third");
    bad["font_size"] = json!("large");
    let status = app
        .workflows
        .clone()
        .import_workflows(pb::ImportWorkflowsRequest {
            workflows: vec![
                to_struct(&small_workflow("First")),
                to_struct(&small_workflow("Second")),
                to_struct(&bad),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["workflows[2].font_size"]);
    let stored: i64 = sqlx::query_scalar("select count(*) from workflows")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let duplicate = app
        .workflows
        .clone()
        .import_workflows(pb::ImportWorkflowsRequest {
            workflows: vec![
                to_struct(&small_workflow("Same")),
                to_struct(&small_workflow("Same")),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let imported = app
        .workflows
        .clone()
        .import_workflows(pb::ImportWorkflowsRequest {
            workflows: vec![
                to_struct(&small_workflow("First")),
                to_struct(&small_workflow("Second")),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .workflows;
    let names: Vec<_> = imported.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["First", "Second"]);
}

#[tokio::test]
async fn list_workflows_pages_through_every_workflow_in_name_order() {
    let app = TestApp::spawn().await;
    for name in ["e", "a", "d", "b", "c"] {
        app.create_workflow(&small_workflow(name)).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .workflows
            .clone()
            .list_workflows(pb::ListWorkflowsRequest {
                page_size: 2,
                page_token: token.clone(),
                name_prefix: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.workflows.len() <= 2);
        names.extend(page.workflows.into_iter().map(|w| w.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);

    let bad = app
        .workflows
        .clone()
        .list_workflows(pb::ListWorkflowsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_token"]);
}

#[tokio::test]
async fn a_workflow_replaced_through_another_instance_is_never_served_stale() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    a.create_workflow(&small_workflow("Shared")).await;
    a.start_job("Shared", json!({"device": "r1"}))
        .await
        .expect("starts, and A caches the workflow");

    b.workflows
        .clone()
        .delete_workflow(pb::DeleteWorkflowRequest {
            name: "Shared".into(),
        })
        .await
        .unwrap();
    let mut replaced = small_workflow("Shared");
    replaced["inputSchema"] =
        json!({"type": "object", "properties": {"site": {"type": "string"}}, "required": ["site"]});
    b.create_workflow(&replaced).await;

    let stale = a
        .start_job("Shared", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&stale), ["options.variables.site"]);
    a.start_job("Shared", json!({"site": "lab"}))
        .await
        .expect("starts from the new workflow");
}
