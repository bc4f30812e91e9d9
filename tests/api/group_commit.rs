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
