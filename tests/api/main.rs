//! Integration tests: each test runs the service against a fresh PostgreSQL database and talks
//! to it through the generated gRPC clients, as a user would.

mod access;
mod auth;
mod bounds;
mod child_jobs;
mod cluster;
mod corpus;
mod corpus_run;
mod deadlines;
mod disk_full;
mod engine;
mod engine_faults;
mod engine_surface;
mod examples;
mod failover;
mod faults;
mod gateway;
mod group_commit;
mod helpers;
mod hostile_input;
mod idempotency;
mod jwt;
mod limits;
mod list_jobs;
mod manual_tasks;
mod metrics;
mod openapi;
mod postgres_tls;
mod serve;
mod start_job;
mod storage;
mod telemetry;
mod tls;
mod transport;
mod worker;
mod workflows;
