//! Variables: `$var.job.NAME` and `$var.TASKID.NAME` in a task's incoming values, resolved
//! when the task starts, and the job variables a task's outgoing values are written to.

use serde_json::{Map, Value};

/// What `$var` references read: the job's variables and its tasks' outgoing values.
pub struct Scope<'a> {
    pub job: &'a Map<String, Value>,
    pub tasks: &'a dyn Fn(&str) -> Option<&'a Map<String, Value>>,
}

/// The incoming values with every `$var` reference replaced.
pub fn resolve_incoming(incoming: &Map<String, Value>, scope: &Scope) -> Map<String, Value> {
    incoming
        .iter()
        .map(|(key, value)| (key.clone(), resolve(value, scope)))
        .collect()
}

fn resolve(value: &Value, scope: &Scope) -> Value {
    let Some(reference) = value.as_str().and_then(|s| s.strip_prefix("$var.")) else {
        return value.clone();
    };
    let Some((owner, name)) = reference.split_once('.') else {
        return value.clone();
    };
    let source = if owner == "job" {
        Some(scope.job)
    } else {
        (scope.tasks)(owner)
    };
    source
        .and_then(|values| values.get(name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The job variables a finished task writes: each outgoing entry whose workflow value is
/// `$var.job.NAME` writes the task's value of that entry to NAME.
pub fn job_writes(
    spec: &Map<String, Value>,
    outgoing: &Map<String, Value>,
) -> Vec<(String, Value)> {
    spec.iter()
        .filter_map(|(key, target)| {
            let name = target.as_str()?.strip_prefix("$var.job.")?;
            Some((
                name.to_owned(),
                outgoing.get(key).cloned().unwrap_or(Value::Null),
            ))
        })
        .collect()
}
