//! Jobs: what StartJob builds from a workflow, in the shape of the REST job document.
//!
//! [`Job`] serializes to exactly the JSON the REST routes return and the database stores, so
//! there is one document and no second mapping to keep in step.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::caller::Caller;
use super::error::Error;
use super::graph::JobTask;
use super::ids::JobId;
use super::start::JobOptions;
use super::workflow::CompiledWorkflow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Complete,
    Error,
    Canceled,
    Paused,
    Incomplete,
}

impl JobStatus {
    /// Whether a job with this status has ended (nothing of it runs any more, unless a
    /// task of one that ended in error is retried).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Complete | JobStatus::Error | JobStatus::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Complete => "complete",
            JobStatus::Error => "error",
            JobStatus::Canceled => "canceled",
            JobStatus::Paused => "paused",
            JobStatus::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decorator {
    #[serde(rename = "type")]
    pub decorator_type: String,
    pub pointer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    /// Epoch milliseconds.
    pub start_time: i64,
    pub user: String,
    /// Share of tasks done, 0 to 1; a JSON number so that 0 is written `0`.
    pub progress: Number,
    pub owner: String,
    /// Epoch milliseconds when the job ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
}

/// A job document, with the REST document's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "_id")]
    pub id: String,
    /// A UUID of the job, for systems that key jobs by UUID.
    #[serde(default)]
    pub uuid: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    /// Shared with every job started from the same workflow revision: a start builds neither.
    /// Stored once per graph, so a stored job's own fields come without them (`default`) and
    /// its graph is put back when it is read.
    #[serde(default)]
    pub tasks: Arc<BTreeMap<String, JobTask>>,
    #[serde(default)]
    pub transitions: Arc<Map<String, Value>>,
    pub variables: Map<String, Value>,
    pub groups: Vec<String>,
    pub watchers: Vec<String>,
    pub ancestors: Vec<String>,
    pub parent: Value,
    pub metrics: JobMetrics,
    pub error: Vec<Value>,
    pub warnings: Vec<Value>,
    #[serde(with = "millis_rfc3339")]
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(with = "millis_rfc3339")]
    pub last_updated: DateTime<Utc>,
    /// The user who last changed the job, as the REST document shows a user.
    #[serde(deserialize_with = "UserRef::stored")]
    pub last_updated_by: UserRef,
    #[serde(rename = "canvasVersion")]
    pub canvas_version: i64,
    #[serde(rename = "encodingVersion")]
    pub encoding_version: i64,
    pub font_size: i64,
    #[serde(rename = "preAutomationTime")]
    pub pre_automation_time: Number,
    pub sla: Number,
    pub decorators: Vec<Decorator>,
    pub tags: Vec<Value>,
    #[serde(rename = "errorHandler")]
    pub error_handler: Value,
    /// Version of the service that created the document.
    #[serde(rename = "createdVersion", default)]
    pub created_version: String,
    /// Version of the service that last changed the document.
    #[serde(rename = "lastUpdatedVersion", default)]
    pub last_updated_version: String,
    /// Version of the document's shape, for future migrations.
    #[serde(rename = "migrationVersion", default)]
    pub migration_version: i64,
    /// Problems found when the job's input was validated; empty for a job that started.
    #[serde(rename = "validationErrors", default)]
    pub validation_errors: Vec<Value>,
}

