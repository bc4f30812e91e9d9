//! Command line and environment. Every option can be given as a flag or an environment
//! variable; secrets are redacted from Debug output.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

#[derive(Parser, Debug)]
#[command(
    name = "job-service",
    version,
    about = "Starts automation jobs from workflows, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the gRPC API until SIGTERM or SIGINT.
    Serve(ServeConfig),
    /// Print a bearer token signed with the service's key.
    Token(TokenConfig),
    /// Run tasks of the apps given with --exec and --http, as a task worker, until SIGTERM.
    Worker(WorkerConfig),
}

/// Where the service keeps its state, and the keys that sign and verify bearer tokens.
#[derive(Args, Debug, Clone)]
pub struct KeyConfig {
    /// Where the service keeps its own PostgreSQL cluster and, when no key is configured, the
    /// random secret that signs tokens (`jwt-secret`).
    #[arg(long, env = "JOB_SERVICE_DATA_DIR", default_value = "./.job-service")]
    pub data_dir: PathBuf,

    /// File holding the HS256 secret that signs and verifies tokens (surrounding whitespace,
    /// such as a final newline, is not part of it).
    #[arg(
        long,
        env = "JOB_SERVICE_JWT_SECRET_FILE",
        conflicts_with_all = ["jwt_public_key_file", "jwt_jwks_file", "jwt_jwks_url"]
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM file of the RS256 (RSA) or ES256 (P-256) public key that verifies tokens.
    #[arg(
        long,
        env = "JOB_SERVICE_JWT_PUBLIC_KEY_FILE",
        conflicts_with_all = ["jwt_jwks_file", "jwt_jwks_url"]
    )]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JSON Web Key Set file whose RS256 and ES256 keys verify tokens; a token's `kid` picks
    /// the key.
    #[arg(
        long,
        env = "JOB_SERVICE_JWT_JWKS_FILE",
        conflicts_with = "jwt_jwks_url"
    )]
    pub jwt_jwks_file: Option<PathBuf>,

    /// HTTPS URL of an identity provider's JSON Web Key Set: fetched at start (which fails
    /// when it cannot be), then again every --jwt-jwks-refresh and when a token names a key
    /// id the set does not hold.
    #[arg(long, env = "JOB_SERVICE_JWT_JWKS_URL", value_parser = https_url)]
    pub jwt_jwks_url: Option<reqwest::Url>,

    /// How often the key set of --jwt-jwks-url is fetched again (e.g. `5m`).
    #[arg(long, env = "JOB_SERVICE_JWT_JWKS_REFRESH", default_value = "5m", value_parser = jwks_refresh)]
    pub jwt_jwks_refresh: humantime::Duration,

    /// PEM file of CA certificates trusted for --jwt-jwks-url, beside the system's (an
    /// identity provider behind an internal CA).
    #[arg(long, env = "JOB_SERVICE_JWT_JWKS_CA_FILE", requires = "jwt_jwks_url")]
    pub jwt_jwks_ca_file: Option<PathBuf>,

    /// The `aud` a token must name (as a string or in an array). Unset: `aud` is not checked.
    #[arg(long, env = "JOB_SERVICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The `iss` a token must carry. Unset: `iss` is not checked.
    #[arg(long, env = "JOB_SERVICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// PEM file of the private key matching --jwt-public-key-file; only `token` uses it.
    #[arg(long, env = "JOB_SERVICE_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Clock skew accepted on a token's `exp` (e.g. `5s`).
    #[arg(long, env = "JOB_SERVICE_JWT_LEEWAY", default_value = "5s")]
    pub jwt_leeway: humantime::Duration,
}

#[derive(Parser, Debug, Clone)]
pub struct TokenConfig {
    /// The `username` claim.
    #[arg(long)]
    pub username: String,
    /// The `sub` claim (account id). Default: a 24-hex id derived from the username.
    #[arg(long)]
    pub sub: Option<String>,
    /// The `groups` claim: group ids, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// The `roles` claim, comma separated: admin, engineering, operations, apiread, worker.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// How long the token is valid (`30s`, `15m`, `1h`).
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,
    /// The `kid` header: the id of the signing key in the key set of --jwt-jwks-file or
    /// --jwt-jwks-url, which picks the key that verifies the token. Unset: no `kid`; the
    /// service then tries the keys of the token's algorithm, at most 4.
    #[arg(long)]
    pub key_id: Option<String>,
    #[command(flatten)]
    pub keys: KeyConfig,
}

