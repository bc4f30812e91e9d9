//! Child jobs and loops, end to end: childJob tasks start jobs of another workflow and wait
//! for them; forEach tasks run their loop body once per element.

use std::time::Duration;

use job_service::domain::run::{FinishState, JobControl};
use serde_json::{json, Value};

use crate::engine::{adapter_task, job_when, next_task, operator, result, start, worker, workflow};
use crate::helpers::TestApp;

/// A childJob task starting workflow `child` (its `device` variable from the parent's).
fn child_job_task(child: &str, loop_type: &str, data_array: Value) -> Value {
    json!({"name": "childJob", "app": "WorkFlowEngine", "type": "operation",
           "variables": {"incoming": {
                "workflow": child, "loopType": loop_type, "data_array": data_array,
                "task": "", "transformation": "",
                "variables": {"device": {"task": "job", "value": "device"},
                              "reattempt": {"task": "static", "value": true}}},
             "outgoing": {"job_details": "$var.job.details"}}})
}

/// workflow_start -> the task -> workflow_end (on success; on error to `handled` if given).
fn around(name: &str, task: Value) -> Value {
    workflow(
        name,
        json!({"cj": task}),
        &[
            ("workflow_start", "cj", "success", "standard"),
            ("cj", "workflow_end", "success", "standard"),
        ],
    )
}

/// The child workflow: one task of app `Child` that a worker runs.
fn child_workflow(name: &str) -> Value {
    around(name, adapter_task("Child"))
}

#[tokio::test]
async fn a_parallel_child_loop_runs_every_child_and_collects_their_variables() {
    let app = TestApp::spawn().await;
    app.create_workflow(&child_workflow("Child")).await;
    let parent = around(
        "Parent",
        child_job_task("Child", "parallel", json!([{"n": 1}, {"n": 2}, {"n": 3}])),
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Child".into()], 10)
        .await
        .unwrap();
    let id = start(&app, &parent, json!({"device": "fw-1"})).await;

    // All three children run at once: their tasks reach the worker before any completes.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_task(&mut tasks).await);
    }
    let running = job_when(&app, &id, |job| job["tasks"]["cj"]["status"] == "running").await;
    let children: Vec<String> = running["tasks"]["cj"]["childJobs"]
        .as_array()
        .expect("the task lists its children")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(children.len(), 3);
    let mut seen = Vec::new();
    for task in &held {
        assert!(
            children.contains(&task.job_id),
            "{} is a child",
            task.job_id
        );
        assert_eq!(task.incoming["device"], "fw-1", "the parent's variable");
        let (_, child) = app
            .get(&format!("/operations-manager/jobs/{}", task.job_id))
            .await;
        let child = &child["data"];
        assert_eq!(child["parent"]["job"], id.as_str());
        assert_eq!(child["parent"]["task"], "cj");
        assert_eq!(child["ancestors"], json!([id, task.job_id]));
        assert_eq!(child["variables"]["reattempt"], true);
        seen.push(child["variables"]["n"].as_i64().unwrap());
        app.engine
            .complete_task(
                &worker(),
                &task.task_token,
                result(
                    FinishState::Success,
                    json!({"result": format!("done {}", task.job_id)}),
                ),
            )
            .await
            .unwrap();
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3], "one child per element of data_array");

    let job = job_when(&app, &id, |job| job["status"] != "running").await;
    assert_eq!(job["status"], "complete", "{job}");
    let details = job["variables"]["details"]["loop"].as_array().unwrap();
    assert_eq!(details.len(), 3);
    for (n, detail) in details.iter().enumerate() {
        assert_eq!(detail["_id"], children[n].as_str(), "in data_array order");
        assert_eq!(detail["n"], n as i64 + 1);
        assert_eq!(detail["result"], format!("done {}", children[n]));
    }
}

