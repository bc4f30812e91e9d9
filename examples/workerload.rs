//! Load generator for the engine: starts jobs, and plays task workers that complete every task
//! at once, so that what is measured is the service handing out tasks and taking results.
//! Prints one JSON line. Reads `JOB_SERVICE_GRPC_ADDR` and `JOB_SERVICE_TOKEN` (a token with
//! role `admin`, which may both start jobs and run tasks), and `DATABASE_URL` for latencies.
//!
//! ```text
//! workerload start JOBS CONCURRENCY WORKFLOW
//!     starts JOBS jobs of WORKFLOW, CONCURRENCY StartJob calls at once
//! workerload work APP STREAMS SLOTS TASKS [WORKFLOW RATE]
//!     opens STREAMS PollTasks streams for APP holding SLOTS tasks in all and completes each
//!     task as it comes (`success`, no outgoing values) until TASKS were completed. With
//!     WORKFLOW and RATE, it also starts TASKS jobs of WORKFLOW, RATE a second, while it works,
//!     and gives the latency from each task becoming ready (`job_tasks.ready_at`, written by
//!     the step that scheduled it) and from its job's start (`jobs.created_at`) to the worker
//!     receiving it, and splits the first at the claim (the lease's start: its deadline less
//!     the lease, `JOB_SERVICE_TASK_LEASE`, default 30s).
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use job_service::grpc::{pb, JobServiceClient, WorkerServiceClient};
use serde_json::json;
use sqlx::Row;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Gives up when no task came for this long (tasks lost to a failed completion wait for their
/// lease to run out).
const IDLE: Duration = Duration::from_secs(60);

fn usage() -> ! {
    eprintln!(
        "usage: workerload start JOBS CONCURRENCY WORKFLOW\n       \
         workerload work APP STREAMS SLOTS TASKS [WORKFLOW RATE]"
    );
    std::process::exit(2);
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("{what} is a number: {text}"))
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_micros() as i64
}

/// The p-th percentile of sorted `values` (microseconds), in milliseconds.
fn percentile(values: &[i64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[index] as f64 / 1000.0
}

struct Service {
    addr: String,
    bearer: MetadataValue<Ascii>,
}

impl Service {
    fn from_env() -> Self {
        let token = std::env::var("JOB_SERVICE_TOKEN").expect("JOB_SERVICE_TOKEN is set");
        Service {
            addr: std::env::var("JOB_SERVICE_GRPC_ADDR")
                .unwrap_or_else(|_| "127.0.0.1:50051".into()),
            bearer: format!("Bearer {token}")
                .parse()
                .expect("the token is ASCII"),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("JOB_SERVICE_GRPC_ADDR is host:port")
            .connect()
            .await
            .expect("the service accepts connections")
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }

    fn start_request(&self, workflow: &str) -> tonic::Request<pb::StartJobRequest> {
        self.request(pb::StartJobRequest {
            workflow: workflow.to_owned(),
            options: Some(pb::JobOptions::default()),
        })
    }
}

/// `start`: JOBS jobs, CONCURRENCY calls at once, each connection a client of its own.
async fn start(service: Arc<Service>, jobs: usize, concurrency: usize, workflow: String) {
    let next = Arc::new(AtomicUsize::new(0));
    let workflow = Arc::new(workflow);
    let started_at = micros_now();
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut client = JobServiceClient::new(service.channel().await);
        let (service, next, workflow) = (service.clone(), next.clone(), workflow.clone());
        callers.spawn(async move {
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                if client
                    .start_job(service.start_request(&workflow))
                    .await
                    .is_err()
                {
                    errors += 1;
                }
            }
            errors
        });
    }
    let mut errors = 0;
    while let Some(done) = callers.join_next().await {
        errors += done.expect("a caller ran to the end");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "jobs": jobs - errors,
            "errors": errors,
            "seconds": seconds,
            "throughput": (jobs - errors) as f64 / seconds,
            "started_at_us": started_at,
        })
    );
}

/// What a worker saw of one task.
struct Done {
    job_id: String,
    received_us: i64,
    claimed_us: i64,
    completed: bool,
}

