//! Conversions between generated protobuf types and domain types.
//!
//! JSON travels as `google.protobuf.Struct`/`Value`, whose numbers are doubles: whole values
//! within the range where a double is exact are turned back into integers, so `1` reads back
//! as `1`, not `1.0`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use super::pb;
use crate::domain::graph::{JobTask, TaskStatus, Transition};
use crate::domain::json::{index, join, reject_nul_in};
use crate::domain::page;
use crate::domain::run::{
    check_job_ids, check_task_id, FinishState, Heartbeat, JobEvent, TaskResult, WorkerTask,
};
use crate::domain::search::{TaskCondition, TaskSearch};
use crate::domain::storable;
use crate::domain::task::{TaskKind, TaskView};
use crate::domain::{
    Error, Job, JobId, JobStatus, RawJobOptions, RawStartJob, Violations, Workflow,
};
use crate::engine::ControlOutcome;

/// Largest integer a double holds exactly (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

// ---- JSON <-> google.protobuf.Value ----

pub fn json_to_proto(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn map_to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_proto(v)))
            .collect(),
    }
}

/// JSON of a protobuf value; `path` names it in errors (NaN and infinities have no JSON form).
pub fn proto_to_json(value: &prost_types::Value, path: &str, violations: &mut Violations) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n).unwrap_or_else(|| {
            violations.push(path, "must be a finite number");
            Value::Null
        }),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .iter()
                .enumerate()
                .map(|(i, v)| proto_to_json(v, &index(path, i), violations))
                .collect(),
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s, path, violations)),
    }
}

pub fn struct_to_map(
    s: &prost_types::Struct,
    path: &str,
    violations: &mut Violations,
) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), proto_to_json(v, &join(path, k), violations)))
        .collect()
}

fn number_to_json(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
        // Exact: the check above bounds the value well within i64.
        Some(Value::Number(Number::from(n as i64)))
    } else {
        Number::from_f64(n).map(Value::Number)
    }
}

// ---- timestamps ----

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A time a caller sent, within the range `google/protobuf/timestamp.proto` allows (which is
/// the range the service stores): seconds from 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z, nanos from 0 to 999,999,999.
pub fn time_from_proto(ts: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, Error> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(
            field,
            "is not a valid timestamp: nanos must be from 0 to 999999999",
        ));
    }
    let nanos = u32::try_from(ts.nanos).unwrap_or_default();
    let time = DateTime::from_timestamp(ts.seconds, nanos)
        .ok_or_else(|| Error::invalid(field, storable::TIME_RANGE_DESCRIPTION))?;
    storable::time(time, field)
}

// ---- requests ----

impl TryFrom<pb::StartJobRequest> for RawStartJob {
    type Error = Error;

    fn try_from(request: pb::StartJobRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let options = request.options.map(|options| RawJobOptions {
            description: options.description,
            job_type: options.r#type,
            variables: options
                .variables
                .map(|v| struct_to_map(&v, "options.variables", &mut violations)),
            // Protobuf cannot tell an empty list from no list: empty means "not given".
            groups: (!options.groups.is_empty()).then_some(options.groups),
            // The strict codec refuses fields the proto does not have.
            ignored: Vec::new(),
        });
        violations.into_result(RawStartJob {
            workflow: request.workflow,
            options,
        })
    }
}

pub fn job_status_filter(status: i32) -> Result<Option<JobStatus>, Error> {
    match pb::JobStatus::try_from(status) {
        Ok(pb::JobStatus::Unspecified) => Ok(None),
        Ok(pb::JobStatus::Running) => Ok(Some(JobStatus::Running)),
        Ok(pb::JobStatus::Complete) => Ok(Some(JobStatus::Complete)),
        Ok(pb::JobStatus::Error) => Ok(Some(JobStatus::Error)),
        Ok(pb::JobStatus::Canceled) => Ok(Some(JobStatus::Canceled)),
        Ok(pb::JobStatus::Paused) => Ok(Some(JobStatus::Paused)),
        Ok(pb::JobStatus::Incomplete) => Ok(Some(JobStatus::Incomplete)),
        Err(_) => Err(Error::invalid(
            "status",
            format!("{status} is not a JobStatus value"),
        )),
    }
}

