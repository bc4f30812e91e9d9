//! Request ids and the log lines of a call: the id a client sends (or one the service makes up)
//! comes back on both front doors, and every log line of the call carries it.

use job_service::grpc::pb;
use serde_json::{json, Value};

use crate::helpers::{small_workflow, start_request, to_struct, Bearer, TestApp};
use crate::serve::{admin_token, data_dir, start_with};

fn start(workflow: &str) -> tonic::Request<pb::StartJobRequest> {
    let options = pb::JobOptions {
        variables: Some(to_struct(&json!({"device": "r1"}))),
        ..Default::default()
    };
    start_request(workflow, options, None)
}

fn is_uuid(value: &str) -> bool {
    uuid::Uuid::parse_str(value).is_ok()
}

#[tokio::test]
async fn grpc_answers_carry_the_request_id_given_or_a_new_one() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;

    let mut request = start("W");
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-given-1".parse().unwrap());
    let response = app.jobs.clone().start_job(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "grpc-given-1"
    );

    let response = app.jobs.clone().start_job(start("W")).await.unwrap();
    let generated = response.metadata().get("x-request-id").unwrap();
    assert!(is_uuid(generated.to_str().unwrap()), "{generated:?}");

    // Errors too, also those refused before any handler runs.
    let mut request = start("Nowhere");
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-given-2".parse().unwrap());
    let status = app.jobs.clone().start_job(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "grpc-given-2"
    );
    let status = job_service::grpc::JobServiceClient::new(app.channel())
        .start_job(start("W"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let generated = status.metadata().get("x-request-id").unwrap();
    assert!(is_uuid(generated.to_str().unwrap()), "{generated:?}");
}

#[tokio::test]
async fn http_answers_carry_the_request_id_given_or_a_new_one() {
    let app = TestApp::spawn().await;
    let given = app
        .request(reqwest::Method::GET, "/operations-manager/jobs")
        .header("X-Request-Id", "http-given-1")
        .send()
        .await
        .unwrap();
    assert_eq!(given.status(), 200);
    assert_eq!(given.headers()["x-request-id"], "http-given-1");

    let generated = app
        .request(reqwest::Method::GET, "/operations-manager/jobs")
        .send()
        .await
        .unwrap();
    assert!(is_uuid(
        generated.headers()["x-request-id"].to_str().unwrap()
    ));

    let refused = app
        .http
        .get(format!("{}/operations-manager/jobs", app.http_url))
        .header("X-Request-Id", "http-given-2")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-request-id"], "http-given-2");

    // An id that is not 1-128 visible ASCII characters is replaced, not echoed.
    let replaced = app
        .http
        .get(format!("{}/health/live", app.http_url))
        .header("X-Request-Id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert!(is_uuid(
        replaced.headers()["x-request-id"].to_str().unwrap()
    ));
}

/// The `call` span of a JSON log line, if the line was written during a call.
fn call_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "call")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_json_log_line_of_a_call_carries_its_request_id() {
    let dir = data_dir();
    let server = start_with(dir.path(), &["--log-format", "json"]);
    let token = admin_token(dir.path());
    server
        .workflows(&token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("Logged"))),
        })
        .await
        .unwrap();

    // Over HTTP with an id of the client's, over gRPC with one the service makes up.
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/operations-manager/jobs/start",
            server.http_addr
        ))
        .bearer_auth(&token)
        .header("X-Request-Id", "start-over-http")
        .json(&json!({"workflow": "Logged", "options": {"variables": {"device": "r1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let http_job = body["data"]["_id"].as_str().unwrap().to_owned();
    let caller = body["data"]["watchers"][0].as_str().unwrap().to_owned();

    let mut jobs = job_service::grpc::JobServiceClient::with_interceptor(
        server.channel(),
        Bearer::new(&token),
    );
    let response = jobs.start_job(start("Logged")).await.unwrap();
    let grpc_request_id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let grpc_job = response.into_inner().job.unwrap().id;

    let (status, log) = server.terminate_with_log();
    assert!(status.success());
    let lines: Vec<Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();

    for (request_id, job_id, method, status) in [
        (
            "start-over-http",
            &http_job,
            "POST /operations-manager/jobs/start",
            "200",
        ),
        (
            grpc_request_id.as_str(),
            &grpc_job,
            "/operations_manager.v1.JobService/StartJob",
            "OK",
        ),
    ] {
        let of_call: Vec<&Value> = lines
            .iter()
            .filter(|line| call_span(line).is_some_and(|span| span["request_id"] == request_id))
            .collect();
        let messages: Vec<&str> = of_call
            .iter()
            .filter_map(|line| line["fields"]["message"].as_str())
            .collect();
        assert!(
            messages.contains(&"job started") && messages.contains(&"call finished"),
            "{request_id}: {messages:?}"
        );
        // Every line that names the job was written in its call.
        for line in &lines {
            if line.to_string().contains(job_id.as_str()) {
                let span = call_span(line).unwrap_or_else(|| panic!("outside a call: {line}"));
                assert_eq!(span["request_id"], request_id, "{line}");
            }
        }
        let finished = of_call
            .iter()
            .find(|line| line["fields"]["message"] == "call finished")
            .unwrap();
        let span = call_span(finished).unwrap();
        assert_eq!(span["method"], method, "{finished}");
        assert_eq!(span["status"], status, "{finished}");
        assert_eq!(span["caller"], caller.as_str(), "{finished}");
        assert_eq!(span["job_id"], job_id.as_str(), "{finished}");
    }
}

#[cfg(not(feature = "otel"))]
#[test]
fn an_otlp_endpoint_without_the_otel_feature_is_refused_at_start() {
    let dir = data_dir();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_job-service"))
        .args([
            "serve",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--otlp-endpoint") && stderr.contains("--features otel"),
        "{stderr}"
    );
}

/// With `--features otel`: the spans of calls reach a collector (here, a stand-in that keeps
/// what is posted to `/v1/traces`).
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread")]
async fn spans_go_to_the_otlp_endpoint() {
    use std::sync::{Arc, Mutex};

    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            kept.lock().unwrap().push(body.to_vec());
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = data_dir();
    let server = start_with(dir.path(), &["--otlp-endpoint", &endpoint]);
    let token = admin_token(dir.path());
    let answer = reqwest::Client::new()
        .get(format!(
            "http://{}/operations-manager/jobs",
            server.http_addr
        ))
        .bearer_auth(&token)
        .header("X-Request-Id", "exported-call")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Spans still batched are sent at shutdown.
    assert!(server.terminate().success());

    let bodies = received.lock().unwrap();
    let contains = |needle: &str| {
        bodies
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    assert!(contains("exported-call"), "{} posts", bodies.len());
    assert!(contains("GET /operations-manager/jobs"));
    assert!(contains("job-service"));
}