/// A user as the REST job document shows one (`last_updated_by`): what the caller's token says
/// of them. The reference page's user has more (`provenance`, `firstname`, `email`, ...), which
/// a token does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// The account id (`sub`).
    #[serde(rename = "_id")]
    pub id: String,
    pub username: String,
    #[serde(rename = "memberOf", default)]
    pub member_of: Vec<GroupMembership>,
    #[serde(rename = "assignedRoles", default)]
    pub assigned_roles: Vec<RoleAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembership {
    #[serde(rename = "groupId")]
    pub group_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignment {
    #[serde(rename = "roleId")]
    pub role_id: String,
}

impl UserRef {
    /// The caller as a user.
    pub fn of(caller: &Caller) -> Self {
        UserRef {
            id: caller.sub.clone(),
            username: caller.username.clone(),
            member_of: caller
                .groups
                .iter()
                .map(|group| GroupMembership {
                    group_id: group.clone(),
                })
                .collect(),
            assigned_roles: caller
                .roles
                .iter()
                .map(|role| RoleAssignment {
                    role_id: role.clone(),
                })
                .collect(),
        }
    }

    /// A user as stored: an object, or the bare account id that jobs stored before the user
    /// object was written hold.
    fn stored<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            User(UserRef),
            Id(String),
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::User(user) => user,
            Stored::Id(id) => UserRef {
                id,
                username: String::new(),
                member_of: Vec::new(),
                assigned_roles: Vec::new(),
            },
        })
    }
}

/// Most ignored options a job's `warnings` name one by one; the rest are counted.
const MAX_IGNORED_LISTED: usize = 20;
/// Most characters of an ignored option's name a warning repeats.
const MAX_IGNORED_NAME: usize = 100;

/// The job's `warnings` for options it ignored, in the shape of the REST document's warnings:
/// `{"task": "job", "message": "option X is not supported and was ignored"}`. At most
/// [`MAX_IGNORED_LISTED`] are named (names cut to [`MAX_IGNORED_NAME`] characters), then one
/// says how many more: the job keeps a bounded record of what a caller sent and it dropped.
fn ignored_options(ignored: &[String]) -> Vec<Value> {
    let warning = |message: String| serde_json::json!({"task": "job", "message": message});
    let mut warnings: Vec<Value> = ignored
        .iter()
        .take(MAX_IGNORED_LISTED)
        .map(|name| {
            let name = match name.char_indices().nth(MAX_IGNORED_NAME) {
                Some((at, _)) => format!("{}...", &name[..at]),
                None => name.clone(),
            };
            warning(format!("option {name} is not supported and was ignored"))
        })
        .collect();
    if ignored.len() > MAX_IGNORED_LISTED {
        warnings.push(warning(format!(
            "{} more options are not supported and were ignored",
            ignored.len() - MAX_IGNORED_LISTED
        )));
    }
    warnings
}

/// The shape version of job documents this service writes.
pub const JOB_DOCUMENT_VERSION: i64 = 1;