/// The JSON object of an optional Struct a caller sent (`{}` when absent), its strings and keys
/// storable; `path` names it in errors.
fn free_form(
    value: Option<&prost_types::Struct>,
    path: &str,
    violations: &mut Violations,
) -> Map<String, Value> {
    let Some(value) = value else {
        return Map::new();
    };
    let map = struct_to_map(value, path, violations);
    reject_nul_in(&map, path, violations);
    map
}

/// A text field that must be given and storable.
fn required_text(text: &str, field: &str, violations: &mut Violations) {
    if text.is_empty() {
        violations.push(field, "is required");
    } else if let Err(reason) = storable::check_text(text) {
        violations.push(field, reason);
    }
}

/// A job id a caller sent in `field`.
pub fn job_id(id: &str, field: &str) -> Result<JobId, Error> {
    JobId::parse(id).map_err(|reason| Error::invalid(field, reason))
}

/// The `job_ids` of CancelJobs, PauseJobs or ResumeJobs, checked.
pub fn job_ids(ids: Vec<String>) -> Result<Vec<String>, Error> {
    let mut violations = Violations::default();
    check_job_ids(&ids, "job_ids", &mut violations);
    violations.into_result(ids)
}

/// The `task_token` of HeartbeatTask or CompleteTask: given and storable.
pub fn task_token(token: &str) -> Result<&str, Error> {
    let mut violations = Violations::default();
    required_text(token, "task_token", &mut violations);
    violations.into_result(token)
}

/// Most tasks one PollTasks stream may hold unfinished at once.
pub const MAX_TASKS_PER_POLL: u32 = 1000;

/// A PollTasks request, checked.
#[derive(Debug, PartialEq)]
pub struct Poll {
    pub worker_id: String,
    pub apps: Vec<String>,
    pub max_tasks: u32,
}

impl TryFrom<pb::PollTasksRequest> for Poll {
    type Error = Error;

    fn try_from(request: pb::PollTasksRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        required_text(&request.worker_id, "worker_id", &mut violations);
        if request.apps.is_empty() {
            violations.push("apps", "must name at least one app");
        }
        for (i, app) in request.apps.iter().enumerate() {
            let field = index("apps", i);
            match request.apps[..i].iter().position(|earlier| earlier == app) {
                Some(first) => violations.push(field, format!("repeats {}", index("apps", first))),
                None => required_text(app, &field, &mut violations),
            }
        }
        if !(1..=MAX_TASKS_PER_POLL).contains(&request.max_tasks) {
            violations.push(
                "max_tasks",
                format!("must be from 1 to {MAX_TASKS_PER_POLL}"),
            );
        }
        violations.into_result(Poll {
            worker_id: request.worker_id,
            apps: request.apps,
            max_tasks: request.max_tasks,
        })
    }
}

/// A CompleteTask request, checked: the task's token and how it ended.
#[derive(Debug, PartialEq)]
pub struct Completion {
    pub task_token: String,
    pub result: TaskResult,
}

impl TryFrom<pb::CompleteTaskRequest> for Completion {
    type Error = Error;

    fn try_from(request: pb::CompleteTaskRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        required_text(&request.task_token, "task_token", &mut violations);
        // Without a finish state there is a violation, and the placeholder goes nowhere.
        let finish_state =
            FinishState::parse_field(&request.finish_state, "finish_state", &mut violations)
                .unwrap_or(FinishState::Error);
        let outgoing = free_form(request.outgoing.as_ref(), "outgoing", &mut violations);
        if let Err(reason) = storable::check_text(&request.error_message) {
            violations.push("error_message", reason);
        }
        violations.into_result(Completion {
            task_token: request.task_token,
            result: TaskResult {
                finish_state,
                outgoing,
                error_message: request.error_message,
            },
        })
    }
}

/// A FinishTask request, checked: the manual task and how it ended.
#[derive(Debug, PartialEq)]
pub struct ManualFinish {
    /// 24 lowercase hex characters.
    pub job_id: String,
    pub task_id: String,
    pub result: TaskResult,
}

impl TryFrom<pb::FinishTaskRequest> for ManualFinish {
    type Error = Error;

