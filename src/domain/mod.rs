//! Pure types of the service: workflows, jobs, ids, callers and the one error enum. Nothing
//! here knows of tonic, axum or the database.

pub mod access;
pub mod caller;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod json;
pub mod page;
pub mod search;
pub mod storable;
pub mod workflow;

pub use access::Action;
pub use caller::Caller;
pub use error::{Code, Error, FieldViolation, GrpcCode, Problem, Violations};
pub use idempotency::IdempotencyKey;
pub use ids::JobId;
pub use job::{Job, JobRecord, JobStatus, RawJobOptions, RawStartJob, StartJob};
pub use workflow::{CompiledWorkflow, JobGraph, Workflow, WorkflowDocument};
