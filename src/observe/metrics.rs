//! Prometheus metrics: calls on both front doors (counts by status, latency, in flight), jobs
//! started, and the database pool. Each [`Metrics`] has a registry of its own (no global
//! recorder), so two services in one process, as in the tests, count apart.
//!
//! Labels come from bounded sets only: gRPC methods the service knows, HTTP route templates
//! (`/operations-manager/jobs/{id}`, never the raw path), standard HTTP methods.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::PoolStats;

/// The content type of [`Metrics::encode`]'s output: OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: 0.5 ms to 10 s. A StartJob takes about a millisecond on an idle
/// server; the database timeouts are seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A gRPC method: `service` `operations_manager.v1.JobService`, `method` `StartJob`. A path the
/// service does not know is `unknown`/`unknown`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethod {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcResult {
    service: String,
    method: String,
    /// The status code's name, as in `google/rpc/code.proto` (`OK`, `INVALID_ARGUMENT`).
    code: &'static str,
}

/// An HTTP route: the method and the route template that matched (`unmatched` when none did).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRoute {
    pub method: String,
    pub route: String,
}

/// One of the service's memory-bounded caches: `workflows` (compiled workflows) or `graphs`
/// (the task graphs of stored jobs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// A front door (`grpc`, `http`) and why its handshakes failed (`error`, `timeout`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabel {
    door: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpResult {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobsStarted {
    /// `created`, or `replayed` when an idempotency key returned an earlier job.
    result: &'static str,
}

/// Which front door a call came through, with the labels that name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Grpc(GrpcMethod),
    Http(HttpRoute),
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A gRPC status code (0 is OK).
    Grpc(i32),
    Http(u16),
    /// The client went away before the answer was complete.
    Cancelled,
}

impl Outcome {
    /// The name the logs and the metrics use: `OK`, `NOT_FOUND`, `200`, `CANCELLED` (gRPC) or
    /// `499` (HTTP, nginx's "client closed request").
    pub fn label(self, endpoint: &Endpoint) -> String {
        match (self, endpoint) {
            (Outcome::Grpc(code), _) => grpc_code_name(code).to_owned(),
            (Outcome::Http(status), _) => status.to_string(),
            (Outcome::Cancelled, Endpoint::Grpc(_)) => "CANCELLED".to_owned(),
            (Outcome::Cancelled, Endpoint::Http(_)) => "499".to_owned(),
        }
    }
}

