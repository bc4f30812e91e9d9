//! A running service per test: a fresh migrated database, the gRPC server on port 0, and
//! generated clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use job_service::app::App;
use job_service::auth::{sign, Claims};
use job_service::config::{KeyConfig, ServeConfig};
use job_service::grpc::pb;
use job_service::grpc::{JobServiceClient, WorkflowServiceClient};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel whose calls carry a bearer token.
pub type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().unwrap())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Base URL of the JSON gateway, e.g. `http://127.0.0.1:41234` (`https://localhost:41234`
    /// over TLS).
    pub http_url: String,
    pub http: reqwest::Client,
    /// Clients that call as an admin.
    pub jobs: JobServiceClient<Authed>,
    pub workflows: WorkflowServiceClient<Authed>,
    pub admin_token: String,
    database_url: String,
    pub service: std::sync::Arc<job_service::service::Service>,
    pub engine: std::sync::Arc<job_service::engine::Engine>,
    keys: KeyConfig,
    _key_dir: tempfile::TempDir,
    /// The test's own database, to check what the service stored.
    pub db: PgPool,
    shutdown: Option<oneshot::Sender<()>>,
    _server: JoinHandle<anyhow::Result<()>>,
}

/// The server every test database lives on, from `TEST_DATABASE_URL` (scripts/test sets it).
fn admin_url() -> url::Url {
    let url = std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts a PostgreSQL for them",
    );
    url::Url::parse(&url).expect("TEST_DATABASE_URL is a URL")
}

