//! Faults: many clients start jobs with idempotency keys and retry until acknowledged, while
//! PostgreSQL is stopped at once (the service starts it again) and the service is killed with
//! SIGKILL and restarted.
//! Every acknowledged job must be stored exactly once, and no retry may make a duplicate.
//!
//! Run it alone, with its counts printed: `scripts/test --test api faults -- --nocapture`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use job_service::grpc::{pb, JobServiceClient, WorkflowServiceClient};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;

use crate::helpers::{small_workflow, to_struct, Bearer};
use crate::serve::{admin_token, data_dir, start, stop_postgres_at_once};

const KEYS: usize = 1500;
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_job_is_lost_or_duplicated_across_database_and_service_crashes() {
    let dir = data_dir();
    let server = start(dir.path());
    let token = admin_token(dir.path());
    let channel = |addr: SocketAddr| {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
    };
    WorkflowServiceClient::with_interceptor(channel(server.addr), Bearer::new(&token))
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("W"))),
        })
        .await
        .unwrap();

    let address = Arc::new(Mutex::new(server.addr));
    let next_key = Arc::new(Mutex::new(0usize));
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let attempts = Arc::new(Mutex::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(240);

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (address, next_key, acknowledged, attempts, token) = (
            address.clone(),
            next_key.clone(),
            acknowledged.clone(),
            attempts.clone(),
            token.clone(),
        );
        clients.spawn(async move {
            loop {
                let key = {
                    let mut next = next_key.lock().unwrap();
                    if *next == KEYS {
                        return;
                    }
                    *next += 1;
                    format!("fault-{}", *next - 1)
                };
                // Retry until acknowledged, as a careful client does.
                loop {
                    assert!(Instant::now() < deadline, "{key} never acknowledged");
                    *attempts.lock().unwrap() += 1;
                    let addr = *address.lock().unwrap();
                    let mut client =
                        JobServiceClient::with_interceptor(channel(addr), Bearer::new(&token));
                    let mut request = tonic::Request::new(pb::StartJobRequest {
                        workflow: "W".into(),
                        options: Some(pb::JobOptions {
                            variables: Some(to_struct(&json!({"device": key}))),
                            ..Default::default()
                        }),
                    });
                    request.set_timeout(Duration::from_secs(5));
                    request
                        .metadata_mut()
                        .insert("idempotency-key", key.parse().unwrap());
                    match tokio::time::timeout(Duration::from_secs(6), client.start_job(request))
                        .await
                    {
                        Ok(Ok(response)) => {
                            let id = response.into_inner().job.unwrap().id;
                            acknowledged.lock().unwrap().insert(key.clone(), id);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
    }

    // Chaos, while the clients work.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_postgres_at_once(dir.path());
    // The service starts its PostgreSQL again by itself (it checks every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_kill = acknowledged.lock().unwrap().len();
    server.kill();
    let server = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || start(&path)
    })
    .await
    .unwrap();
    *address.lock().unwrap() = server.addr;

    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }

    let options = PgConnectOptions::new()
        .socket(dir.path().join("postgres"))
        .username("postgres")
        .database("job_service");
    let db = sqlx::PgPool::connect_with(options).await.unwrap();
    let stored: HashMap<String, String> =
        sqlx::query_as("select key, job_id from idempotency_keys")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost = acknowledged
        .iter()
        .filter(|(key, id)| stored.get(*key) != Some(id))
        .count();
    let duplicated = usize::try_from(jobs).unwrap() - stored.len();
    println!(
        "faults: keys {KEYS}, attempts {}, acknowledged {} ({before_kill} before the SIGKILL), jobs stored {jobs}, lost {lost}, duplicated {duplicated}",
        attempts.lock().unwrap(),
        acknowledged.len()
    );
    assert!(
        before_kill < KEYS,
        "the service was killed while clients were still working"
    );
    assert_eq!(acknowledged.len(), KEYS);
    assert_eq!(lost, 0, "acknowledged jobs missing");
    assert_eq!(duplicated, 0, "jobs without their own key");
    assert_eq!(jobs, KEYS as i64);
    db.close().await;
    assert!(server.terminate().success());
}
