//! `job-service serve` as a user runs it: its own PostgreSQL under the data dir, kept across
//! restarts, stopped on exit.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use job_service::grpc::pb;
use job_service::grpc::{JobServiceClient, WorkflowServiceClient};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use serde_json::json;

use crate::helpers::{small_workflow, to_struct, Authed, Bearer};

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Every line the service wrote on stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts the binary without DATABASE_URL and waits for its `grpc listening on` and
/// `http listening on` lines.
pub fn start(data_dir: &Path) -> Server {
    start_with(data_dir, &[])
}

/// [`start`] with more arguments for `serve`.
pub fn start_with(data_dir: &Path, args: &[&str]) -> Server {
    let mut command = serve_command();
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL");
    listening(command)
}

/// `job-service serve` with port 0 for both front doors; more arguments may follow.
pub fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_job-service"));
    command.args([
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    command
}

/// Spawns `command`, a `job-service serve` with port 0 for both front doors, and waits for its
/// `grpc listening on` and `http listening on` lines.
pub fn listening(mut command: Command) -> Server {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for front_door in ["grpc", "http"] {
                if let Some((_, rest)) = line.split_once(&format!("{front_door} listening on ")) {
                    // Text lines end with the address; in JSON lines a quote follows it.
                    let addr = rest.split(['"', ' ']).next().unwrap_or_default();
                    let _ = tx.send((front_door, addr.to_owned()));
                }
            }
            lines.lock().unwrap().push(line);
        }
    });
    let (mut addr, mut http_addr) = (None, None);
    while addr.is_none() || http_addr.is_none() {
        let (front_door, logged) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the service logs the addresses it listens on");
        let logged: SocketAddr = logged.parse().unwrap();
        if front_door == "grpc" {
            addr = Some(logged);
        } else {
            http_addr = Some(logged);
        }
    }
    Server {
        child,
        addr: addr.unwrap(),
        http_addr: http_addr.unwrap(),
        log,
    }
}

/// `job-service token` with the same data dir as the server: an admin token.
pub fn admin_token(data_dir: &Path) -> String {
    let mut args: Vec<OsString> = ["--username", "admin", "--roles", "admin", "--ttl", "15m"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend([OsString::from("--data-dir"), data_dir.into()]);
    token(args)
}

/// `job-service token` with `args`: the token, after checking that stdout holds only it.
pub fn token(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_job-service"))
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "stdout holds only the token");
    token.trim().to_owned()
}

