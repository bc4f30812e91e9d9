//! `job-service worker`: a task worker that plugs programs and HTTP endpoints in as the
//! handlers of apps. It is a client of the service's WorkerService, like any other worker:
//! it polls for the tasks of its apps, runs each task's handler ([`handler`]), heartbeats the
//! task while the handler runs, and reports the result with CompleteTask.
//!
//! The worker uses the generated client types that `grpc` exports for Rust clients; it shares
//! nothing else with the service, which it reaches only over the network.
//!
//! Bounded: at most `--max-tasks` tasks run at once (the PollTasks streams ask for no more
//! than the free slots), each for at most `--task-timeout`, with at most `--max-output` bytes
//! of result; completions are retried a bounded number of times.

mod handler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::config::WorkerConfig;
use crate::grpc::{map_to_struct, pb, struct_to_map, WorkerServiceClient};
use crate::observe::Escaped;
use handler::{Handler, Limits, TaskResult};

/// Longest error message sent with CompleteTask, in bytes; a handler's stderr is cut to its
/// tail this long.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Largest task message taken from the service: the service's bound on a job's variables
/// (16 MiB), with room for the rest of the message.
const MAX_TASK_MESSAGE: usize = 20 * 1024 * 1024;

/// A failed CompleteTask (Unavailable, a dropped connection) is sent again at least this many
/// times, and on until the task's lease ends: a database failover takes some 20 s, and a
/// result given up before the lease ends makes the task run again for nothing.
const COMPLETE_ATTEMPTS: u32 = 6;
/// The longest wait between two tries of a CompleteTask.
const COMPLETE_WAIT_MAX: Duration = Duration::from_secs(5);

/// Waits between tries to open the stream again: from the first, doubling to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_LAST: Duration = Duration::from_secs(30);

/// Heartbeats come every third of what is left of the lease, within these bounds (the lower
/// keeps a very short lease from turning into a busy loop).
const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
const HEARTBEAT_MAX: Duration = Duration::from_secs(600);

/// Runs the worker until the first message on `signals` (SIGTERM, SIGINT): then it stops
/// taking tasks, lets the running ones finish and report, and returns. A second message
/// aborts the running tasks (killing their commands) and returns an error.
pub async fn run(config: WorkerConfig, mut signals: mpsc::Receiver<()>) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::new(&config).await?);
    let max_tasks = config.max_tasks as usize;
    let slots = Arc::new(Semaphore::new(max_tasks));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut backoff = BACKOFF_FIRST;
    let mut refused = None;
    tracing::info!(
        worker_id = %worker.worker_id,
        apps = ?worker.apps(),
        max_tasks,
        "worker started"
    );
    'poll: loop {
        // A stream asks for the free slots only: tasks from a lost stream still hold theirs.
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = signals.recv() => break 'poll,
                _ = tasks.join_next() => continue 'poll,
            }
        }
        let opened = tokio::select! {
            _ = signals.recv() => break 'poll,
            opened = worker.poll(free as u32) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(status) if is_fatal(&status) => {
                // The running tasks still finish and report before the worker stops.
                refused = Some(anyhow::anyhow!(
                    "the service refused to hand out tasks: {}",
                    status.message()
                ));
                break 'poll;
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?backoff, "could not poll for tasks");
                if wait_or_signal(&mut backoff, &mut signals).await {
                    break 'poll;
                }
                continue 'poll;
            }
        };
        tracing::info!(slots = free, "polling for tasks");
        let opened_at = Instant::now();
        // Tasks of this stream still running: once every other task has ended, a stream that
        // asked for fewer than all slots is opened again to ask for all of them.
        let this_stream = Arc::new(AtomicUsize::new(0));
        loop {
            tokio::select! {
                _ = signals.recv() => break 'poll,
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(error) = ended {
                        tracing::error!(error = %error, "a task's runner failed");
                    }
                    if free < max_tasks && tasks.len() == this_stream.load(Ordering::SeqCst) {
                        continue 'poll;
                    }
                }
                message = stream.message() => match message {
                    Ok(Some(task)) => {
                        backoff = BACKOFF_FIRST;
                        // The service sends no more than the slots asked for; waiting here
                        // only if it ever did keeps the bound all the same.
                        let slot = match slots.clone().try_acquire_owned() {
                            Ok(slot) => slot,
                            Err(_) => match slots.clone().acquire_owned().await {
                                Ok(slot) => slot,
                                Err(_) => break 'poll,
                            },
                        };
                        this_stream.fetch_add(1, Ordering::SeqCst);
                        let running = Running { _slot: slot, stream: this_stream.clone() };
                        tasks.spawn(worker.clone().run_task(task, running));
                    }
                    Ok(None) | Err(_) => {
                        match message {
                            Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "the task stream broke"),
                            _ => tracing::warn!("the service closed the task stream"),
                        }
                        if opened_at.elapsed() > BACKOFF_LAST {
                            backoff = BACKOFF_FIRST;
                        }
                        if wait_or_signal(&mut backoff, &mut signals).await {
                            break 'poll;
                        }
                        continue 'poll;
                    }
                },
            }
        }
    }
    tracing::info!(
        running = tasks.len(),
        "stopping: no new tasks; finishing the running ones"
    );
    loop {
        tokio::select! {
            next = tasks.join_next() => {
                if next.is_none() {
                    tracing::info!("worker stopped");
                    return refused.map_or(Ok(()), Err);
                }
            }
            _ = signals.recv() => {
                let killed = tasks.len();
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                bail!("stopped by a second signal: {killed} running tasks were killed and not reported");
            }
        }
    }
}

