//! Run state: what happens to a job's tasks after the start. The task graph is shared by every
//! job of a workflow revision and never changes; each job keeps its own [`TaskRun`] for every
//! task it reached, beside the graph. A task without one is `incomplete` (not reached).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::Violations;
use super::graph::{TaskStatus, WORKFLOW_START};
use super::ids::JobId;
use super::job::{Job, JobStatus};
use super::json::index;
use super::storable;
use super::TaskGraph;

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
    /// How far a task that runs in parts has got (child jobs, a loop).
    pub progress: Option<Progress>,
}

/// How far a WorkFlowEngine task that runs in parts has got, kept with its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// A `childJob` task: the child jobs started (in `data_array` order) and the variables of
    /// those still to start (a sequential loop starts one when the one before it ended).
    Children {
        workflow: String,
        /// Whether the task loops over `data_array` (its `job_details` is then `{"loop": [...]}`).
        looped: bool,
        sequential: bool,
        started: Vec<String>,
        pending: Vec<Map<String, Value>>,
    },
    /// A `forEach` task: the index of the element of its `data_array` the loop body runs for.
    Items { index: usize },
}

/// What a step knows of a child job: its status and, once it ended, its variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    pub status: JobStatus,
    pub variables: Option<Map<String, Value>>,
}

/// What a step did, for the events a watcher sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub task_id: String,
    /// `task` or `job`.
    pub kind: &'static str,
    pub status: String,
    pub finish_state: String,
    pub at: DateTime<Utc>,
}

/// A job's run state, loaded for one step.
#[derive(Debug, Clone)]
pub struct RunningJob {
    pub id: String,
    pub status: JobStatus,
    pub variables: Map<String, Value>,
    /// The job's `error[]`.
    pub errors: Vec<Value>,
    /// The run of every task the job reached.
    pub runs: BTreeMap<String, TaskRun>,
    pub end_time: Option<DateTime<Utc>>,
    /// Set by a step: the tasks whose run changed (to save), what happened (to record), and
    /// whether tasks now wait for workers (to wake them).
    pub touched: BTreeSet<String>,
    pub events: Vec<Event>,
    pub job_changed: bool,
    pub offers: bool,
    /// What is known of the child jobs of the job's childJob tasks under way, by child id
    /// (loaded with the job); `None` when the loader did not look.
    pub children: Option<HashMap<String, ChildOutcome>>,
    /// Set by a step: childJob tasks whose children must be started now (the engine's step
    /// loop starts them; until it does, the task's timer keeps the job due).
    pub spawns: Vec<String>,
}

impl RunningJob {
    /// The run state of a job being started: nothing of it has run yet.
    pub fn of_new(job: &Job) -> Self {
        RunningJob::new(
            job.id.clone(),
            job.status,
            job.variables.clone(),
            job.error.clone(),
        )
    }

    /// Writes what the job's document shows of its run (status, variables, errors, progress
    /// and end time) onto `job`, as saving a step writes it to the stored document.
    pub fn show_on(&self, job: &mut Job, graph: &TaskGraph) {
        job.status = self.status;
        job.variables = self.variables.clone();
        job.error = self.errors.clone();
        job.metrics.progress = serde_json::Number::from_f64(self.progress(graph))
            .unwrap_or_else(|| serde_json::Number::from(0));
        job.metrics.end_time = self.end_time.map(|at| at.timestamp_millis());
    }

    pub fn new(
        id: String,
        status: JobStatus,
        variables: Map<String, Value>,
        errors: Vec<Value>,
    ) -> Self {
        RunningJob {
            id,
            status,
            variables,
            errors,
            runs: BTreeMap::new(),
            end_time: None,
            touched: BTreeSet::new(),
            events: Vec::new(),
            job_changed: false,
            offers: false,
            children: None,
            spawns: Vec::new(),
        }
    }

    /// Share of the graph's tasks that finished, 0 to 1 (`workflow_start` counts as finished);
    /// 1 once the job is complete, also when paths not taken left tasks that never ran.
    pub fn progress(&self, graph: &TaskGraph) -> f64 {
        let total = graph.tasks().len();
        if self.status == JobStatus::Complete {
            return 1.0;
        }
        if total == 0 {
            return 0.0;
        }
        let finished = graph
            .tasks()
            .keys()
            .filter(|id| self.finish_state(id).is_some())
            .count();
        finished as f64 / total as f64
    }