#[tokio::test]
async fn a_sequential_child_loop_starts_each_child_after_the_one_before_ends() {
    let app = TestApp::spawn().await;
    app.create_workflow(&child_workflow("Child")).await;
    let parent = around(
        "Parent",
        child_job_task("Child", "sequential", json!([{"n": 1}, {"n": 2}])),
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Child".into()], 10)
        .await
        .unwrap();
    let id = start(&app, &parent, json!({"device": "fw-1"})).await;
    let first = next_task(&mut tasks).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), tasks.recv())
            .await
            .is_err(),
        "the second child waits for the first"
    );
    // The first child fails: the loop goes on, and the task ends in error at the end.
    app.engine
        .complete_task(
            &worker(),
            &first.task_token,
            result(FinishState::Failure, json!({})),
        )
        .await
        .unwrap();
    let second = next_task(&mut tasks).await;
    assert_ne!(second.job_id, first.job_id);
    app.engine
        .complete_task(
            &worker(),
            &second.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    let job = job_when(&app, &id, |job| job["status"] != "running").await;
    assert_eq!(job["tasks"]["cj"]["status"], "error", "{job}");
    let message = job["error"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&first.job_id) && message.contains("(error)"),
        "{message}"
    );
    assert_eq!(job["status"], "error", "no error transition");
}

#[tokio::test]
async fn a_child_job_of_a_missing_workflow_sends_the_task_down_its_error_path() {
    let app = TestApp::spawn().await;
    let stub = json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                      "variables": {"incoming": {}, "outgoing": {}}});
    let parent = workflow(
        "Parent",
        json!({"cj": child_job_task("Nowhere", "", json!("")), "handled": stub}),
        &[
            ("workflow_start", "cj", "success", "standard"),
            ("cj", "workflow_end", "success", "standard"),
            ("cj", "handled", "error", "standard"),
            ("handled", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &parent, json!({})).await;
    let job = job_when(&app, &id, |job| job["status"] != "running").await;
    assert_eq!(job["status"], "complete", "the error path was taken: {job}");
    assert_eq!(job["tasks"]["cj"]["finish_state"], "error");
    let error = job["tasks"]["cj"]["error"].as_str().unwrap();
    assert!(error.contains("\"Nowhere\" does not exist"), "{error}");
}

#[tokio::test]
async fn canceling_a_parent_cancels_its_children_and_theirs() {
    let app = TestApp::spawn().await;
    app.create_workflow(&child_workflow("Grandchild")).await;
    app.create_workflow(&around(
        "Child",
        child_job_task("Grandchild", "", json!("")),
    ))
    .await;
    let parent = around("Parent", child_job_task("Child", "", json!("")));
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Child".into()], 10)
        .await
        .unwrap();
    let id = start(&app, &parent, json!({})).await;
    let task = next_task(&mut tasks).await;
    let (_, grandchild) = app
        .get(&format!("/operations-manager/jobs/{}", task.job_id))
        .await;
    let ancestors = grandchild["data"]["ancestors"].as_array().unwrap().clone();
    assert_eq!(ancestors.len(), 3, "parent, child, grandchild");
    assert_eq!(ancestors[0], id.as_str());

    let outcomes = app
        .engine
        .control_jobs(&operator(), JobControl::Cancel, vec![id.clone()])
        .await
        .unwrap();
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0]);
    for job_id in ancestors {
        let job = job_when(&app, job_id.as_str().unwrap(), |_| true).await;
        assert_eq!(job["status"], "canceled", "{job_id}");
    }
    let beat = app
        .engine
        .heartbeat(&worker(), &task.task_token)
        .await
        .unwrap();
    assert!(beat.cancel_requested, "the grandchild's worker is told");
}

#[tokio::test]
async fn a_for_each_loop_runs_its_body_per_element_with_the_current_item() {
    let app = TestApp::spawn().await;
    let for_each = json!({"name": "forEach", "app": "WorkFlowEngine", "type": "operation",
                          "variables": {"incoming": {"data_array": "$var.job.devices"},
                                        "outgoing": {"current_item": null}}});
    let body = json!({"name": "backUpDevice", "app": "Backup", "type": "automatic",
                      "variables": {"incoming": {"device": "$var.fe.current_item"},
                                    "outgoing": {}}});
    let document = workflow(
        "Back up every device",
        json!({"fe": for_each, "b": body}),
        &[
            ("workflow_start", "fe", "success", "standard"),
            ("fe", "b", "loop", "standard"),
            ("fe", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Backup".into()], 10)
        .await
        .unwrap();
    let id = start(&app, &document, json!({"devices": ["r1", "r2", "r3"]})).await;
    for device in ["r1", "r2", "r3"] {
        let task = next_task(&mut tasks).await;
        assert_eq!(task.incoming["device"], device);
        app.engine
            .complete_task(
                &worker(),
                &task.task_token,
                result(FinishState::Success, json!({})),
            )
            .await
            .unwrap();
    }
    let job = job_when(&app, &id, |job| job["status"] != "running").await;
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["tasks"]["fe"]["finish_state"], "success");
}
