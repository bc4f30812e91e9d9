//! The calls that run and steer jobs (WorkerService; CancelJobs, PauseJobs, ResumeJobs,
//! FinishTask, RetryTask and WatchJob; their REST routes): everything decided before the
//! engine acts on a request. Tokens, roles and every bad field are refused with the code and
//! the field named, on both front doors.

use job_service::grpc::{pb, JobServiceClient, WorkerServiceClient};
use serde_json::{json, Value};
use tonic::Code;

use crate::helpers::{send, to_struct, violated_fields, Authed, Bearer, TestApp};

const JOB: &str = "0123456789abcdef01234567";
const OTHER_JOB: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";

fn workers_as(app: &TestApp, token: &str) -> WorkerServiceClient<Authed> {
    WorkerServiceClient::with_interceptor(app.channel(), Bearer::new(token))
}

fn poll(apps: &[&str], max_tasks: u32) -> pb::PollTasksRequest {
    pb::PollTasksRequest {
        worker_id: "worker-1".into(),
        apps: apps.iter().map(|a| a.to_string()).collect(),
        max_tasks,
    }
}

fn complete(task_token: &str, finish_state: &str) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_token: task_token.into(),
        finish_state: finish_state.into(),
        outgoing: Some(to_struct(&json!({"result": "ok"}))),
        error_message: String::new(),
    }
}

fn heartbeat(task_token: &str) -> pb::HeartbeatTaskRequest {
    pb::HeartbeatTaskRequest {
        task_token: task_token.into(),
    }
}

fn finish(job_id: &str, task_id: &str, finish_state: &str) -> pb::FinishTaskRequest {
    pb::FinishTaskRequest {
        job_id: job_id.into(),
        task_id: task_id.into(),
        finish_state: finish_state.into(),
        variables: Some(to_struct(&json!({"approved": true}))),
    }
}

fn retry(job_id: &str, task_id: &str, variables: Value) -> pb::RetryTaskRequest {
    pb::RetryTaskRequest {
        job_id: job_id.into(),
        task_id: task_id.into(),
        variables: Some(to_struct(&variables)),
    }
}

fn watch(job_id: &str) -> pb::WatchJobRequest {
    pb::WatchJobRequest {
        job_id: job_id.into(),
        after_sequence: 0,
    }
}

fn ids(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{i:024x}")).collect()
}

/// The status of a CancelJobs, PauseJobs or ResumeJobs call (`which`) with these ids.
async fn control(
    jobs: &mut JobServiceClient<Authed>,
    which: &str,
    job_ids: Vec<String>,
) -> tonic::Status {
    let answer = match which {
        "cancel" => jobs
            .cancel_jobs(pb::CancelJobsRequest { job_ids })
            .await
            .map(drop),
        "pause" => jobs
            .pause_jobs(pb::PauseJobsRequest { job_ids })
            .await
            .map(drop),
        "resume" => jobs
            .resume_jobs(pb::ResumeJobsRequest { job_ids })
            .await
            .map(drop),
        other => panic!("no such call {other}"),
    };
    answer.expect_err("refused before the engine acts")
}

/// The status of a PollTasks call that is refused before any task is sent.
async fn refused_poll(
    workers: &mut WorkerServiceClient<Authed>,
    request: pb::PollTasksRequest,
) -> tonic::Status {
    workers
        .poll_tasks(request)
        .await
        .map(drop)
        .expect_err("refused before the stream opens")
}

/// The status of a WatchJob call that is refused before any event is sent.
async fn refused_watch(jobs: &mut JobServiceClient<Authed>, job_id: &str) -> tonic::Status {
    jobs.watch_job(watch(job_id))
        .await
        .map(drop)
        .expect_err("refused before the stream opens")
}

