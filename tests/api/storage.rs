//! How jobs are stored: each distinct task graph once, shared by the jobs started from it, and
//! every job read back whole. Jobs stored before graphs were shared keep their documents.

use chrono::Utc;
use job_service::domain::{Caller, CompiledWorkflow, Job, StartJob, WorkflowDocument};
use job_service::domain::{RawJobOptions, RawStartJob};
use job_service::grpc::pb;
use serde_json::{json, Value};

use crate::helpers::{fresh_database, small_workflow, TestApp};

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn jobs_of_one_graph_share_one_stored_copy_and_keep_their_snapshot() {
    let a = TestApp::spawn_frozen().await;
    let b = a.another_frozen_instance().await;
    a.create_workflow(&small_workflow("W")).await;
    let first = a.start_job("W", json!({"device": "r1"})).await.unwrap();
    for i in 0..4 {
        a.start_job("W", json!({"device": format!("a{i}")}))
            .await
            .unwrap();
        b.start_job("W", json!({"device": format!("b{i}")}))
            .await
            .unwrap();
    }
    assert_eq!(count(&a, "select count(*) from jobs").await, 9);
    assert_eq!(count(&a, "select count(*) from job_graphs").await, 1);
    assert_eq!(
        count(&a, "select count(*) from jobs where document ? 'tasks'").await,
        0,
        "a job row holds its own fields, not the graph"
    );

    // The workflow replaced by one with another task: a new graph, and the first job's
    // snapshot is unchanged.
    a.workflows
        .clone()
        .delete_workflow(pb::DeleteWorkflowRequest { name: "W".into() })
        .await
        .unwrap();
    let mut longer = small_workflow("W");
    longer["tasks"]["a2"] = longer["tasks"]["a1"].clone();
    longer["transitions"]["a1"] = json!({"a2": {"state": "success", "type": "standard"}});
    longer["transitions"]["a2"] = json!({"workflow_end": {"state": "success", "type": "standard"}});
    a.create_workflow(&longer).await;
    let second = b.start_job("W", json!({"device": "r2"})).await.unwrap();
    assert_eq!(count(&a, "select count(*) from job_graphs").await, 2);
    assert_eq!(second.tasks.len(), 4);

    let again = a
        .jobs
        .clone()
        .get_job(pb::GetJobRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(again, first, "a job reads back exactly as it was started");
    assert_eq!(again.tasks.len(), 3);
    // A job whose graph another instance stored reads back whole too.
    let from_b = a
        .jobs
        .clone()
        .get_job(pb::GetJobRequest {
            id: second.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(from_b, second);
}

/// A job as an earlier version stored it: the whole document in `jobs.document`.
fn job_document() -> Value {
    let workflow = WorkflowDocument::parse(small_workflow("Old"), "workflow").unwrap();
    let start = StartJob::parse(RawStartJob {
        workflow: "Old".into(),
        options: Some(RawJobOptions {
            variables: Some(json!({"device": "r9"}).as_object().unwrap().clone()),
            ..Default::default()
        }),
    })
    .unwrap();
    let caller = Caller {
        sub: "5f8a1c2b3d4e5f6a7b8c9d0e".into(),
        username: "admin".into(),
        groups: Vec::new(),
        roles: vec!["admin".into()],
    };
    let job = Job::start(
        &CompiledWorkflow::compile(workflow),
        start.options,
        &caller,
        Utc::now(),
    )
    .unwrap();
    serde_json::to_value(job).unwrap()
}

#[tokio::test]
async fn jobs_stored_before_graphs_were_shared_read_back_unchanged() {
    // A database as the version before shared graphs left it, with one job in it.
    let url = fresh_database().await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = before
        .migrations
        .iter()
        .take_while(|m| m.description != "job graphs")
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(before.migrations.len(), 4);
    before.run(&db).await.unwrap();
    let document = job_document();
    sqlx::query(
        "insert into jobs (id, workflow_name, status, groups, created_at, updated_at, created_by, document)
         values ($1, 'Old', 'running', '{}', $2::timestamptz, $2::timestamptz, 'admin', $3)",
    )
    .bind(document["_id"].as_str().unwrap())
    .bind(document["created"].as_str().unwrap())
    .bind(&document)
    .execute(&db)
    .await
    .unwrap();

    // The service migrates it and serves it as it was (an instance that runs jobs would run
    // it on at once).
    let app = TestApp::spawn_on(url, |config| config.run_jobs = false).await;
    let (status, reply) = app
        .get(&format!(
            "/operations-manager/jobs/{}",
            document["_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"], document);
    assert_eq!(count(&app, "select count(*) from job_graphs").await, 1);
    assert_eq!(
        count(&app, "select count(*) from jobs where document ? 'tasks'").await,
        0
    );
}
