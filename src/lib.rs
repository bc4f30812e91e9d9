//! job-service: starts automation jobs from workflows, over gRPC, storing them in PostgreSQL.
//!
//! # Layout
//! - [`config`]: command line and environment.
//! - [`auth`]: bearer JWT keys, token signing and verification.
//! - [`app`]: binds the listener, connects and migrates the database, serves until shutdown.
//! - [`domain`]: pure types (workflows, jobs, ids, callers) and the one error enum.
//! - [`service`]: the use cases both front doors call; owns transactions.
//! - [`store`]: SQL only; translates database errors into domain errors; opens the database,
//!   or runs the PostgreSQL cluster of the service's own when no database is given.
//! - [`grpc`]: generated code, thin adapters, proto <-> domain conversions.
//! - [`http`]: the JSON gateway mirroring the REST routes, and its OpenAPI document.
//! - [`observe`]: observability: what both front doors record of every call, the Prometheus
//!   registry served at `GET /metrics`, and where logs and spans go.
//! - [`tls`]: TLS and mutual TLS on both front doors.
//! - [`transport`]: bounds on both front doors' connections: a cap a port, idle and header
//!   timeouts, HTTP/2 stream limits; serves the gateway's connections.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod observe;
pub mod service;
pub mod store;
pub mod tls;
pub mod transport;