/// POST `body` to `path` with `token` (none: no Authorization header): status and JSON body.
async fn post_as(app: &TestApp, token: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
    let mut request = app.http.post(format!("{}{path}", app.http_url)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

/// The fields an error answer of the gateway names.
fn error_fields(body: &Value) -> Vec<String> {
    body["metadata"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no metadata.errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

fn finish_path(job_id: &str, task_id: &str) -> String {
    format!("/operations-manager/jobs/{job_id}/tasks/{task_id}/finish")
}

fn retry_path(job_id: &str, task_id: &str) -> String {
    format!("/operations-manager/jobs/{job_id}/tasks/{task_id}/retry")
}

#[tokio::test]
async fn the_engine_calls_need_a_token_on_both_front_doors() {
    let app = TestApp::spawn().await;
    let mut workers = WorkerServiceClient::new(app.channel());
    let mut jobs = JobServiceClient::new(app.channel());
    let statuses = [
        workers.poll_tasks(poll(&["A"], 1)).await.map(drop),
        workers.heartbeat_task(heartbeat("t")).await.map(drop),
        workers
            .complete_task(complete("t", "success"))
            .await
            .map(drop),
        jobs.cancel_jobs(pb::CancelJobsRequest {
            job_ids: vec![JOB.into()],
        })
        .await
        .map(drop),
        jobs.finish_task(finish(JOB, "1a2b", "success"))
            .await
            .map(drop),
        jobs.retry_task(retry(JOB, "1a2b", json!({})))
            .await
            .map(drop),
        jobs.watch_job(watch(JOB)).await.map(drop),
    ];
    for status in statuses {
        let status = status.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    let ids = json!({"jobIds": [JOB]});
    for (path, body) in [
        ("/operations-manager/jobs/cancel".to_owned(), ids.clone()),
        ("/operations-manager/jobs/pause".to_owned(), ids.clone()),
        ("/operations-manager/jobs/resume".to_owned(), ids),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": {"finish_state": "success"}}),
        ),
        (retry_path(JOB, "1a2b"), json!({"variables": {}})),
    ] {
        let (status, reply) = post_as(&app, None, &path, &body).await;
        assert_eq!(status, 401, "{path}: {reply}");
        assert_eq!(reply["data"], Value::Null);
    }
}

#[tokio::test]
async fn the_worker_role_runs_tasks_and_nothing_else() {
    let app = TestApp::spawn().await;
    let worker = app.token("worker", &["worker"], &[]);
    let mut jobs = app.jobs_as(&worker);
    let denied = jobs
        .start_job(pb::StartJobRequest {
            workflow: "W".into(),
            options: Some(pb::JobOptions::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = jobs
        .get_job(pb::GetJobRequest { id: JOB.into() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = refused_watch(&mut jobs, JOB).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = control(&mut jobs, "cancel", vec![JOB.into()]).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = jobs
        .finish_task(finish(JOB, "1a2b", "success"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let (status, reply) = post_as(
        &app,
        Some(&worker),
        &retry_path(JOB, "1a2b"),
        &json!({"variables": {}}),
    )
    .await;
    assert_eq!(status, 403, "{reply}");

    // Only `worker` and `admin` run tasks: every other role is refused, whatever its rights on
    // jobs.
    for role in ["operations", "engineering", "apiread", "superuser"] {
        let token = app.token(role, &[role], &[]);
        let mut workers = workers_as(&app, &token);
        let denied = refused_poll(&mut workers, poll(&["Panorama"], 1)).await;
        assert_eq!(denied.code(), Code::PermissionDenied, "{role}: {denied:?}");
        assert!(
            denied.message().contains("run tasks as a worker"),
            "{}",
            denied.message()
        );
        let denied = workers.heartbeat_task(heartbeat("t")).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{role}: {denied:?}");
        let denied = workers
            .complete_task(complete("t", "success"))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{role}: {denied:?}");
    }
}

#[tokio::test]
async fn apiread_may_watch_but_not_control_jobs() {
    let app = TestApp::spawn().await;
    let reader = app.token("reader", &["apiread"], &[]);
    let mut jobs = app.jobs_as(&reader);
    for which in ["cancel", "pause", "resume"] {
        let denied = control(&mut jobs, which, vec![JOB.into(), OTHER_JOB.into()]).await;
        assert_eq!(denied.code(), Code::PermissionDenied, "{which}: {denied:?}");
        assert!(
            denied.message().contains("control jobs"),
            "{}",
            denied.message()
        );
        let (status, reply) = post_as(
            &app,
            Some(&reader),
            &format!("/operations-manager/jobs/{which}"),
            &json!({"jobIds": [JOB]}),
        )
        .await;
        assert_eq!(status, 403, "{which}: {reply}");
        assert_eq!(reply["data"], Value::Null);
    }
    let denied = jobs
        .finish_task(finish(JOB, "1a2b", "failure"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = jobs
        .retry_task(retry(JOB, "1a2b", json!({"device": "r2"})))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let (status, _) = post_as(
        &app,
        Some(&reader),
        &finish_path(JOB, "1a2b"),
        &json!({"taskData": {"finish_state": "success", "variables": {}}}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post_as(&app, Some(&reader), &retry_path(JOB, "1a2b"), &json!({})).await;
    assert_eq!(status, 403);

    // Unknown roles grant nothing, watching included.
    let stranger = app.token("stranger", &["superuser"], &[]);
    let denied = refused_watch(&mut app.jobs_as(&stranger), JOB).await;
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

#[tokio::test]
async fn lifecycle_calls_take_one_to_a_hundred_distinct_job_ids() {
    let app = TestApp::spawn().await;
    let mut jobs = app.jobs.clone();
    for which in ["cancel", "pause", "resume"] {
        let cases: [(Vec<String>, &[&str]); 4] = [
            (vec![], &["job_ids"]),
            (ids(101), &["job_ids"]),
            (
                vec![JOB.into(), JOB.to_uppercase(), "0123".into()],
                &["job_ids[1]", "job_ids[2]"],
            ),
            (
                vec![JOB.into(), OTHER_JOB.into(), JOB.into()],
                &["job_ids[2]"],
            ),
        ];
        for (job_ids, fields) in cases {
            let status = control(&mut jobs, which, job_ids).await;
            assert_eq!(violated_fields(&status), fields, "{which}");
        }
    }
    let status = control(&mut jobs, "cancel", vec![JOB.into(), "x\0".into()]).await;
    assert_eq!(violated_fields(&status), ["job_ids[1]"]);

    for which in ["cancel", "pause", "resume"] {
        let path = format!("/operations-manager/jobs/{which}");
        let cases: [(Value, &[&str]); 7] = [
            (json!({"jobIds": []}), &["jobIds"]),
            (json!({ "jobIds": ids(101) }), &["jobIds"]),
            (
                json!({"jobIds": [JOB, "nope", JOB]}),
                &["jobIds[1]", "jobIds[2]"],
            ),
            (json!({"jobIds": [JOB, 12]}), &["jobIds[1]"]),
            (json!({"jobIds": JOB}), &["jobIds"]),
            (json!({"jobIds": [JOB], "force": true}), &["force"]),
            (json!({}), &["jobIds"]),
        ];
        for (body, fields) in cases {
            let (status, reply) = app.post(&path, &body).await;
            assert_eq!(status, 400, "{path} {body}: {reply}");
            assert_eq!(error_fields(&reply), fields, "{path} {body}");
        }
    }
    let (status, reply) = app
        .post("/operations-manager/jobs/cancel", &json!([JOB]))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(error_fields(&reply), [""]);
    let (status, reply) = send(
        app.request(reqwest::Method::POST, "/operations-manager/jobs/pause")
            .header("content-type", "application/json")
            .body(r#"{"jobIds": ["#),
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
    let (status, _) = send(
        app.request(reqwest::Method::POST, "/operations-manager/jobs/resume")
            .header("content-type", "text/plain")
            .body(format!(r#"{{"jobIds": ["{JOB}"]}}"#)),
    )
    .await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn finish_and_retry_name_each_bad_field() {
    let app = TestApp::spawn().await;
    let mut jobs = app.jobs.clone();
    let status = jobs
        .finish_task(finish("0123", "", "done"))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["job_id", "task_id", "finish_state"]
    );
    let status = jobs.finish_task(finish(JOB, "1a2b", "")).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["finish_state"]);
    assert!(status.message().contains("success, failure or error"));
    let mut with_nul = finish(JOB, "1a2b", "success");
    with_nul.variables = Some(to_struct(&json!({"note": "a\u{0}b"})));
    let status = jobs.finish_task(with_nul).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["variables.note"]);
    let status = jobs
        .retry_task(retry(&JOB.to_uppercase(), "t\0", json!({})))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["job_id", "task_id"]);

    let finish_cases: [(String, Value, &[&str]); 7] = [
        (
            finish_path("nope", "1a2b"),
            json!({"taskData": {"finish_state": "success"}}),
            &["jobId"],
        ),
        (
            finish_path(JOB, "a%00b"),
            json!({"taskData": {"finish_state": "success"}}),
            &["taskId"],
        ),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": {"finish_state": "complete"}}),
            &["taskData.finish_state"],
        ),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": {"finish_state": "success", "note": 1}}),
            &["taskData.note"],
        ),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": {"variables": []}, "finish_state": "success"}),
            &[
                "finish_state",
                "taskData.finish_state",
                "taskData.variables",
            ],
        ),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": "success"}),
            &["taskData"],
        ),
        (
            finish_path(JOB, "1a2b"),
            json!({"taskData": {"finish_state": "error", "variables": {"k": ["\u{0}"]}}}),
            &["taskData.variables.k[0]"],
        ),
    ];
    for (path, body, fields) in finish_cases {
        let (status, reply) = app.post(&path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert_eq!(error_fields(&reply), fields, "{path} {body}");
    }
    let retry_cases: [(String, Value, &[&str]); 3] = [
        (
            retry_path(JOB, "1a2b"),
            json!({"variables": "x"}),
            &["variables"],
        ),
        (
            retry_path(JOB, "1a2b"),
            json!({"variables": {}, "fromTask": "1a2b"}),
            &["fromTask"],
        ),
        (retry_path("ABC", "1a2b"), json!([]), &["jobId", ""]),
    ];
    for (path, body, fields) in retry_cases {
        let (status, reply) = app.post(&path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert_eq!(error_fields(&reply), fields, "{path} {body}");
    }
}

#[tokio::test]
async fn worker_calls_name_each_bad_field() {
    let app = TestApp::spawn().await;
    let worker = app.token("worker", &["worker"], &[]);
    let mut workers = workers_as(&app, &worker);
    let status = refused_poll(
        &mut workers,
        pb::PollTasksRequest {
            worker_id: String::new(),
            apps: vec![],
            max_tasks: 0,
        },
    )
    .await;
    assert_eq!(violated_fields(&status), ["worker_id", "apps", "max_tasks"]);
    let status = refused_poll(&mut workers, poll(&["Panorama", "", "Panorama"], 1001)).await;
    assert_eq!(
        violated_fields(&status),
        ["apps[1]", "apps[2]", "max_tasks"]
    );
    let status = workers.heartbeat_task(heartbeat("")).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["task_token"]);
    for finish_state in ["", "complete", "Success"] {
        let status = workers
            .complete_task(complete("token", finish_state))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["finish_state"], "{finish_state}");
    }
    let mut bad = complete("", "error");
    bad.error_message = "boom\0".into();
    let status = workers.complete_task(bad).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["task_token", "error_message"]);

    let status = refused_watch(&mut app.jobs.clone(), "not-a-job").await;
    assert_eq!(violated_fields(&status), ["job_id"]);
}

#[tokio::test]
async fn free_form_values_past_the_bounds_are_refused_by_field() {
    let app = TestApp::spawn().await;
    let deep = (0..40).fold(json!(1), |inner, _| json!([inner]));
    let status = app
        .jobs
        .clone()
        .retry_task(retry(JOB, "1a2b", json!({ "x": deep })))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["variables"]);
    assert!(status.message().contains("deeper than 32"), "{status:?}");

    let worker = app.token("worker", &["worker"], &[]);
    let mut many = complete("token", "success");
    many.outgoing = Some(to_struct(&json!({"list": vec![0; 120_000]})));
    let status = workers_as(&app, &worker)
        .complete_task(many)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["outgoing"]);

    let (status, reply) = app
        .post(&retry_path(JOB, "1a2b"), &json!({"variables": {"x": deep}}))
        .await;
    assert_eq!(status, 400, "{reply}");
    let field = &error_fields(&reply)[0];
    assert!(field.starts_with("variables.x[0]"), "{field}");
    let (status, reply) = app
        .post(
            &finish_path(JOB, "1a2b"),
            &json!({"taskData": {"finish_state": "success", "variables": {"list": vec![0; 120_000]}}}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        error_fields(&reply)[0].starts_with("taskData.variables.list["),
        "{reply}"
    );
}

#[tokio::test]
async fn reflection_and_health_know_the_worker_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = TestApp::spawn().await;
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("operations_manager.v1.WorkerService".into()),
        MessageRequest::FileContainingSymbol("operations_manager.v1.JobEvent".into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut responses = ServerReflectionClient::new(app.channel())
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "operations_manager.v1.WorkerService",
        "operations_manager.v1.JobService",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    for (file, service, streaming) in [
        (
            "operations_manager/v1/workers.proto",
            "WorkerService",
            "PollTasks",
        ),
        ("operations_manager/v1/jobs.proto", "JobService", "WatchJob"),
    ] {
        let Some(MessageResponse::FileDescriptorResponse(found)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected {file}");
        };
        let descriptor = <prost_types::FileDescriptorProto as prost::Message>::decode(
            found.file_descriptor_proto[0].as_slice(),
        )
        .unwrap();
        assert_eq!(descriptor.name(), file);
        let service = descriptor
            .service
            .iter()
            .find(|s| s.name() == service)
            .unwrap();
        let streams: Vec<_> = service
            .method
            .iter()
            .filter(|m| m.server_streaming())
            .map(|m| m.name())
            .collect();
        assert_eq!(streams, [streaming], "{file}");
    }

    let health = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "operations_manager.v1.WorkerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn the_document_describes_the_new_routes_and_their_bodies() {
    let app = TestApp::spawn().await;
    let (status, document) = send(app.http.get(format!("{}/openapi.json", app.http_url))).await;
    assert_eq!(status, 200);
    for (path, operation_id, body) in [
        (
            "/operations-manager/jobs/cancel",
            "cancelJobs",
            "JobIdsBody",
        ),
        ("/operations-manager/jobs/pause", "pauseJobs", "JobIdsBody"),
        (
            "/operations-manager/jobs/resume",
            "resumeJobs",
            "JobIdsBody",
        ),
        (
            "/operations-manager/jobs/{jobId}/tasks/{taskId}/finish",
            "finishTask",
            "FinishTaskBody",
        ),
        (
            "/operations-manager/jobs/{jobId}/tasks/{taskId}/retry",
            "retryTask",
            "RetryTaskBody",
        ),
    ] {
        let operation = &document["paths"][path]["post"];
        assert_eq!(operation["operationId"], operation_id, "{path}");
        assert_eq!(
            operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{body}")
        );
        let responses = operation["responses"].as_object().unwrap();
        for status in [
            "200", "400", "401", "403", "413", "415", "429", "503", "504",
        ] {
            assert!(responses.contains_key(status), "{path} lacks {status}");
        }
    }
    let parameters = &document["paths"]["/operations-manager/jobs/{jobId}/tasks/{taskId}/retry"]
        ["post"]["parameters"];
    assert_eq!(parameters[0]["name"], "jobId");
    assert_eq!(parameters[0]["schema"]["pattern"], "^[0-9a-f]{24}$");
    assert_eq!(parameters[1]["name"], "taskId");

    // What the schemas refuse, the gateway refuses (what they allow reaches the engine).
    let schema = |name: &str| {
        jsonschema::validator_for(&json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": document["components"],
        }))
        .unwrap()
    };
    let job_ids = schema("JobIdsBody");
    assert!(job_ids.is_valid(&json!({"jobIds": [JOB, OTHER_JOB]})));
    for body in [
        json!({"jobIds": []}),
        json!({ "jobIds": ids(101) }),
        json!({"jobIds": [JOB, JOB]}),
        json!({"jobIds": ["nope"]}),
        json!({"jobIds": [JOB], "force": true}),
    ] {
        assert!(!job_ids.is_valid(&body), "{body}");
        let (status, _) = app.post("/operations-manager/jobs/cancel", &body).await;
        assert_eq!(status, 400, "{body}");
    }
    let finish_body = schema("FinishTaskBody");
    assert!(finish_body
        .is_valid(&json!({"taskData": {"finish_state": "failure", "variables": {"a": 1}}})));
    for body in [
        json!({"taskData": {"finish_state": "done"}}),
        json!({"taskData": {}}),
        json!({"taskData": {"finish_state": "success", "extra": 1}}),
        json!({}),
    ] {
        assert!(!finish_body.is_valid(&body), "{body}");
        let (status, _) = app.post(&finish_path(JOB, "1a2b"), &body).await;
        assert_eq!(status, 400, "{body}");
    }
    let retry_body = schema("RetryTaskBody");
    assert!(retry_body.is_valid(&json!({})));
    assert!(!retry_body.is_valid(&json!({"variables": []})));
    let outcome = schema("JobOutcome");
    assert!(outcome.is_valid(&json!({"_id": JOB, "ok": true, "code": 200, "message": null})));
    assert!(outcome
        .is_valid(&json!({"_id": JOB, "ok": false, "code": 404, "message": "Cannot find job"})));
}
