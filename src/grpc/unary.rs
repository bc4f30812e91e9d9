//! A unary call brings exactly one request message, whole, within `--request-body-timeout`;
//! so does a call of a server-streaming method of ours (one request, a stream of answers).
//!
//! tonic reads such a call's first message and ignores the rest, and waits as long as the
//! client likes for it: a client could open streams, send half a message and leave them
//! hanging, each holding its stream and buffers. [`UnaryCalls`] reads the request body of every
//! such method first, within the timeout, and hands the service the message once complete;
//! otherwise it answers at once and the stream is freed:
//!
//! - none in time: DEADLINE_EXCEEDED;
//! - none at all, one cut short, or more than one: INVALID_ARGUMENT;
//! - one declared over the size limit: RESOURCE_EXHAUSTED, before it is read;
//! - the body broken off (the client reset the stream or dropped the connection): CANCELLED.
//!
//! gRPC framing: each message is a compressed flag (1 byte), a length (4 bytes, big-endian)
//! and that many bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use http_body_util::{BodyExt, Full};
use prost::bytes::{Bytes, BytesMut};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

/// tonic's limit on a decoded message, which the service keeps: a longer one is not read.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

const PREFIX_BYTES: usize = 5;

/// The kinds of call that take exactly one request message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OneMessage {
    Unary,
    ServerStreaming,
}

impl OneMessage {
    /// The call, as the answers name it.
    fn call(self) -> &'static str {
        match self {
            OneMessage::Unary => "a unary call",
            OneMessage::ServerStreaming => "a server-streaming call",
        }
    }
}

/// The paths of the methods served that take one request message: the unary methods
/// (`/operations_manager.v1.JobService/StartJob`, `/grpc.health.v1.Health/Check`) and our
/// server-streaming ones (`/operations_manager.v1.JobService/WatchJob`). Health's Watch and
/// reflection are left to tonic as they are.
static ONE_MESSAGE_METHODS: LazyLock<HashMap<String, OneMessage>> = LazyLock::new(|| {
    let paths = |sets: &[&[u8]], streaming: bool| {
        super::observe::method_paths(sets, |method| {
            !method.client_streaming() && method.server_streaming() == streaming
        })
    };
    let unary = paths(
        &[
            super::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
        false,
    );
    let streaming = paths(&[super::FILE_DESCRIPTOR_SET], true);
    unary
        .into_iter()
        .map(|path| (path, OneMessage::Unary))
        .chain(
            streaming
                .into_iter()
                .map(|path| (path, OneMessage::ServerStreaming)),
        )
        .collect()
});

/// Wraps a generated server: its methods that take one request message get it read first.
#[derive(Clone)]
pub struct UnaryCalls<S> {
    inner: S,
    timeout: Duration,
}

impl<S> UnaryCalls<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        UnaryCalls { inner, timeout }
    }
}

impl<S: NamedService> NamedService for UnaryCalls<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for UnaryCalls<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(kind) = one_message_method(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        // The ready service answers this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timeout = self.timeout;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let message = match tokio::time::timeout(timeout, one_message(body, kind)).await {
                Ok(Ok(message)) => message,
                Ok(Err(status)) => return Ok(status.into_http()),
                Err(_) => {
                    return Ok(Status::deadline_exceeded(format!(
                        "the request message did not arrive within {}",
                        humantime::format_duration(timeout)
                    ))
                    .into_http())
                }
            };
            let body = Body::new(Full::new(message));
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// Reads the body: the one message it holds, with its prefix, or the status to answer.
async fn one_message(mut body: Body, kind: OneMessage) -> Result<Bytes, Status> {
    // Most messages come in one DATA frame, kept as it is; more are joined.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            Status::cancelled("the client went away before its request message arrived")
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
        let received = first.as_deref().unwrap_or(&joined);
        if let Framing::More = framing(received)? {
            return Err(more_than_one(kind));
        }
    }
    let received = first.unwrap_or_else(|| joined.freeze());
    match framing(&received)? {
        Framing::One => Ok(received),
        Framing::More => Err(more_than_one(kind)),
        Framing::Empty => Err(Status::invalid_argument(format!(
            "{} carries exactly one request message; this one carried none",
            kind.call()
        ))),
        Framing::Partial { arrived, length } => Err(Status::invalid_argument(format!(
            "the request message is cut short: {arrived} of its {length} bytes arrived"
        ))),
    }
}

