//! Bounds on connections, streams and time at both front doors: slow and idle connections are
//! cut, the number of connections a port holds is capped without starving health checks, a
//! unary call must bring exactly one request message in time, and a client that goes away is
//! counted as CANCELLED.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Request};
use job_service::grpc::pb;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::helpers::TestApp;
use crate::serve::{listening, serve_command};

const START_JOB: &str = "/operations_manager.v1.JobService/StartJob";
const GET_JOB: &str = "/operations_manager.v1.JobService/GetJob";
const WATCH_JOB: &str = "/operations_manager.v1.JobService/WatchJob";
const POLL_TASKS: &str = "/operations_manager.v1.WorkerService/PollTasks";

/// The gateway's address (the tests here serve plain HTTP).
fn http_addr(app: &TestApp) -> SocketAddr {
    app.http_url
        .strip_prefix("http://")
        .and_then(|addr| addr.parse().ok())
        .expect("a plain HTTP gateway")
}

/// Reads from `tcp` until the server closes it (EOF or reset) and returns how long that took,
/// or `None` if it was still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// Reads one HTTP/1.1 response with a Content-Length body, leaving the connection open.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tcp.read(&mut buf).await.unwrap();
        assert!(
            read > 0,
            "the server closed the connection before answering"
        );
        response.extend_from_slice(&buf[..read]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_half_sent_request_line_is_cut_off_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout = Duration::from_millis(500).into();
        config.idle_timeout = Duration::from_secs(30).into();
    })
    .await;
    let mut slow = TcpStream::connect(http_addr(&app)).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(3))
        .await
        .expect("the server cut the slow connection off");
    assert!(closed >= Duration::from_millis(400), "{closed:?}");
}

#[tokio::test]
async fn idle_and_silent_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout = Duration::from_secs(30).into();
        config.idle_timeout = Duration::from_millis(500).into();
        config.grpc_idle_timeout = Duration::from_millis(500).into();
    })
    .await;
    // A keep-alive connection after its answer.
    let mut idle = TcpStream::connect(http_addr(&app)).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let closed = closed_within(&mut idle, Duration::from_secs(3))
        .await
        .expect("the server closed the idle keep-alive connection");
    assert!(closed >= Duration::from_millis(400), "{closed:?}");

    // Connections on which nothing was ever sent, on both ports.
    for addr in [http_addr(&app), app.addr] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut silent, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("the server closed the silent connection to {addr}"));
    }

    // An HTTP/2 connection with no call in flight, though it answers the server's pings.
    let (mut grpc, connection) = h2_connect(app.addr).await;
    let (code, _) = grpc_call(
        &mut grpc,
        &app,
        GET_JOB,
        &[&get_job("0123456789abcdef01234567")],
    )
    .await;
    assert_eq!(code, tonic::Code::NotFound);
    let _ended = tokio::time::timeout(Duration::from_secs(3), connection)
        .await
        .expect("the server closed the idle HTTP/2 connection");
}

