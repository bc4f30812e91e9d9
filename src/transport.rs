//! Bounds on the connections of both front doors, so that slow, silent or idle clients cannot
//! hold the process's file descriptors and memory.
//!
//! - Each port holds at most `--max-connections` connections. At the cap the accept loop stops
//!   accepting (no spinning, no log line a second): new connections wait in the kernel's
//!   queue and are taken, in order, as the timeouts below free slots. The default cap, a
//!   quarter of the file descriptor limit a port, keeps the process clear of that limit.
//! - A connection with no call in flight for its port's idle timeout is closed: keep-alive
//!   connections nobody uses, connections on which nothing was ever sent, HTTP/2 connections
//!   that only answer pings. The server reads end of file from it ([`Connection`]), which ends
//!   the connection the way a client hanging up would.
//! - The gateway's HTTP/1 requests must send their headers within `--header-read-timeout`.
//! - HTTP/2 on both ports advertises `--max-concurrent-streams`, bounds the streams a client
//!   may open and reset at once, and pings quiet peers to find dead ones.
//!
//! Unary gRPC calls must also bring their request message in time: see `grpc::unary`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::bail;
use axum::http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::StreamExt as _;

use crate::config::ServeConfig;

/// How often a quiet HTTP/2 connection is pinged, and how long the answer may take before
/// the peer is taken for dead and the connection closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams a client may open and reset before the server has taken them up (h2's default,
/// stated here because a flood of such streams is a known attack).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Accepted connections waiting for the server to take them; they hold their slots.
const QUEUE: usize = 16;

/// Longest pause after a failed `accept`.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Least time between two warnings of the same kind from one listener.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The bounds of both front doors, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections each port holds open at once.
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub header_read_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub grpc_idle_timeout: Duration,
    /// Longest a unary gRPC call may take to send its request message.
    pub request_body_timeout: Duration,
}

impl Limits {
    /// The configured bounds; without `--max-connections`, a quarter of `open_files` (the
    /// process's file descriptor limit) for each port. Errors name the flag at fault.
    pub fn from_config(config: &ServeConfig, open_files: u64) -> anyhow::Result<Limits> {
        let timeouts = [
            ("--header-read-timeout", config.header_read_timeout),
            ("--idle-timeout", config.idle_timeout),
            ("--grpc-idle-timeout", config.grpc_idle_timeout),
            ("--request-body-timeout", config.request_body_timeout),
        ];
        for (flag, timeout) in timeouts {
            if Duration::from(timeout).is_zero() {
                bail!("{flag} must be longer than 0s");
            }
        }
        let max_connections = config.max_connections.unwrap_or(open_files / 4).max(1);
        Ok(Limits {
            max_connections: usize::try_from(max_connections)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
            max_concurrent_streams: config.max_concurrent_streams,
            header_read_timeout: config.header_read_timeout.into(),
            http_idle_timeout: config.idle_timeout.into(),
            grpc_idle_timeout: config.grpc_idle_timeout.into(),
            request_body_timeout: config.request_body_timeout.into(),
        })
    }

    /// The gRPC server with these bounds on its HTTP/2 connections, counting the calls in
    /// flight on each connection for the idle timeout.
    pub fn grpc_server(
        &self,
    ) -> tonic::transport::Server<
        tower::layer::util::Stack<TrackCallsLayer, tower::layer::util::Identity>,
    > {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(TrackCallsLayer)
    }
}

/// Raises the soft limit on open files to the hard one (many systems start services at 1024
/// with a hard limit far above) and returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                tracing::warn!(error = %error, soft, hard, "cannot raise the open file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the open file limit");
            1024
        }
    }
}

/// A bound TCP listener that holds at most `max_connections` connections open at once.
pub struct Listener {
    tcp: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    idle_timeout: Duration,
    /// Failed accepts in a row, and when the next may be tried.
    failures: u32,
    retry_at: Option<Instant>,
    warned_full: Option<Instant>,
    warned_failing: Option<Instant>,
}

impl Listener {
    pub fn new(tcp: TcpListener, max_connections: usize, idle_timeout: Duration) -> Listener {
        Listener {
            tcp,
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            idle_timeout,
            failures: 0,
            retry_at: None,
            warned_full: None,
            warned_failing: None,
        }
    }

