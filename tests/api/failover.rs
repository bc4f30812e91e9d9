//! Several database hosts in DATABASE_URL: the service works on the writable primary whatever
//! the order of the list, and after a failover moves to the new primary by itself. Real
//! PostgreSQL servers: a primary and a streaming standby made from it with pg_basebackup,
//! each on its own port of 127.0.0.1, and a port where nothing listens.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::helpers::{small_workflow, TestApp};
use crate::postgres_tls::{as_postgres, cluster_dir, initdb};
use crate::serve::data_dir;

/// A PostgreSQL server of the test's own on 127.0.0.1, stopped when dropped.
struct Server {
    cluster: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// A new primary.
    fn primary(parent: &Path) -> Server {
        let cluster = cluster_dir(parent, "primary");
        initdb(&cluster);
        Server::start(cluster)
    }

    /// A streaming standby of `primary`, made by pg_basebackup.
    fn standby_of(primary: &Server, parent: &Path) -> Server {
        let cluster = cluster_dir(parent, "standby");
        let status = as_postgres("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-p",
            ])
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(&cluster)
            .status()
            .unwrap();
        assert!(status.success(), "pg_basebackup");
        Server::start(cluster)
    }

    fn start(cluster: PathBuf) -> Server {
        let port = free_port();
        let status = as_postgres("pg_ctl")
            .args(["start", "-w", "-D"])
            .arg(&cluster)
            .arg("-l")
            .arg(cluster.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c fsync=off"
            ))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start {}", cluster.display());
        Server { cluster, port }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.host())
    }

    /// Stops the server at once, as a lost machine would.
    fn kill(&self) {
        let _ = as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn promote(&self) {
        let status = as_postgres("pg_ctl")
            .args(["promote", "-w", "-D"])
            .arg(&self.cluster)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl promote");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many jobs `server` holds with this id (a standby answers reads; one that has not yet
/// replayed the migrations has no `jobs` table, and so none).
async fn jobs_with_id(server: &Server, id: &str) -> i64 {
    let mut conn = PgConnection::connect(&server.url()).await.unwrap();
    match sqlx::query_scalar("select count(*) from jobs where id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
    {
        Ok(count) => count,
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => 0,
        Err(error) => panic!("counting jobs: {error}"),
    }
}

async fn ready(app: &TestApp) -> u16 {
    app.http
        .get(format!("{}/health/ready", app.http_url))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_finds_the_primary_in_its_host_list_and_follows_a_failover() {
    let dir = data_dir();
    let primary = Server::primary(dir.path());
    let standby = Server::standby_of(&primary, dir.path());
    let nowhere = format!("127.0.0.1:{}", free_port());
    // The first host is down and the second is a standby: only the third takes writes.
    let url = format!(
        "postgres://postgres@{nowhere},{},{}/postgres?target_session_attrs=read-write",
        standby.host(),
        primary.host()
    );
    let app = TestApp::spawn_on_checked_at(url, &primary.url(), |config| {
        config.db_startup_timeout = humantime::Duration::from(Duration::from_secs(20));
    })
    .await;
    app.create_workflow(&small_workflow("ha")).await;
    let before = app.start_job("ha", json!({"device": "r1"})).await.unwrap();
    assert_eq!(
        jobs_with_id(&primary, &before.id).await,
        1,
        "stored on the primary"
    );
    // Wait until the standby has replayed it, as a synchronous standby would have.
    let deadline = Instant::now() + Duration::from_secs(20);
    while jobs_with_id(&standby, &before.id).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the job"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The primary is lost. Until a standby is promoted no host takes writes: calls fail
    // fast with UNAVAILABLE and readiness says 503.
    primary.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let asked = Instant::now();
        match app.start_job("ha", json!({"device": "r2"})).await {
            Err(status) if status.code() == tonic::Code::Unavailable => {
                if ready(&app).await == 503 && asked.elapsed() < Duration::from_secs(1) {
                    break;
                }
            }
            other => assert!(
                Instant::now() < deadline,
                "still no fast UNAVAILABLE with the primary down: {other:?}"
            ),
        }
        assert!(
            Instant::now() < deadline,
            "readiness stayed 200 with no primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The standby is promoted: the service moves to it without a restart.
    standby.promote();
    let promoted = Instant::now();
    let after = loop {
        match app.start_job("ha", json!({"device": "r3"})).await {
            Ok(job) => break job,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    promoted.elapsed() < Duration::from_secs(20),
                    "no StartJob succeeded on the new primary: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        jobs_with_id(&standby, &after.id).await,
        1,
        "stored on the new primary"
    );
    assert_eq!(ready(&app).await, 200);
    // The job acknowledged before the failover is there, and both run to their end (the
    // workflow's query finds nothing in a device name: its end is `error`, by the rules).
    for id in [&before.id, &after.id] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, job) = app.get(&format!("/operations-manager/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if job["data"]["status"] != "running" {
                assert_eq!(job["data"]["status"], "error", "{job}");
                assert_eq!(job["data"]["tasks"]["a1"]["finish_state"], "error", "{job}");
                break;
            }
            assert!(Instant::now() < deadline, "job {id} is stuck: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_writable_host_startup_says_what_each_host_is() {
    let dir = data_dir();
    let primary = Server::primary(dir.path());
    let standby = Server::standby_of(&primary, dir.path());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut config = job_service::config::ServeConfig::defaults();
    config.keys.data_dir = dir.path().to_owned();
    config.database_url =
        Some(format!("postgres://postgres@{nowhere},{}/postgres", standby.host()).into());
    config.db_startup_timeout = humantime::Duration::from(Duration::from_secs(1));
    let error = format!(
        "{:#}",
        job_service::app::App::build(&config).await.err().unwrap()
    );
    assert!(
        error.contains("no database host is a writable primary"),
        "{error}"
    );
    assert!(
        error.contains(&format!("{} is a standby", standby.host())),
        "{error}"
    );
    assert!(error.contains(&nowhere), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_server_refuses_as_read_only_is_unavailable_not_an_internal_error() {
    let app = TestApp::spawn().await;
    app.create_workflow(&small_workflow("ro")).await;
    // The database turns read-only under the service, as a demoted primary does: its
    // sessions are ended and new ones cannot write.
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    sqlx::query(&format!(
        "alter database {database} set default_transaction_read_only = on"
    ))
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let mut attempts = 0;
    let refused = loop {
        attempts += 1;
        match app.start_job("ro", json!({"device": "r1"})).await {
            // A connection ended under a call may fail it first.
            Err(status) if status.message().contains("unavailable, try") && attempts < 20 => {
                continue
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("takes no writes"), "{refused:?}");
}