/// Options of `serve`. The database URL may hold a password: it is a [`SecretString`], which
/// Debug prints as redacted.
#[derive(Parser, Clone, Debug)]
pub struct ServeConfig {
    /// Address of the gRPC server; port 0 picks a free port.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the JSON gateway (HTTP/1.1 and h2c); port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// PostgreSQL to use (postgres://user:password@host/db). Unset: the service runs a
    /// PostgreSQL cluster of its own under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    #[command(flatten)]
    pub keys: KeyConfig,

    /// Directory of PostgreSQL's server programs (initdb, pg_ctl, postgres). Unset: the newest
    /// under /usr/lib/postgresql, else the PATH.
    #[arg(long, env = "JOB_SERVICE_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,

    /// Largest number of database connections.
    #[arg(long, env = "JOB_SERVICE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a call waits for a database connection before failing with UNAVAILABLE / 503.
    #[arg(long, env = "JOB_SERVICE_DB_ACQUIRE_TIMEOUT", default_value = "3s")]
    pub db_acquire_timeout: humantime::Duration,

    /// Longest a database statement may run (PostgreSQL statement_timeout).
    #[arg(long, env = "JOB_SERVICE_DB_STATEMENT_TIMEOUT", default_value = "10s")]
    pub db_statement_timeout: humantime::Duration,

    /// How long startup waits for a database that cannot be reached yet (refused, unreachable,
    /// still starting), trying again with a doubling delay; other failures stop it at once.
    #[arg(long, env = "JOB_SERVICE_DB_STARTUP_TIMEOUT", default_value = "60s")]
    pub db_startup_timeout: humantime::Duration,

    /// Largest number of calls in flight at once, both front doors together; more are refused
    /// with RESOURCE_EXHAUSTED / 429 rather than queued.
    #[arg(long, env = "JOB_SERVICE_MAX_IN_FLIGHT", default_value_t = 2048)]
    pub max_in_flight: usize,

    /// Memory for compiled workflows and the task graphs of stored jobs (an estimate), half
    /// each; the entries used least are dropped first (e.g. `64MiB`).
    #[arg(long, env = "JOB_SERVICE_CACHE_BYTES", default_value = "64MiB")]
    pub cache_bytes: bytesize::ByteSize,

    /// Most bytes of items (as JSON) in one page of ListJobs, ListWorkflows and the REST
    /// searches: a page of large items holds fewer of them (at least one), with a next page.
    #[arg(long, env = "JOB_SERVICE_MAX_PAGE_BYTES", default_value = "2MiB")]
    pub max_page_bytes: bytesize::ByteSize,

    /// How long calls in flight at shutdown may take to finish (e.g. `30s`, `2m`).
    #[arg(long, env = "JOB_SERVICE_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: humantime::Duration,

    /// Longest an HTTP request may take before it is cancelled with 504 (gRPC calls follow
    /// the client's deadline, `grpc-timeout`).
    #[arg(long, env = "JOB_SERVICE_HTTP_REQUEST_TIMEOUT", default_value = "30s")]
    pub http_request_timeout: humantime::Duration,

    /// Most connections each port holds open at once; more wait in the kernel's accept queue
    /// until one closes. Unset: a quarter of the process's file descriptor limit (whose soft
    /// value is raised to the hard one at start).
    #[arg(
        long,
        env = "JOB_SERVICE_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_connections: Option<u64>,

    /// Most HTTP/2 streams (calls) at once on one connection, on both ports.
    #[arg(
        long,
        env = "JOB_SERVICE_MAX_CONCURRENT_STREAMS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_concurrent_streams: u32,

    /// Longest an HTTP/1 client may take to send a request's headers.
    #[arg(long, env = "JOB_SERVICE_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: humantime::Duration,

    /// How long a gateway connection may stay open with no request in flight.
    #[arg(long, env = "JOB_SERVICE_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: humantime::Duration,

    /// How long a gRPC connection may stay open with no call in flight (clients reconnect on
    /// their next call).
    #[arg(long, env = "JOB_SERVICE_GRPC_IDLE_TIMEOUT", default_value = "5m")]
    pub grpc_idle_timeout: humantime::Duration,

    /// Longest a unary gRPC call may take to send its request message, from its headers on;
    /// past it the call is DEADLINE_EXCEEDED.
    #[arg(long, env = "JOB_SERVICE_REQUEST_BODY_TIMEOUT", default_value = "10s")]
    pub request_body_timeout: humantime::Duration,