    /// The next connection, with Nagle's algorithm off (a small answer goes out at once
    /// instead of waiting for the client's delayed ACK), once a slot is free. Failures (out of
    /// file descriptors and the like) are retried after a pause growing to a second, and
    /// logged at most once a minute. Cancel safe.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if due(&mut self.warned_full) {
                        tracing::warn!(
                            max_connections = self.max_connections,
                            "every connection slot is taken: new connections wait until one closes"
                        );
                    }
                    self.slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed")
                }
            };
            match self.tcp.accept().await {
                Ok((tcp, peer)) => {
                    self.failures = 0;
                    let _ = tcp.set_nodelay(true);
                    let slot = Slot {
                        _permit: permit,
                        idle_timeout: self.idle_timeout,
                    };
                    return (tcp, peer, slot);
                }
                Err(error) => {
                    self.failures = self.failures.saturating_add(1);
                    if due(&mut self.warned_failing) {
                        tracing::warn!(error = %error, failures = self.failures, "cannot accept a connection");
                    }
                    let backoff = Duration::from_millis(10)
                        .saturating_mul(1 << self.failures.min(10))
                        .min(MAX_ACCEPT_BACKOFF);
                    self.retry_at = Some(Instant::now() + backoff);
                }
            }
        }
    }
}

/// Whether a warning last given at `last` may be given again, noting it given if so.
fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    match last {
        Some(at) if now.duration_since(*at) < WARNING_INTERVAL => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// One of a port's connection slots, held from `accept` until the connection is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
}

impl Slot {
    /// The connection `io` (a TCP or TLS stream), holding this slot.
    pub fn hold<IO>(self, io: IO) -> Connection<IO> {
        Connection {
            io,
            calls: Calls::default(),
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
            idle_timeout: self.idle_timeout,
            closed: false,
            _slot: self,
        }
    }
}

/// The calls in flight on one connection, and since when there have been none.
#[derive(Clone)]
pub struct Calls(Arc<Mutex<CallsState>>);

struct CallsState {
    in_flight: usize,
    idle_since: Instant,
}

impl Default for Calls {
    fn default() -> Self {
        Calls(Arc::new(Mutex::new(CallsState {
            in_flight: 0,
            idle_since: Instant::now(),
        })))
    }
}

impl Calls {
    fn start(&self) -> CallGuard {
        self.0.lock().expect("never poisoned").in_flight += 1;
        CallGuard(self.clone())
    }

    /// When the connection times out if no call starts before, or `None` while calls run.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        let state = self.0.lock().expect("never poisoned");
        (state.in_flight == 0).then(|| state.idle_since + timeout)
    }
}

/// One call in flight, until dropped (its answer sent, or the call abandoned).
struct CallGuard(Calls);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.0 .0.lock().expect("never poisoned");
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// An accepted connection: holds its port's slot until dropped, and reads as closed by the
/// client once it has had no call in flight for the idle timeout.
pub struct Connection<IO> {
    io: IO,
    calls: Calls,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    closed: bool,
    _slot: Slot,
}

impl<IO> Connection<IO> {
    /// The calls in flight on this connection, which [`TrackCalls`] counts.
    pub fn calls(&self) -> Calls {
        self.calls.clone()
    }

    /// Whether the connection has been idle for its timeout. Called when a read would wait,
    /// so that the timer wakes the reader.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.calls.idle_deadline(self.idle_timeout);
        match deadline {
            Some(deadline) if deadline != self.idle.deadline() => {
                self.idle.as_mut().reset(deadline)
            }
            // Busy: look again a timeout later (resetting on every read would cost more).
            None if self.idle.is_elapsed() => {
                self.idle.as_mut().reset(Instant::now() + self.idle_timeout)
            }
            _ => {}
        }
        self.idle.as_mut().poll(cx).is_ready() && deadline.is_some()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Connection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if polled.is_pending() && this.idle_expired(cx) {
            tracing::debug!(timeout = ?this.idle_timeout, "closing an idle connection");
            this.closed = true;
            return Poll::Ready(Ok(()));
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Connection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// tonic puts a connection's info in the extensions of each of its requests: for our
/// connections, the calls in flight, which [`TrackCallsLayer`] counts.
impl<IO> tonic::transport::server::Connected for Connection<IO> {
    type ConnectInfo = Calls;

    fn connect_info(&self) -> Calls {
        self.calls()
    }
}

/// The connections of one port, as its accept loop hands them over. Dropping it stops the
/// accept loop and closes the listener.
pub struct Incoming<IO> {
    connections: mpsc::Receiver<Connection<IO>>,
}

impl<IO: Send + 'static> Incoming<IO> {
    /// A queue for an accept loop to fill; the loop should stop once the sender is closed.
    pub fn channel() -> (mpsc::Sender<Connection<IO>>, Incoming<IO>) {
        let (sender, connections) = mpsc::channel(QUEUE);
        (sender, Incoming { connections })
    }

    pub async fn next(&mut self) -> Option<Connection<IO>> {
        self.connections.recv().await
    }

    /// The connections as a stream, for tonic.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<Connection<IO>>> {
        tokio_stream::wrappers::ReceiverStream::new(self.connections).map(Ok)
    }
}