/// Statuses that trying again will not change: the request or the caller's roles are wrong.
fn is_fatal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::PermissionDenied
    )
}

/// Sleeps `backoff` (with jitter), doubling it for next time; true when a signal came first.
async fn wait_or_signal(backoff: &mut Duration, signals: &mut mpsc::Receiver<()>) -> bool {
    let jitter = rand::random_range(0.5..1.0);
    let wait = backoff.mul_f64(jitter);
    *backoff = (*backoff * 2).min(BACKOFF_LAST);
    tokio::select! {
        _ = signals.recv() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// A running task's slot and its place in its stream's count; both are given back when the
/// task ends, however it ends.
struct Running {
    _slot: OwnedSemaphorePermit,
    stream: Arc<AtomicUsize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stream.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the bearer token comes from.
enum Token {
    Fixed(MetadataValue<Ascii>),
    File(std::path::PathBuf),
}

impl Token {
    async fn bearer(&self) -> Result<MetadataValue<Ascii>, tonic::Status> {
        match self {
            Token::Fixed(value) => Ok(value.clone()),
            Token::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|error| {
                    tonic::Status::unauthenticated(format!(
                        "cannot read --token-file {}: {error}",
                        path.display()
                    ))
                })?;
                bearer(text.trim()).map_err(|why| {
                    tonic::Status::unauthenticated(format!(
                        "--token-file {}: {why}",
                        path.display()
                    ))
                })
            }
        }
    }
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token holds characters a header cannot carry".to_owned())
}

struct Worker {
    client: WorkerServiceClient<Channel>,
    token: Token,
    worker_id: String,
    handlers: HashMap<String, Handler>,
    limits: Limits,
}

/// How a handler's run ended, heartbeats included.
enum Ended {
    /// The handler's result, and when the task's lease ends as last heard.
    Ran(TaskResult, Option<SystemTime>),
    /// The job was canceled: nothing to report.
    Canceled,
    /// The lease is no longer this worker's (expired, or the task completed elsewhere).
    LeaseLost,
}

impl Worker {
    async fn new(config: &WorkerConfig) -> anyhow::Result<Worker> {
        config.check().map_err(anyhow::Error::msg)?;
        let token = match (&config.token_file, &config.token) {
            (Some(path), _) => {
                let token = Token::File(path.clone());
                token
                    .bearer()
                    .await
                    .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
                token
            }
            (None, Some(token)) => {
                use secrecy::ExposeSecret;
                Token::Fixed(
                    bearer(token.expose_secret().trim())
                        .map_err(|why| anyhow::anyhow!("JOB_SERVICE_TOKEN: {why}"))?,
                )
            }
            (None, None) => bail!("no token: give --token-file or JOB_SERVICE_TOKEN"),
        };
        let channel = channel(config).await?;
        let http = handler::http_client(config)?;
        let mut handlers = HashMap::new();
        for exec in &config.exec {
            handlers.insert(exec.app.clone(), Handler::exec(exec));
        }
        for endpoint in &config.http {
            handlers.insert(endpoint.app.clone(), Handler::http(endpoint, http.clone()));
        }
        let worker_id = config.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| "worker".to_owned());
            format!("{host}-{}", std::process::id())
        });
        Ok(Worker {
            // A task's incoming values may be as large as the service lets a job's variables
            // be; tonic's default (4 MiB) would refuse such a task on every poll.
            client: WorkerServiceClient::new(channel).max_decoding_message_size(MAX_TASK_MESSAGE),
            token,
            worker_id,
            handlers,
            limits: Limits {
                timeout: config.task_timeout.into(),
                max_output: config.max_output.as_u64() as usize,
            },
        })
    }

    fn apps(&self) -> Vec<&str> {
        let mut apps: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        apps.sort_unstable();
        apps
    }

    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, tonic::Status> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.token.bearer().await?);
        Ok(request)
    }

    async fn poll(
        &self,
        max_tasks: u32,
    ) -> Result<tonic::Streaming<pb::WorkerTask>, tonic::Status> {
        let request = self
            .request(pb::PollTasksRequest {
                worker_id: self.worker_id.clone(),
                apps: self.apps().into_iter().map(str::to_owned).collect(),
                max_tasks,
            })
            .await?;
        Ok(self.client.clone().poll_tasks(request).await?.into_inner())
    }

    /// Runs one task to its end and reports it; logs one line.
    async fn run_task(self: Arc<Self>, task: pb::WorkerTask, running: Running) {
        let _running = running;
        let started = Instant::now();
        let mut violations = crate::domain::Violations::default();
        let incoming = task
            .incoming
            .as_ref()
            .map(|incoming| struct_to_map(incoming, "incoming", &mut violations))
            .unwrap_or_default();
        let input = json!({
            "job_id": task.job_id,
            "task_id": task.task_id,
            "app": task.app,
            "name": task.name,
            "incoming": incoming,
            "attempt": task.attempt,
        });
        let ended = match self.handlers.get(&task.app) {
            None => Ended::Ran(
                TaskResult::error(format!("this worker has no handler for app {:?}", task.app)),
                lease_end(task.lease_deadline.as_ref()),
            ),
            Some(handler) => {
                let work = handler.run(&input, &self.limits);
                self.with_heartbeats(&task, work).await
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let line = |outcome: &str, detail: &str| {
            tracing::info!(
                job_id = %task.job_id,
                task_id = %Escaped(&task.task_id),
                app = %Escaped(&task.app),
                name = %Escaped(&task.name),
                attempt = task.attempt,
                elapsed_ms,
                outcome,
                detail,
                "task"
            )
        };
        match ended {
            Ended::Canceled => line("canceled", "the job was canceled; the handler was stopped"),
            Ended::LeaseLost => line(
                "lease lost",
                "the task is no longer this worker's; the handler was stopped",
            ),
            Ended::Ran(result, lease) => {
                let state = result.finish_state.clone();
                let detail = result.error_message.clone();
                match self.complete(&task.task_token, result, lease).await {
                    Ok(()) => line(&state, &detail),
                    Err(why) => line("not reported", &why),
                }
            }
        }
    }

    /// Runs `work`, heartbeating the task every third of what is left of its lease; stops
    /// (drops `work`, which kills its command) when the job is canceled or the lease lost.
    async fn with_heartbeats(
        &self,
        task: &pb::WorkerTask,
        work: impl std::future::Future<Output = TaskResult>,
    ) -> Ended {
        tokio::pin!(work);
        let mut lease = lease_end(task.lease_deadline.as_ref());
        let mut every = heartbeat_interval(lease);
        loop {
            tokio::select! {
                result = &mut work => return Ended::Ran(result, lease),
                _ = tokio::time::sleep(every) => {}
            }
            let request = pb::HeartbeatTaskRequest {
                task_token: task.task_token.clone(),
            };
            let answer = match self.request(request).await {
                Ok(request) => self.client.clone().heartbeat_task(request).await,
                Err(status) => Err(status),
            };
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if answer.cancel_requested {
                        return Ended::Canceled;
                    }
                    lease = lease_end(answer.lease_deadline.as_ref()).or(lease);
                    every = heartbeat_interval(lease);
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return Ended::LeaseLost
                }
                Err(status) => {
                    // The service may be restarting: keep working, try again sooner.
                    tracing::warn!(task_id = %Escaped(&task.task_id), code = ?status.code(), message = status.message(), "heartbeat failed");
                    every = (every / 2).max(HEARTBEAT_MIN);
                }
            }
        }
    }

    /// Sends the result, again when the service is briefly unreachable. A result the service
    /// refuses as invalid (a string holding U+0000, say) is replaced by an error that says
    /// so, so that the task does not wait for its lease to run out.
    async fn complete(
        &self,
        task_token: &str,
        mut result: TaskResult,
        lease: Option<SystemTime>,
    ) -> Result<(), String> {
        let mut wait = Duration::from_millis(200);
        let mut refused = false;
        let mut attempt = 0;
        while attempt < COMPLETE_ATTEMPTS || lease.is_some_and(|end| SystemTime::now() < end) {
            attempt += 1;
            let request = pb::CompleteTaskRequest {
                task_token: task_token.to_owned(),
                finish_state: result.finish_state.clone(),
                outgoing: Some(map_to_struct(&result.outgoing)),
                error_message: result.error_message.clone(),
            };
            let answer = match self.request(request).await {
                Ok(request) => self.client.clone().complete_task(request).await,
                Err(status) => Err(status),
            };
            match answer {
                Ok(_) => return Ok(()),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return Err(format!("the service took no result: {}", status.message()))
                }
                Err(status) if status.code() == Code::InvalidArgument && !refused => {
                    refused = true;
                    result = TaskResult::error(format!(
                        "the service refused the handler's result: {}",
                        status.message()
                    ));
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "could not report a task; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(COMPLETE_WAIT_MAX);
                }
            }
        }
        Err(
            "the service could not be reached; the task will be offered again when its lease ends"
                .to_owned(),
        )
    }
}