    fn try_from(request: pb::FinishTaskRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if let Err(reason) = JobId::parse(&request.job_id) {
            violations.push("job_id", reason);
        }
        check_task_id(&request.task_id, "task_id", &mut violations);
        // Without a finish state there is a violation, and the placeholder goes nowhere.
        let finish_state =
            FinishState::parse_field(&request.finish_state, "finish_state", &mut violations)
                .unwrap_or(FinishState::Error);
        let variables = free_form(request.variables.as_ref(), "variables", &mut violations);
        violations.into_result(ManualFinish {
            job_id: request.job_id,
            task_id: request.task_id,
            result: TaskResult {
                finish_state,
                outgoing: variables,
                error_message: String::new(),
            },
        })
    }
}

/// A RetryTask request, checked: the task and the incoming values to override.
#[derive(Debug, PartialEq)]
pub struct Retry {
    /// 24 lowercase hex characters.
    pub job_id: String,
    pub task_id: String,
    pub variables: Map<String, Value>,
}

impl TryFrom<pb::RetryTaskRequest> for Retry {
    type Error = Error;

    fn try_from(request: pb::RetryTaskRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if let Err(reason) = JobId::parse(&request.job_id) {
            violations.push("job_id", reason);
        }
        check_task_id(&request.task_id, "task_id", &mut violations);
        let variables = free_form(request.variables.as_ref(), "variables", &mut violations);
        violations.into_result(Retry {
            job_id: request.job_id,
            task_id: request.task_id,
            variables,
        })
    }
}
/// A workflow document sent as a Struct; `path` names it in errors.
pub fn workflow_document(
    document: Option<prost_types::Struct>,
    path: &str,
) -> Result<Value, Error> {
    let Some(document) = document else {
        return Err(Error::invalid(path, "is required"));
    };
    let mut violations = Violations::default();
    let map = struct_to_map(&document, path, &mut violations);
    violations.into_result(Value::Object(map))
}

// ---- responses ----

impl From<JobStatus> for pb::JobStatus {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Running => pb::JobStatus::Running,
            JobStatus::Complete => pb::JobStatus::Complete,
            JobStatus::Error => pb::JobStatus::Error,
            JobStatus::Canceled => pb::JobStatus::Canceled,
            JobStatus::Paused => pb::JobStatus::Paused,
            JobStatus::Incomplete => pb::JobStatus::Incomplete,
        }
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Incomplete => pb::TaskStatus::Incomplete,
            TaskStatus::Scheduled => pb::TaskStatus::Scheduled,
            TaskStatus::Running => pb::TaskStatus::Running,
            TaskStatus::Complete => pb::TaskStatus::Complete,
            TaskStatus::Error => pb::TaskStatus::Error,
            TaskStatus::Canceled => pb::TaskStatus::Canceled,
        }
    }
}

/// Task fields that have their own proto field when they hold a string.
const TASK_STRING_FIELDS: [&str; 6] = ["name", "summary", "description", "app", "type", "location"];

impl From<&JobTask> for pb::JobTask {
    /// Tasks are shared by every job of a workflow revision, so they are read, not taken.
    fn from(task: &JobTask) -> Self {
        let string = |key: &str| match task.fields.get(key) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let variables = match task.fields.get("variables") {
            Some(Value::Object(map)) => Some(map_to_struct(map)),
            _ => None,
        };
        // Whatever has no proto field of its own, including a named field of another type.
        let extra = task
            .fields
            .iter()
            .filter(|(key, value)| match value {
                Value::String(_) => !TASK_STRING_FIELDS.contains(&key.as_str()),
                Value::Object(_) => key.as_str() != "variables",
                _ => true,
            })
            .map(|(key, value)| (key.clone(), json_to_proto(value)))
            .collect();
        pb::JobTask {
            name: string("name"),
            summary: string("summary"),
            description: string("description"),
            app: string("app"),
            r#type: string("type"),
            location: string("location"),
            status: pb::TaskStatus::from(task.status) as i32,
            transitions: task
                .transitions
                .iter()
                .map(|(state, list)| {
                    let transitions = list
                        .iter()
                        .map(|t| pb::TaskTransition {
                            task: t.task.clone(),
                            r#type: t.transition_type.clone(),
                        })
                        .collect();
                    (state.clone(), pb::TaskTransitionList { transitions })
                })
                .collect(),
            previous: task
                .previous
                .iter()
                .map(|(state, tasks)| {
                    let tasks = tasks.clone();
                    (state.clone(), pb::TaskIdList { tasks })
                })
                .collect(),
            variables,
            extra: Some(prost_types::Struct { fields: extra }),
        }
    }
}