impl Job {
    /// Builds a new job from `workflow`, as CONTRACT "A new job" says. Fails with
    /// INVALID_ARGUMENT when the variables do not match the workflow's `inputSchema`, and with
    /// FAILED_PRECONDITION when the task graph cannot run.
    pub fn start(
        compiled: &CompiledWorkflow,
        options: JobOptions,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Job, Error> {
        let mut options = options;
        // Checked as a JSON value without a copy: variables may be megabytes.
        let variables = Value::Object(std::mem::take(&mut options.variables));
        let violations = compiled.check_variables(&variables, "options.variables");
        if let Value::Object(variables) = variables {
            options.variables = variables;
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument { violations });
        }
        let workflow = compiled.document();
        let problems = compiled.graph_problems().to_vec();
        if !problems.is_empty() {
            let listed: Vec<_> = problems.iter().map(|p| p.description.as_str()).collect();
            return Err(Error::FailedPrecondition {
                message: format!(
                    "workflow {} cannot run: {}",
                    workflow.name(),
                    listed.join("; ")
                ),
                problems,
            });
        }

        // Millisecond precision: the REST document carries milliseconds, and the stored
        // timestamps must equal the document's.
        let now = now.trunc_subsecs(3);
        let id = JobId::generate(now).to_string();
        let document = workflow.document();
        let mut variables = options.variables;
        variables.insert("_id".into(), Value::String(id.clone()));
        variables.insert("initiator".into(), Value::String(caller.username.clone()));
        let integer =
            |key: &str, default: i64| document.get(key).and_then(Value::as_i64).unwrap_or(default);
        let number = |key: &str| match document.get(key) {
            Some(Value::Number(n)) => n.clone(),
            _ => Number::from(0),
        };
        let decorators = document
            .get("decorators")
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        let tags = match document.get("tags") {
            Some(Value::Array(tags)) => tags.clone(),
            _ => Vec::new(),
        };

        Ok(Job {
            id: id.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            name: workflow.name().to_owned(),
            description: options.description.unwrap_or_default(),
            job_type: options
                .job_type
                .unwrap_or_else(|| workflow.workflow_type().to_owned()),
            status: JobStatus::Running,
            tasks: compiled.job_graph().tasks().clone(),
            transitions: compiled.job_graph().transitions().clone(),
            variables,
            groups: options.groups.unwrap_or_else(|| workflow.groups().to_vec()),
            watchers: vec![caller.sub.clone()],
            ancestors: vec![id],
            parent: Value::Null,
            metrics: JobMetrics {
                start_time: now.timestamp_millis(),
                user: caller.sub.clone(),
                progress: Number::from(0),
                owner: caller.sub.clone(),
                end_time: None,
            },
            error: Vec::new(),
            warnings: ignored_options(&options.ignored),
            created: now,
            created_by: caller.sub.clone(),
            last_updated: now,
            last_updated_by: UserRef::of(caller),
            canvas_version: integer("canvasVersion", 1),
            encoding_version: integer("encodingVersion", 1),
            font_size: integer("font_size", 12),
            pre_automation_time: number("preAutomationTime"),
            sla: number("sla"),
            decorators,
            tags,
            error_handler: document.get("errorHandler").cloned().unwrap_or(Value::Null),
            created_version: env!("CARGO_PKG_VERSION").to_owned(),
            last_updated_version: env!("CARGO_PKG_VERSION").to_owned(),
            migration_version: JOB_DOCUMENT_VERSION,
            validation_errors: Vec::new(),
        })
    }
}