/// The listener's connections over plain TCP.
pub fn plain(mut listener: Listener) -> Incoming<TcpStream> {
    let (sender, incoming) = Incoming::channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _, slot) = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = sender.closed() => return,
            };
            if sender.send(slot.hold(tcp)).await.is_err() {
                return;
            }
        }
    });
    incoming
}

/// Serves the gateway on `incoming` (HTTP/1.1 and HTTP/2, each connection's protocol read from
/// its first bytes) until `shutdown` resolves, then stops accepting and waits for the open
/// connections to finish their requests and close.
pub async fn serve_http<IO>(
    mut incoming: Incoming<IO>,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let connection = tokio::select! {
            connection = incoming.next() => match connection {
                Some(connection) => connection,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(TrackCalls {
            inner: router.clone(),
            calls: Some(connection.calls()),
        });
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(connection), service)
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::debug!(error = %error, "http connection ended with an error");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}

/// Counts each call in flight on its connection, from its arrival until its answer is sent
/// or abandoned, so that the idle timeout spares connections with calls running.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackCallsLayer;

impl<S> tower::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;

    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls { inner, calls: None }
    }
}

/// See [`TrackCallsLayer`]. The connection's [`Calls`] are given (the gateway serves each
/// connection itself) or found in the request's extensions (tonic puts them there).
#[derive(Clone)]
pub struct TrackCalls<S> {
    inner: S,
    calls: Option<Calls>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for TrackCalls<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let guard = self
            .calls
            .as_ref()
            .or_else(|| request.extensions().get::<Calls>())
            .map(Calls::start);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Tracked {
                inner,
                _call: guard,
            }))
        })
    }
}

/// A response body that keeps its call counted until the body is sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _call: Option<CallGuard>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_is_a_quarter_of_the_open_file_limit_a_port() {
        let config = ServeConfig::defaults();
        assert_eq!(
            Limits::from_config(&config, 4096).unwrap().max_connections,
            1024
        );
        assert_eq!(Limits::from_config(&config, 2).unwrap().max_connections, 1);
        let mut config = ServeConfig::defaults();
        config.max_connections = Some(8);
        assert_eq!(
            Limits::from_config(&config, 4096).unwrap().max_connections,
            8
        );
    }

    #[test]
    fn a_zero_timeout_is_refused_by_its_flag() {
        let mut config = ServeConfig::defaults();
        config.idle_timeout = Duration::ZERO.into();
        let error = Limits::from_config(&config, 1024).unwrap_err().to_string();
        assert!(error.contains("--idle-timeout"), "{error}");
    }

    #[tokio::test]
    async fn a_connection_times_out_only_when_no_call_is_in_flight() {
        let idle_timeout = Duration::from_millis(200);
        let (client, server) = tokio::io::duplex(64);
        let slots = Arc::new(Semaphore::new(1));
        let slot = Slot {
            _permit: slots.clone().try_acquire_owned().unwrap(),
            idle_timeout,
        };
        let mut connection = slot.hold(server);
        let call = connection.calls().start();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(idle_timeout * 3, async {
            tokio::io::AsyncReadExt::read(&mut connection, &mut buf).await
        });
        assert!(read.await.is_err(), "a call is in flight: no end of file");
        drop(call);
        let started = Instant::now();
        let read = tokio::io::AsyncReadExt::read(&mut connection, &mut buf).await;
        assert_eq!(read.unwrap(), 0, "end of file once idle");
        assert!(started.elapsed() >= idle_timeout);
        assert_eq!(slots.available_permits(), 0, "the slot is held");
        drop(connection);
        assert_eq!(
            slots.available_permits(),
            1,
            "and freed with the connection"
        );
        drop(client);
    }
}