    /// How long a task worker holds a task without a heartbeat (its lease); a task whose lease
    /// runs out is offered again.
    #[arg(long, env = "JOB_SERVICE_TASK_LEASE", default_value = "30s", value_parser = positive_duration)]
    pub task_lease: humantime::Duration,

    /// Times one task may be offered to workers in one run (expired leases) before it ends in
    /// error.
    #[arg(long, env = "JOB_SERVICE_MAX_TASK_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_task_attempts: u32,

    /// Times one task may run in a job (revert loops) before the job ends in error.
    #[arg(long, env = "JOB_SERVICE_MAX_TASK_ITERATIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub max_task_iterations: u32,

    /// Whether this instance runs jobs (advances them and hands tasks to workers). `false`
    /// makes an instance that only serves the API beside others that run the jobs; its
    /// PollTasks answers UNAVAILABLE.
    #[arg(long, env = "JOB_SERVICE_RUN_JOBS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_jobs: bool,

    /// How often the engine looks for due work without being told: timers, expired leases,
    /// notifications lost while reconnecting.
    #[arg(long, env = "JOB_SERVICE_ENGINE_SWEEP", default_value = "1s", value_parser = positive_duration)]
    pub engine_sweep: humantime::Duration,

    /// How long StartJob idempotency keys are kept (at least 24 hours is promised to clients).
    #[arg(long, env = "JOB_SERVICE_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = at_least_a_day)]
    pub idempotency_retention: humantime::Duration,

    /// Log line format.
    #[arg(long, env = "JOB_SERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub tls: TlsConfig,

    /// Base URL of an OpenTelemetry collector (OTLP over HTTP, e.g. `http://127.0.0.1:4318`):
    /// each call's span is sent to `<URL>/v1/traces`. Needs a build with `--features otel`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// TLS on both front doors. Without a certificate, both serve plaintext (h2c and HTTP/1.1).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM file of the certificate chain both front doors present (the server's certificate
    /// first). With it, gRPC and HTTP are served over TLS only.
    #[arg(
        id = "tls_cert",
        long = "tls-cert",
        value_name = "FILE",
        env = "JOB_SERVICE_TLS_CERT",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,

    /// PEM file of the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        id = "tls_key",
        long = "tls-key",
        value_name = "FILE",
        env = "JOB_SERVICE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,

    /// PEM file of the CA certificates that sign client certificates: with it, every client
    /// must present a certificate one of them signed (mutual TLS).
    #[arg(
        id = "tls_client_ca",
        long = "tls-client-ca",
        value_name = "FILE",
        env = "JOB_SERVICE_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,
}

/// Options of `worker`. The token may be a secret held in the environment: it is a
/// [`SecretString`], which Debug prints as redacted.
#[derive(Parser, Clone, Debug)]
#[command(after_long_help = WORKER_HELP)]
pub struct WorkerConfig {
    /// Runs the tasks of APP with COMMAND: a program and its arguments, split at white space
    /// and run without a shell. The task comes as JSON on its stdin; its stdout is the
    /// result. Repeat for more apps.
    #[arg(long = "exec", value_name = "APP=COMMAND", value_parser = parse_exec)]
    pub exec: Vec<ExecHandler>,

    /// Runs the tasks of APP by POSTing them as JSON to URL (http:// or https://); the answer
    /// is the result. Repeat for more apps.
    #[arg(long = "http", value_name = "APP=URL", value_parser = parse_http)]
    pub http: Vec<HttpHandler>,

    /// The service's gRPC address: `host:port`, or `http://host:port`, or
    /// `https://host:port` for TLS.
    #[arg(long, env = "JOB_SERVICE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,

    /// File holding the bearer token (role `worker`). Read again for every call, so a token
    /// replaced in the file is used from the next call on.
    #[arg(long, env = "JOB_SERVICE_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// The bearer token itself (prefer the environment variable, or --token-file: arguments
    /// are visible to other users of the machine).
    #[arg(long, env = "JOB_SERVICE_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,

    /// Most tasks run at once.
    #[arg(long, env = "JOB_SERVICE_WORKER_MAX_TASKS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_tasks: u32,