#[tokio::test]
async fn health_checks_are_answered_while_slow_connections_fill_every_slot() {
    let app = TestApp::spawn_with(|config| {
        config.max_connections = Some(8);
        config.header_read_timeout = Duration::from_millis(500).into();
        config.idle_timeout = Duration::from_millis(500).into();
    })
    .await;
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut tcp = TcpStream::connect(http_addr(&app)).await.unwrap();
        if i % 2 == 0 {
            tcp.write_all(b"GET /health/ready HT").await.unwrap();
        }
        slow.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let response = app
        .http
        .get(format!("{}/health/ready", app.http_url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the health check is answered once the slow connections are cut");
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    // It waited for a slot: the cap held, and the timeouts freed one.
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

/// The binary with a file descriptor limit of 64: its default cap (a quarter of the limit a
/// port) keeps it clear of the limit, so 40 slow connections neither make it log accept errors
/// nor keep its health check from being answered.
#[tokio::test]
async fn under_a_low_file_descriptor_limit_slow_connections_neither_starve_health_nor_flood_the_log(
) {
    use std::os::unix::process::CommandExt;
    let mut command = serve_command();
    command
        .args(["--header-read-timeout", "300ms", "--idle-timeout", "300ms"])
        .env("DATABASE_URL", crate::helpers::fresh_database().await)
        .env("JOB_SERVICE_DB_MAX_CONNECTIONS", "4");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 64, 64)
                .map_err(std::io::Error::from)
        });
    }
    let server = listening(command);
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(server.http_addr).await.unwrap();
        tcp.write_all(b"GET /health/ready HT").await.unwrap();
        slow.push(tcp);
    }
    let response = reqwest::Client::new()
        .get(format!("http://{}/health/ready", server.http_addr))
        .timeout(Duration::from_secs(6))
        .send()
        .await
        .expect("the health check is answered");
    assert_eq!(response.status(), 200);
    drop(slow);
    let (_, log) = server.terminate_with_log();
    let errors: Vec<_> = log.iter().filter(|line| line.contains("accept")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// An HTTP/2 connection over plain TCP, and the task driving it (it ends when the server closes
/// the connection).
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

/// The headers of a gRPC call to `path`, as the admin.
fn grpc_request(app: &TestApp, path: &str) -> Request<()> {
    Request::post(format!("http://{}{path}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .body(())
        .unwrap()
}

/// One length-prefixed gRPC message.
fn frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    framed
}

fn get_job(id: &str) -> Vec<u8> {
    frame(&pb::GetJobRequest { id: id.into() })
}

/// The status of an answer: in its headers (trailers only) or in its trailers.
async fn status_of(response: h2::client::ResponseFuture) -> (tonic::Code, String) {
    let response = response.await.expect("an answer");
    let from = |headers: &HeaderMap| {
        tonic::Status::from_header_map(headers).map(|s| (s.code(), s.message().to_owned()))
    };
    if let Some(status) = from(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        data.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    from(&trailers).expect("a grpc-status")
}

/// A whole call whose body is `messages`, one after another: its status.
async fn grpc_call(
    send: &mut h2::client::SendRequest<Bytes>,
    app: &TestApp,
    path: &str,
    messages: &[&[u8]],
) -> (tonic::Code, String) {
    let ready = send.clone().ready().await.unwrap();
    *send = ready;
    let (response, mut body) = send.send_request(grpc_request(app, path), false).unwrap();
    body.send_data(Bytes::from(messages.concat()), true)
        .unwrap();
    status_of(response).await
}

#[tokio::test]
async fn both_ports_advertise_max_concurrent_streams() {
    let app = TestApp::spawn_with(|config| config.max_concurrent_streams = 16).await;
    let (mut grpc, _connection) = h2_connect(app.addr).await;
    // The server's SETTINGS have arrived once a call is answered.
    let (code, _) = grpc_call(
        &mut grpc,
        &app,
        GET_JOB,
        &[&get_job("0123456789abcdef01234567")],
    )
    .await;
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(grpc.current_max_send_streams(), 16);

    let (http, _connection) = h2_connect(http_addr(&app)).await;
    let mut http = http.ready().await.unwrap();
    let (response, _) = http
        .send_request(
            Request::get(format!("http://{}/health/live", http_addr(&app)))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(http.current_max_send_streams(), 16);
}

#[tokio::test]
async fn a_unary_call_whose_message_never_completes_is_deadline_exceeded_after_the_body_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.request_body_timeout = Duration::from_millis(500).into();
    })
    .await;
    let (grpc, _connection) = h2_connect(app.addr).await;
    let mut grpc = grpc.ready().await.unwrap();
    let (response, mut body) = grpc
        .send_request(grpc_request(&app, START_JOB), false)
        .unwrap();
    // A message of 100 bytes, of which 10 are sent.
    let mut half = vec![0, 0, 0, 0, 100];
    half.extend_from_slice(&[0; 10]);
    body.send_data(Bytes::from(half), false).unwrap();
    let started = Instant::now();
    let (code, message) = tokio::time::timeout(Duration::from_secs(3), status_of(response))
        .await
        .expect("the server answers the half-sent call");
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
    assert_eq!(message, "the request message did not arrive within 500ms");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_unary_call_must_carry_exactly_one_request_message() {
    let app = TestApp::spawn().await;
    let (mut grpc, _connection) = h2_connect(app.addr).await;
    let id = "0123456789abcdef01234567";
    let (code, message) = grpc_call(&mut grpc, &app, GET_JOB, &[&get_job(id), &get_job(id)]).await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert_eq!(message, "a unary call carries exactly one request message");

    let (code, message) = grpc_call(&mut grpc, &app, GET_JOB, &[]).await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("carried none"), "{message}");

    // Health checks are unary calls too; one message is answered as before.
    let check = frame(&tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    let (code, _) = grpc_call(
        &mut grpc,
        &app,
        "/grpc.health.v1.Health/Check",
        &[&check, &check],
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    let (code, message) = grpc_call(&mut grpc, &app, GET_JOB, &[&get_job(id)]).await;
    assert_eq!(code, tonic::Code::NotFound, "{message}");
}

#[tokio::test]
async fn a_server_streaming_call_must_carry_exactly_one_whole_request_message_in_time() {
    let app = TestApp::spawn_with(|config| {
        config.request_body_timeout = Duration::from_millis(500).into();
    })
    .await;
    let (mut grpc, _connection) = h2_connect(app.addr).await;
    let watch = frame(&pb::WatchJobRequest {
        job_id: "0123456789abcdef01234567".into(),
        after_sequence: 0,
    });
    let poll = frame(&pb::PollTasksRequest {
        worker_id: "w".into(),
        apps: vec!["A".into()],
        max_tasks: 1,
    });
    for (path, message) in [(WATCH_JOB, &watch), (POLL_TASKS, &poll)] {
        let (code, message) = grpc_call(&mut grpc, &app, path, &[message, message]).await;
        assert_eq!(code, tonic::Code::InvalidArgument, "{path}: {message}");
        assert_eq!(
            message,
            "a server-streaming call carries exactly one request message"
        );
        let (code, message) = grpc_call(&mut grpc, &app, path, &[]).await;
        assert_eq!(code, tonic::Code::InvalidArgument, "{path}: {message}");
        assert!(message.contains("carried none"), "{message}");
    }

    // A message cut short waits no longer than the body timeout.
    let mut grpc = grpc.ready().await.unwrap();
    let (response, mut body) = grpc
        .send_request(grpc_request(&app, WATCH_JOB), false)
        .unwrap();
    body.send_data(Bytes::from(watch[..8].to_vec()), false)
        .unwrap();
    let (code, message) = tokio::time::timeout(Duration::from_secs(3), status_of(response))
        .await
        .expect("the server answers the half-sent call");
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
}

#[tokio::test]
async fn a_server_streaming_request_with_a_field_this_version_lacks_is_refused_by_number() {
    let app = TestApp::spawn().await;
    let (mut grpc, _connection) = h2_connect(app.addr).await;
    let mut request = pb::WatchJobRequest {
        job_id: "0123456789abcdef01234567".into(),
        after_sequence: 3,
    }
    .encode_to_vec();
    // Field 9, a varint: what a client built from a newer .proto might send.
    request.extend_from_slice(&[9 << 3, 1]);
    let mut framed = vec![0];
    framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
    framed.extend_from_slice(&request);
    let (code, message) = grpc_call(&mut grpc, &app, WATCH_JOB, &[&framed]).await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(message.contains("#9"), "{message}");
}

/// `job_service_grpc_requests_total` of StartJob by status code, from `GET /metrics`.
async fn start_job_calls(app: &TestApp) -> Vec<(String, f64)> {
    let text = app
        .http
        .get(format!("{}/metrics", app.http_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("job_service_grpc_requests_total{") && line.contains("StartJob")
        })
        .map(|line| {
            let code = line
                .split("code=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let count = line.rsplit_once(' ').unwrap().1.parse().unwrap();
            (code.to_owned(), count)
        })
        .collect()
}

#[tokio::test]
async fn calls_whose_client_went_away_are_counted_cancelled() {
    let app = TestApp::spawn().await;
    let mut half = vec![0, 0, 0, 0, 100];
    half.extend_from_slice(&[0; 10]);

    // One client resets its stream half-way through the message.
    let (grpc, _connection) = h2_connect(app.addr).await;
    let mut grpc = grpc.ready().await.unwrap();
    let (_response, mut body) = grpc
        .send_request(grpc_request(&app, START_JOB), false)
        .unwrap();
    body.send_data(Bytes::from(half.clone()), false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    body.send_reset(h2::Reason::CANCEL);

    // Another drops its connection half-way through the message.
    let (grpc, connection) = h2_connect(app.addr).await;
    let mut grpc = grpc.ready().await.unwrap();
    let (_response, mut body) = grpc
        .send_request(grpc_request(&app, START_JOB), false)
        .unwrap();
    body.send_data(Bytes::from(half), false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.abort();
    drop((grpc, body));

    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let calls = start_job_calls(&app).await;
        let counted: f64 = calls.iter().map(|(_, count)| count).sum();
        if counted >= 2.0 || Instant::now() > deadline {
            assert_eq!(calls, [("CANCELLED".to_owned(), 2.0)]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's side of an in-memory connection, recording the size of each write, and
/// writing vectored as a TCP socket does.
struct RecordWrites {
    inner: tokio::io::DuplexStream,
    writes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl tokio::io::AsyncRead for RecordWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for RecordWrites {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // One write of everything, as writev on a socket with room.
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, &all);
        if let std::task::Poll::Ready(Ok(n)) = &written {
            self.writes.lock().unwrap().push(*n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A unary gRPC answer is HEADERS, one DATA frame and the trailers (`grpc-status`). The HTTP/2
/// library the servers use (h2, patched: vendor/h2/VENDORED.md) writes them in one write, so a
/// StartJob answer (about 6 KB) is one TCP segment, not its data and then 10 bytes of trailers
/// in a segment of their own, which cost a fifth of the starts a second at concurrency 64.
#[tokio::test]
async fn an_answer_and_its_trailers_go_out_in_one_write() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server_io = RecordWrites {
        inner: server_io,
        writes: writes.clone(),
    };
    let server_writes = writes.clone();
    let server = tokio::spawn(async move {
        let mut connection = h2::server::handshake(server_io).await.unwrap();
        let (_request, mut respond) = connection.accept().await.unwrap().unwrap();
        // From here on, the writes are the answer's.
        server_writes.lock().unwrap().clear();
        let answer = axum::http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut body = respond.send_response(answer, false).unwrap();
        body.send_data(Bytes::from(vec![7u8; 6000]), false).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        body.send_trailers(trailers).unwrap();
        // Drives the connection (its writes) until the client goes away.
        while connection.accept().await.is_some() {}
    });

    let (client, connection) = h2::client::handshake(client_io).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::post("http://localhost/operations_manager.v1.JobService/StartJob")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let mut body = answer.await.unwrap().into_body();
    let mut received = 0;
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        received += data.len();
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(received, 6000);

    let answer_writes = writes.lock().unwrap().clone();
    assert_eq!(
        answer_writes.len(),
        1,
        "the answer's headers, data and trailers in one write; writes of {answer_writes:?} bytes"
    );
    drop(client);
    server.abort();
}