/// The names of the gRPC status codes, as in `google/rpc/code.proto`. Listed here because
/// `tonic::Code` names them only in CamelCase.
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The service's metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    grpc_requests: Family<GrpcResult, Counter>,
    grpc_duration: Family<GrpcMethod, Histogram, fn() -> Histogram>,
    grpc_in_flight: Family<GrpcMethod, Gauge>,
    http_requests: Family<HttpResult, Counter>,
    http_duration: Family<HttpRoute, Histogram, fn() -> Histogram>,
    http_in_flight: Family<HttpRoute, Gauge>,
    jobs_started: Family<JobsStarted, Counter>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    pool_stats: Box<dyn Fn() -> PoolStats + Send + Sync>,
    cache_bytes: Family<CacheLabel, Gauge>,
    tls_handshakes_failed: Family<HandshakeLabel, Counter>,
    /// Each cache's name and estimated bytes, read at each scrape.
    cache_stats: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics whose database gauges read `pool_stats` at each scrape.
    pub fn new(pool_stats: impl Fn() -> PoolStats + Send + Sync + 'static) -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("job_service"),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            grpc_in_flight: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            http_in_flight: Family::default(),
            jobs_started: Family::default(),
            pool_size: Gauge::default(),
            pool_idle: Gauge::default(),
            pool_max: Gauge::default(),
            pool_stats: Box::new(pool_stats),
            cache_bytes: Family::default(),
            tls_handshakes_failed: Family::default(),
            cache_stats: Box::new(Vec::new),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "grpc_requests",
            "gRPC calls finished, by method and status code",
            metrics.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to its status, by method",
            metrics.grpc_duration.clone(),
        );
        registry.register(
            "grpc_requests_in_flight",
            "gRPC calls being served now, by method",
            metrics.grpc_in_flight.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request's arrival to its response, by method and route template",
            metrics.http_duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served now, by method and route template",
            metrics.http_in_flight.clone(),
        );
        registry.register(
            "jobs_started",
            "Jobs started on either front door: created, or replayed for an idempotency key",
            metrics.jobs_started.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections open (idle or in use)",
            metrics.pool_size.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Database connections open and idle",
            metrics.pool_idle.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "The most database connections the pool opens",
            metrics.pool_max.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by front door and cause (error, timeout)",
            metrics.tls_handshakes_failed.clone(),
        );
        registry.register(
            "cache_bytes",
            "Estimated memory held by each cache: compiled workflows, task graphs of stored jobs",
            metrics.cache_bytes.clone(),
        );
        metrics
    }

    /// These metrics, with cache gauges that read `cache_stats` (name, estimated bytes) at each
    /// scrape.
    pub fn with_caches(
        mut self,
        cache_stats: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) -> Self {
        self.cache_stats = Box::new(cache_stats);
        self
    }

    /// Counts a call as in flight; [`Metrics::call_finished`] ends it.
    pub fn call_started(&self, endpoint: &Endpoint) {
        match endpoint {
            Endpoint::Grpc(method) => self.grpc_in_flight.get_or_create(method).inc(),
            Endpoint::Http(route) => self.http_in_flight.get_or_create(route).inc(),
        };
    }

    pub fn call_finished(&self, endpoint: &Endpoint, outcome: Outcome, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match endpoint {
            Endpoint::Grpc(method) => {
                self.grpc_in_flight.get_or_create(method).dec();
                let code = match outcome {
                    Outcome::Grpc(code) => grpc_code_name(code),
                    Outcome::Http(_) | Outcome::Cancelled => "CANCELLED",
                };
                self.grpc_requests
                    .get_or_create(&GrpcResult {
                        service: method.service.clone(),
                        method: method.method.clone(),
                        code,
                    })
                    .inc();
                self.grpc_duration.get_or_create(method).observe(seconds);
            }
            Endpoint::Http(route) => {
                self.http_in_flight.get_or_create(route).dec();
                let status = match outcome {
                    Outcome::Http(status) => status,
                    Outcome::Grpc(_) | Outcome::Cancelled => 499,
                };
                self.http_requests
                    .get_or_create(&HttpResult {
                        method: route.method.clone(),
                        route: route.route.clone(),
                        status,
                    })
                    .inc();
                self.http_duration.get_or_create(route).observe(seconds);
            }
        }
    }

    /// Counts a started job: `created` false for an idempotent replay.
    pub fn job_started(&self, created: bool) {
        let result = if created { "created" } else { "replayed" };
        self.jobs_started
            .get_or_create(&JobsStarted { result })
            .inc();
    }

    /// Every metric in OpenMetrics text, the pool gauges read now.
    pub fn encode(&self) -> String {
        let pool = (self.pool_stats)();
        self.pool_size.set(pool.size.into());
        self.pool_idle.set(pool.idle.into());
        self.pool_max.set(pool.max.into());
        for (cache, bytes) in (self.cache_stats)() {
            self.cache_bytes
                .get_or_create(&CacheLabel { cache })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        for (door, cause, failed) in crate::tls::handshake_failures() {
            // Only with TLS on: a plaintext service shows no TLS series.
            if failed > 0 {
                let counter = self
                    .tls_handshakes_failed
                    .get_or_create(&HandshakeLabel { door, cause });
                counter.inc_by(failed.saturating_sub(counter.get()));
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(|| PoolStats {
            size: 3,
            idle: 2,
            max: 16,
        })
    }

    #[test]
    fn a_finished_grpc_call_is_counted_by_code_and_timed() {
        let metrics = metrics();
        let endpoint = Endpoint::Grpc(GrpcMethod {
            service: "operations_manager.v1.JobService".into(),
            method: "StartJob".into(),
        });
        metrics.call_started(&endpoint);
        let text = metrics.encode();
        assert!(
            text.contains("job_service_grpc_requests_in_flight{service=\"operations_manager.v1.JobService\",method=\"StartJob\"} 1"),
            "{text}"
        );
        metrics.call_finished(&endpoint, Outcome::Grpc(5), Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains("job_service_grpc_requests_total{service=\"operations_manager.v1.JobService\",method=\"StartJob\",code=\"NOT_FOUND\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("job_service_grpc_request_duration_seconds_bucket{le=\"0.005\",service=\"operations_manager.v1.JobService\",method=\"StartJob\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("job_service_grpc_requests_in_flight{service=\"operations_manager.v1.JobService\",method=\"StartJob\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn pool_gauges_are_read_at_each_scrape() {
        let text = metrics().encode();
        assert!(text.contains("job_service_db_pool_connections 3"), "{text}");
        assert!(
            text.contains("job_service_db_pool_idle_connections 2"),
            "{text}"
        );
        assert!(
            text.contains("job_service_db_pool_max_connections 16"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn cancelled_calls_have_a_status_of_their_door() {
        let grpc = Endpoint::Grpc(GrpcMethod {
            service: "s".into(),
            method: "m".into(),
        });
        let http = Endpoint::Http(HttpRoute {
            method: "GET".into(),
            route: "/r".into(),
        });
        assert_eq!(Outcome::Cancelled.label(&grpc), "CANCELLED");
        assert_eq!(Outcome::Cancelled.label(&http), "499");
        assert_eq!(Outcome::Grpc(3).label(&grpc), "INVALID_ARGUMENT");
        assert_eq!(Outcome::Http(201).label(&http), "201");
    }
}
