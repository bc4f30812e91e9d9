//! Variables: `$var.job.NAME` and `$var.TASKID.NAME` in a task's incoming values, resolved
//! when the task starts, and the job variables a task's outgoing values are written to.
//!
//! Rules, after Itential's documentation and the workflows it exports:
//! - Only a top-level incoming value is a reference, and only when the whole string is one:
//!   `"device": "$var.job.device"` is resolved, `"body": {"device": "$var.job.device"}` and
//!   `"text": "host $var.job.device"` stay as written (itential/builder-skills, "$var
//!   Resolution Rules": a reference nested inside an object is stored as a literal string; the
//!   workaround Itential gives is to build the object with a `merge` or `makeData` task).
//! - A reference to nothing (a job variable never set, a task that has not run, an outgoing
//!   value the task does not have) is null. Itential's "null vs. undefined" matrix gives null
//!   for an undefined task input and `undefined` for an undefined job variable; JSON has no
//!   `undefined`, and a job document stores it as null or leaves it out, so both are null here.
//! - A task's result is written to job variable NAME where the workflow maps that outgoing
//!   value to `$var.job.NAME`.
//!
//! Evaluation and merge tasks name their operands as objects instead,
//! `{"task": "job" | TASKID | "static", "variable": NAME}`; [`operand`] resolves those.

use serde_json::{Map, Value};

/// What a task's references can see: the job's variables, and the outgoing values of the
/// job's tasks that ran, by task id. Borrowed, so resolving copies only what is referenced;
/// from a map of outgoing values by task id: `let tasks = |id: &str| outgoing.get(id);` and
/// `Scope { job: &variables, tasks: &tasks }`.
pub struct Scope<'a> {
    /// The job's variables (`$var.job.NAME`, `{"task": "job"}`).
    pub job: &'a Map<String, Value>,
    /// The outgoing values of task TASKID (`$var.TASKID.NAME`), or None when it has none
    /// (it has not run, or there is no such task).
    pub tasks: &'a dyn Fn(&str) -> Option<&'a Map<String, Value>>,
}