fn transition_targets(targets: &Value) -> pb::TransitionTargets {
    let targets = Transition::all_in(targets)
        .map(|transition| {
            (
                transition.target.to_owned(),
                pb::Transition {
                    state: transition.state.to_owned(),
                    r#type: transition.kind.to_owned(),
                },
            )
        })
        .collect();
    pb::TransitionTargets { targets }
}

/// A task graph as the `tasks` and `transitions` fields of a `pb::Job`.
pub fn task_graph(
    tasks: &BTreeMap<String, JobTask>,
    transitions: &Map<String, Value>,
) -> (
    BTreeMap<String, pb::JobTask>,
    BTreeMap<String, pb::TransitionTargets>,
) {
    let tasks = tasks
        .iter()
        .map(|(id, task)| (id.clone(), pb::JobTask::from(task)))
        .collect();
    let transitions = transitions
        .iter()
        .map(|(source, targets)| (source.clone(), transition_targets(targets)))
        .collect();
    (tasks, transitions)
}

impl From<Job> for pb::Job {
    fn from(job: Job) -> Self {
        let (tasks, transitions) = task_graph(&job.tasks, &job.transitions);
        pb::Job {
            tasks,
            transitions,
            ..job_without_graph(job)
        }
    }
}

/// A job as its message, but for its task graph (`tasks` and `transitions` left empty), which
/// StartJob's answer writes from bytes encoded once ([`super::answer`]).
pub fn job_without_graph(job: Job) -> pb::Job {
    pb::Job {
        id: job.id,
        name: job.name,
        description: job.description,
        r#type: job.job_type,
        status: pb::JobStatus::from(job.status) as i32,
        tasks: BTreeMap::new(),
        transitions: BTreeMap::new(),
        variables: Some(map_to_struct(&job.variables)),
        groups: job.groups,
        watchers: job.watchers,
        ancestors: job.ancestors,
        parent: Some(json_to_proto(&job.parent)),
        metrics: Some(pb::JobMetrics {
            start_time: DateTime::from_timestamp_millis(job.metrics.start_time).map(timestamp),
            user: job.metrics.user,
            progress: job.metrics.progress.as_f64().unwrap_or_default(),
            owner: job.metrics.owner,
            end_time: job
                .metrics
                .end_time
                .and_then(DateTime::from_timestamp_millis)
                .map(timestamp),
        }),
        error: job.error.iter().map(json_to_proto).collect(),
        warnings: job.warnings.iter().map(json_to_proto).collect(),
        created: Some(timestamp(job.created)),
        created_by: job.created_by,
        last_updated: Some(timestamp(job.last_updated)),
        // The REST document's user object; gRPC carries its account id.
        last_updated_by: job.last_updated_by.id,
        canvas_version: job.canvas_version,
        encoding_version: job.encoding_version,
        font_size: job.font_size,
        pre_automation_time: job.pre_automation_time.as_f64().unwrap_or_default(),
        sla: job.sla.as_f64().unwrap_or_default(),
        decorators: job
            .decorators
            .into_iter()
            .map(|d| pb::Decorator {
                r#type: d.decorator_type,
                pointer: d.pointer,
            })
            .collect(),
        tags: job.tags.iter().map(json_to_proto).collect(),
        error_handler: Some(json_to_proto(&job.error_handler)),
        uuid: job.uuid,
        created_version: job.created_version,
        last_updated_version: job.last_updated_version,
        migration_version: job.migration_version,
        validation_errors: job.validation_errors.iter().map(json_to_proto).collect(),
    }
}

impl From<WorkerTask> for pb::WorkerTask {
    fn from(task: WorkerTask) -> Self {
        pb::WorkerTask {
            task_token: task.task_token,
            job_id: task.job_id,
            task_id: task.task_id,
            app: task.app,
            name: task.name,
            incoming: Some(map_to_struct(&task.incoming)),
            lease_deadline: Some(timestamp(task.lease_deadline)),
            attempt: task.attempt,
        }
    }
}