    /// Longest one task's handler may run; past it, the command is killed (the HTTP call
    /// dropped) and the task ends in error.
    #[arg(long, env = "JOB_SERVICE_WORKER_TASK_TIMEOUT", default_value = "10m", value_parser = positive_duration)]
    pub task_timeout: humantime::Duration,

    /// Largest result a handler may give (its stdout, or the HTTP answer's body): a larger one
    /// ends the task in error. At most 4MiB, what one gRPC message may carry.
    #[arg(long, env = "JOB_SERVICE_WORKER_MAX_OUTPUT", default_value = "1MiB", value_parser = output_size)]
    pub max_output: bytesize::ByteSize,

    /// Names the worker in the service's records and logs. Default: host name and process id.
    #[arg(long, env = "JOB_SERVICE_WORKER_ID")]
    pub worker_id: Option<String>,

    /// PEM file of the CA certificates that sign the service's certificate (TLS). The system's
    /// certificates are not read: TLS needs this.
    #[arg(long, env = "JOB_SERVICE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM file of this worker's certificate, for a service that asks for one (mutual TLS).
    #[arg(
        long,
        env = "JOB_SERVICE_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// PEM file of the private key of --tls-client-cert.
    #[arg(
        long,
        env = "JOB_SERVICE_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,

    /// The name the service's certificate must hold. Default: the host of --grpc-addr.
    #[arg(long, env = "JOB_SERVICE_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// PEM file of the CA certificates that sign the certificates of https:// --http
    /// endpoints (needed for those; the system's certificates are not read).
    #[arg(long, env = "JOB_SERVICE_WORKER_HTTP_CA", value_name = "FILE")]
    pub http_ca: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "JOB_SERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

const WORKER_HELP: &str = "\
The task, on a command's stdin and in an HTTP handler's request body:
  {\"job_id\": \"...\", \"task_id\": \"26e8\", \"app\": \"Panorama\", \"name\": \"commitChanges\",
   \"incoming\": {...}, \"attempt\": 1}

The result, on the command's stdout (exit status 0) or as the HTTP answer (2xx):
  {\"finish_state\": \"success\", \"outgoing\": {...}}
finish_state is success (the default), failure or error (with an error_message); empty
output is success with no outgoing values. A command that exits with another status ends
the task in error, the tail of its stderr as the error message; so does an HTTP answer
that is not 2xx.

While a handler runs the worker heartbeats the task; when its job is canceled, or the
handler runs past --task-timeout, the command's process group is killed (the HTTP call
dropped). SIGTERM or SIGINT: no new tasks; the running ones finish and are reported, then
the worker exits 0. A second signal kills them and exits 1.

Example:
  job-service worker --token-file worker.token --exec 'Infoblox=./adapters/infoblox.sh'";

/// `--exec APP=COMMAND`: the app's handler is a program run for each task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecHandler {
    pub app: String,
    pub program: String,
    pub args: Vec<String>,
}

/// `--http APP=URL`: the app's handler is an HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpHandler {
    pub app: String,
    pub url: String,
}

/// `APP=REST`, APP not empty.
fn app_and(text: &str, what: &str) -> Result<(String, String), String> {
    let Some((app, rest)) = text.split_once('=') else {
        return Err(format!(
            "expected APP={what}, with the app's name before '='"
        ));
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(format!(
            "the app's name before '=' is empty (expected APP={what})"
        ));
    }
    if app.contains('\0') || rest.contains('\0') {
        return Err("must not hold U+0000".to_owned());
    }
    Ok((app.to_owned(), rest.trim().to_owned()))
}

fn parse_exec(text: &str) -> Result<ExecHandler, String> {
    let (app, command) = app_and(text, "COMMAND")?;
    let mut words = command.split_whitespace().map(str::to_owned);
    let Some(program) = words.next() else {
        return Err(format!("no command after '{app}='"));
    };
    Ok(ExecHandler {
        app,
        program,
        args: words.collect(),
    })
}

fn parse_http(text: &str) -> Result<HttpHandler, String> {
    let (app, url) = app_and(text, "URL")?;
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    Ok(HttpHandler { app, url })
}

/// A handler's largest output: at least 1 KiB, at most 4 MiB (one gRPC message).
fn output_size(text: &str) -> Result<bytesize::ByteSize, String> {
    let size: bytesize::ByteSize = text.parse()?;
    if size.as_u64() < 1024 || size.as_u64() > 4 * 1024 * 1024 {
        return Err("must be from 1KiB to 4MiB".to_owned());
    }
    Ok(size)
}