/// `work`: STREAMS streams, SLOTS tasks held in all, each task completed as it comes.
async fn work(
    service: Arc<Service>,
    app: String,
    streams: usize,
    slots: usize,
    tasks: usize,
    paced: Option<(String, f64)>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams {
        clients.push(WorkerServiceClient::new(service.channel().await));
    }
    let starter = match &paced {
        Some(_) => Some(JobServiceClient::new(service.channel().await)),
        None => None,
    };
    let lease_us = std::env::var("JOB_SERVICE_TASK_LEASE")
        .ok()
        .map(|lease| {
            humantime::parse_duration(&lease).expect("JOB_SERVICE_TASK_LEASE is a duration")
        })
        .unwrap_or(Duration::from_secs(30))
        .as_micros() as i64;
    let opened = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for (n, mut client) in clients.into_iter().enumerate() {
        // SLOTS shared out as evenly as streams allow.
        let max_tasks = (slots / streams + usize::from(n < slots % streams)) as u32;
        let (service, app, done_tx) = (service.clone(), app.clone(), done_tx.clone());
        running.spawn(async move {
            let request = service.request(pb::PollTasksRequest {
                worker_id: format!("workerload-{}-{n}", std::process::id()),
                apps: vec![app],
                max_tasks,
            });
            let mut offered = client
                .poll_tasks(request)
                .await
                .expect("PollTasks opens")
                .into_inner();
            while let Ok(Some(task)) = offered.message().await {
                let received_us = micros_now();
                let claimed_us = task.lease_deadline.map_or(0, |deadline| {
                    deadline.seconds * 1_000_000 + i64::from(deadline.nanos / 1000)
                }) - lease_us;
                let (mut client, service, done_tx) =
                    (client.clone(), service.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let completed = client
                        .complete_task(service.request(pb::CompleteTaskRequest {
                            task_token: task.task_token,
                            finish_state: "success".into(),
                            outgoing: None,
                            error_message: String::new(),
                        }))
                        .await
                        .is_ok();
                    let _ = done_tx.send(Done {
                        job_id: task.job_id,
                        received_us,
                        claimed_us,
                        completed,
                    });
                });
            }
        });
    }
    if let (Some((workflow, rate)), Some(client)) = (&paced, starter) {
        let (service, workflow, rate) = (service.clone(), workflow.clone(), *rate);
        running.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            for _ in 0..tasks {
                ticks.tick().await;
                let (mut client, request) = (client.clone(), service.start_request(&workflow));
                tokio::spawn(async move {
                    if let Err(status) = client.start_job(request).await {
                        eprintln!("StartJob failed: {status}");
                    }
                });
            }
        });
    }

    let mut received = HashMap::with_capacity(tasks);
    let (mut completed, mut errors) = (0usize, 0usize);
    while completed < tasks {
        match tokio::time::timeout(IDLE, done_rx.recv()).await {
            Ok(Some(done)) => {
                if done.completed {
                    completed += 1;
                } else {
                    errors += 1;
                }
                received
                    .entry(done.job_id)
                    .or_insert((done.received_us, done.claimed_us));
            }
            _ => {
                eprintln!("no task for {IDLE:?}: {completed} of {tasks} completed");
                break;
            }
        }
    }
    let seconds = opened.elapsed().as_secs_f64();
    running.abort_all();

    let mut report = json!({
        "tasks": completed,
        "errors": errors,
        "streams": streams,
        "slots": slots,
        "seconds": seconds,
        "throughput": completed as f64 / seconds,
    });
    if paced.is_some() {
        let [mut from_ready, mut to_claim, mut from_claim, mut from_start] =
            latencies(&received).await;
        for values in [
            &mut from_ready,
            &mut to_claim,
            &mut from_claim,
            &mut from_start,
        ] {
            values.sort_unstable();
        }
        report["rate"] = json!(paced.map(|(_, rate)| rate));
        report["ready_p50_ms"] = json!(percentile(&from_ready, 0.50));
        report["ready_p99_ms"] = json!(percentile(&from_ready, 0.99));
        report["ready_max_ms"] = json!(percentile(&from_ready, 1.0));
        report["ready_to_claim_p50_ms"] = json!(percentile(&to_claim, 0.50));
        report["ready_to_claim_p99_ms"] = json!(percentile(&to_claim, 0.99));
        report["claim_to_worker_p50_ms"] = json!(percentile(&from_claim, 0.50));
        report["claim_to_worker_p99_ms"] = json!(percentile(&from_claim, 0.99));
        report["start_p50_ms"] = json!(percentile(&from_start, 0.50));
        report["start_p99_ms"] = json!(percentile(&from_start, 0.99));
    }
    println!("{report}");
}

/// For each task received (by job id, with when it was received and claimed), microseconds
/// from the task becoming ready to the worker receiving it, from ready to the claim, from the
/// claim to the worker, and from the job's start to the worker.
async fn latencies(received: &HashMap<String, (i64, i64)>) -> [Vec<i64>; 4] {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("the database accepts connections");
    let ids: Vec<&str> = received.keys().map(String::as_str).collect();
    let rows = sqlx::query(
        "select t.job_id, (extract(epoch from t.ready_at) * 1000000)::bigint as ready_us,
                (extract(epoch from j.created_at) * 1000000)::bigint as started_us
         from job_tasks t join jobs j on j.id = t.job_id
         where t.job_id = any($1) and t.runner = 'worker'",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .expect("the tasks' times can be read");
    let mut found: [Vec<i64>; 4] = Default::default();
    for row in rows {
        let job_id: &str = row.get("job_id");
        let (got, claimed) = received[job_id];
        let ready: i64 = row.get("ready_us");
        found[0].push(got - ready);
        found[1].push(claimed - ready);
        found[2].push(got - claimed);
        found[3].push(got - row.get::<i64, _>("started_us"));
    }
    found
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let service = Arc::new(Service::from_env());
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["start", jobs, concurrency, workflow] => {
            start(
                service,
                number(jobs, "JOBS"),
                number(concurrency, "CONCURRENCY"),
                workflow.to_owned(),
            )
            .await
        }
        ["work", app, streams, slots, tasks, ref paced @ ..] => {
            let paced = match paced {
                [] => None,
                [workflow, rate] => Some(((*workflow).to_owned(), number(rate, "RATE"))),
                _ => usage(),
            };
            let streams: usize = number(streams, "STREAMS");
            let slots: usize = number(slots, "SLOTS");
            assert!(
                streams >= 1 && slots >= streams,
                "SLOTS is at least STREAMS"
            );
            work(
                service,
                app.to_owned(),
                streams,
                slots,
                number(tasks, "TASKS"),
                paced,
            )
            .await
        }
        _ => usage(),
    }
}
