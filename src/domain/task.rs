//! Tasks as their own resource (Itential's `/operations-manager/tasks` routes): a task of a
//! job addressed across jobs, what a list or read of tasks answers, and who owns a manual task.
//!
//! A task's id across jobs is `<jobId>:<taskId>`: the job's 24-hex id, a colon, then the
//! task's key in the job's `tasks` (`6b0e589a4151ae6894af17db:6fa`). A job id has a fixed
//! length and no colon, so the split is never ambiguous, whatever the task key holds; the id
//! is derived, not stored, so every task of every job has one from the moment it is reached.
//! A task run again (a revert, a retry) keeps its id: the id names the task of the job, and
//! its `iteration` says which run it is on.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::{Error, Violations};
use super::graph::TaskStatus;
use super::ids::is_object_id;
use super::job::JobStatus;
use super::run::{check_task_id, FinishState};
use super::Caller;

/// A task of a job, addressed across jobs: `<jobId>:<taskId>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub job_id: String,
    pub task_id: String,
}

impl TaskRef {
    /// Parses `<jobId>:<taskId>`; `field` names the id in the violation.
    pub fn parse(text: &str, field: &str) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let parsed = Self::parse_into(text, field, &mut violations);
        violations
            .into_result(())
            .map(|()| parsed.unwrap_or_else(Self::placeholder))
    }

    /// As [`TaskRef::parse`], recording a violation instead.
    pub fn parse_into(text: &str, field: &str, violations: &mut Violations) -> Option<Self> {
        let split = text.split_once(':').filter(|(job, _)| is_object_id(job));
        let Some((job_id, task_id)) = split else {
            violations.push(
                field,
                "must be <jobId>:<taskId>: a job id of 24 lowercase hex characters, a colon, \
                 and the task's key in the job's tasks",
            );
            return None;
        };
        let mut own = Violations::default();
        check_task_id(task_id, field, &mut own);
        let ok = own.is_empty();
        violations.extend(own);
        ok.then(|| TaskRef::new(job_id, task_id))
    }

    fn placeholder() -> Self {
        TaskRef {
            job_id: String::new(),
            task_id: String::new(),
        }
    }

    pub fn new(job_id: &str, task_id: &str) -> Self {
        TaskRef {
            job_id: job_id.to_owned(),
            task_id: task_id.to_owned(),
        }
    }
}

impl std::fmt::Display for TaskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.job_id, self.task_id)
    }
}

/// Who works a manual task now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOwner {
    pub who: OwnerRef,
    /// Who made them the owner: themselves (a claim) or the one who assigned it.
    pub assigned_by: String,
    pub assigned_at: DateTime<Utc>,
}

/// An owner as refusals name them: the account id, with the username when it is known (the
/// owner claimed the task; an assignment names an account only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub id: String,
    pub username: Option<String>,
}

impl OwnerRef {
    /// The caller, as the owner of a task they claim.
    pub fn caller(caller: &Caller) -> Self {
        OwnerRef {
            id: caller.sub.clone(),
            username: Some(caller.username.clone()),
        }
    }
}

impl std::fmt::Display for OwnerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.username {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// A task of a job as the task routes answer it: the workflow's task, its run, its job and
/// its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub task: TaskRef,
    /// Every field of the workflow's task (`name`, `summary`, `app`, `type`, `groups`,
    /// `variables` as the workflow has them, ...), unchanged.
    pub fields: Map<String, Value>,
    pub status: TaskStatus,
    /// Who runs it: `manual`, `automatic` (a task worker) or `operation` (the service).
    pub kind: TaskKind,
    pub finish_state: Option<FinishState>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub iteration: u32,
    /// Incoming values as resolved when the task started.
    pub incoming: Map<String, Value>,
    /// The task's result.
    pub outgoing: Map<String, Value>,
    pub error: Option<Value>,
    pub owner: Option<TaskOwner>,
    pub job: TaskJob,
    /// The finish states that lead somewhere (the states of the task's outgoing
    /// transitions): the choices a person finishing it has.
    pub finish_states: Vec<FinishState>,
}

impl TaskView {
    /// The task's own `groups`: when not empty, only members of one of them (and admins) may
    /// claim, be assigned or finish it.
    pub fn groups(&self) -> Vec<String> {
        task_groups(&self.fields)
    }
}

/// The `groups` of a workflow task: the strings of its `groups` array.
pub fn task_groups(fields: &Map<String, Value>) -> Vec<String> {
    fields
        .get("groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The job a task belongs to, as a task answer shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskJob {
    pub id: String,
    /// The workflow's name.
    pub name: String,
    pub description: String,
    pub status: JobStatus,
    /// Who may see the job (and so the task).
    pub groups: Vec<String>,
}

/// Who runs a task, as searches and answers name it (Itential's task `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// A person finishes it.
    Manual,
    /// A task worker serving its app runs it.
    Automatic,
    /// The service runs it (a WorkFlowEngine operation).
    Operation,
}