impl Drop for Server {
    /// A test that fails half-way must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    pub fn workflows(&self, token: &str) -> WorkflowServiceClient<Authed> {
        WorkflowServiceClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, waits for the exit, and returns the exit status and every line the
    /// service wrote on stderr.
    pub fn terminate_with_log(self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal_with_log(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `signal`, waits for the exit, and returns the exit status and every line the
    /// service wrote on stderr.
    pub fn signal_with_log(
        mut self,
        signal: nix::sys::signal::Signal,
    ) -> (std::process::ExitStatus, Vec<String>) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let status = self.child.wait().unwrap();
        // The reader thread sees the end of stderr once the process is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.log) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = self.log.lock().unwrap().clone();
        (status, lines)
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // When the tests run as root, the cluster runs as `postgres`, which must reach the dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_its_own_postgres_and_keeps_the_data_across_restarts() {
    let dir = data_dir();
    let server = start(dir.path());
    let token = admin_token(dir.path());
    server
        .workflows(&token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("Kept"))),
        })
        .await
        .unwrap();
    assert!(server.terminate().success(), "SIGTERM exits 0");
    assert!(
        !dir.path().join("postgres/postmaster.pid").exists(),
        "the cluster is stopped on exit"
    );

    let server = start(dir.path());
    let kept = server
        .workflows(&token)
        .get_workflow(pb::GetWorkflowRequest {
            name: "Kept".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .workflow
        .unwrap();
    assert_eq!(kept.name, "Kept");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_lists_its_services_through_reflection_and_reports_health() {
    let dir = data_dir();
    let server = start(dir.path());

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(server.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "operations_manager.v1.JobService",
        "operations_manager.v1.WorkflowService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let ready = reqwest::get(format!("http://{}/health/ready", server.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let health = tonic_health::pb::health_client::HealthClient::new(server.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "operations_manager.v1.JobService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_calls_without_a_valid_token() {
    let dir = data_dir();
    let server = start(dir.path());
    let missing = WorkflowServiceClient::new(server.channel())
        .get_workflow(pb::GetWorkflowRequest { name: "Any".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    // A token signed with another secret.
    let other = data_dir();
    let other_secret = other.path().join("secret");
    std::fs::write(&other_secret, format!("{:064x}", rand::random::<u128>())).unwrap();
    let foreign = token([
        OsStr::new("--username"),
        "admin".as_ref(),
        "--roles".as_ref(),
        "admin".as_ref(),
        "--jwt-secret-file".as_ref(),
        other_secret.as_os_str(),
    ]);
    let foreign = server
        .workflows(&foreign)
        .get_workflow(pb::GetWorkflowRequest { name: "Any".into() })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::Unauthenticated);
    assert!(
        foreign.message().contains("signature"),
        "{}",
        foreign.message()
    );
    assert!(server.terminate().success());
}

/// `job-service token` that must fail, run in `cwd` with no key in the environment: its stderr.
fn token_refused(cwd: &Path, args: &[&OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_job-service"))
        .args(["token", "--username", "admin", "--roles", "admin"])
        .args(args)
        .current_dir(cwd)
        .env_remove("JOB_SERVICE_DATA_DIR")
        .env_remove("JOB_SERVICE_JWT_SECRET_FILE")
        .env_remove("JOB_SERVICE_JWT_PUBLIC_KEY_FILE")
        .env_remove("JOB_SERVICE_JWT_PRIVATE_KEY_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success(), "token exits non-zero");
    assert!(output.stdout.is_empty(), "no token is printed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn token_creates_no_secret_and_says_where_it_looked_until_the_service_has_made_one() {
    let dir = data_dir();
    let dir_path = dir.path().canonicalize().unwrap();
    let expect_hints = |stderr: &str, looked_at: &Path| {
        assert!(
            stderr.contains(&looked_at.display().to_string()),
            "names {}: {stderr}",
            looked_at.display()
        );
        for hint in ["--data-dir", "JOB_SERVICE_DATA_DIR", "--jwt-secret-file"] {
            assert!(stderr.contains(hint), "{hint} missing from: {stderr}");
        }
    };
    // Run from a directory that is not the service's: the default data dir is ./.job-service.
    let stderr = token_refused(&dir_path, &[]);
    expect_hints(&stderr, &dir_path.join(".job-service/jwt-secret"));
    let stderr = token_refused(&dir_path, &[OsStr::new("--data-dir"), dir_path.as_os_str()]);
    expect_hints(&stderr, &dir_path.join("jwt-secret"));
    assert_eq!(
        std::fs::read_dir(&dir_path).unwrap().count(),
        0,
        "token created nothing"
    );

    let server = start(&dir_path);
    let token = admin_token(&dir_path);
    server
        .workflows(&token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("Signed"))),
        })
        .await
        .expect("the service accepts the token");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_written_to_a_pipe_carry_no_colour_codes_nor_forged_lines() {
    let dir = data_dir();
    let mut command = serve_command();
    command
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR");
    let server = listening(command);
    // A workflow name is the caller's text: it must not forge a line or colour the terminal.
    let hostile = "ok\n2026-12-01T00:00:00.000000Z  INFO forged: admin logged in\x1b[31m";
    let mut workflow = small_workflow(hostile);
    workflow["name"] = json!(hostile);
    let created = reqwest::Client::new()
        .post(format!(
            "http://{}/automation-studio/automations",
            server.http_addr
        ))
        .bearer_auth(admin_token(dir.path()))
        .json(&json!({ "automation": workflow }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{:?}", created.text().await);
    let (status, log) = server.terminate_with_log();
    assert!(status.success(), "{status}: {log:#?}");
    let logged: Vec<_> = log
        .iter()
        .filter(|line| line.contains("workflow created"))
        .collect();
    assert!(
        logged.len() == 1 && logged[0].contains(r"ok\n2026"),
        "the name is logged escaped, on the line of its event: {log:#?}"
    );
    assert!(
        !log.iter()
            .any(|line| line.contains("INFO forged") && !line.contains("workflow created")),
        "a forged line: {log:#?}"
    );
    let coloured: Vec<_> = log.iter().filter(|line| line.contains("\x1b[")).collect();
    assert!(coloured.is_empty(), "coloured lines: {coloured:#?}");
}

#[test]
fn a_sigterm_while_the_service_starts_stops_it_gracefully_with_its_postgres() {
    let dir = data_dir();
    let mut child = serve_command()
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line comes while the service prepares its PostgreSQL, long before it listens.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(!first.contains("listening"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {first}\n{rest:#?}");
    assert!(
        rest.iter()
            .any(|line| line.contains("postgresql cluster stopped")),
        "{rest:#?}"
    );
    assert!(!dir.path().join("postgres/postmaster.pid").exists());
}

#[test]
fn serve_without_postgres_says_what_to_install() {
    let dir = data_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_job-service"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--postgres-bin-dir",
            "/nonexistent/bin",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("/nonexistent/bin"), "{stderr}");
}

/// Runs `pg_ctl` on the service's own cluster, as the user that owns it.
pub fn pg_ctl(data_dir: &Path, args: &[&str]) {
    let bin = std::env::var("JOB_SERVICE_POSTGRES_BIN_DIR")
        .expect("scripts/test sets JOB_SERVICE_POSTGRES_BIN_DIR");
    let cluster = data_dir.join("postgres");
    let mut command = if nix::unistd::Uid::effective().is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(format!("{bin}/pg_ctl"));
        command
    } else {
        Command::new(format!("{bin}/pg_ctl"))
    };
    let status = command
        .args(args)
        .arg("-D")
        .arg(&cluster)
        .arg("-l")
        .arg(cluster.join("server.log"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {args:?}");
}

/// Stops the service's PostgreSQL at once (`pg_ctl stop -m immediate`) and waits until that
/// postmaster has exited. Not with `pg_ctl -w`: the service starts its cluster again when it
/// finds it down (it checks every second), and `pg_ctl -w` then waits for the new postmaster
/// too, failing after a minute.
pub fn stop_postgres_at_once(data_dir: &Path) {
    let pid_file = data_dir.join("postgres/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|lock| lock.lines().next()?.trim().parse().ok())
        .expect("the cluster runs");
    pg_ctl(data_dir, &["stop", "-m", "immediate", "-W"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Gone, or a zombie nobody has reaped yet.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "postmaster {pid} still runs 30 s after pg_ctl stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_database_is_down_calls_fail_fast_and_the_service_recovers_by_itself() {
    let dir = data_dir();
    let server = start(dir.path());
    let token = admin_token(dir.path());
    server
        .workflows(&token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("W"))),
        })
        .await
        .unwrap();

    stop_postgres_at_once(dir.path());
    let started = std::time::Instant::now();
    let status = server
        .workflows(&token)
        .get_workflow(pb::GetWorkflowRequest { name: "W".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database unavailable"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed fast: {:?}",
        started.elapsed()
    );
    let ready = reqwest::get(format!("http://{}/health/ready", server.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    // The service starts its cluster again itself.
    let mut recovered = false;
    for _ in 0..50 {
        let answer = server
            .workflows(&token)
            .get_workflow(pb::GetWorkflowRequest { name: "W".into() })
            .await;
        if answer.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the service answers again without a restart");
    let ready = reqwest::get(format!("http://{}/health/ready", server.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_service_on_the_same_data_dir_is_refused_and_the_first_serves_on() {
    let dir = data_dir();
    let first = start(dir.path());
    let token = admin_token(dir.path());
    let output = serve_command()
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the second one exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another job-service process (pid {})",
            first.pid()
        )),
        "{stderr}"
    );
    // The first one's PostgreSQL is untouched: it still serves.
    first
        .workflows(&token)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&small_workflow("Still served"))),
        })
        .await
        .expect("the first service still works");
    assert!(first.terminate().success(), "and stops cleanly");
    assert!(!dir.path().join("postgres/postmaster.pid").exists());

    // Once the owner has gone, the data dir is free again.
    let next = start(dir.path());
    assert!(next.terminate().success());
}

/// Forwards TCP connections on `port` to the test server's Unix socket, from `after` on: a
/// database that comes up after the service.
async fn database_coming_up(port: u16, after: Duration) {
    let admin = url::Url::parse(&std::env::var("TEST_DATABASE_URL").unwrap()).unwrap();
    let socket_dir = admin
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned())
        .expect("TEST_DATABASE_URL names its socket directory");
    let socket = std::path::Path::new(&socket_dir)
        .join(format!(".s.PGSQL.{}", admin.port().unwrap_or(5432)));
    tokio::time::sleep(after).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut outbound = tokio::net::UnixStream::connect(socket).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_waits_for_a_database_that_comes_up_later_and_says_why() {
    let database = crate::helpers::fresh_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut url = url::Url::parse(&database).unwrap();
    url.set_query(None);
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(port)).unwrap();
    let proxy = tokio::spawn(database_coming_up(port, Duration::from_secs(2)));
    let mut command = serve_command();
    command
        .env("DATABASE_URL", url.as_str())
        .env("NO_COLOR", "1");
    let server = tokio::task::spawn_blocking(move || listening(command))
        .await
        .unwrap();
    let (status, log) = server.terminate_with_log();
    proxy.abort();
    assert!(status.success(), "{log:#?}");
    let waited = log
        .iter()
        .find(|line| line.contains("the database cannot be reached yet"))
        .unwrap_or_else(|| panic!("the wait is logged: {log:#?}"));
    assert!(
        waited.to_lowercase().contains("connection refused"),
        "with its real cause: {waited}"
    );

    // A database that answers but refuses the service is not waited for.
    let mut wrong = url::Url::parse(&database).unwrap();
    wrong.set_path("no_such_database");
    let started = std::time::Instant::now();
    let output = serve_command()
        .env("DATABASE_URL", wrong.as_str())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once, not after --db-startup-timeout"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no_such_database"), "{stderr}");
}

#[test]
fn an_invalid_rust_log_stops_the_service_before_it_starts() {
    let output = serve_command()
        .env("RUST_LOG", "info,job_service=loud")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RUST_LOG=\"info,job_service=loud\" is not a valid log filter"),
        "{stderr}"
    );
}

#[test]
fn sighup_and_sigquit_stop_the_service_cleanly_with_its_postgres() {
    for signal in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGQUIT,
    ] {
        let dir = data_dir();
        let mut command = serve_command();
        command
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1");
        let (status, log) = listening(command).signal_with_log(signal);
        assert!(status.success(), "{signal}: {status}: {log:#?}");
        assert!(
            log.iter()
                .any(|line| line.contains("shutdown signal received")
                    && line.contains(signal.as_str())),
            "{log:#?}"
        );
        assert!(
            !dir.path().join("postgres/postmaster.pid").exists(),
            "{signal} left PostgreSQL running"
        );
    }
}

/// A stop logs no warning: the connections the service keeps between batches (of starts, of
/// task completions) are closed before its own PostgreSQL stops, not found broken after.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_after_starts_and_completions_logs_no_warning() {
    let dir = data_dir();
    let server = start(dir.path());
    let admin = admin_token(dir.path());
    let worker_token = token([
        OsStr::new("--username"),
        OsStr::new("worker-1"),
        OsStr::new("--roles"),
        OsStr::new("worker"),
        OsStr::new("--data-dir"),
        dir.path().as_os_str(),
    ]);
    let workflow = json!({
        "name": "Echo",
        "type": "automation",
        "groups": [],
        "tasks": {
            "workflow_start": {"name": "workflow_start", "groups": []},
            "echo": {
                "name": "echo", "app": "Shell", "type": "automatic", "location": "Adapter",
                "summary": "Echo", "description": "", "variables": {"incoming": {}, "outgoing": {}}
            },
            "workflow_end": {"name": "workflow_end", "groups": []}
        },
        "transitions": {
            "workflow_start": {"echo": {"state": "success", "type": "standard"}},
            "echo": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {}
        }
    });
    server
        .workflows(&admin)
        .create_workflow(pb::CreateWorkflowRequest {
            workflow: Some(to_struct(&workflow)),
        })
        .await
        .unwrap();
    let mut jobs = JobServiceClient::with_interceptor(server.channel(), Bearer::new(&admin));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let started = jobs
            .start_job(pb::StartJobRequest {
                workflow: "Echo".into(),
                options: Some(pb::JobOptions::default()),
            })
            .await
            .unwrap();
        ids.push(started.into_inner().job.unwrap().id);
    }
    let scratch = tempfile::tempdir().unwrap();
    let token_file = scratch.path().join("worker.token");
    std::fs::write(&token_file, &worker_token).unwrap();
    let script = scratch.path().join("done.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\necho '{\"finish_state\": \"success\", \"outgoing\": {}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_job-service"))
        .args([
            "worker",
            "--grpc-addr",
            &server.addr.to_string(),
            "--token-file",
        ])
        .arg(&token_file)
        .arg("--exec")
        .arg(format!("Shell={}", script.display()))
        .env_remove("JOB_SERVICE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let job = jobs
                .get_job(pb::GetJobRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap();
            if job.status == pb::JobStatus::Complete as i32 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} never completed: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = worker.kill();
    let _ = worker.wait();

    let (status, log) = server.terminate_with_log();
    assert!(status.success(), "SIGTERM exits 0: {log:#?}");
    let complaints: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
    assert!(!dir.path().join("postgres/postmaster.pid").exists());
}
