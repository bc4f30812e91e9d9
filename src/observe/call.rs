//! What both front doors record of every call, in one place: a span named `call` with the
//! request id, the method, and (once known) the caller, the job id and the status, so that every
//! log line of the call carries them; and the metrics, from arrival until the status is known,
//! also when the call fails or the client goes away.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use tracing::field::Empty;
use tracing::Span;

use super::metrics::{Endpoint, Metrics, Outcome};
use crate::domain::Caller;

/// The header (HTTP) and metadata key (gRPC) of the request id, in requests and answers.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of a call: the client's `x-request-id` when it is 1 to 128 visible ASCII
/// characters, else a new UUID.
///
/// Marked sensitive, which HTTP/2's header compression (HPACK) sends as "never indexed": an
/// id differs in every answer, so remembering it in the connection's compression table only
/// pushed out the headers that do repeat, and every answer compared its id with each id the
/// table held (a fifth of the CPU of a gRPC call that does nothing).
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut id = headers
        .get(REQUEST_ID)
        .filter(|given| {
            let bytes = given.as_bytes();
            (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a header value")
        });
    id.set_sensitive(true);
    id
}

/// The span of one call. `protocol` is `grpc` or `http`; `method` the gRPC path
/// (`/operations_manager.v1.JobService/StartJob`) or the HTTP method and route template
/// (`GET /operations-manager/jobs/{id}`).
pub fn call_span(protocol: &'static str, method: &str, request_id: &HeaderValue) -> Span {
    let span = tracing::info_span!(
        "call",
        protocol,
        method,
        request_id = request_id.to_str().unwrap_or_default(),
        caller = Empty,
        job_id = Empty,
        status = Empty,
        otel.name = Empty,
        otel.kind = Empty,
    );
    // A collector shows a span by its name: the method, rather than `call` for all. Recorded
    // only then, so that log lines do not repeat the method.
    if super::telemetry::exporting() {
        span.record("otel.name", method);
        span.record("otel.kind", "server");
    }
    span
}

/// Names the caller (its `sub`) in the current call's span. Front doors call it once the
/// token is verified, outside any inner span.
pub fn record_caller(caller: &Caller) {
    Span::current().record("caller", caller.sub.as_str());
}

/// Names the job in the current call's span, as [`record_caller`].
pub fn record_job_id(id: &str) {
    Span::current().record("job_id", id);
}

/// One call being served. Dropped before [`Call::finish`], it is counted as cancelled: the
/// client went away and the server dropped the work.
pub struct Call {
    metrics: Arc<Metrics>,
    endpoint: Endpoint,
    span: Span,
    started: Instant,
    finished: bool,
}

impl Call {
    pub fn start(metrics: Arc<Metrics>, endpoint: Endpoint, span: Span) -> Call {
        metrics.call_started(&endpoint);
        Call {
            metrics,
            endpoint,
            span,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Counts the call and logs its end, with its status, in its span.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed = self.started.elapsed();
        self.metrics.call_finished(&self.endpoint, outcome, elapsed);
        let status = outcome.label(&self.endpoint);
        self.span.record("status", status.as_str());
        // The status is a field of the span; milliseconds to the microsecond.
        let elapsed_ms = elapsed.as_micros() as f64 / 1000.0;
        self.span
            .in_scope(|| tracing::info!(elapsed_ms, "call finished"));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_request_id_is_kept_and_a_bad_or_missing_one_replaced() {
        let mut headers = HeaderMap::new();
        let generated = request_id(&headers);
        assert!(uuid::Uuid::parse_str(generated.to_str().unwrap()).is_ok());
        assert!(generated.is_sensitive(), "never indexed by HPACK");
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-42"));
        assert_eq!(request_id(&headers), "req-42");
        assert!(request_id(&headers).is_sensitive());
        for bad in ["", "has space", &"x".repeat(129)] {
            headers.insert(REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(request_id(&headers), bad, "{bad:?}");
        }
    }
}
