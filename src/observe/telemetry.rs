//! Logging: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`), coloured only
//! on a terminal and without `NO_COLOR`. Built with
//! the `otel` feature, the spans (one per call, see [`super::call`]) can also go to an
//! OpenTelemetry collector over OTLP (HTTP/protobuf).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Whether spans go to a collector: [`super::call`] then names them for it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What must outlive the service: the exporter, flushed by [`Telemetry::shutdown`].
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans not yet exported. Blocks: call it from a blocking thread.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: cannot flush the spans to the collector: {error}");
            }
        }
    }
}

/// Installs the global subscriber. `otlp_endpoint`: the collector's base URL
/// (`http://127.0.0.1:4318`); spans go to `<endpoint>/v1/traces`.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref())?;
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(logs);
    match otlp_endpoint {
        None => {
            registry.init();
            Ok(Telemetry::default())
        }
        #[cfg(feature = "otel")]
        Some(endpoint) => {
            let provider = otlp::provider(endpoint)?;
            let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "job-service");
            registry
                .with(tracing_opentelemetry::layer().with_tracer(tracer))
                .init();
            EXPORTING.store(true, Ordering::Relaxed);
            Ok(Telemetry {
                provider: Some(provider),
            })
        }
        #[cfg(not(feature = "otel"))]
        Some(_) => anyhow::bail!(
            "--otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) is set, but this build has no \
             OpenTelemetry export: build with `cargo build --release --features otel`"
        ),
    }
}

/// The log filter `RUST_LOG` asks for (`info` when it is unset or empty). One that does not
/// parse is an error: falling back to `info` would hide the debug lines asked for, or flood
/// the logs where `warn` was meant, without a word.
fn filter(rust_log: Option<&str>) -> anyhow::Result<EnvFilter> {
    match rust_log.map(str::trim) {
        None | Some("") => Ok(EnvFilter::new("info")),
        Some(directives) => EnvFilter::builder().parse(directives).map_err(|error| {
            anyhow::anyhow!(
                "RUST_LOG={directives:?} is not a valid log filter ({error}); write levels and \
                 targets as in RUST_LOG=info or RUST_LOG=warn,job_service=debug"
            )
        }),
    }
}

/// Whether log lines carry ANSI colour: on a terminal only, since in a file or a pipe the codes
/// are noise, and not when `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(feature = "otel")]
mod otlp {
    use anyhow::{bail, Context};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    /// Spans batched and sent to `<endpoint>/v1/traces` from a thread of the exporter's own.
    pub fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
        if !endpoint.starts_with("http://") {
            bail!(
                "--otlp-endpoint {endpoint}: must be an http:// URL of an OTLP/HTTP collector \
                 (https is not built in)"
            );
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("job-service").build())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_filter_that_does_not_parse_is_an_error_naming_it() {
        assert!(filter(None).is_ok());
        assert!(filter(Some("")).is_ok());
        assert!(filter(Some("warn,job_service=debug")).is_ok());
        let error = filter(Some("info,job_service=loud"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RUST_LOG=\"info,job_service=loud\""),
            "{error}"
        );
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe gets no colour");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