/// RFC 3339 timestamps with milliseconds and `Z`, as the REST documents write them.
pub(crate) mod millis_rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::graph::TaskStatus;
    use crate::domain::ids::is_object_id;
    use crate::domain::workflow::WorkflowDocument;
    use serde_json::json;

    fn workflow() -> WorkflowDocument {
        WorkflowDocument::parse(
            json!({
                "name": "Port Turn Up",
                "type": "automation",
                "font_size": 22,
                "sla": 60000,
                "groups": ["aaaaaaaaaaaaaaaaaaaaaaaa"],
                "tasks": {
                    "workflow_start": {"name": "workflow_start", "groups": []},
                    "a1": {"name": "query", "app": "WorkFlowEngine", "status": "stale"},
                    "b2": {"name": "evaluation"},
                    "workflow_end": {"name": "workflow_end", "groups": []}
                },
                "transitions": {
                    "workflow_start": {"a1": {"state": "success", "type": "standard"}},
                    "a1": {
                        "b2": {"state": "failure", "type": "standard"},
                        "workflow_end": {"state": "success", "type": "standard"}
                    },
                    "b2": {"a1": {"state": "success", "type": "revert"}},
                    "workflow_end": {},
                    "dead": {}
                },
                "inputSchema": {"type": "object", "properties": {"device": {"type": "string"}}}
            }),
            "workflow",
        )
        .unwrap()
    }

    fn options() -> JobOptions {
        JobOptions {
            variables: json!({"device": "r1", "count": 1})
                .as_object()
                .unwrap()
                .clone(),
            ..JobOptions::default()
        }
    }

    /// A job started by an admin from `workflow()` with `options()`.
    fn started() -> Job {
        Job::start(
            &CompiledWorkflow::compile(workflow()),
            options(),
            &Caller::test_admin(),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_new_job_takes_the_workflow_and_the_caller() {
        let caller = Caller::test_admin();
        let job = Job::start(
            &CompiledWorkflow::compile(workflow()),
            options(),
            &caller,
            Utc::now(),
        )
        .unwrap();
        assert!(is_object_id(&job.id));
        assert_eq!(job.name, "Port Turn Up");
        assert_eq!(job.job_type, "automation");
        assert_eq!(job.description, "");
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.variables["_id"], json!(job.id));
        assert_eq!(job.variables["initiator"], json!("admin"));
        assert_eq!(job.variables["count"], json!(1));
        assert_eq!(job.groups, ["aaaaaaaaaaaaaaaaaaaaaaaa"]);
        assert_eq!(job.watchers, std::slice::from_ref(&caller.sub));
        assert_eq!(job.ancestors, std::slice::from_ref(&job.id));
        assert_eq!(job.metrics.user, caller.sub);
        assert_eq!(job.font_size, 22);
        assert_eq!(job.sla, Number::from(60000));
        assert_eq!(job.canvas_version, 1);
    }

    #[test]
    fn tasks_get_status_grouped_transitions_and_previous() {
        let job = started();
        assert_eq!(job.tasks["workflow_start"].status, TaskStatus::Complete);
        assert_eq!(job.tasks["a1"].status, TaskStatus::Incomplete);
        let a1 = serde_json::to_value(&job.tasks["a1"]).unwrap();
        assert_eq!(a1["status"], json!("incomplete"));
        assert_eq!(
            a1["transitions"],
            json!({
                "failure": [{"task": "b2", "type": "standard"}],
                "success": [{"task": "workflow_end", "type": "standard"}]
            })
        );
        assert_eq!(a1["previous"], json!({"success": ["workflow_start", "b2"]}));
        assert_eq!(a1["app"], json!("WorkFlowEngine"));
        assert_eq!(job.tasks["workflow_end"].previous["success"], ["a1"]);
    }

    #[test]
    fn options_override_the_workflow() {
        let options = JobOptions {
            description: Some("nightly".into()),
            job_type: Some("resource:compliance".into()),
            groups: Some(vec!["bbbbbbbbbbbbbbbbbbbbbbbb".into()]),
            ..options()
        };
        let job = Job::start(
            &CompiledWorkflow::compile(workflow()),
            options,
            &Caller::test_admin(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(job.description, "nightly");
        assert_eq!(job.job_type, "resource:compliance");
        assert_eq!(job.groups, ["bbbbbbbbbbbbbbbbbbbbbbbb"]);
    }

    #[test]
    fn the_document_round_trips_through_json_with_rest_field_names() {
        let job = started();
        let value = serde_json::to_value(&job).unwrap();
        for key in [
            "_id",
            "canvasVersion",
            "encodingVersion",
            "preAutomationTime",
            "errorHandler",
            "created_by",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert!(value["created"].as_str().unwrap().ends_with('Z'));
        let back: Job = serde_json::from_value(value).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn a_broken_graph_fails_the_precondition_with_every_problem() {
        let mut doc = workflow().into_document();
        doc["transitions"].as_object_mut().unwrap().remove("b2");
        doc["transitions"]["a1"]["zzzz"] = json!({"state": "error", "type": "standard"});
        let broken = WorkflowDocument::parse(Value::Object(doc), "workflow").unwrap();
        let err = Job::start(
            &CompiledWorkflow::compile(broken),
            options(),
            &Caller::test_admin(),
            Utc::now(),
        )
        .unwrap_err();
        let Error::FailedPrecondition { problems, .. } = err else {
            panic!()
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn variables_failing_the_schema_are_invalid_arguments() {
        let options = JobOptions {
            variables: json!({"device": 7}).as_object().unwrap().clone(),
            ..JobOptions::default()
        };
        let err = Job::start(
            &CompiledWorkflow::compile(workflow()),
            options,
            &Caller::test_admin(),
            Utc::now(),
        )
        .unwrap_err();
        let Error::InvalidArgument { violations } = err else {
            panic!()
        };
        assert_eq!(violations[0].field, "options.variables.device");
    }
}
