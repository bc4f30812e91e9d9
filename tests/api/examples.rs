//! The clients in `examples/<language>/`, run as a user runs them (`examples/<language>/run`,
//! configured by environment) against the real binary: each imports the workflow in
//! `examples/workflows/`, starts a job, reads it back and lists it, and must exit 0. The Python
//! task worker (`examples/python/run-worker`) runs the Infoblox tasks of that workflow's jobs.
//!
//! scripts/test installs their dependencies first; a missing interpreter fails these tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use job_service::grpc::pb;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::helpers::{fresh_database, send, small_workflow, to_struct};
use crate::serve::{listening, token, Server};

/// The name in `examples/workflows/create-network.json`.
const WORKFLOW: &str = "Example: Create Network";

/// `job-service serve` on a fresh database, with an HS256 secret of its own.
struct Service {
    server: Server,
    db: PgPool,
    database_url: String,
    /// The examples need to write workflows and start jobs: the `engineering` role.
    token: String,
    /// The task worker's: the `worker` role.
    worker_token: String,
    keys: tempfile::TempDir,
}

impl Service {
    async fn start() -> Service {
        Service::start_with(&[]).await
    }

    /// [`Service::start`] with more arguments for `serve`.
    async fn start_with(args: &[&str]) -> Service {
        let keys = tempfile::tempdir().unwrap();
        let secret = keys.path().join("secret");
        std::fs::write(&secret, format!("{:064x}", rand::random::<u128>())).unwrap();
        let database_url = fresh_database().await;
        let server = serve(&database_url, keys.path(), "127.0.0.1:0", args);
        let signed = |username: &str, role: &str| {
            token([
                OsStr::new("--username"),
                username.as_ref(),
                "--roles".as_ref(),
                role.as_ref(),
                "--jwt-secret-file".as_ref(),
                secret.as_os_str(),
            ])
        };
        Service {
            server,
            db: PgPool::connect(&database_url).await.unwrap(),
            token: signed("examples", "engineering"),
            worker_token: signed("worker-1", "worker"),
            database_url,
            keys,
        }
    }

    /// Stops the service with SIGTERM, keeping its database and key.
    fn stop(self) -> Stopped {
        let Service {
            server,
            db,
            database_url,
            token,
            worker_token,
            keys,
        } = self;
        let grpc_addr = server.addr.to_string();
        assert!(server.terminate().success(), "SIGTERM exits 0");
        Stopped {
            grpc_addr,
            db,
            database_url,
            token,
            worker_token,
            keys,
        }
    }

    /// Runs `examples/<language>/run` against this service: its stdout, after checking that it
    /// exited 0.
    async fn run_example(&self, language: &str) -> String {
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples", language, "run"]
            .iter()
            .collect();
        let output = tokio::process::Command::new(&script)
            .env("JOB_SERVICE_GRPC_ADDR", self.server.addr.to_string())
            .env(
                "JOB_SERVICE_HTTP_URL",
                format!("http://{}", self.server.http_addr),
            )
            .env("JOB_SERVICE_TOKEN", &self.token)
            .output()
            .await
            .unwrap_or_else(|err| panic!("{} could not be started: {err}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "examples/{language}/run failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
            output.status
        );
        stdout
    }

    /// The stored job: its workflow name and variables.
    async fn stored_job(&self, id: &str) -> (String, Value) {
        sqlx::query_as("select workflow_name, document->'variables' from jobs where id = $1")
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("job {id} is stored"))
    }

    async fn stored_workflow_description(&self) -> Option<String> {
        sqlx::query_scalar("select document->>'description' from workflows where name = $1")
            .bind(WORKFLOW)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Stores `examples/workflows/create-network.json`.
    async fn import_workflow(&self) {
        self.server
            .workflows(&self.token)
            .create_workflow(pb::CreateWorkflowRequest {
                workflow: Some(to_struct(&workflow_file())),
            })
            .await
            .unwrap();
    }

    /// An HTTP request to the gateway with the examples' token.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.server.http_addr))
            .bearer_auth(&self.token)
    }

