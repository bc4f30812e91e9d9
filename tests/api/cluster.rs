//! The service's own PostgreSQL cluster is supervised: when its postmaster dies the service
//! starts it again, and a service started over a dying cluster waits for it instead of adopting
//! it.

use std::path::Path;
use std::time::{Duration, Instant};

use job_service::grpc::pb;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{small_workflow, to_struct};
use crate::serve::{admin_token, data_dir, start, Server};

/// The pid of the cluster's postmaster, from the first line of its lock file.
fn postmaster_pid(data_dir: &Path) -> Pid {
    read_postmaster_pid(data_dir).expect("the cluster runs")
}

fn read_postmaster_pid(data_dir: &Path) -> Option<Pid> {
    let lock = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid")).ok()?;
    Some(Pid::from_raw(lock.lines().next()?.trim().parse().ok()?))
}

async fn create_workflow(server: &Server, token: &str, name: &str) {
    server
        .workflows(token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow(name))),
        })
        .await
        .unwrap();
}

/// Calls ListWorkflows, which always reads the database, until it succeeds or `patience` runs
/// out; the names of the stored workflows if it did.
async fn workflow_names_within(
    server: &Server,
    token: &str,
    patience: Duration,
) -> Option<Vec<String>> {
    let deadline = Instant::now() + patience;
    loop {
        let answer = server
            .workflows(token)
            .list_workflows(pb::ListWorkflowsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await;
        match answer {
            Ok(list) => {
                let mut names: Vec<String> = list
                    .into_inner()
                    .workflows
                    .into_iter()
                    .map(|workflow| workflow.name)
                    .collect();
                names.sort();
                return Some(names);
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_postgres_is_restarted_while_the_service_keeps_running() {
    let dir = data_dir();
    let server = start(dir.path());
    let token = admin_token(dir.path());
    create_workflow(&server, &token, "Before").await;

    let killed = postmaster_pid(dir.path());
    kill(killed, Signal::SIGKILL).unwrap();
    let started = Instant::now();
    // Its backends outlive it for a moment and may still answer: wait for a new postmaster.
    while read_postmaster_pid(dir.path()).is_none_or(|pid| pid == killed) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no new postmaster within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = Duration::from_secs(30).saturating_sub(started.elapsed());
    let names = workflow_names_within(&server, &token, left).await;
    assert_eq!(
        names,
        Some(vec!["Before".to_owned()]),
        "the service answers again with the data written before, without a restart"
    );
    create_workflow(&server, &token, "After").await;
    let ready = reqwest::get(format!("http://{}/health/ready", server.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let (status, log) = server.terminate_with_log();
    assert!(status.success(), "SIGTERM exits 0: {log:#?}");
    assert!(
        log.iter()
            .any(|line| line.contains("postgresql cluster is not running; restarting it")),
        "the restart is logged: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("postgresql cluster is back")),
        "the recovery is logged: {log:#?}"
    );
    assert!(
        !dir.path().join("postgres/postmaster.pid").exists(),
        "the restarted cluster is stopped on exit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_with_its_postgres_starts_again_at_once_with_its_data() {
    let dir = data_dir();
    let server = start(dir.path());
    let token = admin_token(dir.path());
    for name in ["One", "Two", "Three"] {
        create_workflow(&server, &token, name).await;
    }

    kill(postmaster_pid(dir.path()), Signal::SIGKILL).unwrap();
    server.kill();

    let server = start(dir.path());
    let names = workflow_names_within(&server, &token, Duration::from_secs(5)).await;
    assert_eq!(
        names,
        Some(vec!["One".to_owned(), "Three".to_owned(), "Two".to_owned()])
    );
    let (status, log) = server.terminate_with_log();
    assert!(status.success(), "SIGTERM exits 0: {log:#?}");
    assert!(!dir.path().join("postgres/postmaster.pid").exists());
}
