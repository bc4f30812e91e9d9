use job_service::grpc::pb;
use serde_json::json;

use crate::helpers::{small_workflow, violated_fields, TestApp};

async fn list_all(app: &TestApp, request: pb::ListJobsRequest) -> Vec<pb::Job> {
    let mut jobs = Vec::new();
    let mut request = request;
    loop {
        let page = app
            .jobs
            .clone()
            .list_jobs(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= request.page_size.max(1) as usize);
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_jobs_pages_through_every_job_once_newest_first() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("W")).await;
    let mut started = Vec::new();
    for i in 0..7 {
        started.push(
            app.start_job("W", json!({"device": format!("r{i}")}))
                .await
                .unwrap(),
        );
    }
    let listed = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 3,
            ..Default::default()
        },
    )
    .await;
    let listed_ids: Vec<_> = listed.iter().map(|j| j.id.clone()).collect();
    let mut expected: Vec<_> = started.iter().map(|j| (j.created, j.id.clone())).collect();
    expected.sort_by(|a, b| {
        let key = |x: &(Option<prost_types::Timestamp>, String)| {
            let t = x.0.unwrap();
            (t.seconds, t.nanos, x.1.clone())
        };
        key(b).cmp(&key(a))
    });
    let expected_ids: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(listed_ids, expected_ids);
}

#[tokio::test]
async fn list_jobs_filters_by_workflow_status_and_time() {
    let app = TestApp::spawn_frozen().await;
    app.create_workflow(&small_workflow("A")).await;
    app.create_workflow(&small_workflow("B")).await;
    let a = app.start_job("A", json!({"device": "r1"})).await.unwrap();
    app.start_job("B", json!({"device": "r2"})).await.unwrap();
    app.start_job("B", json!({"device": "r3"})).await.unwrap();

    let only_a = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 10,
            workflow: "A".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only_a.iter().map(|j| &j.id).collect::<Vec<_>>(), [&a.id]);

    let running = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 10,
            status: pb::JobStatus::Running as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(running.len(), 3);
    let complete = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 10,
            status: pb::JobStatus::Complete as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(complete.is_empty());

    let created = a.created.unwrap();
    let before_a = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 10,
            created_before: Some(created),
            ..Default::default()
        },
    )
    .await;
    assert!(before_a.is_empty());
    let from_a = list_all(
        &app,
        pb::ListJobsRequest {
            page_size: 10,
            created_after: Some(created),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(from_a.len(), 3);
}

#[tokio::test]
async fn list_jobs_rejects_bad_paging_and_filters_by_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            pb::ListJobsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListJobsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListJobsRequest {
                status: 42,
                ..Default::default()
            },
            "status",
        ),
    ];
    for (request, field) in cases {
        let status = app.jobs.clone().list_jobs(request).await.unwrap_err();
        assert_eq!(violated_fields(&status), [field]);
    }
}
