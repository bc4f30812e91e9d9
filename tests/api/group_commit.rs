//! Group commit: starts that arrive together share a transaction, and each still gets its own
//! answer. One bad start never fails the others.

use std::collections::HashSet;

use job_service::grpc::pb;
use serde_json::{json, Value};
use tonic::Code;

use crate::helpers::{small_workflow, start_request, to_struct, TestApp};

fn start(
    workflow: &str,
    description: &str,
    variables: Value,
    key: Option<&str>,
) -> tonic::Request<pb::StartJobRequest> {
    let options = pb::JobOptions {
        description: Some(description.into()),
        variables: Some(to_struct(&variables)),
        ..Default::default()
    };
    start_request(workflow, options, key)
}

/// What each of a set of concurrent starts should get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Good,
    UnknownWorkflow,
    BadVariables,
    /// The same key as the good start before it, with a different request.
    ReusedKey,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_share_transactions_and_each_gets_its_own_answer() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;

    let kinds: Vec<Kind> = (0..120)
        .map(|i| match i % 6 {
            1 => Kind::UnknownWorkflow,
            3 => Kind::BadVariables,
            5 => Kind::ReusedKey,
            _ => Kind::Good,
        })
        .collect();
    let calls = kinds.iter().enumerate().map(|(i, kind)| {
        let mut client = app.jobs.clone();
        let request = match kind {
            Kind::Good => start(
                "W",
                &format!("good {i}"),
                json!({"device": format!("r{i}")}),
                Some(&format!("k{i}")),
            ),
            Kind::UnknownWorkflow => start("nope", "", json!({"device": "r"}), None),
            Kind::BadVariables => start("W", "", json!({"device": 5}), None),
            // Start i-1 is a good one with key k{i-1}; this asks for something else with it.
            Kind::ReusedKey => start(
                "W",
                &format!("other {i}"),
                json!({"device": "x"}),
                Some(&format!("k{}", i - 1)),
            ),
        };
        tokio::spawn(async move { client.start_job(request).await })
    });
    let calls: Vec<_> = calls.collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }

    // A good start and the start reusing its key race: whichever is committed first makes
    // the job, the other conflicts.
    let mut made = HashSet::new();
    for (i, (kind, answer)) in kinds.iter().zip(&answers).enumerate() {
        match kind {
            Kind::Good | Kind::ReusedKey => match answer {
                Ok(reply) => {
                    let reply = reply.get_ref();
                    assert!(reply.created, "start {i}");
                    made.insert(reply.job.as_ref().unwrap().description.clone());
                }
                Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "start {i}"),
            },
            Kind::UnknownWorkflow => {
                assert_eq!(
                    answer.as_ref().unwrap_err().code(),
                    Code::NotFound,
                    "start {i}"
                )
            }
            Kind::BadVariables => assert_eq!(
                answer.as_ref().unwrap_err().code(),
                Code::InvalidArgument,
                "start {i}"
            ),
        }
    }
    // Good starts 4, 0 and 2 of every six; the one at 4 shares its key with the one at 5.
    for pair in (4..120).step_by(6) {
        assert!(
            answers[pair].is_ok() != answers[pair + 1].is_ok(),
            "one of starts {pair} and {} made the job",
            pair + 1
        );
    }
    for i in (0..120).filter(|i| i % 6 == 0 || i % 6 == 2) {
        assert!(answers[i].is_ok(), "start {i}: {:?}", answers[i]);
    }

    let stored: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select document->>'description', created_at from jobs")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        stored.len(),
        60,
        "two starts of every six, and one of each pair, are stored"
    );
    let descriptions: HashSet<_> = stored.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(
        descriptions, made,
        "exactly the jobs answered as made are stored"
    );
    // Jobs committed in one transaction carry its time: fewer distinct times than jobs shows
    // that starts were committed together.
    let times: HashSet<_> = stored.iter().map(|(_, created)| *created).collect();
    assert!(
        times.len() < stored.len(),
        "{} jobs in {} transactions",
        stored.len(),
        times.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_the_database_refuses_fails_alone() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    // A database rule that refuses one job, as a constraint or a full disk might.
    sqlx::raw_sql(
        "create function refuse_poison() returns trigger language plpgsql as $$
         begin
           if new.document->>'description' = 'poison' then raise exception 'refused'; end if;
           return new;
         end $$;
         create trigger refuse_poison before insert on jobs
           for each row execute function refuse_poison();",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let calls = (0..60).map(|i| {
        let mut client = app.jobs.clone();
        let description = if i % 20 == 7 {
            "poison".to_owned()
        } else {
            format!("job {i}")
        };
        tokio::spawn(async move {
            let answer = client
                .start_job(start("W", &description, json!({"device": "r"}), None))
                .await;
            (description, answer)
        })
    });
    let calls: Vec<_> = calls.collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    for (description, answer) in &answers {
        if description == "poison" {
            assert_eq!(answer.as_ref().unwrap_err().code(), Code::Internal);
        } else {
            assert!(answer.is_ok(), "{description}: {answer:?}");
        }
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        stored, 57,
        "every start but the three refused ones is stored"
    );
}

