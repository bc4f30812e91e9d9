//! Deadlines: a call that outlives its deadline is cancelled, its work rolled back, and it
//! never hangs.

use std::time::{Duration, Instant};

use job_service::grpc::pb;
use serde_json::json;

use crate::helpers::{send, small_workflow, to_struct, TestApp};

/// Holds a lock on the workflow row that StartJob waits for, until the transaction ends.
async fn block_workflow(app: &TestApp, name: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("select 1 from workflows where name = $1 for update")
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[tokio::test]
async fn a_grpc_deadline_cancels_the_start_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let blocker = block_workflow(&app, "W").await;

    let mut request = tonic::Request::new(pb::StartJobRequest {
        workflow: "W".into(),
        options: Some(pb::JobOptions {
            variables: Some(to_struct(&json!({"device": "r1"}))),
            ..Default::default()
        }),
    });
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status = app.jobs.clone().start_job(request).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The server's own timer starts when the request arrives, a little after the client's:
    // release the lock only once the server's deadline has surely passed too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "the cancelled start left nothing behind");
}

#[tokio::test]
async fn an_http_request_past_its_timeout_is_answered_504_and_rolled_back() {
    let app = TestApp::spawn_with(|config| {
        config.http_request_timeout = Duration::from_millis(500).into()
    })
    .await;
    app.create_workflow(&small_workflow("W")).await;
    let blocker = block_workflow(&app, "W").await;

    let started = Instant::now();
    let (status, reply) = send(
        app.request(reqwest::Method::POST, "/operations-manager/jobs/start")
            .json(&json!({"workflow": "W", "options": {"variables": {"device": "r1"}}})),
    )
    .await;
    assert_eq!(status, 504, "{reply}");
    assert_eq!(reply["data"], serde_json::Value::Null);
    assert!(started.elapsed() < Duration::from_secs(3));

    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}
