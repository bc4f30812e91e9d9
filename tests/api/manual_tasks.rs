//! Manual tasks worked by people: finding them across jobs, claiming, assigning and releasing
//! them, what one shows, and who may finish one; over REST and gRPC.

use std::time::Duration;

use job_service::domain::ids::account_id_for_username;
use job_service::grpc::pb;
use job_service::grpc::TaskServiceClient;
use serde_json::{json, Value};

use crate::helpers::{from_struct, send, to_struct, violated_fields, Bearer, TestApp};

const GROUP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const GROUP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

/// A workflow whose one task `m` is a ViewData manual task (with `groups`) that shows job
/// variables and collects an approval: success and failure both end the job.
fn approval(name: &str, groups: &[&str]) -> Value {
    json!({
        "name": name, "type": "automation", "groups": [],
        "tasks": {
            "workflow_start": {"name": "workflow_start", "groups": []},
            "m": {
                "name": "ViewData", "app": "WorkFlowEngine", "type": "manual",
                "summary": "Approve the change", "description": "An operator approves",
                "view": "/workflow_engine/task/ViewData", "groups": groups,
                "variables": {
                    "incoming": {
                        "header": "Approve the change",
                        "body": "$var.job.device",
                        "variables": "$var.job.details",
                        "buttons": [{"title": "Approve", "state": "success"}],
                    },
                    "outgoing": {"approved": "$var.job.approved"},
                },
            },
            "workflow_end": {"name": "workflow_end", "groups": []},
        },
        "transitions": {
            "workflow_start": {"m": {"state": "success", "type": "standard"}},
            "m": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {},
        },
        "inputSchema": {"type": "object"},
    })
}

/// Starts a job of `workflow` (stored first when given) as the admin, with these job groups;
/// its id once its manual task waits.
async fn start(app: &TestApp, workflow: &Value, groups: &[&str]) -> String {
    let name = workflow["name"].as_str().unwrap();
    let stored = app
        .workflows
        .clone()
        .get_workflow(pb::GetWorkflowRequest { name: name.into() })
        .await;
    if stored.is_err() {
        app.create_workflow(workflow).await;
    }
    let job = app
        .jobs
        .clone()
        .start_job(pb::StartJobRequest {
            workflow: name.into(),
            options: Some(pb::JobOptions {
                variables: Some(to_struct(&json!({"device": "r1", "details": {"vlan": 7}}))),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            }),
        })
        .await
        .expect("the job starts")
        .into_inner()
        .job
        .unwrap();
    task_when(app, &format!("{}:m", job.id), |task| {
        task["status"] == "scheduled"
    })
    .await;
    job.id
}

/// GET `path` with `token`: status and body.
async fn get_as(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    send(
        app.http
            .get(format!("{}{path}", app.http_url))
            .bearer_auth(token),
    )
    .await
}

/// POST `body` (none when null) to `path` with `token`: status and body.
async fn post_as(app: &TestApp, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let request = app
        .http
        .post(format!("{}{path}", app.http_url))
        .bearer_auth(token);
    let request = match body {
        Value::Null => request,
        body => request.json(body),
    };
    send(request).await
}

/// The task's REST document once `done` holds of it (polled for up to 10 s).
async fn task_when(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get(&format!("/operations-manager/tasks/{id}")).await;
        if status == 200 && done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} did not get there: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tasks_as(app: &TestApp, token: &str) -> TaskServiceClient<crate::helpers::Authed> {
    TaskServiceClient::with_interceptor(app.channel(), Bearer::new(token))
}

fn finish_body(state: &str, variables: Value) -> Value {
    json!({"taskData": {"finish_state": state, "variables": variables}})
}