    /// When the engine must look at the job again without being told: the earliest timer of
    /// a task it runs itself, or lease of a task a worker holds.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        if self.status != JobStatus::Running {
            return None;
        }
        self.runs
            .values()
            .filter_map(|run| match (run.status, &run.runner) {
                // A worker's lease, or a childJob task whose children are still to start.
                (TaskStatus::Scheduled | TaskStatus::Running, _) => run.due_at,
                _ => None,
            })
            .min()
    }

    /// The finish state of a task of the current iteration, or None while it has not finished.
    /// `workflow_start` has always finished with success.
    pub(crate) fn finish_state(&self, task: &str) -> Option<FinishState> {
        match self.runs.get(task) {
            Some(run) if matches!(run.status, TaskStatus::Complete | TaskStatus::Error) => {
                run.finish_state
            }
            Some(_) => None,
            None if task == WORKFLOW_START => Some(FinishState::Success),
            None => None,
        }
    }

    /// Whether the transition from `source` in `state` fired: known once `source` finished;
    /// a `loop` transition fires while its forEach task runs its loop body. None while it is
    /// not known yet.
    pub(crate) fn fired(&self, source: &str, state: &str) -> Option<bool> {
        if state == "loop" {
            let looping = self.runs.get(source).is_some_and(|run| {
                run.status == TaskStatus::Running
                    && matches!(run.progress, Some(Progress::Items { .. }))
            });
            if looping {
                return Some(true);
            }
        }
        self.finish_state(source)
            .map(|finish| finish.as_str() == state)
    }

    /// Whether the task started in the current iteration (it is under way or finished).
    pub(crate) fn started(&self, task: &str) -> bool {
        task == WORKFLOW_START
            || self
                .runs
                .get(task)
                .is_some_and(|run| run.status != TaskStatus::Incomplete)
    }

    pub(crate) fn event(
        &mut self,
        task_id: &str,
        kind: &'static str,
        status: &str,
        finish_state: &str,
        at: DateTime<Utc>,
    ) {
        self.events.push(Event {
            task_id: task_id.to_owned(),
            kind,
            status: status.to_owned(),
            finish_state: finish_state.to_owned(),
            at,
        });
    }

    pub(crate) fn end(&mut self, status: JobStatus, now: DateTime<Utc>) {
        self.status = status;
        self.end_time = Some(now);
        self.job_changed = true;
        // Nothing of an ended job runs on: workers holding its tasks learn so at their next
        // heartbeat, and their completions are refused.
        let unfinished: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, run)| matches!(run.status, TaskStatus::Scheduled | TaskStatus::Running))
            .map(|(id, _)| id.clone())
            .collect();
        for id in unfinished {
            let run = self.runs.get_mut(&id).expect("listed above");
            run.status = TaskStatus::Canceled;
            run.end_time = Some(now);
            run.due_at = None;
            self.touched.insert(id.clone());
            self.event(&id, "task", "canceled", "", now);
        }
        self.event("", "job", status.as_str(), "", now);
    }
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

/// The tasks of a job as its document shows them while it runs: each task the job reached
/// takes its run's status, `finish_state`, `start_time` (RFC 3339), `end_time` (epoch
/// milliseconds), `iterations` (one entry a run), the incoming values it started with, its
/// outgoing values and its error, as Itential's job documents show them.
pub fn overlay(
    tasks: &BTreeMap<String, super::graph::JobTask>,
    runs: &BTreeMap<String, TaskRun>,
) -> BTreeMap<String, super::graph::JobTask> {
    let mut tasks = tasks.clone();
    for (id, run) in runs {
        let Some(task) = tasks.get_mut(id) else {
            continue;
        };
        task.status = run.status;
        let fields = &mut task.fields;
        let mut put = |key: &str, value: Value| {
            fields.insert(key.to_owned(), value);
        };
        if let Some(finish) = run.finish_state {
            put("finish_state", Value::from(finish.as_str()));
        }
        if let Some(start) = run.start_time {
            put(
                "start_time",
                Value::from(start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
        }
        if let Some(end) = run.end_time {
            put("end_time", Value::from(end.timestamp_millis()));
        }
        put(
            "iterations",
            Value::Array((1..=run.iteration).map(Value::from).collect()),
        );
        if let Some(error) = &run.error {
            put("error", error.clone());
        }
        if let Some(Progress::Children { started, .. }) = &run.progress {
            put(
                "childJobs",
                Value::Array(started.iter().map(|id| Value::from(id.as_str())).collect()),
            );
        }
        if run.status != TaskStatus::Incomplete {
            let mut variables = match fields.get("variables") {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            };
            variables.insert("incoming".into(), Value::Object(run.incoming.clone()));
            if run.finish_state.is_some() {
                variables.insert("outgoing".into(), Value::Object(run.outgoing.clone()));
            }
            fields.insert("variables".into(), Value::Object(variables));
        }
    }
    tasks
}
