//! Exactly-once starts: idempotency keys on StartJob, over gRPC and HTTP.

use std::collections::HashSet;

use job_service::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{send, small_workflow, start_request, to_struct, TestApp};

fn keyed(workflow: &str, device: &str, key: Option<&str>) -> tonic::Request<pb::StartJobRequest> {
    let options = pb::JobOptions {
        variables: Some(to_struct(&json!({"device": device}))),
        ..Default::default()
    };
    start_request(workflow, options, key)
}

async fn job_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_job() {
    // A replay shows the job as it is now: with no engine running it, exactly as first answered.
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("W")).await;
    let first = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", Some("order-42")))
        .await
        .unwrap()
        .into_inner();
    let retry = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", Some("order-42")))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert!(!retry.created);
    assert_eq!(first.job, retry.job);
    assert_eq!(job_count(&app).await, 1);

    let other_key = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", Some("order-43")))
        .await
        .unwrap()
        .into_inner();
    assert!(other_key.created);
    let no_key = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", None))
        .await
        .unwrap()
        .into_inner();
    assert!(no_key.created);
    assert_eq!(job_count(&app).await, 3);
}

#[tokio::test]
async fn a_key_reused_for_another_request_fails_the_precondition() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    app.jobs
        .clone()
        .start_job(keyed("W", "r1", Some("k1")))
        .await
        .unwrap();
    let status = app
        .jobs
        .clone()
        .start_job(keyed("W", "r2", Some("k1")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("k1"), "{}", status.message());
    assert_eq!(job_count(&app).await, 1);

    let bad = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", Some("has space")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("idempotency-key"));
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let alice = app.token("alice", &["operations"], &[]);
    let bob = app.token("bob", &["operations"], &[]);
    let a = app
        .jobs_as(&alice)
        .start_job(keyed("W", "r1", Some("same")))
        .await
        .unwrap()
        .into_inner();
    let b = app
        .jobs_as(&bob)
        .start_job(keyed("W", "r1", Some("same")))
        .await
        .unwrap()
        .into_inner();
    assert!(a.created && b.created);
    assert_ne!(a.job.unwrap().id, b.job.unwrap().id);
}

#[tokio::test]
async fn the_gateway_marks_replays_and_answers_conflicts_with_422() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let body = json!({"workflow": "W", "options": {"variables": {"device": "r1"}}});
    let start = |body: &serde_json::Value| {
        app.request(reqwest::Method::POST, "/operations-manager/jobs/start")
            .header("Idempotency-Key", "http-1")
            .json(body)
    };
    let first = start(&body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    let replay = start(&body).send().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(first["data"]["_id"], replay["data"]["_id"]);

    let (status, reply) = send(start(
        &json!({"workflow": "W", "options": {"variables": {"device": "r9"}}}),
    ))
    .await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(job_count(&app).await, 1);
}

#[tokio::test]
async fn racing_starts_make_one_job_per_key() {
    // The 1000 calls queue for 16 connections: give them time, this test is about exactly-once.
    let app = TestApp::spawn_with(|config| {
        config.db_acquire_timeout = std::time::Duration::from_secs(120).into()
    })
    .await;
    app.create_workflow(&small_workflow("W")).await;
    // 1000 calls at once: 200 keys used three times each, and 400 calls without a key.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let mut client = app.jobs.clone();
        let key = (i < 600).then(|| format!("race-{}", i % 200));
        let device = match &key {
            Some(key) => key.clone(),
            None => format!("free-{i}"),
        };
        calls.spawn(async move { client.start_job(keyed("W", &device, key.as_deref())).await });
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    while let Some(result) = calls.join_next().await {
        let response = result.unwrap().expect("every call succeeds").into_inner();
        created += usize::from(response.created);
        ids.insert(response.job.unwrap().id);
    }
    assert_eq!(ids.len(), 600, "distinct jobs returned");
    assert_eq!(created, 600, "calls that created a job");
    assert_eq!(job_count(&app).await, 600, "jobs stored");
}

/// Starts a job with `key` over gRPC on `via` while a transaction of the test's own holds
/// that key, as a racing start on another instance would while it commits: stored with the
/// caller, fingerprint and job of key `from`, or with another fingerprint when `same_request`
/// is false. The transaction commits once the start waits for it; returns the start's answer.
async fn start_racing(
    app: &TestApp,
    via: &TestApp,
    from: &str,
    key: &'static str,
    same_request: bool,
) -> Result<pb::StartJobResponse, tonic::Status> {
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(
        "insert into idempotency_keys (caller, key, fingerprint, job_id)
         select caller, $2, case when $3 then fingerprint else 'another request' end, job_id
         from idempotency_keys where key = $1",
    )
    .bind(from)
    .bind(key)
    .bind(same_request)
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut client = via.jobs.clone();
    let racing = tokio::spawn(async move { client.start_job(keyed("W", "r1", Some(key))).await });
    // The start waits for this transaction on the key's primary key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where wait_event_type = 'Lock' and query like '%idempotency_keys%'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start waited for the key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();
    racing.await.unwrap().map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_key_stored_by_a_racing_start_while_a_start_writes_is_replayed_or_refused() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let first = app
        .jobs
        .clone()
        .start_job(keyed("W", "r1", Some("first")))
        .await
        .unwrap()
        .into_inner();

    let first_id = first.job.as_ref().unwrap().id.clone();

    // The same request: the start that lost the race answers with the winner's job.
    let replay = start_racing(&app, &app, "first", "same", true)
        .await
        .unwrap();
    assert!(!replay.created);
    assert_eq!(replay.job.unwrap().id, first_id);

    // Another request: refused as a reused key.
    let refused = start_racing(&app, &app, "first", "other", false)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // An instance that has not compiled the workflow yet locks the key, finds it free and
    // loses the race all the same.
    let other = app.another_instance().await;
    let replay = start_racing(&app, &other, "first", "late", true)
        .await
        .unwrap();
    assert!(!replay.created);
    assert_eq!(replay.job.unwrap().id, first_id);

    assert_eq!(
        job_count(&app).await,
        1,
        "the starts that lost wrote no job"
    );
    let keys: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 4);
}

#[tokio::test]
async fn keys_past_their_retention_are_forgotten_and_their_jobs_kept() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    app.jobs
        .clone()
        .start_job(keyed("W", "r1", Some("old")))
        .await
        .unwrap();
    app.jobs
        .clone()
        .start_job(keyed("W", "r1", Some("new")))
        .await
        .unwrap();
    sqlx::query(
        "update idempotency_keys set created_at = now() - interval '25 hours' where key = 'old'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let purged = app
        .service
        .purge_idempotency_keys(std::time::Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(job_count(&app).await, 2);
    // The forgotten key starts a new job; the kept one still replays.
    assert!(
        app.jobs
            .clone()
            .start_job(keyed("W", "r1", Some("old")))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    assert!(
        !app.jobs
            .clone()
            .start_job(keyed("W", "r1", Some("new")))
            .await
            .unwrap()
            .into_inner()
            .created
    );
}