impl WorkerConfig {
    /// What clap cannot check alone: at least one handler, each app once, a token. The
    /// error names the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.exec.is_empty() && self.http.is_empty() {
            return Err(
                "give at least one handler: --exec APP=COMMAND or --http APP=URL".to_owned(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        let apps = self
            .exec
            .iter()
            .map(|h| ("--exec", &h.app))
            .chain(self.http.iter().map(|h| ("--http", &h.app)));
        for (flag, app) in apps {
            if !seen.insert(app) {
                return Err(format!(
                    "{flag}: app {app:?} has a handler already; give each app one handler"
                ));
            }
        }
        if self.token_file.is_none() && self.token.is_none() {
            return Err(
                "no token: give --token-file (or JOB_SERVICE_TOKEN_FILE), or JOB_SERVICE_TOKEN"
                    .to_owned(),
            );
        }
        let needs_ca = self.http.iter().any(|h| h.url.starts_with("https:"));
        if needs_ca && self.http_ca.is_none() {
            return Err("--http: an https:// URL needs --http-ca".to_owned());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// An `https://` URL: a key set fetched in the clear could be replaced on the way.
fn https_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "must be an https:// URL (a key set fetched over {} could be replaced on the way)",
            url.scheme()
        ));
    }
    Ok(url)
}

/// A key set refresh period from 10 seconds to a day: more often would only load the
/// identity provider; less often would keep a removed key trusted for more than a day.
fn jwks_refresh(text: &str) -> Result<humantime::Duration, String> {
    let duration: humantime::Duration = text.parse().map_err(|e| format!("{e}"))?;
    let value = std::time::Duration::from(duration);
    if value < std::time::Duration::from_secs(10) || value > std::time::Duration::from_secs(86_400)
    {
        return Err("must be from 10s to 24h".to_owned());
    }
    Ok(duration)
}

/// A duration of at least a millisecond and at most a day (leases, sweeps).
fn positive_duration(text: &str) -> Result<humantime::Duration, String> {
    let duration: humantime::Duration = text.parse().map_err(|e| format!("{e}"))?;
    let value = std::time::Duration::from(duration);
    if value < std::time::Duration::from_millis(1) || value > std::time::Duration::from_secs(86_400)
    {
        return Err("must be from 1ms to 24h".to_owned());
    }
    Ok(duration)
}

/// A retention of at least the 24 hours clients are promised: a retried StartJob within a day
/// finds the job its first try started.
fn at_least_a_day(text: &str) -> Result<humantime::Duration, String> {
    let duration: humantime::Duration = text.parse().map_err(|e| format!("{e}"))?;
    if std::time::Duration::from(duration) < std::time::Duration::from_secs(86_400) {
        return Err(
            "must be at least 24h: clients are promised that a retry within a day finds its job"
                .to_owned(),
        );
    }
    Ok(duration)
}

