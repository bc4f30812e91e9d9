//! Run state: what happens to a job's tasks after the start. The task graph is shared by every
//! job of a workflow revision and never changes; each job keeps its own [`TaskRun`] for every
//! task it reached, beside the graph. A task without one is `incomplete` (not reached).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::Violations;
use super::graph::TaskStatus;
use super::ids::JobId;
use super::json::index;
use super::storable;

/// How a task that ran ended: `failure` is a path, not a fault (an evaluation that was false,
/// a query that found nothing, a manual task sent down its failure path); `error` is a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishState {
    Success,
    Failure,
    Error,
}

impl FinishState {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishState::Success => "success",
            FinishState::Failure => "failure",
            FinishState::Error => "error",
        }
    }

    /// The finish state named `text`, or None.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(FinishState::Success),
            "failure" => Some(FinishState::Failure),
            "error" => Some(FinishState::Error),
            _ => None,
        }
    }
}

/// Who carries a task out once it is scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Runner {
    /// A WorkFlowEngine task the service runs itself (at once, or when its timer is due).
    Engine,
    /// A task worker serving `app` (WorkerService).
    Worker { app: String },
    /// A person (FinishTask).
    Manual,
}

/// The run state of one task of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    pub status: TaskStatus,
    pub runner: Runner,
    pub finish_state: Option<FinishState>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Times the task was started (a revert runs it again); 1 the first time.
    pub iteration: u32,
    /// Offers of the current iteration to workers (an expired lease offers it again).
    pub attempt: u32,
    /// Retries of the current iteration made by `retrySettings`.
    pub retries: u32,
    /// Incoming values as resolved when the task started.
    pub incoming: Map<String, Value>,
    /// The task's result.
    pub outgoing: Map<String, Value>,
    /// What went wrong, when it ended in error.
    pub error: Option<Value>,
    /// When a scheduled timer (delay, retry delay) is due.
    pub due_at: Option<DateTime<Utc>>,
}

/// A lifecycle call on jobs (`CancelJobs`, `PauseJobs`, `ResumeJobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    Cancel,
    Pause,
    Resume,
}

impl JobControl {
    pub fn as_str(self) -> &'static str {
        match self {
            JobControl::Cancel => "cancel",
            JobControl::Pause => "pause",
            JobControl::Resume => "resume",
        }
    }
}

/// Most job ids one lifecycle call takes (Itential's bulk limit).
pub const MAX_JOB_IDS: usize = 100;

/// Checks the job ids of a lifecycle call, as both front doors take them; `field` names the
/// list (`job_ids`, `jobIds`). From 1 to [`MAX_JOB_IDS`] ids, each a job id, none twice: each
/// id gets exactly one outcome.
pub fn check_job_ids(ids: &[String], field: &str, violations: &mut Violations) {
    if ids.is_empty() {
        violations.push(field, "must name at least one job");
        return;
    }
    if ids.len() > MAX_JOB_IDS {
        violations.push(
            field,
            format!(
                "names {} jobs; one call takes at most {MAX_JOB_IDS}",
                ids.len()
            ),
        );
        return;
    }
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        if let Err(reason) = JobId::parse(id) {
            violations.push(index(field, i), reason);
        } else if let Some(first) = first_seen.get(id.as_str()) {
            violations.push(index(field, i), format!("repeats {}", index(field, *first)));
        } else {
            first_seen.insert(id, i);
        }
    }
}

/// Checks the id of a task a caller names (a key of a job's `tasks`): not empty, storable.
pub fn check_task_id(id: &str, field: &str, violations: &mut Violations) {
    if id.is_empty() {
        violations.push(field, "is required");
    } else if let Err(reason) = storable::check_text(id) {
        violations.push(field, reason);
    }
}

impl FinishState {
    /// The finish state a caller sent in `field`; a violation when it is not one.
    pub fn parse_field(text: &str, field: &str, violations: &mut Violations) -> Option<Self> {
        let parsed = FinishState::parse(text);
        if parsed.is_none() {
            violations.push(
                field,
                match text {
                    "" => "is required: success, failure or error".to_owned(),
                    _ => format!("must be success, failure or error, not {text:?}"),
                },
            );
        }
        parsed
    }
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerTask {
    /// Opaque; names this task's current lease and nothing else.
    pub task_token: String,
    pub job_id: String,
    pub task_id: String,
    pub app: String,
    /// The task's `name` (the adapter or application method).
    pub name: String,
    pub incoming: Map<String, Value>,
    pub lease_deadline: DateTime<Utc>,
    pub attempt: u32,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub lease_deadline: DateTime<Utc>,
    /// The task's job was canceled: the worker should stop and need not complete it.
    pub cancel_requested: bool,
}

/// A worker's report of a task it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub finish_state: FinishState,
    pub outgoing: Map<String, Value>,
    /// Why it ended in error (empty otherwise).
    pub error_message: String,
}

/// One event of a job, in the order they happened; `sequence` counts from 1 for each job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub sequence: u64,
    pub job_id: String,
    /// The task the event is about; empty for the job's own events.
    pub task_id: String,
    /// `task` (a task's status changed) or `job` (the job's status changed).
    pub kind: String,
    /// The new status of the task or the job.
    pub status: String,
    /// The task's finish state when it finished; empty otherwise.
    pub finish_state: String,
    pub at: DateTime<Utc>,
}

impl JobEvent {
    /// Whether the job ends with this event (no event follows it).
    pub fn is_final(&self) -> bool {
        self.kind == "job" && matches!(self.status.as_str(), "complete" | "error" | "canceled")
    }
}
