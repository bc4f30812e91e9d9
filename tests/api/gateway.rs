//! The JSON gateway: the REST routes, envelopes and errors, and parity with gRPC.

use std::collections::BTreeSet;

use job_service::grpc::pb;
use serde_json::{json, Value};

use crate::helpers::{corpus_workflow, from_struct, send, small_workflow, TestApp};

/// The job keys of the reference page's example response.
const REFERENCE_JOB_KEYS: [&str; 30] = [
    "_id",
    "ancestors",
    "canvasVersion",
    "created",
    "createdVersion",
    "created_by",
    "decorators",
    "description",
    "encodingVersion",
    "error",
    "errorHandler",
    "font_size",
    "groups",
    "lastUpdatedVersion",
    "last_updated",
    "last_updated_by",
    "metrics",
    "migrationVersion",
    "name",
    "parent",
    "preAutomationTime",
    "sla",
    "status",
    "tags",
    "tasks",
    "type",
    "uuid",
    "validationErrors",
    "warnings",
    "watchers",
];

#[tokio::test]
async fn the_reference_example_request_starts_a_job_with_the_reference_keys() {
    let app = TestApp::spawn().await;
    let mut workflow = corpus_workflow(
        "itential-platform-workflow-utilities",
        "chunk-array-wrapper.json",
    );
    workflow["name"] = json!("velit esse consequat ad dolore");
    app.create_workflow(&workflow).await;

    // The body exactly as the reference page gives it.
    let body = r#"{ "workflow": "velit esse consequat ad dolore", "options": { "description": "Example job description", "type": "automation", "groups": [ "b0bc20ec3a3e5e90bac881e7", "7d5f0cb5c6a629ea14324d9b" ] } }"#;
    let (status, reply) = send(
        app.request(reqwest::Method::POST, "/operations-manager/jobs/start")
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Successfully created the requested item");
    assert_eq!(reply["metadata"], json!({}));
    let job = reply["data"].as_object().unwrap();
    let keys: BTreeSet<&str> = job.keys().map(String::as_str).collect();
    let reference: BTreeSet<&str> = REFERENCE_JOB_KEYS.into_iter().collect();
    assert!(
        reference.is_subset(&keys),
        "missing: {:?}",
        reference.difference(&keys).collect::<Vec<_>>()
    );
    // CONTRACT adds the job's variables and the workflow's transitions.
    assert_eq!(
        keys.difference(&reference).copied().collect::<Vec<_>>(),
        ["transitions", "variables"]
    );
    assert_eq!(job["description"], "Example job description");
    assert_eq!(
        job["groups"],
        json!(["b0bc20ec3a3e5e90bac881e7", "7d5f0cb5c6a629ea14324d9b"])
    );
    assert_eq!(job["status"], "running");
    assert_eq!(job["tasks"]["workflow_start"]["status"], "complete");
    assert!(job["metrics"]["start_time"].is_i64());

    // Each value has the type the reference job's has, but for the differences README lists.
    for (key, reference_type) in REFERENCE_JOB_TYPES {
        let expected = match key {
            // CONTRACT: a new job's ancestors are [its id], its parent null (it has none).
            "ancestors" => "array",
            "parent" => "null",
            // The workflow's error handler; this workflow has none.
            "errorHandler" => "null",
            _ => reference_type,
        };
        assert_eq!(json_type(&job[key]), expected, "{key}: {}", job[key]);
    }
    let user = job["last_updated_by"].as_object().unwrap();
    assert!(user["_id"].is_string() && user["username"].is_string());
    for (key, value) in job["metrics"].as_object().unwrap() {
        assert_eq!(
            json_type(value),
            if key == "progress" || key == "start_time" {
                "number"
            } else {
                "string"
            },
            "metrics.{key}"
        );
    }
}

/// The type of each value of the reference page's example job (`ancestors` is null there).
const REFERENCE_JOB_TYPES: [(&str, &str); 30] = [
    ("_id", "string"),
    ("ancestors", "null"),
    ("canvasVersion", "number"),
    ("created", "string"),
    ("createdVersion", "string"),
    ("created_by", "string"),
    ("decorators", "array"),
    ("description", "string"),
    ("encodingVersion", "number"),
    ("error", "array"),
    ("errorHandler", "object"),
    ("font_size", "number"),
    ("groups", "array"),
    ("lastUpdatedVersion", "string"),
    ("last_updated", "string"),
    ("last_updated_by", "object"),
    ("metrics", "object"),
    ("migrationVersion", "number"),
    ("name", "string"),
    ("parent", "object"),
    ("preAutomationTime", "number"),
    ("sla", "number"),
    ("status", "string"),
    ("tags", "array"),
    ("tasks", "object"),
    ("type", "string"),
    ("uuid", "string"),
    ("validationErrors", "array"),
    ("warnings", "array"),
    ("watchers", "array"),
];

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[tokio::test]
async fn a_job_started_over_grpc_reads_the_same_over_http_and_back() {
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("W")).await;
    let grpc_job = app
        .start_job("W", json!({"device": "r1", "count": 3}))
        .await
        .unwrap();

    let (status, reply) = app
        .get(&format!("/operations-manager/jobs/{}", grpc_job.id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["message"], "Successfully retrieved item");
    let http_job = &reply["data"];
    let stored: Value = sqlx::query_scalar("select document from job_documents where id = $1")
        .bind(&grpc_job.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(http_job, &stored, "the gateway returns the stored document");
    assert_eq!(http_job["_id"], json!(grpc_job.id));
    assert_eq!(
        http_job["variables"],
        from_struct(grpc_job.variables.as_ref().unwrap())
    );
    assert_eq!(http_job["variables"]["count"].to_string(), "3");
    assert_eq!(http_job["uuid"], json!(grpc_job.uuid));

    let (status, reply) = app
        .post(
            "/operations-manager/jobs/start",
            &json!({"workflow": "W", "options": {"variables": {"device": "r2"}}}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["data"]["_id"].as_str().unwrap().to_owned();
    let from_grpc = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(from_grpc.id, id);
    assert_eq!(
        from_grpc.created_by,
        reply["data"]["created_by"].as_str().unwrap()
    );
    let grpc_tasks: BTreeSet<&String> = from_grpc.tasks.keys().collect();
    let http_tasks: BTreeSet<&String> =
        reply["data"]["tasks"].as_object().unwrap().keys().collect();
    assert_eq!(grpc_tasks, http_tasks);
}

#[tokio::test]
async fn unknown_options_are_accepted_kept_out_of_the_job_and_named_in_its_warnings() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let (status, reply) = app
        .post(
            "/operations-manager/jobs/start",
            &json!({"workflow": "W", "options": {
                "variables": {"device": "r1"}, "dryRun": true, "priority": {"level": 3}
            }}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let job = &reply["data"];
    assert_eq!(
        job["warnings"],
        json!([
            {"task": "job", "message": "option dryRun is not supported and was ignored"},
            {"task": "job", "message": "option priority is not supported and was ignored"},
        ])
    );
    let stored: Value = sqlx::query_scalar("select document from jobs where id = $1")
        .bind(job["_id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(!stored.to_string().contains("\"level\""), "{stored}");
    assert_eq!(stored["warnings"], job["warnings"]);

    // A flood of them is named twenty at a time; a name is cut short.
    let mut options = serde_json::Map::new();
    options.insert("variables".into(), json!({"device": "r1"}));
    for i in 0..30 {
        options.insert(format!("extra{i:02}"), json!(i));
    }
    options.insert("x".repeat(5000), json!(true));
    let (status, reply) = app
        .post(
            "/operations-manager/jobs/start",
            &json!({"workflow": "W", "options": options}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let warnings = reply["data"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 21);
    assert_eq!(
        warnings[20]["message"],
        "11 more options are not supported and were ignored"
    );
    assert!(reply.to_string().len() < 10_000);
}

#[tokio::test]
async fn bad_requests_are_answered_with_the_envelope_and_the_field() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let start = "/operations-manager/jobs/start";

    let cases = [
        (
            json!({"workflow": "W", "options": {"variables": {"device": "r1"}}, "priority": 1}),
            400,
            "priority",
        ),
        (json!({"workflow": "W"}), 400, "options"),
        (json!({"workflow": 7, "options": {}}), 400, "workflow"),
        (
            json!({"workflow": "W", "options": {"groups": ["nope"], "variables": {"device": "r1"}}}),
            400,
            "options.groups[0]",
        ),
        (
            json!({"workflow": "W", "options": {"variables": {"device": 5}}}),
            400,
            "options.variables.device",
        ),
    ];
    for (body, expected_status, field) in cases {
        let (status, reply) = app.post(start, &body).await;
        assert_eq!(status, expected_status, "{body}: {reply}");
        assert_eq!(reply["data"], Value::Null);
        let fields: Vec<_> = reply["metadata"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }

    let (status, reply) = app
        .post(start, &json!({"workflow": "Missing", "options": {}}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(reply["message"], "Cannot find workflow Missing");

    let (status, reply) = send(
        app.request(reqwest::Method::POST, start)
            .header("content-type", "application/json")
            .body("{\"workflow\": "),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{reply}"
    );

    let (status, reply) = send(
        app.request(reqwest::Method::POST, start)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415, "{reply}");

    let huge = format!(
        "{{\"workflow\": \"W\", \"options\": {{\"description\": \"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let (status, reply) = send(
        app.request(reqwest::Method::POST, start)
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_eq!(status, 413, "{reply}");

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = send(
        app.request(reqwest::Method::POST, start)
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert_eq!(status, 400, "deeply nested JSON is bad input, not a crash");

    let (status, reply) = send(
        app.http
            .post(format!("{}{start}", app.http_url))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 401);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("missing credentials"));

    let (status, reply) = app.get("/operations-manager/no-such-route").await;
    assert_eq!((status, reply["data"].clone()), (404, Value::Null));
    let (status, _) = send(app.request(reqwest::Method::DELETE, start)).await;
    assert_eq!(status, 405);

    let count: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "no bad request stored a job");
}

#[tokio::test]
async fn a_broken_task_graph_is_a_bad_request_listing_the_problems() {
    let app = TestApp::spawn().await;
    let mut broken = small_workflow("Broken");
    broken["transitions"]["a1"] = json!({});
    app.create_workflow(&broken).await;
    let (status, reply) = app
        .post(
            "/operations-manager/jobs/start",
            &json!({"workflow": "Broken", "options": {"variables": {"device": "r1"}}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["metadata"]["errors"][0]["field"],
        "tasks.workflow_end"
    );
}

#[tokio::test]
async fn job_search_takes_the_itential_parameters_and_names_bad_ones() {
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("A")).await;
    app.create_workflow(&small_workflow("B")).await;
    for workflow in ["A", "A", "B", "A"] {
        app.start_job(workflow, json!({"device": "r1"}))
            .await
            .unwrap();
    }
    let (status, reply) = app
        .get("/operations-manager/jobs?equals[name]=A&limit=2&skip=0&sort=created&order=desc")
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["message"], "Successfully retrieved items");
    assert_eq!(reply["data"].as_array().unwrap().len(), 2);
    assert_eq!(reply["metadata"]["total"], 3);
    assert_eq!(reply["metadata"]["skip"], 0);
    assert_eq!(reply["metadata"]["limit"], 2);
    assert_eq!(reply["metadata"]["nextPageSkip"], 2);
    let (_, second) = app
        .get("/operations-manager/jobs?equals[name]=A&limit=2&skip=2")
        .await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["metadata"]["nextPageSkip"], Value::Null);

    let (_, running) = app
        .get("/operations-manager/jobs?in[status]=running,paused&starts-with[name]=B")
        .await;
    assert_eq!(running["metadata"]["total"], 1);
    let (_, none) = app
        .get("/operations-manager/jobs?lt[created]=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(none["metadata"]["total"], 0);

    for (query, field) in [
        ("colour=red", "colour"),
        ("equals[status]=runing", "equals[status]"),
        ("limit=0", "limit"),
        ("gt[name]=x", "gt[name]"),
    ] {
        let (status, reply) = app.get(&format!("/operations-manager/jobs?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(reply["metadata"]["errors"][0]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn workflow_routes_store_read_list_and_delete() {
    let app = TestApp::spawn().await;
    let document = corpus_workflow("cisco-ios", "port-turn-up.json");
    let (status, reply) = app
        .post(
            "/automation-studio/automations",
            &json!({"automation": document}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["created"], document);
    assert_eq!(
        reply["edit"],
        "/automation-studio/#/edit?workflow=Port+Turn+Up"
    );

    let (status, reply) = app
        .post(
            "/automation-studio/automations",
            &json!({"automation": document}),
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    let (status, reply) = app
        .post(
            "/automation-studio/automations",
            &json!({"automation": {"name": "X"}, "extra": 1}),
        )
        .await;
    assert_eq!(status, 400);
    let fields: Vec<_> = reply["metadata"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("extra")]);

    let (status, reply) = app
        .post(
            "/automation-studio/automations/import",
            &json!({"automations": [small_workflow("One"), small_workflow("Two")]}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"].as_array().unwrap().len(), 2);
    let (status, reply) = app
        .post(
            "/automation-studio/automations/import",
            &json!({"automations": [{"name": "Bad"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["metadata"]["errors"][0]["field"],
        "automations[0].tasks"
    );

    let (status, reply) = app
        .get("/automation-studio/workflows/detailed/Port%20Turn%20Up")
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply, document);

    let (_, page) = app.get("/automation-studio/workflows?limit=2&skip=0").await;
    assert_eq!(
        (
            page["count"].clone(),
            page["total"].clone(),
            page["limit"].clone()
        ),
        (json!(2), json!(3), json!(2))
    );
    let (_, one) = app
        .get("/automation-studio/workflows?equals[name]=Two")
        .await;
    assert_eq!(one["items"][0]["name"], "Two");
    let (status, _) = app.get("/automation-studio/workflows?sort=name").await;
    assert_eq!(status, 400);

    let (status, reply) = send(app.request(
        reqwest::Method::DELETE,
        "/workflow_builder/workflows/delete/Two",
    ))
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = app.get("/automation-studio/workflows/detailed/Two").await;
    assert_eq!(status, 404);
    assert_eq!(reply["message"], "Cannot find workflow Two");
}

#[tokio::test]
async fn health_routes_answer_without_a_token() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/health/ready"] {
        let (status, _) = send(app.http.get(format!("{}{path}", app.http_url))).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_the_openapi_document_says() {
    let app = TestApp::spawn().await;
    let (status, document) = send(app.http.get(format!("{}/openapi.json", app.http_url))).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    app.create_workflow(&small_workflow("Documented")).await;
    let job = app
        .start_job("Documented", json!({"device": "r1"}))
        .await
        .unwrap();

    let paths = document["paths"].as_object().unwrap();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    for route in [
        "/operations-manager/jobs/start",
        "/operations-manager/jobs/{id}",
        "/operations-manager/jobs",
        "/automation-studio/automations",
        "/automation-studio/automations/import",
        "/automation-studio/workflows",
        "/automation-studio/workflows/detailed/{name}",
        "/workflow_builder/workflows/delete/{name}",
        "/health/live",
        "/health/ready",
        "/openapi.json",
    ] {
        assert!(documented.contains(route), "{route} is not documented");
    }

    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let url = path
                .replace("{id}", &job.id)
                .replace("{name}", "Documented");
            let body = match path.as_str() {
                "/operations-manager/jobs/start" => Some(
                    json!({"workflow": "Documented", "options": {"variables": {"device": "r1"}}}),
                ),
                "/automation-studio/automations" => {
                    Some(json!({"automation": small_workflow("Another")}))
                }
                "/automation-studio/automations/import" => {
                    Some(json!({"automations": [small_workflow("Third")]}))
                }
                _ => None,
            };
            let mut request = app.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(&body);
            }
            // Not every answer is JSON (`/metrics` is OpenMetrics text): only the status counts.
            let status = request.send().await.unwrap().status().as_u16();
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.contains_key(&status.to_string()),
                "{method} {path} answered {status}, not documented"
            );
            // Without a token, every operation that declares security answers 401, as documented.
            if operation.get("security").is_some() {
                let (status, _) = send(
                    app.http
                        .request(method.clone(), format!("{}{url}", app.http_url)),
                )
                .await;
                assert_eq!(status, 401, "{method} {path}");
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} does not document 401"
                );
            }
        }
    }
}
