//! Jobs run: through the engine's use cases, on the real store, with workers that poll,
//! heartbeat and complete as a task worker does.

use std::time::Duration;

use job_service::domain::run::{FinishState, JobControl, JobEvent, TaskResult, WorkerTask};
use job_service::domain::{Caller, Error};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::helpers::{start_request, TestApp};

pub(crate) fn caller(roles: &[&str]) -> Caller {
    Caller {
        sub: "0123456789abcdef01234567".into(),
        username: "pat".into(),
        groups: Vec::new(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

pub(crate) fn worker() -> Caller {
    caller(&["worker"])
}

pub(crate) fn operator() -> Caller {
    caller(&["operations"])
}

/// A workflow of `tasks` (id -> task document) and `edges` (source, target, state, type).
pub(crate) fn workflow(name: &str, tasks: Value, edges: &[(&str, &str, &str, &str)]) -> Value {
    let mut all = json!({
        "workflow_start": {"name": "workflow_start", "groups": []},
        "workflow_end": {"name": "workflow_end", "groups": []},
    });
    for (id, task) in tasks.as_object().unwrap() {
        all[id] = task.clone();
    }
    let mut transitions = Map::new();
    for id in all.as_object().unwrap().keys() {
        transitions.insert(id.clone(), json!({}));
    }
    for (source, target, state, kind) in edges {
        transitions[*source][*target] = json!({"state": state, "type": kind});
    }
    json!({"name": name, "type": "automation", "groups": [], "tasks": all,
           "transitions": transitions, "inputSchema": {"type": "object"}})
}

pub(crate) fn adapter_task(app: &str) -> Value {
    json!({"name": "getDevice", "app": app, "type": "automatic", "location": "Adapter",
           "variables": {"incoming": {"device": "$var.job.device", "fixed": 7},
                         "outgoing": {"result": "$var.job.result"}}})
}

pub(crate) fn result(finish: FinishState, outgoing: Value) -> TaskResult {
    TaskResult {
        finish_state: finish,
        outgoing: outgoing.as_object().cloned().unwrap_or_default(),
        error_message: String::new(),
    }
}

pub(crate) async fn next_task(tasks: &mut mpsc::Receiver<Result<WorkerTask, Error>>) -> WorkerTask {
    tokio::time::timeout(Duration::from_secs(10), tasks.recv())
        .await
        .expect("a task reaches the worker within 10 s")
        .expect("the stream is open")
        .expect("a task, not an error")
}

/// The job's REST document once `done` holds of it (polled for up to 10 s).
pub(crate) async fn job_when(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get(&format!("/operations-manager/jobs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn start(app: &TestApp, document: &Value, variables: Value) -> String {
    app.create_workflow(document).await;
    let name = document["name"].as_str().unwrap();
    app.start_job(name, variables)
        .await
        .expect("the job starts")
        .id
}

#[tokio::test]
async fn a_job_runs_through_a_worker_to_complete_and_shows_its_run() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Through a worker",
        json!({"a": adapter_task("NetBox")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["NetBox".into()], 4)
        .await
        .unwrap();
    let id = start(&app, &document, json!({"device": "fw-1"})).await;

    let task = next_task(&mut tasks).await;
    assert_eq!(
        (
            task.job_id.as_str(),
            task.task_id.as_str(),
            task.app.as_str()
        ),
        (id.as_str(), "a", "NetBox")
    );
    assert_eq!(task.name, "getDevice");
    assert_eq!(
        Value::Object(task.incoming.clone()),
        json!({"device": "fw-1", "fixed": 7})
    );
    assert_eq!(task.attempt, 1);
    let running = job_when(&app, &id, |job| job["tasks"]["a"]["status"] == "running").await;
    assert_eq!(running["status"], "running");

    app.engine
        .complete_task(
            &worker(),
            &task.task_token,
            result(FinishState::Success, json!({"result": "up"})),
        )
        .await
        .unwrap();
    let job = job_when(&app, &id, |job| job["status"] == "complete").await;
    assert_eq!(
        job["variables"]["result"], "up",
        "the outgoing value is mapped to the job variable"
    );
    assert_eq!(job["tasks"]["a"]["finish_state"], "success");
    assert_eq!(job["tasks"]["a"]["variables"]["incoming"]["device"], "fw-1");
    assert_eq!(job["tasks"]["a"]["variables"]["outgoing"]["result"], "up");
    assert_eq!(job["tasks"]["workflow_end"]["status"], "complete");
    assert_eq!(job["metrics"]["progress"], 1.0);
    assert!(job["metrics"]["end_time"].is_i64());

    // The token was used: a second completion changes nothing.
    let again = app
        .engine
        .complete_task(
            &worker(),
            &task.task_token,
            result(FinishState::Failure, json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::FailedPrecondition { .. }),
        "{again:?}"
    );
    let after = job_when(&app, &id, |_| true).await;
    assert_eq!(after["tasks"]["a"]["finish_state"], "success");
}

#[tokio::test]
async fn tasks_the_service_runs_itself_finish_the_job_without_a_worker() {
    let app = TestApp::spawn().await;
    let stub = json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                      "variables": {"incoming": {}, "outgoing": {}}});
    let set = json!({"name": "newVariable", "app": "WorkFlowEngine", "type": "operation",
                     "variables": {"incoming": {"name": "answer", "value": 42}, "outgoing": {"value": ""}}});
    let document = workflow(
        "Engine only",
        json!({"s": stub, "v": set}),
        &[
            ("workflow_start", "s", "success", "standard"),
            ("s", "v", "success", "standard"),
            ("v", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &document, json!({})).await;
    let job = job_when(&app, &id, |job| job["status"] == "complete").await;
    assert_eq!(job["variables"]["answer"], 42);
    assert_eq!(job["tasks"]["s"]["status"], "complete");
}

#[tokio::test]
async fn a_task_whose_lease_runs_out_is_offered_again() {
    let app = TestApp::spawn_with(|config| {
        config.task_lease = "300ms".parse().unwrap();
        config.engine_sweep = "100ms".parse().unwrap();
    })
    .await;
    let document = workflow(
        "Lease",
        json!({"a": adapter_task("Slow")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Slow".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let first = next_task(&mut tasks).await;
    // The worker goes silent; its stream still has room for one task after the lease ends.
    let second = next_task(&mut tasks).await;
    assert_eq!((second.task_id.as_str(), second.attempt), ("a", 2));
    assert_ne!(first.task_token, second.task_token);
    let late = app
        .engine
        .complete_task(
            &worker(),
            &first.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(late, Error::FailedPrecondition { .. }),
        "a late completion with the old token: {late:?}"
    );
    app.engine
        .complete_task(
            &worker(),
            &second.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    job_when(&app, &id, |job| job["status"] == "complete").await;
}

#[tokio::test]
async fn a_manual_task_waits_until_a_person_finishes_it() {
    let app = TestApp::spawn().await;
    let manual = json!({"name": "ViewData", "app": "WorkFlowEngine", "type": "manual",
                        "variables": {"incoming": {}, "outgoing": {"approved": "$var.job.approved"}}});
    let document = workflow(
        "Approve",
        json!({"m": manual}),
        &[
            ("workflow_start", "m", "success", "standard"),
            ("m", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &document, json!({})).await;
    job_when(&app, &id, |job| job["tasks"]["m"]["status"] == "scheduled").await;
    let denied = app
        .engine
        .finish_task(
            &caller(&["apiread"]),
            &id,
            "m",
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap_err();
    assert!(matches!(denied, Error::PermissionDenied(_)), "{denied:?}");
    let wrong = app
        .engine
        .finish_task(
            &operator(),
            &id,
            "workflow_end",
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, Error::FailedPrecondition { .. }),
        "{wrong:?}"
    );
    app.engine
        .finish_task(
            &operator(),
            &id,
            "m",
            result(FinishState::Success, json!({"approved": true})),
        )
        .await
        .unwrap();
    let job = job_when(&app, &id, |job| job["status"] == "complete").await;
    assert_eq!(job["variables"]["approved"], true);
}

#[tokio::test]
async fn canceling_a_job_tells_the_worker_holding_its_task_and_refuses_its_completion() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Cancel me",
        json!({"a": adapter_task("Long")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Long".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let task = next_task(&mut tasks).await;
    let beat = app
        .engine
        .heartbeat(&worker(), &task.task_token)
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    let outcomes = app
        .engine
        .control_jobs(
            &operator(),
            JobControl::Cancel,
            vec![id.clone(), "ffffffffffffffffffffffff".into(), "nope".into()],
        )
        .await
        .unwrap();
    assert!(outcomes[0].1.is_ok());
    assert!(
        matches!(outcomes[1].1, Err(Error::NotFound(_))),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2].1, Err(Error::InvalidArgument { .. })),
        "{:?}",
        outcomes[2]
    );
    let beat = app
        .engine
        .heartbeat(&worker(), &task.task_token)
        .await
        .unwrap();
    assert!(beat.cancel_requested);
    let refused = app
        .engine
        .complete_task(
            &worker(),
            &task.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::FailedPrecondition { .. }),
        "{refused:?}"
    );
    let job = job_when(&app, &id, |job| job["status"] == "canceled").await;
    assert_eq!(job["tasks"]["a"]["status"], "canceled");
}

#[tokio::test]
async fn a_paused_job_schedules_nothing_new_until_it_resumes() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Pause me",
        json!({"a": adapter_task("P"), "b": adapter_task("P")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "b", "success", "standard"),
            ("b", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["P".into()], 2)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let a = next_task(&mut tasks).await;
    app.engine
        .control_jobs(&operator(), JobControl::Pause, vec![id.clone()])
        .await
        .unwrap()[0]
        .1
        .as_ref()
        .unwrap();
    app.engine
        .complete_task(
            &worker(),
            &a.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    let paused = job_when(&app, &id, |job| job["tasks"]["a"]["status"] == "complete").await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["tasks"]["b"]["status"], "incomplete");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), tasks.recv())
            .await
            .is_err(),
        "nothing is offered while paused"
    );
    app.engine
        .control_jobs(&operator(), JobControl::Resume, vec![id.clone()])
        .await
        .unwrap()[0]
        .1
        .as_ref()
        .unwrap();
    let b = next_task(&mut tasks).await;
    assert_eq!(b.task_id, "b");
    app.engine
        .complete_task(
            &worker(),
            &b.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    job_when(&app, &id, |job| job["status"] == "complete").await;
}

#[tokio::test]
async fn a_task_that_ended_in_error_is_retried_with_new_values() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Retry me",
        json!({"a": adapter_task("R")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["R".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({"device": "old"})).await;
    let first = next_task(&mut tasks).await;
    let mut failed = result(FinishState::Error, json!({}));
    failed.error_message = "device unreachable".into();
    app.engine
        .complete_task(&worker(), &first.task_token, failed)
        .await
        .unwrap();
    let job = job_when(&app, &id, |job| job["status"] == "error").await;
    assert_eq!(job["error"][0]["message"], "device unreachable");
    assert!(job["error"][1]["message"]
        .as_str()
        .unwrap()
        .starts_with("Job has no available transitions"));

    let mut override_ = Map::new();
    override_.insert("device".into(), json!("new"));
    app.engine
        .retry_task(&operator(), &id, "a", override_)
        .await
        .unwrap();
    let second = next_task(&mut tasks).await;
    assert_eq!(second.incoming["device"], "new");
    let revived = job_when(&app, &id, |job| job["status"] == "running").await;
    assert!(
        revived["metrics"].get("end_time").is_none(),
        "a job running again has not ended: {}",
        revived["metrics"]
    );
    app.engine
        .complete_task(
            &worker(),
            &second.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    job_when(&app, &id, |job| job["status"] == "complete").await;
}

async fn events_until_end(events: &mut mpsc::Receiver<Result<JobEvent, Error>>) -> Vec<JobEvent> {
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("events keep coming")
    {
        seen.push(event.unwrap());
    }
    seen
}

#[tokio::test]
async fn a_watcher_sees_every_event_in_order_and_resumes_without_gap_or_repeat() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Watch me",
        json!({"a": adapter_task("W")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["W".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let reader = caller(&["apiread"]);
    let mut events = app.engine.watch_job(&reader, &id, 0).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            first.sequence,
            first.task_id.as_str(),
            first.status.as_str()
        ),
        (1, "a", "scheduled")
    );
    drop(events);

    let task = next_task(&mut tasks).await;
    app.engine
        .complete_task(
            &worker(),
            &task.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    let mut resumed = app
        .engine
        .watch_job(&reader, &id, first.sequence)
        .await
        .unwrap();
    let rest = events_until_end(&mut resumed).await;
    let sequences: Vec<u64> = rest.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (2..2 + rest.len() as u64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let last = rest.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.status.as_str()),
        ("job", "complete"),
        "the stream ends with the job"
    );
    let task_a: Vec<(&str, &str)> = rest
        .iter()
        .filter(|e| e.task_id == "a")
        .map(|e| (e.status.as_str(), e.finish_state.as_str()))
        .collect();
    assert_eq!(
        task_a,
        [("running", ""), ("complete", "success")],
        "the worker's claim shows as the task starting: {rest:?}"
    );
    let mut late = app
        .engine
        .watch_job(&reader, &id, last.sequence)
        .await
        .unwrap();
    assert!(
        events_until_end(&mut late).await.is_empty(),
        "a watcher that saw the end gets an empty stream that ends"
    );

    let hidden = app
        .engine
        .watch_job(&caller(&["worker"]), &id, 0)
        .await
        .unwrap_err();
    assert!(matches!(hidden, Error::PermissionDenied(_)), "{hidden:?}");
}

/// A job's events are stored a statement's worth a row (`job_event_batches`): reading them
/// from any sequence, a page of any size, gives each event once and in order, including from
/// inside a row and across rows, and the `job_events` view shows the same events.
#[tokio::test]
async fn events_read_from_any_sequence_in_pages_of_any_size_are_the_same_events() {
    let app = TestApp::spawn().await;
    let stub = json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                      "variables": {"incoming": {}, "outgoing": {}}});
    let document = workflow(
        "Paged events",
        json!({"s1": stub, "s2": stub, "s3": stub, "a": adapter_task("Paged")}),
        &[
            ("workflow_start", "s1", "success", "standard"),
            ("s1", "s2", "success", "standard"),
            ("s2", "s3", "success", "standard"),
            ("s3", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Paged".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let task = next_task(&mut tasks).await;
    app.engine
        .complete_task(
            &worker(),
            &task.task_token,
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    job_when(&app, &id, |job| job["status"] == "complete").await;

    let mut conn = app.db.acquire().await.unwrap();
    let all = job_service::store::runs::events(&mut conn, &id, 0, 1000)
        .await
        .unwrap();
    let sequences: Vec<u64> = all.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=all.len() as u64).collect::<Vec<_>>());
    let rows: i64 = sqlx::query_scalar("select count(*) from job_event_batches where job_id = $1")
        .bind(&id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(
        (rows as usize) < all.len() && rows >= 3,
        "the start's step, the claim and the completion's step: {rows} rows for {} events",
        all.len()
    );
    let seen = |events: &[JobEvent]| -> Vec<(u64, String, String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e.sequence,
                    e.task_id.clone(),
                    e.status.clone(),
                    e.finish_state.clone(),
                )
            })
            .collect()
    };
    for after in 0..=all.len() {
        for limit in [1, 2, 3, 1000] {
            let page = job_service::store::runs::events(&mut conn, &id, after as u64, limit)
                .await
                .unwrap();
            let expected = &all[after..(after + limit as usize).min(all.len())];
            assert_eq!(seen(&page), seen(expected), "after {after}, {limit} a page");
        }
    }
    let viewed: Vec<(i64, String, String, String)> = sqlx::query_as(
        "select sequence, task_id, status, finish_state from job_events
         where job_id = $1 order by sequence",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let viewed: Vec<_> = viewed
        .into_iter()
        .map(|(sequence, task, status, finish)| (sequence as u64, task, status, finish))
        .collect();
    assert_eq!(viewed, seen(&all));
    let task_s2: Vec<&str> = all
        .iter()
        .filter(|e| e.task_id == "s2")
        .map(|e| e.status.as_str())
        .collect();
    assert_eq!(task_s2, ["running", "complete"], "{all:?}");
}

#[tokio::test]
async fn two_instances_on_one_database_hand_each_task_out_once() {
    let app = TestApp::spawn().await;
    let other = app.another_instance().await;
    let document = workflow(
        "Shared",
        json!({"a": adapter_task("S")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    app.create_workflow(&document).await;
    let mut here = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["S".into()], 50)
        .await
        .unwrap();
    let mut there = other
        .engine
        .poll_tasks(&worker(), "w2".into(), vec!["S".into()], 50)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(app.start_job("Shared", json!({})).await.unwrap().id);
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let task = tokio::select! {
            Some(task) = here.recv() => task.unwrap(),
            Some(task) = there.recv() => task.unwrap(),
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("only {} of {} tasks arrived", seen.len(), ids.len()),
        };
        assert!(
            seen.insert(task.job_id.clone()),
            "job {} was handed out twice",
            task.job_id
        );
        let engine = if seen.len() % 2 == 0 {
            &app.engine
        } else {
            &other.engine
        };
        engine
            .complete_task(
                &worker(),
                &task.task_token,
                result(FinishState::Success, json!({})),
            )
            .await
            .unwrap();
    }
    for id in &ids {
        job_when(&app, id, |job| job["status"] == "complete").await;
    }
}

/// Panorama's `commitChanges` result with this status, as the adapter answers.
fn commit_result(status: &str) -> Value {
    json!({"result": {"response": {"response": {"_attr": {"status": status}}}}})
}

#[tokio::test]
async fn the_corpus_commit_workflow_takes_its_success_path_and_its_retry_loop() {
    let app = TestApp::spawn().await;
    let document = crate::helpers::corpus_workflow("palo-alto-panorama", "commit.json");
    app.create_workflow(&document).await;
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "panorama".into(), vec!["Panorama".into()], 4)
        .await
        .unwrap();

    // The commit succeeds: the evaluation (`result.response.response._attr.status` contains
    // `success`) sends the job to its end.
    let first = app
        .start_job("Commit", json!({"adapterId": "panorama-1"}))
        .await
        .unwrap()
        .id;
    let commit = next_task(&mut tasks).await;
    assert_eq!(
        (commit.task_id.as_str(), commit.name.as_str()),
        ("26e8", "commitChanges")
    );
    assert_eq!(commit.incoming["adapter_id"], "panorama-1");
    app.engine
        .complete_task(
            &worker(),
            &commit.task_token,
            result(FinishState::Success, commit_result("success")),
        )
        .await
        .unwrap();
    let job = job_when(&app, &first, |job| job["status"] == "complete").await;
    assert_eq!(job["tasks"]["2d27"]["finish_state"], "success");
    assert_eq!(
        job["tasks"]["895c"]["status"], "incomplete",
        "the failure dialog never opened"
    );
    assert_eq!(
        job["variables"]["commitResult"],
        commit_result("success")["result"]
    );

    // The commit fails: the evaluation takes the failure path to the manual task; the operator
    // chooses "Retry" (success), whose revert runs the commit again, which now succeeds.
    let second = app
        .start_job("Commit", json!({"adapterId": "panorama-1"}))
        .await
        .unwrap()
        .id;
    let commit = next_task(&mut tasks).await;
    app.engine
        .complete_task(
            &worker(),
            &commit.task_token,
            result(FinishState::Success, commit_result("error")),
        )
        .await
        .unwrap();
    let waiting = job_when(&app, &second, |job| {
        job["tasks"]["895c"]["status"] == "scheduled"
    })
    .await;
    assert_eq!(waiting["tasks"]["2d27"]["finish_state"], "failure");
    app.engine
        .finish_task(
            &operator(),
            &second,
            "895c",
            result(FinishState::Success, json!({})),
        )
        .await
        .unwrap();
    let again = next_task(&mut tasks).await;
    assert_eq!(
        (again.job_id.as_str(), again.task_id.as_str()),
        (second.as_str(), "26e8")
    );
    app.engine
        .complete_task(
            &worker(),
            &again.task_token,
            result(FinishState::Success, commit_result("success")),
        )
        .await
        .unwrap();
    let job = job_when(&app, &second, |job| job["status"] == "complete").await;
    assert_eq!(
        job["tasks"]["26e8"]["iterations"],
        json!([1, 2]),
        "the commit ran twice"
    );
    assert_eq!(job["tasks"]["2d27"]["finish_state"], "success");
}

#[tokio::test]
async fn a_delay_task_finishes_when_its_timer_is_due() {
    let app = TestApp::spawn_with(|config| config.engine_sweep = "100ms".parse().unwrap()).await;
    let delay = json!({"name": "delay", "app": "WorkFlowEngine", "type": "operation",
                       "variables": {"incoming": {"time": 1}, "outgoing": {"time_in_milliseconds": ""}}});
    let document = workflow(
        "Wait a second",
        json!({"d": delay}),
        &[
            ("workflow_start", "d", "success", "standard"),
            ("d", "workflow_end", "success", "standard"),
        ],
    );
    let started = std::time::Instant::now();
    let id = start(&app, &document, json!({})).await;
    let waiting = job_when(&app, &id, |job| job["tasks"]["d"]["status"] == "scheduled").await;
    assert_eq!(waiting["status"], "running");
    let job = job_when(&app, &id, |job| job["status"] == "complete").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the job waited for the timer"
    );
    assert_eq!(
        job["tasks"]["d"]["variables"]["outgoing"]["time_in_milliseconds"],
        1000
    );
}

#[tokio::test]
async fn a_task_with_retry_settings_runs_again_before_it_errors() {
    let app = TestApp::spawn_with(|config| config.engine_sweep = "100ms".parse().unwrap()).await;
    let mut task = adapter_task("Flaky");
    task["retrySettings"] = json!({"autoRetry": true, "limit": 1, "delay": 0, "state": ["error"]});
    let document = workflow(
        "Flaky",
        json!({"a": task}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Flaky".into()], 1)
        .await
        .unwrap();
    let id = start(&app, &document, json!({})).await;
    let mut failed = result(FinishState::Error, json!({}));
    failed.error_message = "timeout".into();
    let first = next_task(&mut tasks).await;
    app.engine
        .complete_task(&worker(), &first.task_token, failed.clone())
        .await
        .unwrap();
    let second = next_task(&mut tasks).await;
    assert_eq!(second.task_id, "a", "the retry offers the task again");
    app.engine
        .complete_task(&worker(), &second.task_token, failed)
        .await
        .unwrap();
    let job = job_when(&app, &id, |job| job["status"] == "error").await;
    assert_eq!(
        job["tasks"]["a"]["status"], "error",
        "after its one retry the task errs"
    );
}

#[tokio::test]
async fn the_rest_routes_finish_a_manual_task_and_cancel_a_job() {
    let app = TestApp::spawn().await;
    let manual = json!({"name": "ViewData", "app": "WorkFlowEngine", "type": "manual",
                        "variables": {"incoming": {}, "outgoing": {"approved": "$var.job.approved"}}});
    let document = workflow(
        "Approve over REST",
        json!({"m": manual}),
        &[
            ("workflow_start", "m", "success", "standard"),
            ("m", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &document, json!({})).await;
    job_when(&app, &id, |job| job["tasks"]["m"]["status"] == "scheduled").await;
    let (status, body) = app
        .post(
            &format!("/operations-manager/jobs/{id}/tasks/m/finish"),
            &json!({"taskData": {"finish_state": "success", "variables": {"approved": "yes"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = job_when(&app, &id, |job| job["status"] == "complete").await;
    assert_eq!(job["variables"]["approved"], "yes");

    let other = app
        .start_job("Approve over REST", json!({}))
        .await
        .unwrap()
        .id;
    let (status, body) = app
        .post(
            "/operations-manager/jobs/cancel",
            &json!({"jobIds": [other, id]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["ok"], true, "{body}");
    assert_eq!(
        body["data"][1]["ok"], false,
        "a complete job cannot be canceled: {body}"
    );
    assert_eq!(body["data"][1]["code"], 400, "{body}");
    job_when(&app, &other, |job| job["status"] == "canceled").await;
}

#[tokio::test]
async fn a_job_that_cannot_be_stepped_does_not_hold_up_the_others() {
    let app = TestApp::spawn_frozen().await;
    let document = workflow(
        "Poison",
        json!({"a": adapter_task("P")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let bad = start(&app, &document, json!({})).await;
    let good = app.start_job("Poison", json!({})).await.unwrap().id;
    // A run-state row no step can read (incoming must be an object), due before the good job.
    sqlx::query(
        "insert into job_tasks (job_id, task_id, status, runner, app, incoming)
         values ($1, 'a', 'scheduled', 'worker', 'P', '[1]')",
    )
    .bind(&bad)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update job_wakeups set due_at = now() - interval '1 minute' where job_id = $1")
        .bind(&bad)
        .execute(&app.db)
        .await
        .unwrap();
    // An instance that runs jobs, on the same database.
    let runner = app.another_instance().await;
    let mut tasks = runner
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["P".into()], 1)
        .await
        .unwrap();
    let task = next_task(&mut tasks).await;
    assert_eq!(
        task.job_id, good,
        "the good job runs although the bad one is due first"
    );
    // The bad job is put off when a step tries it alone: before or after the good job's
    // step, as the instance's claims and steps meet its row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let put_off: bool = sqlx::query_scalar(
            "select due_at > now() + interval '30 seconds' from job_wakeups where job_id = $1",
        )
        .bind(&bad)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if put_off {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job that cannot be stepped is tried again later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_start_takes_the_first_step_before_it_answers() {
    let app = TestApp::spawn().await;
    let stub = json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                      "variables": {"incoming": {}, "outgoing": {}}});
    let document = workflow(
        "First step",
        json!({"s": stub, "a": adapter_task("Netbox")}),
        &[
            ("workflow_start", "s", "success", "standard"),
            ("s", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &document, json!({"device": "fw-1"})).await;
    // No waiting: the stub ran and the adapter task waits for a worker as soon as the start
    // is acknowledged, and the engine has nothing left to do for the job.
    let (status, body) = app.get(&format!("/operations-manager/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let job = &body["data"];
    assert_eq!(job["tasks"]["s"]["status"], "complete", "{job}");
    assert_eq!(job["tasks"]["a"]["status"], "scheduled", "{job}");
    assert_eq!(job["tasks"]["a"]["variables"]["incoming"]["device"], "fw-1");
    let wakeups: i64 = sqlx::query_scalar("select count(*) from job_wakeups where job_id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(wakeups, 0);
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Netbox".into()], 1)
        .await
        .unwrap();
    let task = next_task(&mut tasks).await;
    assert_eq!(
        (task.job_id.as_str(), task.task_id.as_str()),
        (id.as_str(), "a")
    );
    let mut events = app
        .engine
        .watch_job(&caller(&["apiread"]), &id, 0)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.sequence, 1, "the start's events are numbered from 1");
}

#[tokio::test]
async fn a_job_deleted_by_hand_takes_its_run_state_with_it() {
    let app = TestApp::spawn().await;
    let document = workflow(
        "Deleted",
        json!({"a": adapter_task("Gone")}),
        &[
            ("workflow_start", "a", "success", "standard"),
            ("a", "workflow_end", "success", "standard"),
        ],
    );
    let id = start(&app, &document, json!({})).await;
    let kept = job_when(&app, &id, |job| job["tasks"]["a"]["status"] == "scheduled").await;
    assert_eq!(kept["status"], "running");
    // A job started with an idempotency key: its key goes with it too.
    let keyed = app
        .jobs
        .clone()
        .start_job(start_request(
            "Deleted",
            Default::default(),
            Some("deleted-by-hand"),
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
        .id;
    sqlx::query("delete from jobs where id = any($1)")
        .bind([&id, &keyed])
        .execute(&app.db)
        .await
        .unwrap();
    for table in ["job_tasks", "job_events", "job_wakeups", "idempotency_keys"] {
        let left: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where job_id = any($1)"
        ))
        .bind([&id, &keyed])
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table} keeps rows of a deleted job");
    }

    let again = app.start_job("Deleted", json!({})).await.unwrap().id;
    job_when(&app, &again, |job| {
        job["tasks"]["a"]["status"] == "scheduled"
    })
    .await;
    app.jobs
        .clone()
        .start_job(start_request(
            "Deleted",
            Default::default(),
            Some("truncated"),
        ))
        .await
        .unwrap();
    sqlx::query("truncate jobs").execute(&app.db).await.unwrap();
    for table in ["job_tasks", "job_events", "job_wakeups", "idempotency_keys"] {
        let left: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table} keeps rows of truncated jobs");
    }
}
