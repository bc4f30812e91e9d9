//! `job-service worker`, run as the built binary against a service: commands and HTTP
//! endpoints as the handlers of an app, their results as the tasks' outcomes, timeouts,
//! cancellation, heartbeats, SIGTERM, and its command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::routing::post;
use axum::Json;
use job_service::grpc::pb;
use serde_json::{json, Value};

use crate::helpers::{fresh_database, from_struct, to_struct, Bearer, TestApp};

const APP: &str = "Infoblox";

/// start -> create (an Infoblox task, its result the job variable `created`) -> end.
fn workflow(name: &str) -> Value {
    json!({
        "name": name,
        "type": "automation",
        "groups": [],
        "tasks": {
            "workflow_start": {"name": "workflow_start", "groups": []},
            "create": {
                "name": "createNetwork", "app": APP, "type": "automatic",
                "location": "Adapter", "summary": "Create network", "description": "",
                "variables": {
                    "incoming": {"network": "$var.job.network", "adapter_id": APP},
                    "outgoing": {"result": "$var.job.created"},
                    "error": "$var.job.createError"
                }
            },
            "workflow_end": {"name": "workflow_end", "groups": []}
        },
        "transitions": {
            "workflow_start": {"create": {"state": "success", "type": "standard"}},
            "create": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {}
        }
    })
}

/// A worker process, killed if the test ends first; its log kept in a file.
struct Worker {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Worker {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `holds` of it, or after 10 s: the worker writes a task's line after
    /// reporting it, so a job can show the task's end before the line is written.
    async fn log_once(&self, holds: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if holds(&log) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    async fn exit(&mut self, within: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the worker did not exit; its log:\n{}", self.log()),
        }
    }
}

/// A directory for scripts, tokens and logs.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes an executable sh script and returns its path.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// Starts `job-service worker` for `app` with a worker's token in a file and `args`.
    fn worker(&self, app: &TestApp, args: &[&str]) -> Worker {
        self.worker_with_token(app, &app.token("worker-1", &["worker"], &[]), args)
    }

    /// [`Scratch::worker`] with `token` in its token file.
    fn worker_with_token(&self, app: &TestApp, token: &str, args: &[&str]) -> Worker {
        let token_file = self.path(&format!("{}.token", rand::random::<u32>()));
        std::fs::write(&token_file, token).unwrap();
        let log = self.path(&format!("worker-{}.log", rand::random::<u32>()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_job-service"))
            .arg("worker")
            .arg("--grpc-addr")
            .arg(app.addr.to_string())
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .env_remove("JOB_SERVICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        Worker { child, log }
    }
}

async fn start(app: &TestApp, name: &str, network: &str) -> String {
    app.start_job(name, json!({"network": network}))
        .await
        .expect("the job starts")
        .id
}

/// The job once `done` holds, within `within`.
async fn job_when(
    app: &TestApp,
    id: &str,
    within: Duration,
    worker: &Worker,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = app.get(&format!("/operations-manager/jobs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never got there: {body}\nthe worker's log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ended(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("complete" | "error" | "canceled")
    )
}

/// Whether process `pid` is gone (or a zombie no one has reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_for_file(path: &Path, worker: &Worker) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never appeared; the worker's log:\n{}",
        path.display(),
        worker.log()
    )
}

/// Echoes the task it is given as outgoing `result`.
const ECHO: &str = r#"task=$(cat)
printf '{"finish_state": "success", "outgoing": {"result": %s}}' "$task""#;

#[tokio::test]
async fn a_commands_output_becomes_the_tasks_outgoing_values() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let script = scratch.script("echo.sh", ECHO);
    let worker = scratch.worker(
        &app,
        &["--exec", &format!("{APP}={script}"), "--max-tasks", "2"],
    );
    let mut ids = Vec::new();
    for network in ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"] {
        ids.push((start(&app, "Create", network).await, network));
    }
    for (id, network) in ids {
        let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
        assert_eq!(job["status"], "complete", "{job}");
        let created = &job["variables"]["created"];
        assert_eq!(
            created,
            &json!({
                "job_id": id,
                "task_id": "create",
                "app": APP,
                "name": "createNetwork",
                "incoming": {"network": network, "adapter_id": APP},
                "attempt": 1
            })
        );
        assert_eq!(job["tasks"]["create"]["finish_state"], "success");
    }
    // One line a task.
    let log = worker
        .log_once(|log| log.matches("task_id=create").count() >= 3)
        .await;
    assert_eq!(log.matches("task_id=create").count(), 3, "{log}");
}

#[tokio::test]
async fn an_http_endpoints_answer_is_the_result_and_other_statuses_errors() {
    async fn handle(Json(task): Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let network = task["incoming"]["network"].clone();
        if network == "10.9.9.0/24" {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no capacity left",
            )
                .into_response();
        }
        Json(json!({"outgoing": {"result": {"network": network, "method": task["name"]}}}))
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tasks", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/tasks", post(handle)))
            .await
            .unwrap()
    });
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let worker = scratch.worker(&app, &["--http", &format!("{APP}={url}")]);

    let id = start(&app, "Create", "10.0.1.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(
        job["variables"]["created"],
        json!({"network": "10.0.1.0/24", "method": "createNetwork"})
    );

    let id = start(&app, "Create", "10.9.9.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["tasks"]["create"]["finish_state"], "error");
    let message = job["variables"]["createError"].as_str().unwrap_or_default();
    assert!(
        message.contains("503") && message.contains("no capacity left"),
        "{job}"
    );
    server.abort();
}