impl Scope<'_> {
    /// Job variable `name`, or null.
    pub fn job_variable(&self, name: &str) -> Value {
        self.job.get(name).cloned().unwrap_or(Value::Null)
    }

    /// Outgoing value `name` of task `task_id`, or null.
    pub fn task_value(&self, task_id: &str, name: &str) -> Value {
        (self.tasks)(task_id)
            .and_then(|outgoing| outgoing.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Where a `$var` reference points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'t> {
    /// `$var.job.NAME`
    Job(&'t str),
    /// `$var.TASKID.NAME`
    Task { task_id: &'t str, name: &'t str },
}

/// The reference `text` is, when the whole of it is one: `$var.`, a task id or `job`, a dot,
/// and a name (which may itself hold dots: the task id ends at the first one).
pub fn parse_reference(text: &str) -> Option<Reference<'_>> {
    let (owner, name) = text.strip_prefix("$var.")?.split_once('.')?;
    if owner.is_empty() || name.is_empty() {
        return None;
    }
    Some(if owner == "job" {
        Reference::Job(name)
    } else {
        Reference::Task {
            task_id: owner,
            name,
        }
    })
}

/// The value `reference` points to in `scope`, or null.
pub fn lookup(reference: Reference<'_>, scope: &Scope) -> Value {
    match reference {
        Reference::Job(name) => scope.job_variable(name),
        Reference::Task { task_id, name } => scope.task_value(task_id, name),
    }
}

/// A task's incoming values as it starts: each top-level string that is a whole `$var`
/// reference replaced by what it points to (null when nothing); everything else as written.
pub fn resolve_incoming(incoming: &Map<String, Value>, scope: &Scope) -> Map<String, Value> {
    incoming
        .iter()
        .map(|(key, value)| {
            let resolved = match value {
                Value::String(text) => match parse_reference(text) {
                    Some(reference) => lookup(reference, scope),
                    None => value.clone(),
                },
                _ => value.clone(),
            };
            (key.clone(), resolved)
        })
        .collect()
}

/// The job variables a finished task writes: for each entry of the task's
/// `variables.outgoing` whose value is `$var.job.NAME`, (NAME, the task's outgoing value of
/// that key). An outgoing value the task did not produce writes nothing (in Itential it is
/// `undefined`, which a job variable cannot hold). Any other mapping (null, `""`, a task
/// reference) writes nothing either.
pub fn job_writes(
    outgoing_spec: &Map<String, Value>,
    outgoing: &Map<String, Value>,
) -> Vec<(String, Value)> {
    outgoing_spec
        .iter()
        .filter_map(|(key, spec)| {
            let Some(Reference::Job(name)) = spec.as_str().and_then(parse_reference) else {
                return None;
            };
            let value = outgoing.get(key)?;
            Some((name.to_owned(), value.clone()))
        })
        .collect()
}

/// An evaluation or merge operand, `{"task": "job" | TASKID | "static", "variable": NAME}`:
/// job variable NAME, task TASKID's outgoing value NAME, or for `static` the `variable`
/// value itself (any JSON). Null when it points to nothing. Any other value (not an object
/// with a string `task`) is taken as the operand itself, as Itential's
/// `runEvaluationGroups` takes plain operands. A `query` path, where an evaluation has one,
/// belongs to the evaluation, not to the operand: the evaluation task applies it.
pub fn operand(reference: &Value, scope: &Scope) -> Value {
    operand_named(reference, "variable", scope)
}

/// [`operand`] for references whose name is under `key`: a childJob task's variables say
/// `{"task": "job" | TASKID | "static", "value": NAME}`.
pub fn operand_named(reference: &Value, key: &str, scope: &Scope) -> Value {
    let Some(object) = reference.as_object() else {
        return reference.clone();
    };
    let Some(task) = object.get("task").and_then(Value::as_str) else {
        return reference.clone();
    };
    let variable = object.get(key).unwrap_or(&Value::Null);
    match task {
        "static" => variable.clone(),
        "job" => match variable {
            Value::String(name) => scope.job_variable(name),
            _ => Value::Null,
        },
        task_id => match variable {
            Value::String(name) => scope.task_value(task_id, name),
            _ => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;
    use serde_json::json;
    use std::collections::HashMap;

    fn outgoing() -> HashMap<String, Map<String, Value>> {
        HashMap::from([(
            "5481".to_owned(),
            object(json!({"segmentId": 7, "result": {"response": {"id": "x"}}})),
        )])
    }

    #[test]
    fn whole_references_are_resolved_from_the_job_and_from_tasks_that_ran() {
        let job = object(json!({"device": "ios-1", "a.b": true}));
        let outgoing = outgoing();
        let tasks = |id: &str| outgoing.get(id);
        let scope = Scope {
            job: &job,
            tasks: &tasks,
        };
        let incoming = object(json!({
            "device": "$var.job.device",
            "dotted": "$var.job.a.b",
            "segment": "$var.5481.segmentId",
            "result": "$var.5481.result",
            "plain": "device",
            "number": 3,
        }));
        assert_eq!(
            resolve_incoming(&incoming, &scope),
            object(json!({
                "device": "ios-1",
                "dotted": true,
                "segment": 7,
                "result": {"response": {"id": "x"}},
                "plain": "device",
                "number": 3,
            }))
        );
    }

    #[test]
    fn references_to_nothing_resolve_to_null() {
        let job = Map::new();
        let outgoing = outgoing();
        let tasks = |id: &str| outgoing.get(id);
        let scope = Scope {
            job: &job,
            tasks: &tasks,
        };
        let incoming = object(json!({
            "a": "$var.job.missing",
            "b": "$var.ffff.value",
            "c": "$var.5481.missing",
        }));
        assert_eq!(
            resolve_incoming(&incoming, &scope),
            object(json!({"a": null, "b": null, "c": null}))
        );
    }

    #[test]
    fn references_inside_objects_arrays_or_text_stay_as_written() {
        let job = object(json!({"device": "ios-1"}));
        let tasks = |_: &str| None;
        let scope = Scope {
            job: &job,
            tasks: &tasks,
        };
        let incoming = object(json!({
            "body": {"device": "$var.job.device"},
            "list": ["$var.job.device"],
            "text": "host $var.job.device",
            "no_name": "$var.job",
            "empty_name": "$var.job.",
            "no_owner": "$var..device",
        }));
        assert_eq!(resolve_incoming(&incoming, &scope), incoming);
    }

    #[test]
    fn outgoing_values_mapped_to_job_variables_are_written() {
        let spec = object(json!({
            "response": "$var.job.result",
            "other": null,
            "text": "",
            "elsewhere": "$var.1a2b.value",
            "absent": "$var.job.never",
        }));
        let outgoing = object(json!({
            "response": "FAILED",
            "other": 1,
            "text": 2,
            "elsewhere": 3,
        }));
        assert_eq!(
            job_writes(&spec, &outgoing),
            vec![("result".to_owned(), json!("FAILED"))]
        );
    }

    #[test]
    fn operands_come_from_the_job_a_task_or_the_reference_itself() {
        let job = object(json!({"status": "up"}));
        let outgoing = outgoing();
        let tasks = |id: &str| outgoing.get(id);
        let scope = Scope {
            job: &job,
            tasks: &tasks,
        };
        let cases = [
            (json!({"task": "job", "variable": "status"}), json!("up")),
            (json!({"task": "job", "variable": "missing"}), json!(null)),
            (
                json!({"task": "5481", "variable": "segmentId", "editable": true}),
                json!(7),
            ),
            (
                json!({"task": "9999", "variable": "segmentId"}),
                json!(null),
            ),
            (json!({"task": "static", "variable": [1, 2]}), json!([1, 2])),
            (json!({"task": "static", "variable": null}), json!(null)),
            (json!({"task": "static"}), json!(null)),
            (json!({"task": "job", "variable": 3}), json!(null)),
            (json!("plain"), json!("plain")),
            (json!({"variable": "x"}), json!({"variable": "x"})),
        ];
        for (reference, expected) in cases {
            assert_eq!(operand(&reference, &scope), expected, "{reference}");
        }
    }
}
