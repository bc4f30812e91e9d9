//! job-service: starts automation jobs from workflows, over gRPC, storing them in PostgreSQL.
//!
//! # Layout
//! Dependencies point inward: `domain <- store <- engine <- service <- {grpc, http}` (the
//! service takes a start's first step with the engine's rules; both doors call the engine's use
//! cases too); `grpc` and `http` never know each other nor sqlx, `domain` knows nothing of
//! tonic, axum or sqlx, and generated protobuf types stay in `grpc`.
//!
//! - `src/main.rs` (the binary): logs, config, build the app, run
//!   until the signal; `job-service token` signs a token; `job-service worker` runs tasks.
//! - [`config`]: command line and environment (clap, `env` on every option; the database URL
//!   is a redacting secret).
//! - [`app`]: opens the store, binds the listeners, serves gRPC and HTTP with one shutdown.
//! - [`auth`]: bearer JWT keys, token signing and verification.
//! - [`batch`]: concurrent calls gathered into batches, each written in one transaction
//!   (StartJob's group commit, CompleteTask).
//! - [`domain`]: pure types, one concept a room: `workflow`, `graph` (the task graph:
//!   transitions, the tasks a job starts with, graph problems, the digest), `job`, `start`
//!   (the StartJob request), `run` (run state), `task` (tasks across jobs, `<jobId>:<taskId>`,
//!   and manual-task owners), `idempotency`, `ids`, `caller`/`access`, `search`/`page`,
//!   `json`/`storable` (what may be stored), and `error`, the one error enum with its one
//!   code table (gRPC and HTTP columns).
//! - [`service`]: the use cases both front doors call; owns transactions (`group_commit`
//!   beside it batches concurrent starts into one commit, and takes each job's first step in
//!   it when the instance runs jobs; `tasks` lists tasks across jobs and claims, assigns and
//!   releases manual tasks).
//! - [`engine`]: what happens after a start: the advancing rules (`advance`), the WorkFlowEngine
//!   tasks the service runs itself (`builtin`, `variables`), workers' leases and their
//!   completions in batches (`completions`), manual tasks,
//!   timers, cancel/pause/resume/retry and WatchJob; calls the store like the service does.
//! - [`store`]: SQL only: one file a table (`jobs`, `graphs`, `runs`, `workflows`, `idempotency`;
//!   `tasks` reads run state across jobs and writes manual tasks' owners),
//!   the bounded caches, SQLSTATE translation, and the PostgreSQL cluster the service runs
//!   itself when no database is given (`cluster`).
//! - [`grpc`]: generated code, thin adapters, proto <-> domain conversions, the strict codec,
//!   statuses from the error table, StartJob's answer written from task graphs encoded once.
//! - [`http`]: the JSON gateway mirroring the REST routes: handlers, the REST types (`rest`,
//!   which the OpenAPI document of `openapi` describes), errors from the error table.
//! - [`observe`]: what both front doors record of every call, the Prometheus registry served
//!   at `GET /metrics`, and where logs and spans go.
//! - [`tls`]: TLS and mutual TLS on both front doors.
//! - [`transport`]: bounds on both front doors' connections: a cap a port, idle and header
//!   timeouts, HTTP/2 stream limits; serves the gateway's connections.
//! - [`worker`]: `job-service worker`, a task worker that runs commands and HTTP endpoints
//!   as the handlers of apps; a client of the WorkerService, sharing nothing else with the
//!   service.
//! - `fuzzing`: entry points for the fuzz targets in `fuzz/`.

pub mod app;
pub mod auth;
pub mod batch;
pub mod config;
pub mod domain;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod observe;
pub mod service;
pub mod store;
pub mod tls;
pub mod transport;
pub mod worker;