impl TaskKind {
    pub const NAMES: [&'static str; 3] = ["manual", "automatic", "operation"];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Manual => "manual",
            TaskKind::Automatic => "automatic",
            TaskKind::Operation => "operation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "manual" => Some(TaskKind::Manual),
            "automatic" => Some(TaskKind::Automatic),
            "operation" => Some(TaskKind::Operation),
            _ => None,
        }
    }
}

/// A change of a manual task's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The caller becomes the owner, if nobody else is.
    Claim,
    /// Someone with the control role makes this account the owner, whoever owned it before.
    Assign(String),
    /// The owner gives it up.
    Release,
}

/// The longest account id an assignment takes.
pub const MAX_USER_ID: usize = 255;

/// The account id a task is assigned to (`userId`): not empty, at most [`MAX_USER_ID`]
/// bytes, storable.
pub fn parse_user_id(text: &str, field: &str) -> Result<String, Error> {
    let mut violations = Violations::default();
    if text.is_empty() {
        violations.push(
            field,
            "is required: the account id of the user to assign the task to",
        );
    } else if text.len() > MAX_USER_ID {
        violations.push(field, format!("must be at most {MAX_USER_ID} bytes"));
    } else if let Err(reason) = super::storable::check_text(text) {
        violations.push(field, reason);
    }
    violations.into_result(text.to_owned())
}

/// An assignment: the task (`<jobId>:<taskId>` in `task_field`) and the account id to assign
/// it to (in `user_field`), both checked, every bad one named.
pub fn parse_assignment(
    task: &str,
    user: &str,
    task_field: &str,
    user_field: &str,
) -> Result<(TaskRef, String), Error> {
    let mut violations = Violations::default();
    let task = TaskRef::parse_into(task, task_field, &mut violations);
    if let Err(Error::InvalidArgument { violations: found }) = parse_user_id(user, user_field) {
        for violation in found {
            violations.push(violation.field, violation.description);
        }
    }
    // Without a task there is a violation, and the placeholder goes nowhere.
    violations.into_result((task.unwrap_or_else(TaskRef::placeholder), user.to_owned()))
}

/// A task status as the documents write it.
pub fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Incomplete => "incomplete",
        TaskStatus::Scheduled => "scheduled",
        TaskStatus::Running => "running",
        TaskStatus::Complete => "complete",
        TaskStatus::Error => "error",
        TaskStatus::Canceled => "canceled",
    }
}

/// Whether `caller` may work a task with these `groups` (claim it, be assigned it, finish
/// it): an admin, a task without groups, or a member of one of them.
pub fn require_task_groups(
    caller: &Caller,
    task: &TaskRef,
    groups: &[String],
) -> Result<(), Error> {
    if caller.can_see(groups) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "{} may not work task {task}: it is for the groups [{}] only",
        caller.username,
        groups.join(", ")
    )))
}

/// The refusal of a task owned by someone else.
pub fn owned_by_other(task: &TaskRef, owner: &OwnerRef) -> Error {
    Error::PermissionDenied(format!(
        "task {task} is owned by {owner}: only its owner may finish or release it (someone \
         with the control role may assign it to another)"
    ))
}

/// The refusal of a claim or release that the task's state does not allow.
pub fn not_claimable(task: &TaskRef, why: String) -> Error {
    Error::FailedPrecondition {
        message: format!("task {task} {why}"),
        problems: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::InvalidArgument { violations } => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_task_id_is_a_job_id_a_colon_and_the_task_key() {
        let task = TaskRef::parse("0123456789abcdef01234567:6fa", "taskId").unwrap();
        assert_eq!(task, TaskRef::new("0123456789abcdef01234567", "6fa"));
        assert_eq!(task.to_string(), "0123456789abcdef01234567:6fa");
        // The task key may hold colons itself: the job id's length fixes the split.
        let task = TaskRef::parse("0123456789abcdef01234567:a:b", "taskId").unwrap();
        assert_eq!(task.task_id, "a:b");
        for bad in [
            "",
            "6fa",
            "0123456789abcdef01234567",
            "0123456789abcdef01234567:",
            "0123456789ABCDEF01234567:6fa",
            "0123456789abcdef0123456:6fa",
            "0123456789abcdef01234567:a\0",
        ] {
            assert_eq!(
                fields(TaskRef::parse(bad, "taskId").unwrap_err()),
                ["taskId"]
            );
        }
    }

    #[test]
    fn a_user_id_is_required_and_storable() {
        assert_eq!(parse_user_id("0123", "userId").unwrap(), "0123");
        for bad in ["", "a\0", &"x".repeat(256)] {
            assert_eq!(
                fields(parse_user_id(bad, "userId").unwrap_err()),
                ["userId"]
            );
        }
    }

    #[test]
    fn task_groups_are_the_strings_of_the_groups_array() {
        let task: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"groups": ["a", 1, "b"]})).unwrap();
        assert_eq!(task_groups(&task), ["a", "b"]);
        assert!(task_groups(&Map::new()).is_empty());
    }
}
