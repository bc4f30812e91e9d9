//! Conversions between generated protobuf types and domain types.
//!
//! JSON travels as `google.protobuf.Struct`/`Value`, whose numbers are doubles: whole values
//! within the range where a double is exact are turned back into integers, so `1` reads back
//! as `1`, not `1.0`.

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use super::pb;
use crate::domain::graph::{JobTask, TaskStatus, Transition};
use crate::domain::json::{index, join};
use crate::domain::storable;
use crate::domain::{Error, Job, JobStatus, RawJobOptions, RawStartJob, Violations, Workflow};

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

impl From<Job> for pb::Job {
    fn from(job: Job) -> Self {
        pb::Job {
            id: job.id,
            name: job.name,
            description: job.description,
            r#type: job.job_type,
            status: pb::JobStatus::from(job.status) as i32,
            tasks: job
                .tasks
                .iter()
                .map(|(id, task)| (id.clone(), pb::JobTask::from(task)))
                .collect(),
            transitions: job
                .transitions
                .iter()
                .map(|(source, targets)| (source.clone(), transition_targets(targets)))
                .collect(),
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