const GROUP_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const GROUP_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

fn workflow_in(name: &str, group: &str) -> Value {
    let mut workflow = small_workflow(name);
    workflow["groups"] = json!([group]);
    workflow
}

async fn delete_workflow(app: &TestApp, name: &str) {
    app.workflows
        .clone()
        .delete_workflow(pb::DeleteWorkflowRequest { name: name.into() })
        .await
        .unwrap();
}

/// A batch is written by one statement that also checks that each workflow is still at the
/// revision this instance compiled: another instance may have deleted or replaced it since,
/// and then the batch is made again from what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_follow_workflows_another_instance_deleted_or_replaced() {
    let a = TestApp::spawn().await;
    let b = a.another_instance().await;
    let member = a.token("pat", &["operations"], &[GROUP_A]);
    let start_as_member = |workflow: &str, variables: Value| {
        let mut client = a.jobs_as(&member);
        let request = start(workflow, "", variables, None);
        async move { client.start_job(request).await }
    };
    for name in ["Gone", "Hidden", "Replaced", "Kept"] {
        a.create_workflow(&workflow_in(name, GROUP_A)).await;
        start_as_member(name, json!({"device": "r1"}))
            .await
            .expect("starts, and A compiles the workflow");
    }
    assert_eq!(a.stored_jobs().await, 4);

    delete_workflow(&b, "Gone").await;
    delete_workflow(&b, "Hidden").await;
    b.create_workflow(&workflow_in("Hidden", GROUP_B)).await;
    delete_workflow(&b, "Replaced").await;
    let mut replaced = workflow_in("Replaced", GROUP_A);
    replaced["inputSchema"] =
        json!({"type": "object", "properties": {"site": {"type": "string"}}, "required": ["site"]});
    b.create_workflow(&replaced).await;

    // Each alone: A's copies would start all three.
    let gone = start_as_member("Gone", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let hidden = start_as_member("Hidden", json!({"device": "r1"}))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    assert_eq!(a.stored_jobs().await, 4, "nothing stored for either");

    // Together with starts of an unchanged workflow, in batches: every answer is the stored
    // workflow's.
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let (workflow, variables) = match i % 4 {
                0 => ("Kept", json!({"device": format!("r{i}")})),
                1 => ("Replaced", json!({"device": "r1"})),
                2 => ("Replaced", json!({"site": format!("s{i}")})),
                _ => ("Gone", json!({"device": "r1"})),
            };
            tokio::spawn(start_as_member(workflow, variables))
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap();
        match i % 4 {
            0 | 2 => assert!(answer.is_ok(), "start {i}: {answer:?}"),
            1 => assert_eq!(
                answer.unwrap_err().code(),
                Code::InvalidArgument,
                "start {i}"
            ),
            _ => assert_eq!(answer.unwrap_err().code(), Code::NotFound, "start {i}"),
        }
    }
    assert_eq!(a.stored_jobs().await, 4 + 20);
    let replaced_jobs: i64 = sqlx::query_scalar(
        "select count(*) from jobs where workflow_name = 'Replaced' and document->'variables' ? 'site'",
    )
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(replaced_jobs, 10, "started from the new revision");
}