/// Creates an empty database of its own for one test and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let mut conn = PgConnection::connect(admin.as_str())
        .await
        .expect("can connect to TEST_DATABASE_URL");
    let name = format!("test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("create database {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = admin;
    url.set_path(&name);
    url.to_string()
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A test app whose configuration `adjust` changes first.
    /// An instance that does not run jobs (`--run-jobs false`): jobs stay as they started,
    /// for tests of what is stored and read back.
    pub async fn spawn_frozen() -> TestApp {
        Self::spawn_with(|config| config.run_jobs = false).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        Self::spawn_on(fresh_database().await, adjust).await
    }

    /// Another instance of the service on this app's database, as a second replica would be.
    pub async fn another_instance(&self) -> TestApp {
        Self::spawn_on(self.database_url.clone(), |_| {}).await
    }

    /// Another instance on the same database that does not run jobs.
    pub async fn another_frozen_instance(&self) -> TestApp {
        Self::spawn_on(self.database_url.clone(), |config| config.run_jobs = false).await
    }

    pub async fn spawn_on(database_url: String, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        Self::spawn_on_checked_at(database_url.clone(), &database_url, adjust).await
    }

    /// An app on `database_url`, whose stored rows the test reads at `test_url` (one host,
    /// where the service's URL may name several).
    pub async fn spawn_on_checked_at(
        database_url: String,
        test_url: &str,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        let key_dir = tempfile::tempdir().unwrap();
        let secret_file = key_dir.path().join("secret");
        std::fs::write(&secret_file, format!("{:064x}", rand::random::<u128>())).unwrap();
        let mut config = ServeConfig::defaults();
        config.keys.data_dir = key_dir.path().to_owned();
        config.keys.jwt_secret_file = Some(secret_file);
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.database_url = Some(database_url.clone().into());
        config.db_max_connections = 16;
        adjust(&mut config);
        let app = App::build(&config).await.expect("the app builds");
        let addr = app.grpc_addr();
        // Over TLS, the test certificate names localhost, and the tests bring their own clients.
        let tls = config.tls.cert.is_some();
        let http_url = match tls {
            true => format!("https://localhost:{}", app.http_addr().port()),
            false => format!("http://{}", app.http_addr()),
        };
        let service = app.service();
        let engine = app.engine();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async {
            let _ = stop.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
        let channel = match tls {
            true => channel.connect_lazy(),
            false => channel
                .connect()
                .await
                .expect("the server accepts connections"),
        };
        let db = PgPool::connect_with(PgConnectOptions::from_str(test_url).unwrap())
            .await
            .unwrap();
        let admin_token = sign(
            &config.keys,
            &Claims::new(
                "admin",
                None,
                vec![],
                vec!["admin".into()],
                std::time::Duration::from_secs(3600),
            ),
        )
        .unwrap();
        let bearer = Bearer::new(&admin_token);
        TestApp {
            addr,
            http_url,
            http: reqwest::Client::new(),
            jobs: JobServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            workflows: WorkflowServiceClient::with_interceptor(channel, bearer),
            admin_token,
            database_url: database_url.clone(),
            service,
            engine,
            keys: config.keys.clone(),
            _key_dir: key_dir,
            db,
            shutdown: Some(shutdown),
            _server: server,
        }
    }

    /// A token for `username` with these roles and groups, signed with the app's key.
    pub fn token(&self, username: &str, roles: &[&str], groups: &[&str]) -> String {
        let claims = Claims::new(
            username,
            None,
            groups.iter().map(|g| g.to_string()).collect(),
            roles.iter().map(|r| r.to_string()).collect(),
            std::time::Duration::from_secs(3600),
        );
        sign(&self.keys, &claims).unwrap()
    }

    pub fn keys(&self) -> &KeyConfig {
        &self.keys
    }

    pub fn jobs_as(&self, token: &str) -> JobServiceClient<Authed> {
        JobServiceClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    pub fn workflows_as(&self, token: &str) -> WorkflowServiceClient<Authed> {
        WorkflowServiceClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    /// An HTTP request to the gateway, as the admin.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.http_url))
            .bearer_auth(&self.admin_token)
    }

    /// GET `path` as the admin: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST `body` to `path` as the admin: status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// How many jobs the database holds.
    pub async fn stored_jobs(&self) -> i64 {
        sqlx::query_scalar("select count(*) from jobs")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    /// Stores `document` as a workflow and returns what the service answered.
    pub async fn create_workflow(&self, document: &Value) -> pb::Workflow {
        self.workflows
            .clone()
            .create_workflow(pb::CreateWorkflowRequest {
                workflow: Some(to_struct(document)),
            })
            .await
            .expect("workflow created")
            .into_inner()
            .workflow
            .unwrap()
    }

    pub async fn start_job(
        &self,
        workflow: &str,
        variables: Value,
    ) -> Result<pb::Job, tonic::Status> {
        self.jobs
            .clone()
            .start_job(pb::StartJobRequest {
                workflow: workflow.to_owned(),
                options: Some(pb::JobOptions {
                    variables: Some(to_struct(&variables)),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().job.unwrap())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A StartJob request, with an `idempotency-key` when `key` is given.
pub fn start_request(
    workflow: &str,
    options: pb::JobOptions,
    key: Option<&str>,
) -> tonic::Request<pb::StartJobRequest> {
    let mut request = tonic::Request::new(pb::StartJobRequest {
        workflow: workflow.into(),
        options: Some(options),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    request
}

/// Sends a request: status and JSON body (every answer of the gateway is JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

pub fn to_struct(value: &Value) -> prost_types::Struct {
    job_service::grpc::map_to_struct(value.as_object().expect("a JSON object"))
}

/// JSON of a protobuf Struct, as the service reads it: whole numbers as integers.
pub fn from_struct(s: &prost_types::Struct) -> Value {
    let mut violations = job_service::domain::Violations::default();
    let value = Value::Object(job_service::grpc::struct_to_map(s, "", &mut violations));
    assert!(violations.is_empty(), "{violations:?}");
    value
}

/// The field violations of an INVALID_ARGUMENT status.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .expect("a google.rpc.BadRequest detail")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// The directory of the workflow corpus shipped with the tests.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/itential-assets")
}

/// A workflow of the corpus, by project and file name.
pub fn corpus_workflow(project: &str, file: &str) -> Value {
    let path = corpus_dir().join(project).join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A small workflow that starts: start -> a1 -> end, with one required string variable.
pub fn small_workflow(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "type": "automation",
        "canvasVersion": 3,
        "font_size": 12,
        "groups": [],
        "tasks": {
            "workflow_start": {"name": "workflow_start", "groups": [], "nodeLocation": {"x": 0, "y": 0}},
            "a1": {
                "name": "query", "app": "WorkFlowEngine", "type": "operation",
                "location": "Application", "summary": "Look it up", "description": "d",
                "variables": {"incoming": {"pass": "$var.job.device"}, "outgoing": {"return_data": null}},
                "nodeLocation": {"x": 1, "y": 1}
            },
            "workflow_end": {"name": "workflow_end", "groups": [], "nodeLocation": {"x": 2, "y": 2}}
        },
        "transitions": {
            "workflow_start": {"a1": {"state": "success", "type": "standard"}},
            "a1": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {}
        },
        "inputSchema": {
            "type": "object",
            "properties": {"device": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["device"]
        },
        "outputSchema": {"type": "object"},
        "createdVersion": "5.40.5-2021.1.72.0",
        "created_by": {"username": "admin@itential", "provenance": "Okta"}
    })
}