    /// Starts a job of the examples' workflow that creates `network`; its id.
    async fn start_job(&self, network: &str) -> String {
        let (status, body) = send(
            self.request(reqwest::Method::POST, "/operations-manager/jobs/start")
                .json(&json!({"workflow": WORKFLOW, "options": {"variables": {
                    "adapterId": "Infoblox", "network": network, "comment": "from the tests"}}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["_id"].as_str().unwrap().to_owned()
    }

    /// POST `body` to `path`, which must answer 200.
    async fn post(&self, path: &str, body: Value) {
        let (status, answer) = send(self.request(reqwest::Method::POST, path).json(&body)).await;
        assert_eq!(status, 200, "POST {path}: {answer}");
    }

    /// The job's REST document once `done` holds of it (polled for up to 30 s).
    async fn job_when(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let path = format!("/operations-manager/jobs/{id}");
            let (status, body) = send(self.request(reqwest::Method::GET, &path)).await;
            assert_eq!(status, 200, "{body}");
            if done(&body["data"]) {
                return body["data"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never got there: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `examples/python/run-worker` with `args` against this service.
    fn run_worker(&self, args: &[&str]) -> Worker {
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples/python/run-worker"]
            .iter()
            .collect();
        let mut child = tokio::process::Command::new(&script)
            .args(args)
            .env("JOB_SERVICE_GRPC_ADDR", self.server.addr.to_string())
            .env("JOB_SERVICE_TOKEN", &self.worker_token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("{} could not be started: {err}", script.display()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            tokio::spawn(collect(child.stdout.take().unwrap(), stdout.clone())),
            tokio::spawn(collect(child.stderr.take().unwrap(), stderr.clone())),
        ];
        Worker {
            child,
            stdout,
            stderr,
            readers,
        }
    }
}

/// A service stopped by [`Service::stop`]: what it needs to start again.
struct Stopped {
    grpc_addr: String,
    db: PgPool,
    database_url: String,
    token: String,
    worker_token: String,
    keys: tempfile::TempDir,
}

impl Stopped {
    /// Starts the service again on the same gRPC address, database and key, as an upgrade
    /// does.
    fn start(self) -> Service {
        let Stopped {
            grpc_addr,
            db,
            database_url,
            token,
            worker_token,
            keys,
        } = self;
        Service {
            server: serve(&database_url, keys.path(), &grpc_addr, &[]),
            db,
            database_url,
            token,
            worker_token,
            keys,
        }
    }
}

/// `job-service serve` on `database_url`, signing with the secret in `keys`, gRPC on
/// `grpc_addr`, HTTP on a free port; more arguments may follow.
fn serve(database_url: &str, keys: &Path, grpc_addr: &str, args: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_job-service"));
    command
        .args([
            "serve",
            "--grpc-addr",
            grpc_addr,
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", database_url])
        .arg("--jwt-secret-file")
        .arg(keys.join("secret"))
        .arg("--data-dir")
        .arg(keys)
        .args(args);
    listening(command)
}

/// Appends what `from` writes to `into`, a line at a time.
async fn collect(from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = into.lock().unwrap();
        text.push_str(&line);
        text.push('\n');
    }
}

/// A running `examples/python/run-worker`, its output collected as it comes.
struct Worker {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// What the worker wrote so far.
    fn output(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits until the worker has written a line holding `text` (up to 2 minutes: the first
    /// run may install the example's dependencies).
    async fn wait_for(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !self.stdout.lock().unwrap().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker never wrote {text:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("the worker runs") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }

    /// Waits for the worker to exit (up to 2 minutes) and checks that it exited 0; its stdout.
    async fn exited(mut self) -> String {
        let Ok(status) = tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await
        else {
            panic!("the worker did not exit:\n{}", self.output());
        };
        for reader in self.readers.drain(..) {
            reader.await.unwrap();
        }
        assert!(
            status.unwrap().success(),
            "the worker failed:\n{}",
            self.output()
        );
        let stdout = self.stdout.lock().unwrap().clone();
        stdout
    }
}

/// The job id of the closing line, `ok: job <id>`.
fn job_id(stdout: &str) -> String {
    let last = stdout.lines().last().unwrap_or_default();
    let id = last
        .strip_prefix("ok: job ")
        .unwrap_or_else(|| panic!("the output ends with `ok: job <id>`:\n{stdout}"));
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id.to_owned()
}

fn workflow_file() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows/create-network.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_starts_a_job_and_can_run_again() {
    let service = Service::start().await;

    let first = service.run_example("python").await;
    assert!(first.contains("created workflow"), "{first}");
    let second = service.run_example("python").await;
    assert!(
        second.contains("already stored, unchanged"),
        "a second run reuses the workflow:\n{second}"
    );

    let ids = [job_id(&first), job_id(&second)];
    assert_ne!(ids[0], ids[1], "each run starts a job of its own");
    for id in &ids {
        let (workflow, variables) = service.stored_job(id).await;
        assert_eq!(workflow, WORKFLOW);
        assert_eq!(variables["network"], "10.20.30.0/24");
        // Sent as a whole number through a google.protobuf.Struct, stored as one.
        assert_eq!(variables["vlan"], json!(120));
        assert_eq!(variables["initiator"], "examples");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_example_starts_a_job_and_replaces_a_stale_workflow() {
    let service = Service::start().await;
    // A workflow of the same name that is not the file's: the example replaces it.
    service
        .server
        .workflows(&service.token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow(WORKFLOW))),
        })
        .await
        .unwrap();

    let stdout = service.run_example("node").await;
    assert!(stdout.contains("replaced workflow"), "{stdout}");
    assert_eq!(
        service.stored_workflow_description().await.as_deref(),
        workflow_file()["description"].as_str()
    );

    let (workflow, variables) = service.stored_job(&job_id(&stdout)).await;
    assert_eq!(workflow, WORKFLOW);
    assert_eq!(variables["network"], "10.20.40.0/24");
    assert_eq!(variables["vlan"], json!(140));
    assert_eq!(variables["initiator"], "examples");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_worker_runs_the_infoblox_tasks_and_the_jobs_end_as_the_workflow_says() {
    let service = Service::start().await;
    service.import_workflow().await;
    let created = [
        service.start_job("10.20.30.0/24").await,
        service.start_job("10.20.40.0/24").await,
    ];
    // Host bits set: the worker's createNetwork raises, and the task ends in error.
    let refused = service.start_job("10.20.50.1/24").await;

    let stdout = service
        .run_worker(&[
            "--app",
            "Infoblox",
            "--max-tasks",
            "2",
            "--max-tasks-total",
            "3",
        ])
        .exited()
        .await;
    assert!(
        stdout.contains("stopped: took 3 tasks, completed 3"),
        "{stdout}"
    );

    for (id, network) in created.iter().zip(["10.20.30.0/24", "10.20.40.0/24"]) {
        let job = service.job_when(id, |job| job["status"] != "running").await;
        assert_eq!(job["status"], "complete", "{job}");
        let record = &job["variables"]["createdNetwork"];
        assert_eq!(
            (
                &record["network"],
                &record["network_view"],
                &record["comment"]
            ),
            (&json!(network), &json!("default"), &json!("from the tests")),
            "the task's outgoing `result` is the job variable the workflow maps it to: {job}"
        );
        let task = &job["tasks"]["710e"];
        assert_eq!(task["finish_state"], "success");
        assert_eq!(&task["variables"]["outgoing"]["result"], record);
        assert_eq!(task["variables"]["incoming"]["network"], network);
        assert_eq!(
            job["tasks"]["6fa"]["status"], "incomplete",
            "the error path was not taken"
        );
        assert_eq!(job["metrics"]["progress"], 1.0);
    }

    // The error path: the operator's manual task shows the error, then the job ends.
    let job = service
        .job_when(&refused, |job| job["tasks"]["6fa"]["status"] == "scheduled")
        .await;
    assert_eq!(job["status"], "running");
    assert_eq!(job["tasks"]["710e"]["status"], "error");
    assert_eq!(job["tasks"]["710e"]["finish_state"], "error");
    assert_eq!(
        (&job["error"][0]["task"], &job["error"][0]["message"]),
        (&json!("710e"), &json!("10.20.50.1/24 has host bits set")),
        "the handler's exception is the task's error: {job}"
    );
    assert!(job["variables"].get("createdNetwork").is_none());
    service
        .post(
            &format!("/operations-manager/jobs/{refused}/tasks/6fa/finish"),
            json!({"taskData": {"finish_state": "success", "variables": {}}}),
        )
        .await;
    let job = service
        .job_when(&refused, |job| job["status"] != "running")
        .await;
    assert_eq!(job["status"], "complete", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_worker_holds_a_long_task_by_heartbeats_and_drops_a_canceled_one() {
    // Tasks take 5 s and leases last 2 s: only heartbeats keep them.
    let service = Service::start_with(&["--task-lease", "2s", "--engine-sweep", "100ms"]).await;
    service.import_workflow().await;
    let kept = service.start_job("10.20.60.0/24").await;
    let canceled = service.start_job("10.20.70.0/24").await;
    let worker = service.run_worker(&[
        "--max-tasks",
        "2",
        "--max-tasks-total",
        "2",
        "--work-seconds",
        "5",
    ]);

    service
        .job_when(&canceled, |job| job["tasks"]["710e"]["status"] == "running")
        .await;
    service
        .post(
            "/operations-manager/jobs/cancel",
            json!({"jobIds": [canceled]}),
        )
        .await;
    let stdout = worker.exited().await;

    let job = service
        .job_when(&kept, |job| job["status"] != "running")
        .await;
    assert_eq!(job["status"], "complete", "{job}\n{stdout}");
    assert_eq!(
        job["variables"]["createdNetwork"]["network"],
        "10.20.60.0/24"
    );
    assert!(
        stdout.contains(&format!("task 710e of job {kept}: heartbeat, lease until")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("attempt 2"),
        "no lease ran out, so no task was offered twice:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "task 710e of job {canceled}: called off, its job was canceled; not completed"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("stopped: took 2 tasks, completed 1"),
        "{stdout}"
    );
    let job = service.job_when(&canceled, |_| true).await;
    assert_eq!(job["status"], "canceled");
    assert_eq!(job["tasks"]["710e"]["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_worker_polls_again_after_a_restart_and_stops_on_sigterm() {
    let service = Service::start().await;
    service.import_workflow().await;
    let worker = service.run_worker(&["--app", "Infoblox"]);
    worker.wait_for("polling for Infoblox tasks").await;

    let stopped = service.stop();
    worker.wait_for("polling again in").await;
    let service = stopped.start();
    let id = service.start_job("10.20.80.0/24").await;
    let job = service
        .job_when(&id, |job| job["status"] != "running")
        .await;
    assert_eq!(job["status"], "complete", "{job}\n{}", worker.output());

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let stdout = worker.exited().await;
    assert!(
        stdout.contains("SIGTERM: finishing the tasks under way, then exiting"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stopped: took 1 tasks, completed 1"),
        "{stdout}"
    );
}