impl ServeConfig {
    /// Defaults, as if no flag and no environment variable were given.
    pub fn defaults() -> Self {
        ServeConfig::parse_from(["serve"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_takes_comma_separated_lists_and_a_ttl() {
        let cli = Cli::parse_from([
            "job-service",
            "token",
            "--username",
            "pat",
            "--groups",
            "aaaaaaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbbbbbb",
            "--roles",
            "operations,apiread",
            "--ttl",
            "15m",
        ]);
        let Command::Token(token) = cli.command else {
            panic!("token")
        };
        assert_eq!(token.groups.len(), 2);
        assert_eq!(token.roles, ["operations", "apiread"]);
        assert_eq!(std::time::Duration::from(token.ttl).as_secs(), 900);
    }

    #[test]
    fn idempotency_keys_are_kept_at_least_the_promised_day() {
        let refused = ServeConfig::try_parse_from(["serve", "--idempotency-retention", "1h"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--idempotency-retention"), "{refused}");
        assert!(refused.contains("at least 24h"), "{refused}");
        let kept = ServeConfig::try_parse_from(["serve", "--idempotency-retention", "7days"]);
        assert!(kept.is_ok());
    }

    #[test]
    fn the_key_set_url_must_be_https_and_refreshed_within_bounds() {
        let serve = |args: &[&str]| {
            ServeConfig::try_parse_from(["serve"].iter().chain(args)).map_err(|e| e.to_string())
        };
        let refused = serve(&["--jwt-jwks-url", "http://idp.example/jwks"]).unwrap_err();
        assert!(refused.contains("--jwt-jwks-url"), "{refused}");
        assert!(refused.contains("https://"), "{refused}");
        let config = serve(&["--jwt-jwks-url", "https://idp.example/jwks"]).unwrap();
        assert_eq!(
            std::time::Duration::from(config.keys.jwt_jwks_refresh).as_secs(),
            300
        );
        let refused = serve(&[
            "--jwt-jwks-url",
            "https://idp.example/jwks",
            "--jwt-jwks-refresh",
            "1s",
        ])
        .unwrap_err();
        assert!(refused.contains("from 10s to 24h"), "{refused}");
    }

    #[test]
    fn only_one_kind_of_verifying_key_is_accepted() {
        let serve = |args: &[&str]| {
            ServeConfig::try_parse_from(["serve"].iter().chain(args))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for pair in [
            ["--jwt-secret-file", "s", "--jwt-jwks-file", "k.json"],
            [
                "--jwt-public-key-file",
                "p.pem",
                "--jwt-jwks-file",
                "k.json",
            ],
            [
                "--jwt-jwks-file",
                "k.json",
                "--jwt-jwks-url",
                "https://idp.example/jwks",
            ],
        ] {
            let refused = serve(&pair).unwrap_err();
            assert!(refused.contains("cannot be used with"), "{refused}");
        }
        assert!(serve(&[
            "--jwt-jwks-file",
            "k.json",
            "--jwt-audience",
            "job-service",
            "--jwt-issuer",
            "https://idp.example/"
        ])
        .is_ok());
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let mut config = ServeConfig::defaults();
        config.database_url = Some("postgres://app:s3cret@db/jobs".into());
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        let serve = |args: &[&str]| {
            Cli::try_parse_from(["job-service", "serve"].iter().chain(args))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(serve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
        let error = serve(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(error.contains("--tls-key"), "{error}");
        let error = serve(&["--tls-client-ca", "ca.pem"]).unwrap_err();
        assert!(error.contains("--tls-cert"), "{error}");
    }

    fn worker(args: &[&str]) -> Result<WorkerConfig, String> {
        let cli = Cli::try_parse_from(["job-service", "worker"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Worker(config) = cli.command else {
            panic!("worker")
        };
        config.check()?;
        Ok(config)
    }

    #[test]
    fn worker_takes_handlers_per_app() {
        let config = worker(&[
            "--exec",
            "Infoblox=./adapter.sh create --verbose",
            "--http",
            "Panorama=http://127.0.0.1:9000/tasks",
            "--token-file",
            "t",
            "--max-tasks",
            "8",
        ])
        .unwrap();
        assert_eq!(
            config.exec,
            [ExecHandler {
                app: "Infoblox".into(),
                program: "./adapter.sh".into(),
                args: vec!["create".into(), "--verbose".into()],
            }]
        );
        assert_eq!(config.http[0].app, "Panorama");
        assert_eq!(config.max_tasks, 8);
    }

    #[test]
    fn worker_errors_name_the_flag() {
        let token = ["--token-file", "t"];
        for (args, flag) in [
            (vec!["--exec", "adapter.sh"], "--exec"),
            (vec!["--exec", "=adapter.sh"], "--exec"),
            (vec!["--exec", "A="], "--exec"),
            (vec!["--http", "A=ftp://host/x"], "--http"),
            (vec!["--http", "A=https://host/x"], "--http-ca"),
            (vec!["--exec", "A=x", "--max-tasks", "0"], "--max-tasks"),
            (
                vec!["--exec", "A=x", "--task-timeout", "soon"],
                "--task-timeout",
            ),
            (
                vec!["--exec", "A=x", "--max-output", "1GiB"],
                "--max-output",
            ),
            (vec!["--exec", "A=x", "--http", "A=http://h/"], "--http"),
            (vec![], "--exec"),
        ] {
            let all: Vec<&str> = args.iter().copied().chain(token).collect();
            let error = worker(&all).unwrap_err();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
        let error = worker(&["--exec", "A=x"]).unwrap_err();
        assert!(error.contains("--token-file"), "{error}");
    }

    #[test]
    fn serve_parses_flags() {
        let cli = Cli::parse_from([
            "job-service",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        let Command::Serve(config) = cli.command else {
            panic!("serve")
        };
        assert_eq!(config.grpc_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Json);
    }
}
