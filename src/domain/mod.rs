//! Pure types of the service: workflows, their task graphs, jobs, start requests, ids, callers
//! and the one error enum. Nothing here knows of tonic, axum or the database.

pub mod access;
pub mod caller;
#[cfg(test)]
pub mod corpus;
pub mod error;
pub mod graph;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod json;
pub mod page;
pub mod run;
pub mod search;
pub mod start;
pub mod storable;
pub mod task;
pub mod workflow;

pub use access::Action;
pub use caller::Caller;
pub use error::{Code, Error, FieldViolation, GrpcCode, Problem, Violations};
pub use graph::TaskGraph;
pub use idempotency::IdempotencyKey;
pub use ids::JobId;
pub use job::{Job, JobStatus};
pub use start::{RawJobOptions, RawStartJob, StartJob};
pub use workflow::{CompiledWorkflow, Workflow, WorkflowDocument};
