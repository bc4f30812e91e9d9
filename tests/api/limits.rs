//! Overload and oversize input are refused with clear answers, never queued without bound.

use job_service::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{small_workflow, to_struct, TestApp};

#[tokio::test]
async fn calls_beyond_the_in_flight_bound_are_resource_exhausted() {
    let app = TestApp::spawn_with(|config| config.max_in_flight = 2).await;
    app.create_workflow(&small_workflow("W")).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let mut client = app.jobs.clone();
        calls.spawn(async move {
            client
                .start_job(pb::StartJobRequest {
                    workflow: "W".into(),
                    options: Some(pb::JobOptions {
                        variables: Some(to_struct(&json!({"device": format!("r{i}")}))),
                        ..Default::default()
                    }),
                })
                .await
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    let stored: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        stored, ok,
        "every acknowledged job is stored, no refused one is"
    );

    // The gateway answers the same bound with 429 and the envelope.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let request = app.request(reqwest::Method::GET, "/operations-manager/jobs?limit=1000");
        requests.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = requests.join_next().await {
        statuses.push(status.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_grpc_message_over_4_mib_is_refused() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(4 * 1024 * 1024 + 1);
    let status = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: Some(pb::JobOptions {
                description: Some(huge),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
}
