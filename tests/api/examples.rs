//! The clients in `examples/<language>/`, run as a user runs them (`examples/<language>/run`,
//! configured by environment) against the real binary: each imports the workflow in
//! `examples/workflows/`, starts a job, reads it back and lists it, and must exit 0.
//!
//! scripts/test installs their dependencies first; a missing interpreter fails these tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use job_service::grpc::pb;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{fresh_database, small_workflow, to_struct};
use crate::serve::{listening, serve_command, token, Server};

/// The name in `examples/workflows/create-network.json`.
const WORKFLOW: &str = "Example: Create Network";

/// `job-service serve` on a fresh database, with an HS256 secret of its own.
struct Service {
    server: Server,
    db: PgPool,
    /// The examples need to write workflows and start jobs: the `engineering` role.
    token: String,
    _keys: tempfile::TempDir,
}

impl Service {
    async fn start() -> Service {
        let keys = tempfile::tempdir().unwrap();
        let secret = keys.path().join("secret");
        std::fs::write(&secret, format!("{:064x}", rand::random::<u128>())).unwrap();
        let database_url = fresh_database().await;
        let mut command = serve_command();
        command
            .args(["--database-url", &database_url])
            .arg("--jwt-secret-file")
            .arg(&secret)
            .arg("--data-dir")
            .arg(keys.path());
        let server = listening(command);
        let token = token([
            OsStr::new("--username"),
            "examples".as_ref(),
            "--roles".as_ref(),
            "engineering".as_ref(),
            "--jwt-secret-file".as_ref(),
            secret.as_os_str(),
        ]);
        Service {
            server,
            db: PgPool::connect(&database_url).await.unwrap(),
            token,
            _keys: keys,
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