/// When a lease ends, as the service said it.
fn lease_end(deadline: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    deadline.map(|deadline| {
        SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(deadline.seconds).unwrap_or(0),
                u32::try_from(deadline.nanos).unwrap_or(0),
            )
    })
}

/// A third of what is left of a lease, by this machine's clock.
fn heartbeat_interval(deadline: Option<SystemTime>) -> Duration {
    let Some(deadline) = deadline else {
        return HEARTBEAT_MIN;
    };
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    (left / 3).clamp(HEARTBEAT_MIN, HEARTBEAT_MAX)
}

/// The channel to the service: plaintext, or TLS with `--tls-ca` (and a client certificate
/// for mutual TLS). Connects lazily: a service not up yet is tried again like a lost stream.
async fn channel(config: &WorkerConfig) -> anyhow::Result<Channel> {
    let address = config.grpc_addr.trim();
    let tls = address.starts_with("https://") || config.tls_ca.is_some();
    let url = match address.split_once("://") {
        Some(("http" | "https", rest)) => {
            format!("{}://{rest}", if tls { "https" } else { "http" })
        }
        Some((scheme, _)) => bail!("--grpc-addr: {scheme}:// is not http:// or https://"),
        None => format!("{}://{address}", if tls { "https" } else { "http" }),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("--grpc-addr: {address:?} is not host:port or a URL"))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if tls {
        let Some(ca) = &config.tls_ca else {
            bail!("--grpc-addr is https://: give --tls-ca, the CA that signs the service's certificate");
        };
        let ca = read(ca, "--tls-ca").await?;
        let mut settings = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(domain) = &config.tls_domain {
            settings = settings.domain_name(domain.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_client_cert, &config.tls_client_key) {
            settings = settings.identity(Identity::from_pem(
                read(cert, "--tls-client-cert").await?,
                read(key, "--tls-client-key").await?,
            ));
        }
        endpoint = endpoint
            .tls_config(settings)
            .context("--tls-ca: the TLS settings are not usable")?;
    }
    Ok(endpoint.connect_lazy())
}

async fn read(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("{flag}: cannot read {}", path.display()))
}

/// A result's outgoing values, when they are an object.
fn outgoing_object(value: Option<&Value>) -> Result<Map<String, Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(format!(
            "outgoing must be an object, not {}",
            crate::domain::json::type_name(other)
        )),
    }
}