/// The fields an error answer names.
fn error_fields(body: &Value) -> Vec<String> {
    body["metadata"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no field errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether `value` is what the served OpenAPI document says schema `name` is.
async fn assert_documented(app: &TestApp, name: &str, value: &Value) {
    let (status, document) = send(app.http.get(format!("{}/openapi.json", app.http_url))).await;
    assert_eq!(status, 200);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": document["components"],
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value}");
}

#[tokio::test]
async fn an_operator_finds_claims_looks_at_and_finishes_a_manual_task() {
    let app = TestApp::spawn().await;
    let job = start(&app, &approval("Approve", &[]), &[]).await;
    let task = format!("{job}:m");
    let pat = app.token("pat", &["operations"], &[]);
    let sam = app.token("sam", &["operations"], &[]);
    let pat_id = account_id_for_username("pat");

    // Find: the manual tasks waiting for a person.
    let (status, list) = get_as(
        &app,
        &pat,
        "/operations-manager/tasks?equals[status]=scheduled&equals[type]=manual",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["message"], "Successfully retrieved items");
    assert_eq!(list["metadata"]["total"], 1, "{list}");
    let found = &list["data"][0];
    assert_eq!(found["_id"], task.as_str());
    assert_eq!(found["task"], "m");
    assert_eq!(found["type"], "manual");
    assert_eq!(found["name"], "ViewData");
    assert_eq!(found["job"]["_id"], job.as_str());
    assert_eq!(found["job"]["name"], "Approve");
    assert_eq!(found["owner"], Value::Null);
    assert_eq!(found["variables"]["incoming"]["body"], "r1");
    assert_documented(&app, "TaskListEnvelope", &list).await;
    // Finished tasks and other types are not in it.
    let (_, started) = get_as(
        &app,
        &pat,
        "/operations-manager/tasks?equals[status]=scheduled&equals[type]=operation",
    )
    .await;
    assert_eq!(started["metadata"]["total"], 0, "{started}");

    // Look: what the task shows, resolved when it was scheduled.
    let (status, shown) = get_as(
        &app,
        &pat,
        &format!("/operations-manager/jobs/{job}/tasks/m/manual-controller"),
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let shown_task = &shown["data"];
    assert_eq!(shown_task["incoming"]["body"], "r1");
    assert_eq!(shown_task["incoming"]["variables"], json!({"vlan": 7}));
    assert_eq!(shown_task["incoming"]["header"], "Approve the change");
    assert_eq!(
        shown_task["outgoing"],
        json!({"approved": "$var.job.approved"})
    );
    assert_eq!(shown_task["finish_states"], json!(["success"]));
    assert_eq!(shown_task["view"], "/workflow_engine/task/ViewData");
    assert_documented(&app, "ManualControllerEnvelope", &shown).await;

    // Claim: pat owns it; claiming again changes nothing; sam cannot take it.
    let claim = format!("/operations-manager/tasks/{task}/claim");
    let (status, claimed) = post_as(&app, &pat, &claim, &Value::Null).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["message"], "Successfully claimed the task");
    assert_eq!(claimed["data"]["owner"], pat_id.as_str());
    assert_eq!(claimed["data"]["owner_username"], "pat");
    assert_eq!(claimed["data"]["owner_assigned_by"], pat_id.as_str());
    assert_documented(&app, "TaskEnvelope", &claimed).await;
    let (status, again) = post_as(&app, &pat, &claim, &Value::Null).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["data"]["owner_assigned_at"],
        claimed["data"]["owner_assigned_at"]
    );
    let (status, taken) = post_as(&app, &sam, &claim, &Value::Null).await;
    assert_eq!(status, 400, "{taken}");
    assert!(
        taken["message"]
            .as_str()
            .unwrap()
            .contains(&format!("is already claimed by pat ({pat_id})")),
        "{taken}"
    );

    // My tasks, and tasks nobody owns.
    let (_, mine) = get_as(
        &app,
        &pat,
        &format!("/operations-manager/tasks?equals[owner]={pat_id}"),
    )
    .await;
    assert_eq!(mine["metadata"]["total"], 1, "{mine}");
    let (_, unowned) = get_as(
        &app,
        &pat,
        "/operations-manager/tasks?equals[type]=manual&equals[owner]=",
    )
    .await;
    assert_eq!(unowned["metadata"]["total"], 0, "{unowned}");

    // Finish: only the owner may.
    let finish = format!("/operations-manager/jobs/{job}/tasks/m/finish");
    let (status, refused) = post_as(
        &app,
        &sam,
        &finish,
        &finish_body("success", json!({"approved": "sam"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains(&format!("is owned by pat ({pat_id})")),
        "{refused}"
    );
    let (status, done) = post_as(
        &app,
        &pat,
        &finish,
        &finish_body("success", json!({"approved": "pat"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let finished = task_when(&app, &task, |t| t["status"] == "complete").await;
    assert_eq!(
        finished["owner"],
        Value::Null,
        "ownership ends with the run"
    );
    assert_eq!(finished["finish_state"], "success");
    assert_eq!(finished["variables"]["outgoing"]["approved"], "pat");
    let (_, job_document) = app.get(&format!("/operations-manager/jobs/{job}")).await;
    assert_eq!(job_document["data"]["variables"]["approved"], "pat");
}

#[tokio::test]
async fn twenty_operators_claiming_one_task_at_once_leave_exactly_one_owner() {
    let app = TestApp::spawn().await;
    let job = start(&app, &approval("Race", &[]), &[]).await;
    let task = format!("{job}:m");
    // All twenty wait at a barrier, then claim together; half through each door, both of
    // which hold the task's row while they decide.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut claims = tokio::task::JoinSet::new();
    for i in 0..20 {
        let name = format!("operator{i}");
        let token = app.token(&name, &["operations"], &[]);
        let task = task.clone();
        let http = app.http.clone();
        let url = format!("{}/operations-manager/tasks/{task}/claim", app.http_url);
        let mut client = TaskServiceClient::with_interceptor(app.channel(), Bearer::new(&token));
        let barrier = barrier.clone();
        claims.spawn(async move {
            barrier.wait().await;
            let outcome = if i % 2 == 0 {
                let (status, body) = send(http.post(url).bearer_auth(&token)).await;
                match status {
                    200 => Ok(()),
                    _ => Err((status, body["message"].as_str().unwrap_or("").to_owned())),
                }
            } else {
                match client.claim_task(pb::ClaimTaskRequest { id: task }).await {
                    Ok(_) => Ok(()),
                    Err(status) => Err((
                        match status.code() {
                            tonic::Code::FailedPrecondition => 400,
                            _ => 500,
                        },
                        format!("{status:?}"),
                    )),
                }
            };
            (name, outcome)
        });
    }
    let outcomes = claims.join_all().await;
    let winners: Vec<&String> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = account_id_for_username(winners[0]);
    for (name, outcome) in &outcomes {
        if let Err((status, message)) = outcome {
            assert_eq!(*status, 400, "{name}: {message}");
            assert!(
                message.contains(&format!("is already claimed by {} ({winner})", winners[0])),
                "{name}: {message}"
            );
        }
    }
    let owner: Option<String> =
        sqlx::query_scalar("select owner from job_tasks where job_id = $1 and task_id = 'm'")
            .bind(&job)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(owner.as_deref(), Some(winner.as_str()));
}

#[tokio::test]
async fn assign_and_release_move_a_task_between_people_over_grpc() {
    let app = TestApp::spawn().await;
    let first = start(&app, &approval("Hand over", &[]), &[]).await;
    let second = start(&app, &approval("Hand over", &[]), &[]).await;
    let lead = app.token("lee", &["engineering"], &[]);
    let pat = app.token("pat", &["operations"], &[]);
    let sam = app.token("sam", &["operations"], &[]);
    let reader = app.token("rae", &["apiread"], &[]);
    let sam_id = account_id_for_username("sam");
    let task = format!("{first}:m");

    // Readers list and read; pages hold page_size tasks and say how many there are.
    let page = tasks_as(&app, &reader)
        .list_tasks(pb::ListTasksRequest {
            page_size: 1,
            status: pb::TaskStatus::Scheduled as i32,
            r#type: "manual".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.tasks.len(), page.total), (1, 2));
    assert!(!page.next_page_token.is_empty());
    let rest = tasks_as(&app, &reader)
        .list_tasks(pb::ListTasksRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            status: pb::TaskStatus::Scheduled as i32,
            r#type: "manual".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.tasks.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let mut seen = vec![page.tasks[0].job_id.clone(), rest.tasks[0].job_id.clone()];
    seen.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    let only_second = tasks_as(&app, &reader)
        .list_tasks(pb::ListTasksRequest {
            job_id: second.clone(),
            r#type: "manual".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_second.total, 1);
    assert_eq!(only_second.tasks[0].id, format!("{second}:m"));

    // Readers may not claim.
    let denied = tasks_as(&app, &reader)
        .claim_task(pb::ClaimTaskRequest { id: task.clone() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The lead assigns the task to sam: sam owns it, assigned by the lead.
    let assigned = tasks_as(&app, &lead)
        .assign_task(pb::AssignTaskRequest {
            id: task.clone(),
            user_id: sam_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(assigned.owner, sam_id);
    assert_eq!(
        assigned.owner_username, "",
        "an assignment names an account only"
    );
    assert_eq!(assigned.owner_assigned_by, account_id_for_username("lee"));
    assert!(assigned.owner_assigned_at.is_some());
    let read = tasks_as(&app, &reader)
        .get_task(pb::GetTaskRequest { id: task.clone() })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(read.owner, sam_id);
    assert_eq!(read.status, pb::TaskStatus::Scheduled as i32);
    assert_eq!(read.r#type, "manual");
    assert_eq!(from_struct(read.incoming.as_ref().unwrap())["body"], "r1");

    // Only sam may release it or finish it.
    let refused = tasks_as(&app, &pat)
        .release_task(pb::ReleaseTaskRequest { id: task.clone() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains(&sam_id), "{refused:?}");
    let refused = app
        .jobs_as(&pat)
        .finish_task(pb::FinishTaskRequest {
            job_id: first.clone(),
            task_id: "m".into(),
            finish_state: "success".into(),
            variables: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let released = tasks_as(&app, &sam)
        .release_task(pb::ReleaseTaskRequest { id: task.clone() })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(released.owner, "");
    let unowned = tasks_as(&app, &reader)
        .list_tasks(pb::ListTasksRequest {
            status: pb::TaskStatus::Scheduled as i32,
            r#type: "manual".into(),
            unowned: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unowned.total, 2, "both waiting tasks are unowned again");
    let sams = tasks_as(&app, &reader)
        .list_tasks(pb::ListTasksRequest {
            owner: sam_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sams.total, 0);
    let twice = tasks_as(&app, &sam)
        .release_task(pb::ReleaseTaskRequest { id: task.clone() })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");

    // Unclaimed, anyone allowed finishes it, as before ownership existed.
    app.jobs_as(&pat)
        .finish_task(pb::FinishTaskRequest {
            job_id: first.clone(),
            task_id: "m".into(),
            finish_state: "success".into(),
            variables: Some(to_struct(&json!({"approved": "pat"}))),
        })
        .await
        .unwrap();
    task_when(&app, &task, |t| t["status"] == "complete").await;
    // A finished task is no one's to claim.
    let late = tasks_as(&app, &pat)
        .claim_task(pb::ClaimTaskRequest { id: task.clone() })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
    assert!(
        late.message().contains("not waiting for a person"),
        "{late:?}"
    );

    // What a manual task shows, over gRPC.
    let shown = tasks_as(&app, &reader)
        .get_manual_controller(pb::GetManualControllerRequest {
            job_id: second.clone(),
            task_id: "m".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let shown_task = shown.task.unwrap();
    assert_eq!(
        from_struct(shown_task.incoming.as_ref().unwrap())["variables"],
        json!({"vlan": 7})
    );
    assert_eq!(shown_task.finish_states, ["success"]);
    assert_eq!(
        from_struct(shown.collects.as_ref().unwrap()),
        json!({"approved": "$var.job.approved"})
    );
}

#[tokio::test]
async fn task_groups_limit_who_works_a_task_and_job_groups_who_sees_it() {
    let app = TestApp::spawn().await;
    let job = start(&app, &approval("For group A", &[GROUP_A]), &[]).await;
    let task = format!("{job}:m");
    let outsider = app.token("olly", &["operations"], &[GROUP_B]);
    let member = app.token("mia", &["operations"], &[GROUP_A]);

    // The job has no groups: everybody sees the task, with its groups.
    let (status, seen) = get_as(
        &app,
        &outsider,
        &format!("/operations-manager/tasks/{task}"),
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["data"]["groups"], json!([GROUP_A]));
    // Only a member of the task's groups may claim or finish it.
    let claim = format!("/operations-manager/tasks/{task}/claim");
    let (status, refused) = post_as(&app, &outsider, &claim, &Value::Null).await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains(GROUP_A));
    let finish = format!("/operations-manager/jobs/{job}/tasks/m/finish");
    let (status, refused) =
        post_as(&app, &outsider, &finish, &finish_body("success", json!({}))).await;
    assert_eq!(status, 403, "{refused}");
    let (status, claimed) = post_as(&app, &member, &claim, &Value::Null).await;
    assert_eq!(status, 200, "{claimed}");
    let (status, done) = post_as(&app, &member, &finish, &finish_body("success", json!({}))).await;
    assert_eq!(status, 200, "{done}");

    // A job of group A: its tasks are hidden from others, as the job is.
    let hidden = start(&app, &approval("Job of group A", &[]), &[GROUP_A]).await;
    let hidden_task = format!("{hidden}:m");
    let (_, list) = get_as(
        &app,
        &outsider,
        "/operations-manager/tasks?equals[type]=manual&equals[status]=scheduled",
    )
    .await;
    assert_eq!(list["metadata"]["total"], 0, "{list}");
    let (_, list) = get_as(
        &app,
        &member,
        "/operations-manager/tasks?equals[type]=manual&equals[status]=scheduled",
    )
    .await;
    assert_eq!(list["metadata"]["total"], 1, "{list}");
    for (status, body) in [
        get_as(
            &app,
            &outsider,
            &format!("/operations-manager/tasks/{hidden_task}"),
        )
        .await,
        post_as(
            &app,
            &outsider,
            &format!("/operations-manager/tasks/{hidden_task}/claim"),
            &Value::Null,
        )
        .await,
        get_as(
            &app,
            &outsider,
            &format!("/operations-manager/jobs/{hidden}/tasks/m/manual-controller"),
        )
        .await,
    ] {
        assert_eq!(status, 404, "{body}");
    }
}

#[tokio::test]
async fn ownership_ends_when_the_run_moves_on() {
    let app = TestApp::spawn().await;
    let pat = app.token("pat", &["operations"], &[]);
    let owner_of = |job: String| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "select owner from job_tasks where job_id = $1 and task_id = 'm'",
            )
            .bind(job)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };

    // Canceled with its job.
    let job = start(&app, &approval("Moves on", &[]), &[]).await;
    let (status, body) = post_as(
        &app,
        &pat,
        &format!("/operations-manager/tasks/{job}:m/claim"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_as(
        &app,
        &pat,
        "/operations-manager/jobs/cancel",
        &json!({"jobIds": [job]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let canceled = task_when(&app, &format!("{job}:m"), |t| t["status"] == "canceled").await;
    assert_eq!(canceled["owner"], Value::Null);
    assert_eq!(owner_of(job.clone()).await, None);

    // Run again (a revert schedules it anew: a new iteration, a new start) while owned.
    let job = start(&app, &approval("Moves on", &[]), &[]).await;
    let (status, _) = post_as(
        &app,
        &pat,
        &format!("/operations-manager/tasks/{job}:m/claim"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    sqlx::query(
        "update job_tasks set iteration = iteration + 1, start_time = now()
         where job_id = $1 and task_id = 'm'",
    )
    .bind(&job)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(owner_of(job.clone()).await, None);
    // Whatever else is written on the row keeps the owner (the engine's own writes).
    let (status, _) = post_as(
        &app,
        &pat,
        &format!("/operations-manager/tasks/{job}:m/claim"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    sqlx::query("update job_tasks set ready_at = now() where job_id = $1 and task_id = 'm'")
        .bind(&job)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        owner_of(job.clone()).await,
        Some(account_id_for_username("pat"))
    );
}

#[tokio::test]
async fn bad_input_to_the_task_calls_is_named() {
    let app = TestApp::spawn().await;
    let job = start(&app, &approval("Named", &[]), &[]).await;
    let pat = app.token("pat", &["operations"], &[]);

    for (path, field) in [
        (
            "/operations-manager/tasks?equals[status]=waiting",
            "equals[status]",
        ),
        (
            "/operations-manager/tasks?equals[type]=human",
            "equals[type]",
        ),
        ("/operations-manager/tasks?equals[job]=nope", "equals[job]"),
        (
            "/operations-manager/tasks?equals[colour]=red",
            "equals[colour]",
        ),
        ("/operations-manager/tasks?limit=1001", "limit"),
        ("/operations-manager/tasks?sort=colour", "sort"),
        ("/operations-manager/tasks/nope", "taskId"),
        (
            "/operations-manager/tasks/0123456789abcdef01234567",
            "taskId",
        ),
        (
            "/operations-manager/jobs/NOPE/tasks/m/manual-controller",
            "jobId",
        ),
    ] {
        let (status, body) = get_as(&app, &pat, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_fields(&body), [field], "{path}: {body}");
    }
    let assign = format!("/operations-manager/tasks/{job}:m/assign");
    for (body, field) in [
        (json!({}), "userId"),
        (json!({"userId": ""}), "userId"),
        (json!({"userId": 7}), "userId"),
        (json!({"userId": "x", "why": "y"}), "why"),
    ] {
        let (status, answer) = post_as(&app, &pat, &assign, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error_fields(&answer), [field], "{body}: {answer}");
    }
    let (status, body) = post_as(
        &app,
        &pat,
        "/operations-manager/tasks/x:m/claim",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_fields(&body), ["taskId"]);

    // Tasks that are not there, or not manual.
    let (status, body) = get_as(&app, &pat, &format!("/operations-manager/tasks/{job}:nope")).await;
    assert_eq!(status, 404, "{body}");
    // workflow_end runs once the manual task is finished: it is not manual.
    let (status, body) = post_as(
        &app,
        &pat,
        &format!("/operations-manager/jobs/{job}/tasks/m/finish"),
        &finish_body("success", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let end = task_when(&app, &format!("{job}:workflow_end"), |t| {
        t["status"] == "complete"
    })
    .await;
    assert_eq!(end["type"], "operation");
    let (status, body) = get_as(
        &app,
        &pat,
        &format!("/operations-manager/jobs/{job}/tasks/workflow_end/manual-controller"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is not a manual task"),
        "{body}"
    );
    let (status, body) = post_as(
        &app,
        &pat,
        &format!("/operations-manager/tasks/{job}:workflow_end/claim"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is not a manual task"),
        "{body}"
    );

    // gRPC names the fields by their proto names.
    let mut tasks = tasks_as(&app, &pat);
    let status = tasks
        .get_task(pb::GetTaskRequest { id: "m".into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["id"]);
    let status = tasks
        .assign_task(pb::AssignTaskRequest {
            id: format!("{job}:m"),
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["user_id"]);
    let status = tasks
        .list_tasks(pb::ListTasksRequest {
            status: 99,
            r#type: "human".into(),
            job_id: "nope".into(),
            owner: "x".into(),
            unowned: true,
            page_size: -1,
            page_token: "forged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "status",
            "type",
            "job_id",
            "unowned",
            "page_size",
            "page_token"
        ]
    );
    let status = tasks
        .get_manual_controller(pb::GetManualControllerRequest {
            job_id: "nope".into(),
            task_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["job_id", "task_id"]);
}

#[tokio::test]
async fn a_page_of_tasks_is_bounded_and_health_knows_the_task_service() {
    let app = TestApp::spawn().await;
    let workflow = approval("Paged", &[]);
    for _ in 0..3 {
        start(&app, &workflow, &[]).await;
    }
    let (status, page) = app
        .get("/operations-manager/tasks?equals[type]=manual&limit=2&sort=start_time&order=asc")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["metadata"]["total"], 3);
    assert_eq!(page["metadata"]["nextPageSkip"], 2);
    let (_, last) = app
        .get("/operations-manager/tasks?equals[type]=manual&limit=2&skip=2&sort=start_time&order=asc")
        .await;
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert_eq!(last["metadata"]["nextPageSkip"], Value::Null);
    let mut ids: Vec<Value> = page["data"].as_array().unwrap().to_vec();
    ids.extend(last["data"].as_array().unwrap().iter().cloned());
    let distinct: std::collections::HashSet<String> = ids
        .iter()
        .map(|t| t["_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(distinct.len(), 3);

    // Health reports the new service.
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "operations_manager.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
