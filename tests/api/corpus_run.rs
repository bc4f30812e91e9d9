//! The corpus, end to end: every one of the 180 real workflow exports runs as a job to an end,
//! with a scripted worker answering every adapter and transformation task and a driver that
//! finishes manual tasks, as operators would. A few jobs are checked step by step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use job_service::domain::run::{FinishState, TaskResult};
use job_service::grpc::pb;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::corpus::{corpus, sample};
use crate::engine::{operator, worker};
use crate::helpers::{to_struct, TestApp};

/// The app of the placeholder workflows started in place of child workflows the corpus does
/// not hold.
const PLACEHOLDER_APP: &str = "ChildWorkflow";

/// Names of the corpus's workflows, `@project: name` as Itential names a project's workflows;
/// childJob tasks point at the same project's workflow by name (their `@<project id>: ` prefix
/// is that of the project they were exported from). Delays are cut to nothing, so the run
/// takes seconds, not minutes.
fn prepared() -> (Vec<(String, Value)>, BTreeSet<String>) {
    let files = corpus();
    let mut by_project: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (project, _, document) in &files {
        by_project
            .entry(project.clone())
            .or_default()
            .insert(document["name"].as_str().unwrap().to_owned());
    }
    let mut missing = BTreeSet::new();
    let mut out = Vec::new();
    for (project, file, mut document) in files {
        let name = format!("@{project}: {}", document["name"].as_str().unwrap());
        document["name"] = json!(name);
        for task in document["tasks"].as_object_mut().unwrap().values_mut() {
            let kind = task["name"].as_str().unwrap_or_default().to_owned();
            let incoming = &mut task["variables"]["incoming"];
            match kind.as_str() {
                "childJob" => {
                    let target = incoming["workflow"].as_str().unwrap_or_default().to_owned();
                    let bare = match target.split_once(": ") {
                        Some((prefix, rest)) if prefix.starts_with('@') => rest,
                        _ => target.as_str(),
                    };
                    let resolved = if by_project[&project].contains(bare) {
                        format!("@{project}: {bare}")
                    } else {
                        if !target.is_empty() {
                            missing.insert(target.clone());
                        }
                        target.clone()
                    };
                    incoming["workflow"] = json!(resolved);
                }
                "delay" => incoming["time"] = json!(0),
                _ => {}
            }
        }
        out.push((format!("{project}/{file}"), document));
    }
    (out, missing)
}

/// A workflow standing in for a child workflow the corpus lacks: one task a worker runs.
fn placeholder(name: &str) -> Value {
    json!({
        "name": name, "type": "automation", "groups": [], "inputSchema": {"type": "object"},
        "tasks": {
            "workflow_start": {"name": "workflow_start", "groups": []},
            "workflow_end": {"name": "workflow_end", "groups": []},
            "run": {"name": "run", "app": PLACEHOLDER_APP, "type": "automatic",
                    "variables": {"incoming": {}, "outgoing": {"result": null}}},
        },
        "transitions": {
            "workflow_start": {"run": {"state": "success", "type": "standard"}},
            "run": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {},
        },
    })
}

/// What the scripted worker answers a task with: success, and a value for each of the task's
/// outgoing variables (an object with a result, as adapters answer).
fn answer(outgoing_spec: Option<&Map<String, Value>>) -> TaskResult {
    let outgoing = outgoing_spec
        .into_iter()
        .flatten()
        .map(|(key, _)| (key.clone(), json!({"result": "ok", "status": "success"})))
        .collect();
    TaskResult {
        finish_state: FinishState::Success,
        outgoing,
        error_message: String::new(),
    }
}