impl From<Heartbeat> for pb::HeartbeatTaskResponse {
    fn from(heartbeat: Heartbeat) -> Self {
        pb::HeartbeatTaskResponse {
            lease_deadline: Some(timestamp(heartbeat.lease_deadline)),
            cancel_requested: heartbeat.cancel_requested,
        }
    }
}

impl From<JobEvent> for pb::JobEvent {
    fn from(event: JobEvent) -> Self {
        pb::JobEvent {
            sequence: event.sequence,
            job_id: event.job_id,
            task_id: event.task_id,
            kind: event.kind,
            status: event.status,
            finish_state: event.finish_state,
            at: Some(timestamp(event.at)),
        }
    }
}

impl From<ControlOutcome> for pb::JobOutcome {
    /// A failed job's error as the status a call for that job alone would have ended with.
    fn from((job_id, outcome): ControlOutcome) -> Self {
        match outcome {
            Ok(()) => pb::JobOutcome {
                job_id,
                ok: true,
                code: tonic::Code::Ok as i32,
                message: String::new(),
            },
            Err(error) => {
                let status = tonic::Status::from(error);
                pb::JobOutcome {
                    job_id,
                    ok: false,
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }
            }
        }
    }
}

impl From<Workflow> for pb::Workflow {
    fn from(workflow: Workflow) -> Self {
        let document = &workflow.document;
        pb::Workflow {
            name: document.name().to_owned(),
            r#type: document.workflow_type().to_owned(),
            description: document.description().to_owned(),
            groups: document.groups().to_vec(),
            task_count: i32::try_from(document.tasks().len()).unwrap_or(i32::MAX),
            created_at: Some(timestamp(workflow.created_at)),
            updated_at: Some(timestamp(workflow.updated_at)),
            document: Some(map_to_struct(document.document())),
        }
    }
}

// ---- tasks across jobs ----

