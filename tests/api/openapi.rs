//! The OpenAPI document against the gateway: what it says a job looks like is what the gateway
//! returns, and the bodies it allows are the ones the gateway takes.

use serde_json::{json, Value};

use crate::helpers::{send, small_workflow, TestApp};

async fn document(app: &TestApp) -> Value {
    let (status, document) = send(app.http.get(format!("{}/openapi.json", app.http_url))).await;
    assert_eq!(status, 200);
    document
}

/// A validator of the document's schema `name`, its references resolved within the document.
fn validator(document: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": document["components"],
    });
    jsonschema::validator_for(&schema).expect("the document's schemas compile")
}

fn assert_valid(validator: &jsonschema::Validator, value: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the document: {errors:#?}"
    );
}

#[tokio::test]
async fn a_started_job_read_back_and_listed_is_the_job_the_document_describes() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    app.create_workflow(&small_workflow("Described")).await;
    let body = json!({
        "workflow": "Described",
        "options": {"description": "d", "variables": {"device": "r1"}, "priority": 3},
    });
    let (status, started) = app.post("/operations-manager/jobs/start", &body).await;
    assert_eq!(status, 200, "{started}");
    let id = started["data"]["_id"].as_str().unwrap();
    let (status, read) = app.get(&format!("/operations-manager/jobs/{id}")).await;
    assert_eq!(status, 200);
    let (status, listed) = app
        .get("/operations-manager/jobs?equals[name]=Described")
        .await;
    assert_eq!(status, 200);

    let job = validator(&document, "JobEnvelope");
    assert_valid(&job, &started, "the started job");
    assert_valid(&job, &read, "the job read back");
    assert_valid(
        &validator(&document, "JobListEnvelope"),
        &listed,
        "the page of jobs",
    );

    // Every field of the job is described, with its type: a client generated from the
    // document reads them all.
    let properties = document["components"]["schemas"]["Job"]["properties"]
        .as_object()
        .unwrap();
    for key in read["data"].as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key),
            "{key} is not in the document's Job"
        );
    }
    assert_eq!(properties.len(), read["data"].as_object().unwrap().len());
    assert_eq!(
        document["components"]["schemas"]["User"]["required"],
        json!(["_id", "username", "memberOf", "assignedRoles"])
    );
}

#[tokio::test]
async fn the_start_bodies_the_document_allows_are_the_ones_the_gateway_takes() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    app.create_workflow(&small_workflow("Taken")).await;
    let schema = validator(&document, "StartJobBody");
    let variables = json!({"device": "r1"});
    for body in [
        json!({"workflow": "Taken", "options": {"variables": variables}}),
        json!({"workflow": "Taken", "options": {"variables": variables, "description": "", "type": "t"}}),
        json!({"workflow": "Taken", "options": {"variables": variables, "unknown": null}}),
        json!({"workflow": "", "options": {}}),
        json!({"workflow": "Taken", "options": {"variables": variables, "description": null}}),
        json!({"workflow": "Taken", "options": {"variables": variables, "type": ""}}),
        json!({"workflow": "Taken", "options": {"variables": variables, "groups": ["ABC"]}}),
        json!({"workflow": "Taken", "options": {"variables": {"device": "r\u{0}1"}}}),
        json!({"workflow": "Taken", "options": {"variables": variables}, "priority": 1}),
        json!({"workflow": "Taken"}),
        json!({"workflow": null, "options": {}}),
    ] {
        let (status, reply) = app.post("/operations-manager/jobs/start", &body).await;
        assert_eq!(
            schema.is_valid(&body),
            status == 200,
            "{body}: the gateway answered {status} {reply}"
        );
    }
}

#[tokio::test]
async fn the_workflow_bodies_the_document_allows_are_the_ones_the_gateway_takes() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let schema = validator(&document, "CreateWorkflowBody");
    let without = |key: &str| {
        let mut workflow = small_workflow("Without");
        workflow.as_object_mut().unwrap().remove(key);
        json!({"automation": workflow})
    };
    let with = |key: &str, value: Value| {
        let mut workflow = small_workflow(&format!("With {key}"));
        workflow[key] = value;
        json!({"automation": workflow})
    };
    for body in [
        json!({"automation": small_workflow("Whole")}),
        with("description", Value::Null),
        with("x-anything", json!({"kept": [1, "two"]})),
        without("name"),
        without("tasks"),
        without("transitions"),
        with("name", json!(" ")),
        with("font_size", json!(12.0)),
        with("canvasVersion", json!(-3e3)),
        with("font_size", json!(1.5)),
        with("groups", json!(["nope"])),
        with("inputSchema", json!([])),
        with("tags", json!(["a\u{0}b"])),
        json!({"automation": small_workflow("Extra"), "extra": 1}),
    ] {
        let (status, reply) = app.post("/automation-studio/automations", &body).await;
        assert_eq!(
            schema.is_valid(&body),
            status == 200,
            "{body}: the gateway answered {status} {reply}"
        );
    }
}

#[tokio::test]
async fn the_job_search_is_documented_as_deep_object_parameters_with_bounds() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let parameters = document["paths"]["/operations-manager/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not documented"))
    };
    for name in ["equals", "in", "starts-with", "gt", "lt"] {
        assert_eq!(parameter(name)["style"], "deepObject", "{name}");
        assert_eq!(parameter(name)["explode"], true, "{name}");
    }
    assert_eq!(parameter("limit")["schema"]["minimum"], 1);
    assert_eq!(parameter("limit")["schema"]["maximum"], 1000);
    assert_eq!(parameter("skip")["schema"]["minimum"], 0);
    let id = &document["paths"]["/operations-manager/jobs/{id}"]["get"]["parameters"][0];
    assert_eq!(id["schema"]["pattern"], "^[0-9a-f]{24}$");
    assert!(
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .all(|content_type| content_type.starts_with("application/openmetrics-text"))
    );
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let needed: &[&str] = if operation.get("security").is_some() {
                &["401", "403", "429", "503", "504"]
            } else {
                &["504"]
            };
            for status in needed {
                assert!(
                    responses.contains_key(*status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
}
