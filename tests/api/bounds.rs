//! Bounds on what one caller can make the service spend or say: JSON nesting and size on both
//! front doors (one limit, which every mainstream gRPC client can read back), the bytes of a
//! page, the memory of the caches, and the size of an error.

use job_service::grpc::pb;
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{send, small_workflow, violated_fields, TestApp};

/// `[[...[1]...]]`, `depth` arrays deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

fn start_body(variables: Value) -> Value {
    json!({"workflow": "W", "options": {"variables": variables}})
}

async fn http_start(app: &TestApp, body: &Value) -> (u16, Value) {
    app.post("/operations-manager/jobs/start", body).await
}

async fn grpc_start(app: &TestApp, variables: Value) -> Result<pb::Job, tonic::Status> {
    app.start_job("W", variables).await
}

fn error_fields(body: &Value) -> Vec<String> {
    body["metadata"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn json_nested_deeper_than_32_levels_is_refused_on_both_doors() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    // The body is level 1, options 2, variables 3: x may hold 29 levels of arrays.
    let (status, body) =
        http_start(&app, &start_body(json!({"device": "r1", "x": nested(29)}))).await;
    assert_eq!(status, 200, "{body}");
    grpc_start(&app, json!({"device": "r1", "x": nested(29)}))
        .await
        .expect("29 levels below variables start over gRPC too");

    let (status, body) =
        http_start(&app, &start_body(json!({"device": "r1", "x": nested(30)}))).await;
    assert_eq!(status, 400, "{body}");
    let fields = error_fields(&body);
    assert!(
        fields[0].starts_with("options.variables.x[0]"),
        "{fields:?}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("deeper than 32"),
        "{body}"
    );

    let status = grpc_start(&app, json!({"device": "r1", "x": nested(30)}))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["options.variables"]);
    assert!(
        status.message().contains("deeper than 32"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_request_of_more_than_100000_json_values_is_refused_on_both_doors() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    // Two million zeros: 4 MB, under the body limit, and refused before any tree is built.
    let zeros = vec!["0"; 2_000_000].join(",");
    let body = format!(
        r#"{{"workflow": "W", "options": {{"variables": {{"device": "r1", "x": [{zeros}]}}}}}}"#
    );
    let (status, answer) = send(
        app.request(reqwest::Method::POST, "/operations-manager/jobs/start")
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_fields(&answer)[0].starts_with("options.variables.x["));
    assert!(
        answer["message"].as_str().unwrap().contains("100000"),
        "{answer}"
    );

    let many = Value::Array(vec![json!(0); 200_000]);
    let status = grpc_start(&app, json!({"device": "r1", "x": many}))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["options.variables"]);
    assert!(status.message().contains("100000"), "{}", status.message());
    assert_eq!(app.stored_jobs().await, 0);
}

#[tokio::test]
async fn a_job_with_the_deepest_variables_allowed_is_read_back_by_grpcio() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let (status, body) = http_start(
        &app,
        &start_body(json!({"device": "r1", "x": {"y": nested(28)}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["_id"].as_str().unwrap().to_owned();

    let root = env!("CARGO_MANIFEST_DIR");
    let output = tokio::process::Command::new(format!("{root}/examples/python/.venv/bin/python"))
        .arg(format!("{root}/tests/python/read_jobs.py"))
        .arg(app.addr.to_string())
        .arg(&app.admin_token)
        .arg(&id)
        .output()
        .await
        .expect("the Python example's venv is installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grpcio could not read the job:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // x is an object (level 4 of the request) holding 28 levels of arrays: 29 below variables.
    assert!(stdout.contains("GetJob ok depth=29"), "{stdout}");
    assert!(stdout.contains("ListJobs ok jobs=1"), "{stdout}");
}

#[tokio::test]
async fn pages_of_large_jobs_hold_fewer_jobs_and_go_on_on_the_next_page() {
    let app = TestApp::spawn_with(|config| {
        config.max_page_bytes = bytesize::ByteSize::kib(256);
    })
    .await;
    app.create_workflow(&small_workflow("W")).await;
    let blob = "x".repeat(60_000);
    for i in 0..12 {
        grpc_start(&app, json!({"device": format!("r{i}"), "blob": blob}))
            .await
            .unwrap();
    }

    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .jobs
            .clone()
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(
            (1..=5).contains(&page.jobs.len()),
            "a page of 60 KB jobs within 256 KiB holds 1 to 5: {}",
            page.jobs.len()
        );
        assert!(prost::Message::encoded_len(&page) < 400 * 1024);
        for job in page.jobs {
            assert!(seen.insert(job.id), "no job comes twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 12);
    assert!(pages >= 3, "{pages}");

    let (status, body) = app.get("/operations-manager/jobs?limit=1000").await;
    assert_eq!(status, 200);
    let first = body["data"].as_array().unwrap().len();
    assert!((1..=5).contains(&first), "{first}");
    assert_eq!(body["metadata"]["total"], 12);
    let (_, rest) = app
        .get(&format!("/operations-manager/jobs?limit=1000&skip={first}"))
        .await;
    assert!(!rest["data"].as_array().unwrap().is_empty());
}

/// The `job_service_cache_bytes` gauge of `cache`.
async fn cache_bytes(app: &TestApp, cache: &str) -> u64 {
    let response = app
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let prefix = format!("job_service_cache_bytes{{cache=\"{cache}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn caches_keep_to_their_byte_budget_and_let_go_of_deleted_workflows() {
    let app = TestApp::spawn_with(|config| {
        config.cache_bytes = bytesize::ByteSize::mib(4);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut workflow = small_workflow(&format!("Big {i}"));
        workflow["tasks"]["a1"]["description"] = json!("d".repeat(300_000));
        app.create_workflow(&workflow).await;
        let job = app
            .start_job(&format!("Big {i}"), json!({"device": "r1"}))
            .await
            .unwrap();
        ids.push(job.id);
    }
    let budget = 2 * 1024 * 1024;
    let workflows = cache_bytes(&app, "workflows").await;
    let graphs = cache_bytes(&app, "graphs").await;
    assert!(
        workflows > 0 && workflows <= budget,
        "workflows {workflows}"
    );
    assert!(graphs > 0 && graphs <= budget, "graphs {graphs}");

    for i in 0..12 {
        app.workflows
            .clone()
            .delete_workflow(pb::DeleteWorkflowRequest {
                name: format!("Big {i}"),
            })
            .await
            .unwrap();
    }
    assert_eq!(cache_bytes(&app, "workflows").await, 0);
    // Jobs outlive their workflows: each is read whole, its graph read again when needed.
    for id in ids {
        let job = app
            .jobs
            .clone()
            .get_job(pb::GetJobRequest { id })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        assert_eq!(job.tasks["a1"].description.len(), 300_000);
    }
    assert!(cache_bytes(&app, "graphs").await <= budget);
}

#[tokio::test]
async fn errors_repeat_a_bounded_part_of_what_the_caller_sent() {
    let app = TestApp::spawn().await;
    // A 1 MiB workflow name: the answer names it, cut short.
    let name = "n".repeat(1 << 20);
    let status = app.start_job(&name, json!({})).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", &status.message()[..80]);
    assert!(status.message().starts_with("Cannot find workflow nnn"));
    assert!(status.message().len() < 400, "{}", status.message().len());

    // 50,000 bad group ids: the first 20 are listed, then how many more.
    let groups: Vec<String> = (0..50_000).map(|i| format!("group-{i}")).collect();
    let status = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: Some(pb::JobOptions {
                groups: groups.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    let fields = violated_fields(&status);
    assert_eq!(fields.len(), 21);
    assert_eq!(fields[0], "options.groups[0]");
    let details = status.get_error_details();
    let last = details
        .bad_request()
        .unwrap()
        .field_violations
        .last()
        .unwrap();
    assert_eq!(last.description, "and 49980 more problems not listed");

    let (status, body) = http_start(
        &app,
        &json!({"workflow": "W", "options": {"groups": groups}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&body).len(), 21);
    assert!(
        body.to_string().len() < 8 * 1024,
        "{}",
        body.to_string().len()
    );

    // A workflow with 30,000 transitions to tasks that do not exist cannot start; the answer
    // lists 20 of them.
    let mut workflow = small_workflow("Dangling");
    let targets: serde_json::Map<String, Value> = (0..30_000)
        .map(|i| {
            (
                format!("t{i}"),
                json!({"state": "success", "type": "standard"}),
            )
        })
        .collect();
    workflow["transitions"]["a1"] = Value::Object(targets);
    let (status, body) = app
        .post(
            "/automation-studio/automations",
            &json!({"automation": workflow}),
        )
        .await;
    assert_eq!(
        status,
        200,
        "{}",
        &body.to_string()[..200.min(body.to_string().len())]
    );
    let status = app
        .start_job("Dangling", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    assert_eq!(details.precondition_failure().unwrap().violations.len(), 21);
    let (status, body) = http_start(
        &app,
        &json!({"workflow": "Dangling", "options": {"variables": {"device": "r1"}}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.to_string().len() < 16 * 1024,
        "{}",
        body.to_string().len()
    );
}