#[tokio::test]
async fn every_corpus_workflow_runs_to_an_end() {
    let app = TestApp::spawn_with(|config| {
        config.engine_sweep = "100ms".parse().unwrap();
    })
    .await;
    let (workflows, missing) = prepared();
    assert_eq!(workflows.len(), 180);
    let mut documents: HashMap<String, Value> = HashMap::new();
    for name in &missing {
        let document = placeholder(name);
        app.create_workflow(&document).await;
        documents.insert(name.clone(), document);
    }
    let mut apps: BTreeSet<String> = BTreeSet::from([PLACEHOLDER_APP.to_owned()]);
    for (_, document) in &workflows {
        app.create_workflow(document).await;
        documents.insert(
            document["name"].as_str().unwrap().to_owned(),
            document.clone(),
        );
        for task in document["tasks"].as_object().unwrap().values() {
            if let Some(name) = task["app"].as_str() {
                apps.insert(name.to_owned());
            }
        }
    }
    let documents = Arc::new(documents);

    // The worker: serves every app, answering each task after the workflow its job runs.
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "corpus".into(), apps.into_iter().collect(), 64)
        .await
        .unwrap();
    let answered = Arc::new(Mutex::new(0usize));
    let worker_loop = {
        let engine = app.engine.clone();
        let db = app.db.clone();
        let documents = documents.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut workflow_of: HashMap<String, String> = HashMap::new();
            while let Some(Ok(task)) = tasks.recv().await {
                if !workflow_of.contains_key(&task.job_id) {
                    let name: String =
                        sqlx::query_scalar("select workflow_name from jobs where id = $1")
                            .bind(&task.job_id)
                            .fetch_one(&db)
                            .await
                            .unwrap();
                    workflow_of.insert(task.job_id.clone(), name);
                }
                let spec = documents[&workflow_of[&task.job_id]]["tasks"][&task.task_id]
                    ["variables"]["outgoing"]
                    .as_object();
                let result = answer(spec);
                let (engine, answered) = (engine.clone(), answered.clone());
                // Answered concurrently, as a worker with many slots does.
                tokio::spawn(async move {
                    let _ = engine
                        .complete_task(&worker(), &task.task_token, result)
                        .await;
                    *answered.lock().await += 1;
                });
            }
        })
    };

    let mut roots = BTreeMap::new();
    for (what, document) in &workflows {
        let name = document["name"].as_str().unwrap();
        let job = app
            .jobs
            .clone()
            .start_job(pb::StartJobRequest {
                workflow: name.to_owned(),
                options: Some(pb::JobOptions {
                    variables: Some(to_struct(&sample(&document["inputSchema"]))),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|status| panic!("{what} does not start: {status:?}"))
            .into_inner()
            .job
            .unwrap();
        roots.insert(job.id, what.clone());
    }

    // The operators: finish every manual task waiting, until no job runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut finished_by_hand = 0;
    loop {
        let waiting: Vec<(String, String)> = sqlx::query_as(
            "select t.job_id, t.task_id from job_tasks t join jobs j on j.id = t.job_id
             where t.status = 'scheduled' and t.runner = 'manual' and j.status = 'running'",
        )
        .fetch_all(&app.db)
        .await
        .unwrap();
        for (job_id, task_id) in waiting {
            let done = app
                .engine
                .finish_task(
                    &operator(),
                    &job_id,
                    &task_id,
                    TaskResult {
                        finish_state: FinishState::Success,
                        outgoing: Map::new(),
                        error_message: String::new(),
                    },
                )
                .await;
            if done.is_ok() {
                finished_by_hand += 1;
            }
        }
        let running: i64 =
            sqlx::query_scalar("select count(*) from jobs where status in ('running', 'paused')")
                .fetch_one(&app.db)
                .await
                .unwrap();
        if running == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let stuck: Vec<(String, String, Value)> = sqlx::query_as(
                "select j.id, j.workflow_name, coalesce(jsonb_agg(jsonb_build_object(
                     'task', t.task_id, 'status', t.status, 'runner', t.runner, 'app', t.app))
                     filter (where t.status in ('scheduled', 'running')), '[]')
                 from jobs j left join job_tasks t on t.job_id = j.id
                 where j.status in ('running', 'paused') group by j.id, j.workflow_name",
            )
            .fetch_all(&app.db)
            .await
            .unwrap();
            panic!("{} jobs never ended: {stuck:#?}", stuck.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker_loop.abort();

    let ended: Vec<(String, String, Value)> = sqlx::query_as(
        "select id, status, coalesce(document->'error', '[]') from jobs where id = any($1)",
    )
    .bind(roots.keys().cloned().collect::<Vec<_>>())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(ended.len(), 180);
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, status, errors) in &ended {
        *by_status.entry(status.clone()).or_default() += 1;
        assert!(
            matches!(status.as_str(), "complete" | "error"),
            "a job ended {status}"
        );
        if status == "error" {
            let message = match &errors[0]["message"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let reason: String = message.chars().take(90).collect();
            *reasons.entry(reason).or_default() += 1;
        }
    }
    let children: i64 = sqlx::query_scalar(
        "select count(*) from jobs where document->'parent'->>'job' is not null",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    println!(
        "corpus run: {} jobs: {by_status:?}; {children} child jobs; {} worker tasks answered; {finished_by_hand} manual tasks finished",
        ended.len(),
        *answered.lock().await
    );
    for (reason, count) in &reasons {
        println!("  {count:3} ended in error: {reason}");
    }
    let transformations: i64 = sqlx::query_scalar(
        "select count(*) from job_tasks
         where name = 'transformation' and runner = 'worker' and status = 'complete'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    println!("  {transformations} transformation tasks were answered by the worker");
    assert!(
        transformations > 0,
        "transformations are offered to workers"
    );
    let internal: i64 = sqlx::query_scalar(
        "select count(*) from jobs where document::text like '%internal error%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(internal, 0, "no job records an internal error");
}

/// gitlab/update-project-variables.json, step by step: the project is looked up, its id
/// queried out of the answer, and a forEach loop puts each variable (a query of the current
/// item's key, one of its value, the adapter call); the put that fails takes its pass to a
/// manual task showing the error, and the loop goes on to the end of the workflow.
#[tokio::test]
async fn the_corpus_gitlab_variables_loop_takes_the_path_itential_would() {
    let app = TestApp::spawn().await;
    let document = crate::helpers::corpus_workflow("gitlab", "update-project-variables.json");
    app.create_workflow(&document).await;
    let mut tasks = app
        .engine
        .poll_tasks(&worker(), "w1".into(), vec!["Gitlab".into()], 4)
        .await
        .unwrap();
    let variables = json!({"projectPath": "net/app", "adapterId": "GitLab",
        "variablesArray": [{"key": "REGION", "value": "eu"}, {"key": "TIER", "value": "gold"}]});
    let job = app
        .start_job("Update Project Variables", variables)
        .await
        .unwrap();
    let done = |outgoing: Value| TaskResult {
        finish_state: FinishState::Success,
        outgoing: outgoing.as_object().cloned().unwrap(),
        error_message: String::new(),
    };

    let lookup = crate::engine::next_task(&mut tasks).await;
    assert_eq!(
        (lookup.task_id.as_str(), lookup.name.as_str()),
        ("e65f", "getV4ProjectsId")
    );
    assert_eq!(
        Value::Object(lookup.incoming.clone()),
        json!({"adapter_id": "GitLab", "id": "net/app"})
    );
    app.engine
        .complete_task(
            &worker(),
            &lookup.task_token,
            done(json!({"result": {"response": {"id": 42}}})),
        )
        .await
        .unwrap();

    // First pass: the query tasks took the item apart; the put gets them.
    let put = crate::engine::next_task(&mut tasks).await;
    assert_eq!(put.task_id, "89ca");
    assert_eq!(
        Value::Object(put.incoming.clone()),
        json!({"adapter_id": "GitLab", "body": {"key": "REGION", "value": "eu"}, "id": 42, "key": "REGION"})
    );
    app.engine
        .complete_task(&worker(), &put.task_token, done(json!({"result": {}})))
        .await
        .unwrap();
    // Second pass: the put fails; its error goes to the job variable and the manual task.
    let put = crate::engine::next_task(&mut tasks).await;
    assert_eq!(put.incoming["key"], "TIER");
    app.engine
        .complete_task(
            &worker(),
            &put.task_token,
            TaskResult {
                finish_state: FinishState::Error,
                outgoing: Map::new(),
                error_message: "variable TIER is protected".into(),
            },
        )
        .await
        .unwrap();
    let waiting = crate::engine::job_when(&app, &job.id, |job| {
        job["tasks"]["998c"]["status"] == "scheduled"
    })
    .await;
    assert_eq!(
        waiting["variables"]["gitlabError"],
        "variable TIER is protected"
    );
    assert_eq!(
        waiting["tasks"]["9d94"]["status"], "running",
        "the loop waits for its pass"
    );
    assert_eq!(
        waiting["tasks"]["998c"]["variables"]["incoming"]["body"],
        "variable TIER is protected"
    );
    app.engine
        .finish_task(&operator(), &job.id, "998c", done(json!({})))
        .await
        .unwrap();
    let ended = crate::engine::job_when(&app, &job.id, |job| job["status"] != "running").await;
    assert_eq!(ended["status"], "complete", "{ended}");
    assert_eq!(ended["tasks"]["9d94"]["finish_state"], "success");
    assert_eq!(
        ended["tasks"]["6b73"]["status"], "incomplete",
        "the lookup's error path was not taken"
    );
}

/// alkira/create-security-group-with-ingress-rules.json, step by step: the group is created,
/// its id queried out of the answer into a job variable, the rules transformed (a worker runs
/// the JST), and a sequential child-job loop adds each rule through the workflow
/// `Add Ingress Rule to Security Group - AWS` (which the exports lack: a stand-in with one
/// adapter task), one child after the other; the loop's `job_details` collects the children's
/// variables and the job completes.
#[tokio::test]
async fn the_corpus_security_group_child_loop_takes_the_path_itential_would() {
    let app = TestApp::spawn().await;
    let mut child = placeholder("Add Ingress Rule to Security Group - AWS");
    child["tasks"]["run"] = json!({"name": "authorizeSecurityGroupIngress", "app": "Awsec2",
        "type": "automatic",
        "variables": {"incoming": {"groupId": "$var.job.groupId", "port": "$var.job.port"},
                      "outgoing": {"result": "$var.job.added"}}});
    app.create_workflow(&child).await;
    let document =
        crate::helpers::corpus_workflow("alkira", "create-security-group-with-ingress-rules.json");
    app.create_workflow(&document).await;
    let mut tasks = app
        .engine
        .poll_tasks(
            &worker(),
            "w1".into(),
            vec!["Awsec2".into(), "WorkFlowEngine".into()],
            4,
        )
        .await
        .unwrap();
    let job = app
        .start_job(
            document["name"].as_str().unwrap(),
            json!({"adapterId": "AWS", "ruleList": [], "securityGroupDescription": "web",
                   "securityGroupName": "web", "vpcId": "vpc-1"}),
        )
        .await
        .unwrap();
    let done = |outgoing: Value| TaskResult {
        finish_state: FinishState::Success,
        outgoing: outgoing.as_object().cloned().unwrap(),
        error_message: String::new(),
    };

    let create = crate::engine::next_task(&mut tasks).await;
    assert_eq!(create.task_id, "e62f");
    assert_eq!(create.incoming["groupName"], "web");
    app.engine
        .complete_task(
            &worker(),
            &create.task_token,
            done(json!({"result": {"response": {"CreateSecurityGroupResponse": {"groupId": "sg-7"}}}})),
        )
        .await
        .unwrap();
    // The query took the id out; the transformation is a worker's.
    let transform = crate::engine::next_task(&mut tasks).await;
    assert_eq!(
        (transform.task_id.as_str(), transform.name.as_str()),
        ("12c9", "transformation")
    );
    app.engine
        .complete_task(
            &worker(),
            &transform.task_token,
            done(json!({"ruleList": [{"groupId": "sg-7", "port": 443}, {"groupId": "sg-7", "port": 80}]})),
        )
        .await
        .unwrap();

    // One child at a time, each with its element's variables.
    let mut children = Vec::new();
    for port in [443, 80] {
        let rule = crate::engine::next_task(&mut tasks).await;
        assert_eq!(rule.name, "authorizeSecurityGroupIngress");
        assert_eq!(rule.incoming["port"], port);
        assert_eq!(rule.incoming["groupId"], "sg-7");
        let waiting = crate::engine::job_when(&app, &job.id, |_| true).await;
        assert_eq!(
            waiting["tasks"]["c96d"]["childJobs"]
                .as_array()
                .unwrap()
                .len(),
            children.len() + 1,
            "the next child starts only when the one before it ended"
        );
        children.push(rule.job_id.clone());
        app.engine
            .complete_task(
                &worker(),
                &rule.task_token,
                done(json!({"result": format!("port {port} open")})),
            )
            .await
            .unwrap();
    }
    let ended = crate::engine::job_when(&app, &job.id, |job| job["status"] != "running").await;
    assert_eq!(ended["status"], "complete", "{ended}");
    assert_eq!(ended["variables"]["securityGroupId"], "sg-7");
    let details = &ended["tasks"]["c96d"]["variables"]["outgoing"]["job_details"]["loop"];
    assert_eq!(details[0]["_id"], children[0].as_str());
    assert_eq!(details[0]["added"], "port 443 open");
    assert_eq!(details[1]["added"], "port 80 open");
}