#[tokio::test]
async fn a_command_that_fails_sends_the_task_down_error_with_its_stderr() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let script = scratch.script(
        "fail.sh",
        "cat >/dev/null\necho 'looking it up'\necho 'network 10.0.1.0/24: no such view' >&2\nexit 3",
    );
    let worker = scratch.worker(&app, &["--exec", &format!("{APP}={script}")]);
    let id = start(&app, "Create", "10.0.1.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["tasks"]["create"]["finish_state"], "error");
    assert_eq!(
        job["variables"]["createError"],
        "network 10.0.1.0/24: no such view"
    );
}

#[tokio::test]
async fn a_command_past_the_task_timeout_is_killed_and_the_task_errors() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let pid_file = scratch.path("sleep.pid");
    // The script's child holds the output pipe: the whole process group must go.
    let script = scratch.script("slow.sh", "sleep 60 &\necho $! > \"$1\"\nwait");
    let worker = scratch.worker(
        &app,
        &[
            "--exec",
            &format!("{APP}={script} {}", pid_file.display()),
            "--task-timeout",
            "1s",
        ],
    );
    let started = std::time::Instant::now();
    let id = start(&app, "Create", "10.0.1.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(job["status"], "error", "{job}");
    let message = job["variables"]["createError"].as_str().unwrap_or_default();
    assert!(message.contains("--task-timeout (1s)"), "{job}");
    let pid: i32 = wait_for_file(&pid_file, &worker).await.parse().unwrap();
    for _ in 0..100 {
        if gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the handler's child {pid} still runs");
}

#[tokio::test]
async fn a_result_larger_than_max_output_ends_the_task_in_error() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    // Writes without end: the worker stops reading at the bound, which stops the program.
    let script = scratch.script("chatty.sh", "cat >/dev/null\nyes '{\"outgoing\": {}}'");
    let worker = scratch.worker(
        &app,
        &["--exec", &format!("{APP}={script}"), "--max-output", "1KiB"],
    );
    let id = start(&app, "Create", "10.0.1.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert_eq!(job["status"], "error", "{job}");
    let message = job["variables"]["createError"].as_str().unwrap_or_default();
    assert!(
        message.contains("larger than --max-output (1024 bytes)"),
        "{job}"
    );
}

#[tokio::test]
async fn heartbeats_keep_a_task_that_outlasts_its_lease() {
    let app = TestApp::spawn_with(|config| config.task_lease = "1s".parse().unwrap()).await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let script = scratch.script("slow-echo.sh", &format!("sleep 3\n{ECHO}"));
    let worker = scratch.worker(&app, &["--exec", &format!("{APP}={script}")]);
    let id = start(&app, "Create", "10.0.1.0/24").await;
    let job = job_when(&app, &id, Duration::from_secs(20), &worker, ended).await;
    assert_eq!(job["status"], "complete", "{job}");
    // Offered once: the lease never ran out.
    assert_eq!(job["variables"]["created"]["attempt"], 1, "{job}");
}

#[tokio::test]
async fn canceling_the_job_kills_its_running_command() {
    let app = TestApp::spawn_with(|config| config.task_lease = "1s".parse().unwrap()).await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let pid_file = scratch.path("sleep.pid");
    let script = scratch.script("slow.sh", "sleep 60 &\necho $! > \"$1\"\nwait");
    let worker = scratch.worker(
        &app,
        &["--exec", &format!("{APP}={script} {}", pid_file.display())],
    );
    let id = start(&app, "Create", "10.0.1.0/24").await;
    let pid: i32 = wait_for_file(&pid_file, &worker).await.parse().unwrap();
    let answer = app
        .jobs
        .clone()
        .cancel_jobs(pb::CancelJobsRequest {
            job_ids: vec![id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().outcomes.len(), 1);
    for _ in 0..200 {
        if gone(pid) {
            let log = worker.log_once(|log| log.contains("canceled")).await;
            assert!(log.contains("canceled"), "{log}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the canceled task's command {pid} still runs; the worker's log:\n{}",
        worker.log()
    );
}

#[tokio::test]
async fn sigterm_lets_running_tasks_finish_and_report_then_exits() {
    let app = TestApp::spawn().await;
    app.create_workflow(&workflow("Create")).await;
    let scratch = Scratch::new();
    let marker = scratch.path("started");
    let script = scratch.script(
        "drain.sh",
        "cat >/dev/null\necho started > \"$1\"\nsleep 2\necho '{\"outgoing\": {\"result\": \"done\"}}'",
    );
    let mut worker = scratch.worker(
        &app,
        &["--exec", &format!("{APP}={script} {}", marker.display())],
    );
    let id = start(&app, "Create", "10.0.1.0/24").await;
    wait_for_file(&marker, &worker).await;
    worker.terminate();
    let status = worker.exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}; log:\n{}", worker.log());
    let job = job_when(&app, &id, Duration::from_secs(5), &worker, ended).await;
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["variables"]["created"], "done");
}

#[tokio::test]
async fn bad_command_lines_get_an_error_naming_the_flag() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_job-service"))
            .arg("worker")
            .args(args)
            .env_remove("JOB_SERVICE_TOKEN")
            .env_remove("JOB_SERVICE_TOKEN_FILE")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for (args, flag) in [
        (vec!["--exec", "adapter.sh", "--token-file", "t"], "--exec"),
        (
            vec!["--http", "Infoblox=ftp://host/", "--token-file", "t"],
            "--http",
        ),
        (
            vec!["--exec", "A=x", "--max-tasks", "0", "--token-file", "t"],
            "--max-tasks",
        ),
        (
            vec!["--exec", "A=x", "--task-timeout", "0s", "--token-file", "t"],
            "--task-timeout",
        ),
        (vec!["--token-file", "t"], "--exec"),
        (vec!["--exec", "A=x"], "--token-file"),
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    // A token file that cannot be read is named too, and the worker does not start.
    let (code, stderr) = run(&["--exec", "A=x", "--token-file", "/nonexistent/token"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");
}

#[tokio::test]
async fn the_worker_polls_again_when_the_service_comes_back() {
    // Both instances verify tokens with one secret, so the worker's token outlives the first.
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, format!("{:064x}", rand::random::<u128>())).unwrap();
    let database_url = fresh_database().await;
    let with_secret = |config: &mut job_service::config::ServeConfig| {
        config.keys.jwt_secret_file = Some(secret.clone());
    };
    let first = TestApp::spawn_on(database_url.clone(), with_secret).await;
    first.create_workflow(&workflow("Create")).await;
    let addr = first.addr;
    let scratch = Scratch::new();
    let script = scratch.script("echo.sh", ECHO);
    let worker = scratch.worker(&first, &["--exec", &format!("{APP}={script}")]);
    let id = start(&first, "Create", "10.0.1.0/24").await;
    job_when(&first, &id, Duration::from_secs(20), &worker, ended).await;
    drop(first);
    // The port is free once the first instance has stopped.
    for _ in 0..200 {
        if std::net::TcpListener::bind(addr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = TestApp::spawn_on(database_url, |config| {
        with_secret(config);
        config.grpc_addr = addr;
    })
    .await;
    let id = start(&second, "Create", "10.0.2.0/24").await;
    let job = job_when(&second, &id, Duration::from_secs(30), &worker, ended).await;
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(
        job["variables"]["created"]["incoming"]["network"],
        "10.0.2.0/24"
    );
    let log = worker.log();
    assert_eq!(log.matches("polling for tasks").count(), 2, "{log}");
}

#[tokio::test]
async fn a_token_without_the_worker_role_stops_the_worker_with_the_services_answer() {
    let app = TestApp::spawn().await;
    let scratch = Scratch::new();
    let reader = app.token("reader", &["apiread"], &[]);
    let mut worker = scratch.worker_with_token(&app, &reader, &["--exec", "Infoblox=true"]);
    let status = worker.exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1));
    let log = worker.log();
    assert!(log.contains("refused to hand out tasks"), "{log}");
}

#[tokio::test]
async fn the_worker_reaches_a_service_over_mutual_tls() {
    let pki = crate::tls::Pki::new();
    let app = pki.spawn(true).await;
    let channel = crate::tls::tls_channel(&app, pki.grpc_tls(Some(&pki.client)))
        .await
        .unwrap();
    let bearer = Bearer::new(&app.admin_token);
    job_service::grpc::WorkflowServiceClient::with_interceptor(channel.clone(), bearer.clone())
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&workflow("Create"))),
        })
        .await
        .unwrap();
    let mut jobs = job_service::grpc::JobServiceClient::with_interceptor(channel, bearer);
    let id = jobs
        .start_job(pb::StartJobRequest {
            workflow: "Create".into(),
            options: Some(pb::JobOptions {
                variables: Some(to_struct(&json!({"network": "10.0.1.0/24"}))),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
        .id;
    let scratch = Scratch::new();
    let script = scratch.script("echo.sh", ECHO);
    let (cert, key) = (scratch.path("client.pem"), scratch.path("client.key"));
    std::fs::write(&cert, &pki.client.cert).unwrap();
    std::fs::write(&key, &pki.client.key).unwrap();
    let ca = pki.file("ca.pem");
    let worker = scratch.worker(
        &app,
        &[
            "--exec",
            &format!("{APP}={script}"),
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-client-cert",
            cert.to_str().unwrap(),
            "--tls-client-key",
            key.to_str().unwrap(),
        ],
    );
    for _ in 0..200 {
        let job = jobs
            .get_job(pb::GetJobRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        let variables = from_struct(job.variables.as_ref().unwrap());
        if let Some(created) = variables.get("created") {
            assert_eq!(created["incoming"]["network"], "10.0.1.0/24");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker never ran the task; its log:\n{}", worker.log());
}
