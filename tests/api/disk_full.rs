//! A database that cannot write (disk full): starts are UNAVAILABLE / 503 saying why, the
//! service reports not ready until a write succeeds again, and then starts work again. The
//! disk is not filled: triggers raise PostgreSQL's `disk_full` error as a full disk does.

use serde_json::{json, Value};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::{send, small_workflow, TestApp};

/// Makes every write to `jobs` and to the readiness probe's table fail as on a full disk.
async fn fill_the_disk(app: &TestApp) {
    for statement in [
        "create function refuse_writes() returns trigger language plpgsql as $$
         begin
             raise exception 'could not extend file: No space left on device'
                 using errcode = 'disk_full';
         end $$",
        "create trigger jobs_disk_full before insert or update on jobs
         for each statement execute function refuse_writes()",
        "create trigger write_probe_disk_full before insert or update on write_probe
         for each statement execute function refuse_writes()",
    ] {
        sqlx::query(statement).execute(&app.db).await.unwrap();
    }
}

async fn free_the_disk(app: &TestApp) {
    sqlx::query("drop function refuse_writes() cascade")
        .execute(&app.db)
        .await
        .unwrap();
}

async fn readiness(app: &TestApp) -> u16 {
    send(app.http.get(format!("{}/health/ready", app.http_url)))
        .await
        .0
}

/// What gRPC health says of the server as a whole, once it has changed to `expected` (it
/// follows readiness every 2 s) or after 10 s.
async fn grpc_health_becomes(app: &TestApp, expected: ServingStatus) -> ServingStatus {
    let mut health = HealthClient::new(app.channel());
    let mut status = ServingStatus::Unknown;
    for _ in 0..50 {
        status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    status
}

#[tokio::test]
async fn a_full_disk_makes_starts_unavailable_and_the_service_not_ready_until_writes_succeed() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    assert_eq!(readiness(&app).await, 200);
    fill_the_disk(&app).await;

    let status = app
        .start_job("W", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the database is out of disk space, try again later"
    );

    let (status, body) = app
        .post(
            "/operations-manager/jobs/start",
            &json!({"workflow": "W", "options": {"variables": {"device": "r1"}}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({
            "message": "the database is out of disk space, try again later",
            "data": null,
            "metadata": {"errors": []},
        })
    );

    // Reads still answer, but the service is not ready while it cannot write.
    let (status, _) = app.get("/automation-studio/workflows/detailed/W").await;
    assert_eq!(status, 200);
    assert_eq!(readiness(&app).await, 503);
    assert_eq!(
        readiness(&app).await,
        503,
        "still not ready on a second look"
    );
    let (_, body) = send(app.http.get(format!("{}/health/ready", app.http_url))).await;
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the database does not take writes"),
        "{reason}"
    );
    assert_eq!(
        grpc_health_becomes(&app, ServingStatus::NotServing).await,
        ServingStatus::NotServing,
        "gRPC health follows readiness"
    );

    free_the_disk(&app).await;
    assert_eq!(readiness(&app).await, 200);
    assert_eq!(
        grpc_health_becomes(&app, ServingStatus::Serving).await,
        ServingStatus::Serving
    );
    app.start_job("W", json!({"device": "r1"})).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 1, "only the start after the disk was freed is stored");
    let probed: Value = sqlx::query_scalar("select to_jsonb(count(*)) from write_probe")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(probed, json!(1), "readiness wrote its one row");
}
