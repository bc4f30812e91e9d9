//! Observability, in one room: what is recorded of every call ([`call`]: its span and its
//! metrics from arrival until the status is known), the Prometheus registry served at
//! `GET /metrics` ([`metrics`]), and where logs and spans go ([`telemetry`]: stderr, and an
//! OpenTelemetry collector with the `otel` feature).
//!
//! Each front door wraps its calls in a layer of its own (`grpc/observe.rs`, `http/observe.rs`):
//! those know their protocol's bodies and statuses, and call into this room.

pub mod call;
pub mod metrics;
pub mod telemetry;

pub use call::{call_span, record_caller, record_job_id, request_id, Call, REQUEST_ID};
pub use metrics::Metrics;

/// A caller's text as a log field: control characters (newlines, escape codes) and quotes
/// written as escapes, so that a value cannot forge log lines or colour a terminal. Log it
/// with `%`: `tracing::info!(workflow = %Escaped(name), ...)`.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // escape_debug leaves printable text as it is, Unicode included.
        write!(f, "{}", self.0.escape_debug())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn caller_text_cannot_forge_a_line_or_send_escape_codes() {
        let hostile = "ok\n2026-12-01T00:00:00Z  INFO forged\u{1b}[31m";
        let shown = Escaped(hostile).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(
            shown.contains("\\n") && shown.contains("\\u{1b}"),
            "{shown}"
        );
        assert_eq!(Escaped("Création réseau").to_string(), "Création réseau");
    }
}