fn more_than_one(kind: OneMessage) -> Status {
    Status::invalid_argument(format!(
        "{} carries exactly one request message",
        kind.call()
    ))
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    /// The first message, not all of it yet (`arrived` counts from the prefix on while the
    /// prefix is incomplete, else the message's bytes).
    Partial {
        arrived: usize,
        length: usize,
    },
    One,
    /// The first message and the start of another.
    More,
}

/// Reads the first message's prefix; a length over the limit is refused before the message
/// is read.
fn framing(received: &[u8]) -> Result<Framing, Status> {
    let Some(prefix) = received.get(..PREFIX_BYTES) else {
        return Ok(match received.len() {
            0 => Framing::Empty,
            arrived => Framing::Partial {
                arrived,
                length: PREFIX_BYTES,
            },
        });
    };
    let length = u32::from_be_bytes(prefix[1..].try_into().expect("four bytes")) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the request message is too large: {length} bytes, the limit is {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    let arrived = received.len() - PREFIX_BYTES;
    Ok(match arrived.cmp(&length) {
        std::cmp::Ordering::Less => Framing::Partial { arrived, length },
        std::cmp::Ordering::Equal => Framing::One,
        std::cmp::Ordering::Greater => Framing::More,
    })
}

/// Whether `path` is a method served that takes one request message, and which kind.
fn one_message_method(path: &str) -> Option<OneMessage> {
    ONE_MESSAGE_METHODS.get(path).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn framing_tells_none_part_one_and_more_apart() {
        assert_eq!(framing(&[]).unwrap(), Framing::Empty);
        assert_eq!(
            framing(&[0, 0]).unwrap(),
            Framing::Partial {
                arrived: 2,
                length: 5
            }
        );
        let one = framed(b"abc");
        assert_eq!(
            framing(&one[..6]).unwrap(),
            Framing::Partial {
                arrived: 1,
                length: 3
            }
        );
        assert_eq!(framing(&one).unwrap(), Framing::One);
        assert_eq!(framing(&framed(b"")).unwrap(), Framing::One);
        let mut two = one.clone();
        two.push(0);
        assert_eq!(framing(&two).unwrap(), Framing::More);
    }

    #[test]
    fn a_message_declared_over_the_limit_is_refused_before_it_is_read() {
        let prefix = [0, 0x7f, 0xff, 0xff, 0xff];
        let status = framing(&prefix).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("too large"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn the_unary_methods_are_ours_and_health_check_only() {
        let is_unary = |path| one_message_method(path) == Some(OneMessage::Unary);
        assert!(is_unary("/operations_manager.v1.JobService/StartJob"));
        assert!(is_unary(
            "/operations_manager.v1.WorkflowService/CreateWorkflow"
        ));
        assert!(is_unary(
            "/operations_manager.v1.WorkerService/CompleteTask"
        ));
        assert!(is_unary("/grpc.health.v1.Health/Check"));
        assert!(!is_unary("/grpc.health.v1.Health/Watch"));
        assert!(!is_unary(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[test]
    fn our_server_streaming_methods_take_one_message_and_health_watch_is_left_alone() {
        for path in [
            "/operations_manager.v1.JobService/WatchJob",
            "/operations_manager.v1.WorkerService/PollTasks",
        ] {
            assert_eq!(
                one_message_method(path),
                Some(OneMessage::ServerStreaming),
                "{path}"
            );
        }
        assert_eq!(one_message_method("/grpc.health.v1.Health/Watch"), None);
        assert_eq!(
            more_than_one(OneMessage::ServerStreaming).message(),
            "a server-streaming call carries exactly one request message"
        );
        assert_eq!(
            more_than_one(OneMessage::Unary).message(),
            "a unary call carries exactly one request message"
        );
    }
}
