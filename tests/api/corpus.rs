//! Every real workflow export of the corpus imports, and a job starts from each.

use std::collections::BTreeSet;

use job_service::grpc::pb;
use serde_json::{json, Map, Value};

use crate::helpers::{corpus_dir, from_struct, to_struct, TestApp};

/// Variables that satisfy `schema`: an example when the schema gives one, else a value of the
/// schema's type; for objects, the required properties only.
pub(crate) fn sample(schema: &Value) -> Value {
    let Some(schema) = schema.as_object() else {
        return json!("sample");
    };
    // Exports carry examples that do not match their own schema ("80" for a number).
    let examples = schema
        .get("examples")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    if let Some(example) = examples
        .into_iter()
        .find(|e| matches(&Value::Object(schema.clone()), e))
    {
        return example.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return sample(first);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds.first().and_then(Value::as_str).unwrap_or("string"),
        _ if schema.contains_key("properties") => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let mut object = Map::new();
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                let property = properties
                    .and_then(|p| p.get(name))
                    .cloned()
                    .unwrap_or(json!({}));
                object.insert(name.to_owned(), sample(&property));
            }
            Value::Object(object)
        }
        "array" => json!([]),
        "integer" | "number" => json!(schema
            .get("minimum")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(1)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => match schema.get("format").and_then(Value::as_str) {
            Some("ipv4") => json!("10.0.0.1"),
            Some("ipv6") => json!("2001:db8::1"),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            _ => json!("sample"),
        },
    }
}

fn matches(schema: &Value, instance: &Value) -> bool {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(false)
        .build(schema)
        .is_ok_and(|validator| validator.is_valid(instance))
}

/// Every corpus file as (project, file name, document).
pub(crate) fn corpus() -> Vec<(String, String, Value)> {
    let mut files = Vec::new();
    for project in std::fs::read_dir(corpus_dir()).unwrap() {
        let project = project.unwrap();
        if !project.file_type().unwrap().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(project.path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let document =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                files.push((
                    project.file_name().to_string_lossy().into_owned(),
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    document,
                ));
            }
        }
    }
    files.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    files
}

#[tokio::test]
async fn every_corpus_workflow_imports_and_starts_a_job() {
    let app = TestApp::spawn().await;
    let mut files = corpus();
    assert_eq!(files.len(), 180, "the corpus has 180 workflows");

    // Names repeat across projects: prefix them with the project, as Itential does.
    for (project, _, document) in &mut files {
        let name = format!("@{project}: {}", document["name"].as_str().unwrap());
        document["name"] = json!(name);
    }
    // One import per project keeps each request well under the 4 MiB message limit.
    let projects: BTreeSet<_> = files.iter().map(|(p, _, _)| p.clone()).collect();
    for project in &projects {
        let workflows: Vec<_> = files
            .iter()
            .filter(|(p, _, _)| p == project)
            .map(|(_, _, d)| to_struct(d))
            .collect();
        let imported = app
            .workflows
            .clone()
            .import_workflows(pb::ImportWorkflowsRequest {
                workflows: workflows.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{project} does not import: {status:?}"))
            .into_inner()
            .workflows;
        assert_eq!(imported.len(), workflows.len());
    }

    for (project, file, document) in &files {
        let name = document["name"].as_str().unwrap();
        let variables = sample(&document["inputSchema"]);
        let job = app
            .jobs
            .clone()
            .start_job(pb::StartJobRequest {
                workflow: name.to_owned(),
                options: Some(pb::JobOptions {
                    variables: Some(to_struct(&variables)),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|status| panic!("{project}/{file} does not start: {status:?}"))
            .into_inner()
            .job
            .unwrap();
        check_job(&job, document, &format!("{project}/{file}"));
    }

    let stored: i64 = sqlx::query_scalar("select count(distinct workflow_name) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 180);
}

/// The job holds the workflow's whole task graph with fresh run state.
fn check_job(job: &pb::Job, workflow: &Value, what: &str) {
    assert_eq!(job.status(), pb::JobStatus::Running, "{what}");
    let tasks = workflow["tasks"].as_object().unwrap();
    let transitions = workflow["transitions"].as_object().unwrap();
    assert_eq!(
        job.tasks.keys().collect::<BTreeSet<_>>(),
        tasks.keys().collect::<BTreeSet<_>>(),
        "{what}: tasks"
    );
    for (id, task) in &job.tasks {
        let expected = if id == "workflow_start" {
            pb::TaskStatus::Complete
        } else {
            pb::TaskStatus::Incomplete
        };
        assert_eq!(task.status(), expected, "{what}: status of {id}");
        let outgoing: usize = task.transitions.values().map(|l| l.transitions.len()).sum();
        let declared = transitions[id].as_object().unwrap();
        assert_eq!(outgoing, declared.len(), "{what}: transitions of {id}");
        for (target, edge) in declared {
            let state = edge["state"].as_str().unwrap();
            let group = &task.transitions[state].transitions;
            assert!(
                group
                    .iter()
                    .any(|t| &t.task == target && t.r#type == edge["type"]),
                "{what}: {id} -> {target}"
            );
            assert!(
                job.tasks[target].previous[state].tasks.contains(id),
                "{what}: previous of {target}"
            );
        }
        // Every field of the workflow's task is in the job's task, typed or in `extra`.
        let extra = from_struct(task.extra.as_ref().unwrap());
        for key in tasks[id].as_object().unwrap().keys() {
            let typed = [
                "name",
                "summary",
                "description",
                "app",
                "type",
                "location",
                "variables",
            ];
            assert!(
                typed.contains(&key.as_str()) || extra.get(key).is_some(),
                "{what}: {id}.{key} lost"
            );
        }
    }
    assert_eq!(
        job.transitions.len(),
        transitions.len(),
        "{what}: job transitions"
    );
    let variables = from_struct(job.variables.as_ref().unwrap());
    assert_eq!(variables["_id"], json!(job.id), "{what}");
}
