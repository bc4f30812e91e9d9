//! Jobs run through crashes: jobs of a 10-task workflow with worker tasks run under load while
//! PostgreSQL is stopped at once (the service starts it again) and the service is killed with
//! SIGKILL and restarted. Every job must end, no task may finish twice, no job may be stuck.
//!
//! Run it alone, with its counts printed: `scripts/test --test api engine_faults -- --nocapture`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use job_service::grpc::pb::worker_service_client::WorkerServiceClient;
use job_service::grpc::{pb, JobServiceClient, WorkflowServiceClient};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use tonic::transport::Channel;

use crate::helpers::{to_struct, Bearer};
use crate::serve::{admin_token, data_dir, start_with, stop_postgres_at_once, token};

const JOBS: usize = 120;
const WORKERS: usize = 4;

/// start -> w1 -> s1 -> s2 -> s3 -> w2 -> s4 -> s5 -> s6 -> w3 -> s7 -> end: 10 tasks between
/// start and end, three of them run by workers of app `Chaos`.
fn workflow() -> serde_json::Value {
    let chain = ["w1", "s1", "s2", "s3", "w2", "s4", "s5", "s6", "w3", "s7"];
    let mut tasks = json!({
        "workflow_start": {"name": "workflow_start", "groups": []},
        "workflow_end": {"name": "workflow_end", "groups": []},
    });
    let mut transitions = json!({"workflow_end": {}});
    let mut previous = "workflow_start";
    for id in chain {
        tasks[id] = if id.starts_with('w') {
            json!({"name": "touch", "app": "Chaos", "type": "automatic",
                   "variables": {"incoming": {"step": id}, "outgoing": {"done": format!("$var.job.{id}")}}})
        } else {
            json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                   "variables": {"incoming": {}, "outgoing": {}}})
        };
        transitions[previous] = json!({id: {"state": "success", "type": "standard"}});
        previous = id;
    }
    transitions[previous] = json!({"workflow_end": {"state": "success", "type": "standard"}});
    json!({"name": "Chaos", "type": "automation", "groups": [], "tasks": tasks,
           "transitions": transitions, "inputSchema": {"type": "object"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_with_worker_tasks_finish_once_across_database_and_service_crashes() {
    let dir = data_dir();
    let args = ["--task-lease", "2s", "--engine-sweep", "200ms"];
    let server = start_with(dir.path(), &args);
    let admin = admin_token(dir.path());
    let mut worker_args: Vec<std::ffi::OsString> = [
        "--username",
        "chaos-worker",
        "--roles",
        "worker",
        "--ttl",
        "15m",
        "--data-dir",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    worker_args.push(dir.path().into());
    let worker_token = token(worker_args);
    let channel = |addr: SocketAddr| {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
    };
    WorkflowServiceClient::with_interceptor(channel(server.addr), Bearer::new(&admin))
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&workflow())),
        })
        .await
        .unwrap();
    let mut jobs = JobServiceClient::with_interceptor(channel(server.addr), Bearer::new(&admin));
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let request = pb::StartJobRequest {
            workflow: "Chaos".into(),
            options: Some(pb::JobOptions {
                description: Some(format!("chaos {i}")),
                ..Default::default()
            }),
        };
        ids.push(
            jobs.start_job(request)
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap()
                .id,
        );
    }

    // Workers: poll, complete at once, reconnect to wherever the service is.
    let address = Arc::new(Mutex::new(server.addr));
    let completed: Arc<Mutex<HashMap<(String, String), usize>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for n in 0..WORKERS {
        let (address, completed, stop, token) = (
            address.clone(),
            completed.clone(),
            stop.clone(),
            worker_token.clone(),
        );
        workers.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let addr = *address.lock().unwrap();
                let mut client =
                    WorkerServiceClient::with_interceptor(channel(addr), Bearer::new(&token));
                let poll = pb::PollTasksRequest {
                    worker_id: format!("chaos-{n}"),
                    apps: vec!["Chaos".into()],
                    max_tasks: 8,
                };
                let Ok(stream) = client.poll_tasks(poll).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let mut stream = stream.into_inner();
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
                    let task = match next {
                        Ok(Ok(Some(task))) => task,
                        Ok(_) => break,
                        Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => return,
                        Err(_) => continue,
                    };
                    let complete = pb::CompleteTaskRequest {
                        task_token: task.task_token.clone(),
                        finish_state: "success".into(),
                        outgoing: Some(to_struct(&json!({"done": task.attempt}))),
                        error_message: String::new(),
                    };
                    if client.complete_task(complete).await.is_ok() {
                        *completed
                            .lock()
                            .unwrap()
                            .entry((task.job_id, task.task_id))
                            .or_default() += 1;
                    }
                }
            }
        });
    }

    // Chaos, while jobs run.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_postgres_at_once(dir.path());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill();
    let server = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || start_with(&path, &["--task-lease", "2s", "--engine-sweep", "200ms"])
    })
    .await
    .unwrap();
    *address.lock().unwrap() = server.addr;

    let options = PgConnectOptions::new()
        .socket(dir.path().join("postgres"))
        .username("postgres")
        .database("job_service");
    let db = sqlx::PgPool::connect_with(options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut unfinished = i64::MAX;
    while Instant::now() < deadline {
        unfinished = sqlx::query_scalar("select count(*) from jobs where status <> 'complete'")
            .fetch_one(&db)
            .await
            .unwrap_or(i64::MAX);
        if unfinished == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while workers.join_next().await.is_some() {}

    let stored: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&db)
        .await
        .unwrap();
    // A task finishing twice would record two `complete` events for it.
    let finished_twice: i64 = sqlx::query_scalar(
        "select count(*) from (select job_id, task_id from job_events
                               where kind = 'task' and status = 'complete'
                               group by job_id, task_id having count(*) > 1) as twice",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let acknowledged_twice = completed
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 1)
        .count();
    let worker_tasks_done: i64 = sqlx::query_scalar(
        "select count(*) from job_tasks where runner = 'worker' and status = 'complete'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let reoffered: i64 = sqlx::query_scalar("select count(*) from job_tasks where attempt > 1")
        .fetch_one(&db)
        .await
        .unwrap();
    println!(
        "engine faults: jobs {stored} (started {}), not complete {unfinished}, tasks finished twice {finished_twice}, \
         completions acknowledged twice {acknowledged_twice}, worker tasks done {worker_tasks_done}, re-offered {reoffered}",
        ids.len()
    );
    assert_eq!(stored, JOBS as i64);
    assert_eq!(unfinished, 0, "every job ends, none is stuck");
    assert_eq!(finished_twice, 0, "no task finishes twice");
    assert_eq!(
        acknowledged_twice, 0,
        "no completion is acknowledged twice for one task"
    );
    assert_eq!(worker_tasks_done, 3 * JOBS as i64);
    drop(server);
}
