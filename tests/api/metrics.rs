//! `GET /metrics`: a few calls on both front doors, then the counts and timings of exactly those.

use std::collections::HashMap;

use job_service::grpc::pb;
use job_service::grpc::JobServiceClient;
use serde_json::json;

use crate::helpers::{send, small_workflow, TestApp};

/// The samples of an OpenMetrics text, by series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// `GET /metrics`, without a token: it needs none.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app
        .http
        .get(format!("{}/metrics", app.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples(&text)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series} in {samples:#?}"))
}

const JOBS: &str = "service=\"operations_manager.v1.JobService\"";

#[tokio::test]
async fn metrics_count_exactly_the_calls_made_on_both_front_doors() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("Counted")).await;
    let job = app
        .start_job("Counted", json!({"device": "r1"}))
        .await
        .unwrap();
    let missing = app.start_job("Nowhere", json!({})).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let refused = JobServiceClient::new(app.channel())
        .get_job(pb::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let start = json!({"workflow": "Counted", "options": {"variables": {"device": "r2"}}});
    let (status, _) = app.post("/operations-manager/jobs/start", &start).await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let request = app
            .request(reqwest::Method::POST, "/operations-manager/jobs/start")
            .header("idempotency-key", "once")
            .json(&start);
        assert_eq!(send(request).await.0, 200);
    }
    let (status, _) = app
        .get(&format!("/operations-manager/jobs/{}", job.id))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .get("/operations-manager/jobs/0123456789abcdef01234567")
        .await;
    assert_eq!(status, 404);
    let (status, _) = send(app.http.get(format!("{}/no/such/route", app.http_url))).await;
    assert_eq!(status, 404);
    let (status, _) = send(app.http.get(format!("{}/health/live", app.http_url))).await;
    assert_eq!(status, 200);

    let metrics = scrape(&app).await;
    let grpc = |method: &str, code: &str| {
        value(
            &metrics,
            &format!(
                "job_service_grpc_requests_total{{{JOBS},method=\"{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(grpc("StartJob", "OK"), 1.0);
    assert_eq!(grpc("StartJob", "NOT_FOUND"), 1.0);
    assert_eq!(grpc("GetJob", "UNAUTHENTICATED"), 1.0);
    assert_eq!(
        value(
            &metrics,
            "job_service_grpc_requests_total{service=\"operations_manager.v1.WorkflowService\",method=\"CreateWorkflow\",code=\"OK\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!(
                "job_service_grpc_request_duration_seconds_count{{{JOBS},method=\"StartJob\"}}"
            )
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("job_service_grpc_request_duration_seconds_bucket{{le=\"+Inf\",{JOBS},method=\"StartJob\"}}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("job_service_grpc_requests_in_flight{{{JOBS},method=\"StartJob\"}}")
        ),
        0.0
    );

    let http = |method: &str, route: &str, status: u16| {
        value(
            &metrics,
            &format!("job_service_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(http("POST", "/operations-manager/jobs/start", 200), 3.0);
    assert_eq!(http("GET", "/operations-manager/jobs/{id}", 200), 1.0);
    assert_eq!(http("GET", "/operations-manager/jobs/{id}", 404), 1.0);
    assert_eq!(http("GET", "unmatched", 404), 1.0);
    assert_eq!(http("GET", "/health/live", 200), 1.0);
    assert_eq!(
        value(
            &metrics,
            "job_service_http_request_duration_seconds_count{method=\"GET\",route=\"/operations-manager/jobs/{id}\"}"
        ),
        2.0
    );
    // The scrape itself is in flight while the metrics are read, and not yet counted.
    assert_eq!(
        value(
            &metrics,
            "job_service_http_requests_in_flight{method=\"GET\",route=\"/metrics\"}"
        ),
        1.0
    );
    assert!(!metrics
        .keys()
        .any(|series| series.contains("route=\"/metrics\",status")));
    assert!(
        !metrics.keys().any(|series| series.contains(&job.id)),
        "raw paths are not labels"
    );

    assert_eq!(
        value(
            &metrics,
            "job_service_jobs_started_total{result=\"created\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            "job_service_jobs_started_total{result=\"replayed\"}"
        ),
        1.0
    );
    // --db-max-connections (16) for the calls, and 2 for the batches of starts.
    assert_eq!(value(&metrics, "job_service_db_pool_max_connections"), 18.0);
    let open = value(&metrics, "job_service_db_pool_connections");
    let idle = value(&metrics, "job_service_db_pool_idle_connections");
    assert!((1.0..=18.0).contains(&open), "{open}");
    assert!(idle <= open, "{idle} idle of {open}");

    // A second scrape counts the first.
    let again = scrape(&app).await;
    assert_eq!(
        value(
            &again,
            "job_service_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"
        ),
        1.0
    );
}