impl From<TaskView> for pb::Task {
    fn from(view: TaskView) -> Self {
        let text = |key: &str| {
            view.fields
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        pb::Task {
            id: view.task.to_string(),
            job_name: view.job.name.clone(),
            job_status: pb::JobStatus::from(view.job.status) as i32,
            name: text("name"),
            summary: text("summary"),
            description: text("description"),
            app: text("app"),
            r#type: view.kind.as_str().to_owned(),
            status: pb::TaskStatus::from(view.status) as i32,
            finish_state: view
                .finish_state
                .map(|state| state.as_str().to_owned())
                .unwrap_or_default(),
            groups: view.groups(),
            incoming: Some(map_to_struct(&view.incoming)),
            outgoing: Some(map_to_struct(&view.outgoing)),
            start_time: view.start_time.map(timestamp),
            end_time: view.end_time.map(timestamp),
            iteration: view.iteration,
            owner_assigned_by: view
                .owner
                .as_ref()
                .map(|owner| owner.assigned_by.clone())
                .unwrap_or_default(),
            owner_assigned_at: view
                .owner
                .as_ref()
                .map(|owner| timestamp(owner.assigned_at)),
            owner_username: view
                .owner
                .as_ref()
                .and_then(|owner| owner.who.username.clone())
                .unwrap_or_default(),
            owner: view.owner.map(|owner| owner.who.id).unwrap_or_default(),
            finish_states: view
                .finish_states
                .iter()
                .map(|state| state.as_str().to_owned())
                .collect(),
            error: view.error.as_ref().map(json_to_proto),
            fields: Some(map_to_struct(&view.fields)),
            job_id: view.task.job_id,
            task_id: view.task.task_id,
        }
    }
}

impl From<TaskView> for pb::GetManualControllerResponse {
    fn from(view: TaskView) -> Self {
        let collects = match view.fields.get("variables").and_then(|v| v.get("outgoing")) {
            Some(Value::Object(outgoing)) => outgoing.clone(),
            _ => Map::new(),
        };
        pb::GetManualControllerResponse {
            task: Some(view.into()),
            collects: Some(map_to_struct(&collects)),
        }
    }
}

/// The task search of a ListTasks request, each filter checked and named.
pub fn task_search(request: &pb::ListTasksRequest) -> Result<TaskSearch, Error> {
    let mut violations = Violations::default();
    let mut conditions = Vec::new();
    match task_status_filter(request.status) {
        Ok(Some(status)) => conditions.push(TaskCondition::Statuses(vec![status])),
        Ok(None) => {}
        Err(description) => violations.push("status", description),
    }
    if !request.r#type.is_empty() {
        match TaskKind::parse(&request.r#type) {
            Some(kind) => conditions.push(TaskCondition::Kinds(vec![kind])),
            None => violations.push(
                "type",
                format!("must be one of {}", TaskKind::NAMES.join(", ")),
            ),
        }
    }
    if !request.job_id.is_empty() {
        match JobId::parse(&request.job_id) {
            Ok(id) => conditions.push(TaskCondition::Jobs(vec![id.as_str().to_owned()])),
            Err(reason) => violations.push("job_id", reason),
        }
    }
    match (request.owner.as_str(), request.unowned) {
        ("", false) => {}
        ("", true) => conditions.push(TaskCondition::Owners(vec![String::new()])),
        (_, true) => violations.push("unowned", "cannot be set together with owner"),
        (owner, false) => match storable::check_text(owner) {
            Ok(()) => conditions.push(TaskCondition::Owners(vec![owner.to_owned()])),
            Err(reason) => violations.push("owner", reason),
        },
    }
    let limit = match page::page_size(request.page_size, "page_size") {
        Ok(limit) => limit,
        Err(Error::InvalidArgument { violations: found }) => {
            for v in found {
                violations.push(v.field, v.description);
            }
            0
        }
        Err(other) => return Err(other),
    };
    let skip = match request.page_token.as_str() {
        "" => 0,
        token => match page::decode_skip_cursor(token, "page_token") {
            Ok(skip) => skip,
            Err(_) => {
                violations.push("page_token", "is not a page token this service issued");
                0
            }
        },
    };
    violations.into_result(TaskSearch {
        conditions,
        limit,
        skip,
        ..TaskSearch::default()
    })
}

