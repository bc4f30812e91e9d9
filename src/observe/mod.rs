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
