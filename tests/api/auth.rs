//! Bearer tokens, roles and group-based access, through the gRPC front door.

use job_service::auth::{sign, Claims};
use job_service::grpc::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{from_struct, small_workflow, to_struct, TestApp};

const GROUP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const GROUP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

fn grouped_start(workflow: &str, groups: &[&str]) -> pb::StartJobRequest {
    pb::StartJobRequest {
        workflow: workflow.into(),
        options: Some(pb::JobOptions {
            variables: Some(to_struct(&json!({"device": "r1"}))),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }),
    }
}

fn grouped_workflow(name: &str, groups: &[&str]) -> serde_json::Value {
    let mut workflow = small_workflow(name);
    workflow["groups"] = json!(groups);
    workflow
}

#[tokio::test]
async fn calls_without_valid_credentials_are_unauthenticated_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut expired = Claims::new(
        "pat",
        None,
        vec![],
        vec!["admin".into()],
        std::time::Duration::ZERO,
    );
    expired.exp -= 60;
    let expired = sign(app.keys(), &expired).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_secret = other_dir.path().join("secret");
    std::fs::write(&other_secret, format!("{:064x}", rand::random::<u128>())).unwrap();
    let mut other_keys = job_service::config::ServeConfig::defaults().keys;
    other_keys.data_dir = other_dir.path().to_owned();
    other_keys.jwt_secret_file = Some(other_secret);
    let foreign = sign(
        &other_keys,
        &Claims::new(
            "pat",
            None,
            vec![],
            vec!["admin".into()],
            std::time::Duration::from_secs(60),
        ),
    )
    .unwrap();
    let unsigned = {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"sub": "x", "roles": ["admin"]}))
        )
    };
    let cases = [
        (None, "missing"),
        (Some("Basic YWRtaW46YWRtaW4=".to_owned()), "Bearer"),
        (Some("Bearer definitely-not-a-jwt".to_owned()), "malformed"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {unsigned}")), "alg none"),
        (Some(format!("Bearer {foreign}")), "signature"),
    ];
    for (header, needle) in cases {
        let mut request = tonic::Request::new(grouped_start("W", &[]));
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        let status = job_service::grpc::JobServiceClient::new(app.channel())
            .start_job(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{needle}");
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let app = TestApp::spawn().await;
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn methods_outside_the_callers_roles_are_permission_denied() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let reader = app.token("reader", &["apiread"], &[]);
    let operator = app.token("operator", &["operations"], &[]);
    let stranger = app.token("stranger", &["superuser"], &[]);

    let denied = app
        .jobs_as(&reader)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = app
        .workflows_as(&operator)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("X"))),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = app
        .workflows_as(&stranger)
        .get_workflow(pb::GetWorkflowRequest { name: "W".into() })
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "unknown roles grant nothing"
    );
    // Roles are checked before the data: a missing workflow is still PERMISSION_DENIED.
    let denied = app
        .jobs_as(&reader)
        .start_job(grouped_start("Nope", &[]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // What the roles do allow works.
    app.workflows_as(&reader)
        .get_workflow(pb::GetWorkflowRequest { name: "W".into() })
        .await
        .unwrap();
    app.jobs_as(&operator)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap();
    let engineer = app.token("engineer", &["engineering"], &[]);
    app.workflows_as(&engineer)
        .delete_workflow(pb::DeleteWorkflowRequest { name: "W".into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_callers_identity_fills_the_job() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let claims = Claims::new(
        "pat",
        Some("0123456789abcdef01234567".into()),
        vec![GROUP_A.into()],
        vec!["operations".into()],
        std::time::Duration::from_secs(60),
    );
    let token = sign(app.keys(), &claims).unwrap();
    let job = app
        .jobs_as(&token)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(
        from_struct(job.variables.as_ref().unwrap())["initiator"],
        json!("pat")
    );
    assert_eq!(job.watchers, ["0123456789abcdef01234567"]);
    assert_eq!(job.created_by, "0123456789abcdef01234567");
    assert_eq!(job.last_updated_by, "0123456789abcdef01234567");
    let metrics = job.metrics.unwrap();
    assert_eq!(metrics.user, "0123456789abcdef01234567");
    assert_eq!(metrics.owner, "0123456789abcdef01234567");

    // The REST job shows the user as the reference page does, from the token's claims.
    let (status, reply) = app
        .get(&format!("/operations-manager/jobs/{}", job.id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["data"]["last_updated_by"],
        json!({
            "_id": "0123456789abcdef01234567",
            "username": "pat",
            "memberOf": [{"groupId": GROUP_A}],
            "assignedRoles": [{"roleId": "operations"}],
        })
    );
    assert_eq!(reply["data"]["created_by"], "0123456789abcdef01234567");
}

#[tokio::test]
async fn jobs_stored_with_the_user_as_an_id_read_back_with_a_user_object() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let job = app.start_job("W", json!({"device": "r1"})).await.unwrap();
    // As a version before the user object wrote it.
    sqlx::query(
        "update jobs set document = jsonb_set(document, '{last_updated_by}', to_jsonb(created_by))
         where id = $1",
    )
    .bind(&job.id)
    .execute(&app.db)
    .await
    .unwrap();
    let (status, reply) = app
        .get(&format!("/operations-manager/jobs/{}", job.id))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["data"]["last_updated_by"]["_id"],
        json!(job.created_by)
    );
    let again = app
        .jobs
        .clone()
        .get_job(pb::GetJobRequest { id: job.id })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(again.last_updated_by, job.created_by);
}

#[tokio::test]
async fn a_user_of_group_a_cannot_see_or_start_from_group_b_workflows() {
    let app = TestApp::spawn().await;
    app.create_workflow(&grouped_workflow("Only B", &[GROUP_B]))
        .await;
    app.create_workflow(&grouped_workflow("Only A", &[GROUP_A]))
        .await;
    app.create_workflow(&grouped_workflow("Everyone", &[]))
        .await;
    let alice = app.token("alice", &["operations"], &[GROUP_A]);

    let hidden = app
        .workflows_as(&alice)
        .get_workflow(pb::GetWorkflowRequest {
            name: "Only B".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(hidden.message(), "Cannot find workflow Only B");

    let listed: Vec<_> = app
        .workflows_as(&alice)
        .list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workflows
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(listed, ["Everyone", "Only A"]);

    let refused = app
        .jobs_as(&alice)
        .start_job(grouped_start("Only B", &[]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), "Cannot find workflow Only B");

    let job = app
        .jobs_as(&alice)
        .start_job(grouped_start("Only A", &[]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.groups, [GROUP_A]);
}

#[tokio::test]
async fn a_user_may_only_give_a_job_its_own_groups() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let alice = app.token("alice", &["operations"], &[GROUP_A]);
    let refused = app
        .jobs_as(&alice)
        .start_job(grouped_start("W", &[GROUP_A, GROUP_B]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("options.groups[1]"),
        "{}",
        refused.message()
    );

    let own = app
        .jobs_as(&alice)
        .start_job(grouped_start("W", &[GROUP_A]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(own.groups, [GROUP_A]);
    // An admin may give any group.
    let any = app
        .jobs
        .clone()
        .start_job(grouped_start("W", &[GROUP_B]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(any.groups, [GROUP_B]);
}

#[tokio::test]
async fn a_user_of_group_a_cannot_see_group_b_jobs() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let b_job = app
        .jobs
        .clone()
        .start_job(grouped_start("W", &[GROUP_B]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let a_job = app
        .jobs
        .clone()
        .start_job(grouped_start("W", &[GROUP_A]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let open_job = app
        .jobs
        .clone()
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let alice = app.token("alice", &["apiread"], &[GROUP_A]);

    let hidden = app
        .jobs_as(&alice)
        .get_job(pb::GetJobRequest {
            id: b_job.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    app.jobs_as(&alice)
        .get_job(pb::GetJobRequest {
            id: a_job.id.clone(),
        })
        .await
        .unwrap();

    let mut listed: Vec<_> = app
        .jobs_as(&alice)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    listed.sort();
    let mut expected = vec![a_job.id, open_job.id];
    expected.sort();
    assert_eq!(listed, expected);

    let all = app
        .jobs
        .clone()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(all.len(), 3, "an admin sees every group");
}

/// Claims for an admin named `pat`, valid for an hour, changed by `change`, signed by the app.
fn admin_token_with(app: &TestApp, change: impl FnOnce(&mut Claims)) -> String {
    let mut claims = Claims::new(
        "pat",
        None,
        vec![],
        vec!["admin".into()],
        std::time::Duration::from_secs(3600),
    );
    change(&mut claims);
    sign(app.keys(), &claims).unwrap()
}

fn seconds_from_now(seconds: i64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now.checked_add_signed(seconds).unwrap()
}

/// Both front doors answer `token` with 401 and a message holding `needle`, and nothing runs.
async fn expect_refused_on_both_front_doors(app: &TestApp, token: &str, needle: &str) {
    let status = app
        .jobs_as(token)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{needle}: {status:?}");
    assert!(status.message().contains(needle), "{needle}: {status:?}");
    let (status, body) = crate::helpers::send(
        app.http
            .get(format!("{}/operations-manager/jobs", app.http_url))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 401, "{needle}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains(needle),
        "{needle}: {body}"
    );
    assert_eq!(body["data"], serde_json::Value::Null);
}

#[tokio::test]
async fn tokens_not_valid_yet_or_issued_in_the_future_are_refused_beyond_the_leeway() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let not_yet = admin_token_with(&app, |c| c.nbf = Some(seconds_from_now(600)));
    expect_refused_on_both_front_doors(&app, &not_yet, "token is not valid yet").await;
    let from_the_future = admin_token_with(&app, |c| c.iat = Some(seconds_from_now(600)));
    expect_refused_on_both_front_doors(&app, &from_the_future, "token was issued in the future")
        .await;
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(jobs, 0);

    // Within the leeway (5s by default) and in the past, both claims are fine.
    let skewed = admin_token_with(&app, |c| {
        c.nbf = Some(seconds_from_now(2));
        c.iat = Some(seconds_from_now(2));
    });
    app.jobs_as(&skewed)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap();
    let settled = admin_token_with(&app, |c| {
        c.nbf = Some(seconds_from_now(-60));
        c.iat = Some(seconds_from_now(-60));
    });
    let (status, body) = crate::helpers::send(
        app.http
            .get(format!("{}/operations-manager/jobs", app.http_url))
            .bearer_auth(&settled),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_leeway_flag_applies_to_nbf_and_iat() {
    let app = TestApp::spawn_with(|config| {
        config.keys.jwt_leeway = std::time::Duration::from_secs(900).into();
    })
    .await;
    app.create_workflow(&small_workflow("W")).await;
    let early = admin_token_with(&app, |c| {
        c.nbf = Some(seconds_from_now(600));
        c.iat = Some(seconds_from_now(600));
    });
    app.jobs_as(&early)
        .start_job(grouped_start("W", &[]))
        .await
        .unwrap();
}

/// A change made to a token's claims.
type ClaimChange = fn(&mut Claims);

#[tokio::test]
async fn tokens_whose_identity_holds_nul_are_unauthenticated() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let changes: [(&str, ClaimChange); 4] = [
        ("sub", |c| c.sub = "0123456789abcdef0123456\0".into()),
        ("username", |c| c.username = Some("pat\0".into())),
        ("groups", |c| c.groups = vec![format!("{GROUP_A}\0")]),
        ("roles", |c| c.roles = vec!["admin".into(), "\0".into()]),
    ];
    for (claim, change) in changes {
        let token = admin_token_with(&app, change);
        expect_refused_on_both_front_doors(
            &app,
            &token,
            &format!("token claim {claim} must not contain the character U+0000"),
        )
        .await;
    }
}