/// A TaskStatus filter: None for unspecified.
fn task_status_filter(status: i32) -> Result<Option<TaskStatus>, String> {
    match pb::TaskStatus::try_from(status) {
        Ok(pb::TaskStatus::Unspecified) => Ok(None),
        Ok(pb::TaskStatus::Incomplete) => Ok(Some(TaskStatus::Incomplete)),
        Ok(pb::TaskStatus::Scheduled) => Ok(Some(TaskStatus::Scheduled)),
        Ok(pb::TaskStatus::Running) => Ok(Some(TaskStatus::Running)),
        Ok(pb::TaskStatus::Complete) => Ok(Some(TaskStatus::Complete)),
        Ok(pb::TaskStatus::Error) => Ok(Some(TaskStatus::Error)),
        Ok(pb::TaskStatus::Canceled) => Ok(Some(TaskStatus::Canceled)),
        Err(_) => Err(format!("{status} is not a TaskStatus value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_round_trip_through_struct_with_integers_intact() {
        let original = json!({
            "count": 1, "big": 9007199254740992_i64, "ratio": 0.5, "negative": -3,
            "nested": {"list": [1, "two", null, true, {"x": 2.25}]}
        });
        let proto = json_to_proto(&original);
        let mut violations = Violations::default();
        let back = proto_to_json(&proto, "v", &mut violations);
        assert!(violations.is_empty());
        assert_eq!(back, original);
        assert_eq!(back["count"].to_string(), "1");
    }

    #[test]
    fn non_finite_numbers_are_named() {
        let value = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        let mut violations = Violations::default();
        proto_to_json(&value, "options.variables.x", &mut violations);
        let err = violations.into_result(()).unwrap_err();
        assert!(err.to_string().contains("options.variables.x"));
    }

    #[test]
    fn timestamps_outside_the_proto_range_are_rejected_by_field() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        for (seconds, nanos) in [(-62_135_596_800, 0), (253_402_300_799, 999_999_999), (0, 0)] {
            assert!(time_from_proto(&ts(seconds, nanos), "created_after").is_ok());
        }
        for (seconds, nanos) in [
            (-62_135_596_801, 0),
            (253_402_300_800, 0),
            (i64::MIN, 0),
            (i64::MAX, 0),
            (-8_334_632_851_200, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            let err = time_from_proto(&ts(seconds, nanos), "created_after").unwrap_err();
            assert!(
                err.to_string().contains("created_after"),
                "{seconds}: {err}"
            );
        }
    }

    const JOB: &str = "0123456789abcdef01234567";

    fn fields<T: std::fmt::Debug>(parsed: Result<T, Error>) -> Vec<String> {
        match parsed {
            Err(Error::InvalidArgument { violations }) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    fn poll(worker_id: &str, apps: &[&str], max_tasks: u32) -> pb::PollTasksRequest {
        pb::PollTasksRequest {
            worker_id: worker_id.into(),
            apps: apps.iter().map(|a| a.to_string()).collect(),
            max_tasks,
        }
    }

    #[test]
    fn a_poll_names_a_worker_its_apps_and_how_many_tasks_it_holds() {
        let parsed = Poll::try_from(poll("w1", &["Panorama", "NSO"], 4)).unwrap();
        assert_eq!(parsed.apps, ["Panorama", "NSO"]);
        assert_eq!(parsed.max_tasks, 4);
        assert!(Poll::try_from(poll("w1", &["A"], MAX_TASKS_PER_POLL)).is_ok());
        assert_eq!(
            fields(Poll::try_from(poll("", &[], 0))),
            ["worker_id", "apps", "max_tasks"]
        );
        assert_eq!(
            fields(Poll::try_from(poll("w\0", &["A", "", "A", "B\0"], 1001))),
            ["worker_id", "apps[1]", "apps[2]", "apps[3]", "max_tasks"]
        );
    }

    #[test]
    fn a_completion_takes_only_the_three_finish_states() {
        let complete = |finish_state: &str| pb::CompleteTaskRequest {
            task_token: "token".into(),
            finish_state: finish_state.into(),
            outgoing: Some(map_to_struct(json!({"count": 2}).as_object().unwrap())),
            error_message: String::new(),
        };
        for (text, state) in [
            ("success", FinishState::Success),
            ("failure", FinishState::Failure),
            ("error", FinishState::Error),
        ] {
            let parsed = Completion::try_from(complete(text)).unwrap();
            assert_eq!(parsed.result.finish_state, state);
            assert_eq!(parsed.result.outgoing["count"].to_string(), "2");
        }
        for text in ["", "SUCCESS", "complete"] {
            assert_eq!(
                fields(Completion::try_from(complete(text))),
                ["finish_state"]
            );
        }
        let mut bad = complete("error");
        bad.task_token = String::new();
        bad.error_message = "x\0".into();
        bad.outgoing = Some(map_to_struct(json!({"a": ["\u{0}"]}).as_object().unwrap()));
        assert_eq!(
            fields(Completion::try_from(bad)),
            ["task_token", "outgoing.a[0]", "error_message"]
        );
        assert!(Completion::try_from(pb::CompleteTaskRequest {
            task_token: "t".into(),
            finish_state: "success".into(),
            ..Default::default()
        })
        .unwrap()
        .result
        .outgoing
        .is_empty());
    }

    #[test]
    fn finish_and_retry_name_a_job_id_and_a_task_id() {
        let finish = ManualFinish::try_from(pb::FinishTaskRequest {
            job_id: JOB.into(),
            task_id: "1a2b".into(),
            finish_state: "failure".into(),
            variables: Some(map_to_struct(
                json!({"approved": false}).as_object().unwrap(),
            )),
        })
        .unwrap();
        assert_eq!(finish.result.finish_state, FinishState::Failure);
        assert_eq!(finish.result.outgoing["approved"], json!(false));
        assert_eq!(
            fields(ManualFinish::try_from(pb::FinishTaskRequest {
                job_id: "0123".into(),
                ..Default::default()
            })),
            ["job_id", "task_id", "finish_state"]
        );
        let retry = Retry::try_from(pb::RetryTaskRequest {
            job_id: JOB.into(),
            task_id: "1a2b".into(),
            variables: None,
        })
        .unwrap();
        assert!(retry.variables.is_empty());
        assert_eq!(
            fields(Retry::try_from(pb::RetryTaskRequest {
                job_id: JOB.to_uppercase(),
                task_id: "t\0".into(),
                variables: Some(map_to_struct(json!({"n": 1}).as_object().unwrap())),
            })),
            ["job_id", "task_id"]
        );
    }

    #[test]
    fn job_ids_are_one_to_a_hundred_distinct_job_ids() {
        let ids = |n: usize| (0..n).map(|i| format!("{i:024x}")).collect::<Vec<_>>();
        assert_eq!(job_ids(ids(100)).unwrap().len(), 100);
        assert_eq!(fields(job_ids(ids(0))), ["job_ids"]);
        assert_eq!(fields(job_ids(ids(101))), ["job_ids"]);
        assert_eq!(
            fields(job_ids(vec![JOB.into(), "nope".into(), JOB.into()])),
            ["job_ids[1]", "job_ids[2]"]
        );
        let Err(Error::InvalidArgument { violations }) = job_ids(vec![JOB.into(), JOB.into()])
        else {
            panic!("a repeated id")
        };
        assert_eq!(violations[0].description, "repeats job_ids[0]");
        assert!(fields(task_token("")) == ["task_token"]);
        assert_eq!(task_token("t").unwrap(), "t");
    }

    #[test]
    fn each_job_outcome_carries_the_status_of_a_call_for_that_job_alone() {
        let done = pb::JobOutcome::from((JOB.to_owned(), Ok(())));
        assert!(done.ok);
        assert_eq!((done.code, done.message.as_str()), (0, ""));
        let missing = pb::JobOutcome::from((
            JOB.to_owned(),
            Err(Error::NotFound(format!("Cannot find job {JOB}"))),
        ));
        assert!(!missing.ok);
        assert_eq!(missing.code, tonic::Code::NotFound as i32);
        assert_eq!(missing.message, format!("Cannot find job {JOB}"));
        let broken = pb::JobOutcome::from((
            JOB.to_owned(),
            Err(Error::internal(anyhow::anyhow!(
                "relation \"jobs\" does not exist"
            ))),
        ));
        assert_eq!(broken.code, tonic::Code::Internal as i32);
        assert_eq!(broken.message, "internal error");
    }

    #[test]
    fn tasks_and_events_become_their_messages() {
        let at = DateTime::from_timestamp(1_767_225_600, 5_000).unwrap();
        let task = pb::WorkerTask::from(WorkerTask {
            task_token: "token".into(),
            job_id: JOB.into(),
            task_id: "1a2b".into(),
            app: "Panorama".into(),
            name: "commit".into(),
            incoming: json!({"device": "fw1", "retries": 3})
                .as_object()
                .unwrap()
                .clone(),
            lease_deadline: at,
            attempt: 2,
        });
        assert_eq!(task.attempt, 2);
        assert_eq!(task.lease_deadline, Some(timestamp(at)));
        let mut violations = Violations::default();
        let incoming = struct_to_map(task.incoming.as_ref().unwrap(), "", &mut violations);
        assert_eq!(incoming["retries"].to_string(), "3");

        let event = pb::JobEvent::from(JobEvent {
            sequence: 7,
            job_id: JOB.into(),
            task_id: "1a2b".into(),
            kind: "task".into(),
            status: "complete".into(),
            finish_state: "success".into(),
            at,
        });
        assert_eq!(
            (
                event.sequence,
                event.kind.as_str(),
                event.finish_state.as_str()
            ),
            (7, "task", "success")
        );
        assert_eq!(event.at.unwrap().nanos, 5_000);

        let heartbeat = pb::HeartbeatTaskResponse::from(Heartbeat {
            lease_deadline: at,
            cancel_requested: true,
        });
        assert!(heartbeat.cancel_requested);
    }

    #[test]
    fn unknown_status_values_are_rejected_by_field() {
        assert!(job_status_filter(0).unwrap().is_none());
        assert_eq!(job_status_filter(1).unwrap(), Some(JobStatus::Running));
        assert!(job_status_filter(99)
            .unwrap_err()
            .to_string()
            .contains("status"));
    }
}
