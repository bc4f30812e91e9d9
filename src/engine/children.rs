//! Child jobs: WorkFlowEngine's `childJob` task starts jobs of another workflow and waits for
//! them, after Itential's documentation of the task:
//! - `workflow` names the workflow; `variables` are the child's job variables, each
//!   `{"task": "job" | TASKID | "static", "value": NAME-or-value}`.
//! - Without a `loopType` one child starts. With `loopType` `parallel` or `sequential`, one
//!   child starts per element of `data_array` (an object: its entries are added to the
//!   child's variables), all at once or each after the one before it ended.
//! - The task finishes when its children have: its outgoing `job_details` is the child's
//!   variables, or for a loop `{"loop": [each child's variables, in order]}`. A child that
//!   ended in `error` or was canceled sends the task down `error`.
//! - A child takes its parent's groups; `parent` names the parent job and task, `ancestors`
//!   are the parent's and the child's own id.
//!
//! The task's state is kept with its run ([`Progress::Children`]). Advancing a job is pure, so
//! it only asks for children (`RunningJob::spawns`); the step loop starts them in its
//! transaction (`super::spawn`), and a child's end wakes its parent (`store::runs`).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::variables::{self, Scope};
use crate::domain::graph::JobTask;
use crate::domain::run::{ChildOutcome, FinishState, Progress};
use crate::domain::{json, JobStatus};

/// Most child jobs one childJob task starts (Itential allows 10,000 and warns against large
/// arrays; every child is a job with its own rows).
pub const MAX_CHILDREN: usize = 1000;

/// Most levels of child jobs under a job started by a caller: a workflow that starts itself
/// ends in error here instead of without end.
pub const MAX_DEPTH: usize = 16;

/// Whether the task is WorkFlowEngine's `childJob`.
pub fn is_child_job(task: &JobTask) -> bool {
    task.fields.get("app").and_then(Value::as_str) == Some("WorkFlowEngine")
        && task.fields.get("name").and_then(Value::as_str) == Some("childJob")
        && task.fields.get("type").and_then(Value::as_str) != Some("manual")
}

/// The children a childJob task asks for, from its resolved incoming values; why not, when
/// they are not usable.
pub fn plan(incoming: &Map<String, Value>, scope: &Scope) -> Result<Progress, String> {
    let workflow = match incoming.get("workflow") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err("childJob: workflow must name the workflow to start".to_owned()),
    };
    if incoming
        .get("transformation")
        .is_some_and(|t| !matches!(t, Value::Null) && t != "")
    {
        return Err(
            "childJob: a transformation (JST) of data_array is not supported by this service; \
             transform the array before the task"
                .to_owned(),
        );
    }
    let variables = match incoming.get("variables") {
        Some(Value::Object(spec)) => spec
            .iter()
            .map(|(name, reference)| {
                (
                    name.clone(),
                    variables::operand_named(reference, "value", scope),
                )
            })
            .collect(),
        None | Some(Value::Null) => Map::new(),
        Some(Value::String(text)) if text.is_empty() => Map::new(),
        Some(other) => {
            return Err(format!(
                "childJob: variables must be an object, not {}",
                json::type_name(other)
            ))
        }
    };
    let sequential = match incoming.get("loopType").and_then(Value::as_str) {
        None | Some("") => {
            return Ok(Progress::Children {
                workflow,
                looped: false,
                sequential: false,
                started: Vec::new(),
                pending: vec![variables],
            })
        }
        Some("parallel") => false,
        Some("sequential") => true,
        Some(other) => {
            return Err(format!(
                "childJob: loopType must be parallel, sequential or empty, not {other:?}"
            ))
        }
    };
    let items = match incoming.get("data_array") {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(Value::String(text)) if text.is_empty() => &[],
        Some(other) => {
            return Err(format!(
                "childJob: data_array must be an array, not {}",
                json::type_name(other)
            ))
        }
    };
    if items.len() > MAX_CHILDREN {
        return Err(format!(
            "childJob: data_array has {} elements; a task starts at most {MAX_CHILDREN} child jobs",
            items.len()
        ));
    }
    let mut pending = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(entries) = item else {
            return Err(format!(
                "childJob: data_array[{i}] must be an object of job variables, not {}",
                json::type_name(item)
            ));
        };
        let mut child = variables.clone();
        child.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        pending.push(child);
    }
    Ok(Progress::Children {
        workflow,
        looped: true,
        sequential,
        started: Vec::new(),
        pending,
    })
}

/// Where a childJob task stands.
#[derive(Debug, PartialEq)]
pub enum Check {
    /// Children are under way (or the step does not know how they stand).
    Wait,
    /// Children must be started now.
    Start,
    /// Every child ended: the task finishes so.
    Done {
        finish_state: FinishState,
        outgoing: Map<String, Value>,
        error: Option<String>,
    },
}

/// Where the childJob task whose progress is `progress` stands, given what is known of the
/// children (`known`: None when the step did not load them).
pub fn check(progress: &Progress, known: Option<&HashMap<String, ChildOutcome>>) -> Check {
    let Progress::Children {
        looped,
        sequential,
        started,
        pending,
        ..
    } = progress
    else {
        return Check::Wait;
    };
    if started.is_empty() && !pending.is_empty() {
        return Check::Start;
    }
    let empty = HashMap::new();
    let known = match known {
        Some(known) => known,
        None if started.is_empty() => &empty,
        None => return Check::Wait,
    };
    let ended = |id: &String| {
        known
            .get(id)
            .is_some_and(|child| !matches!(child.status, JobStatus::Running | JobStatus::Paused))
    };
    if !started.iter().all(ended) {
        return Check::Wait;
    }
    if !pending.is_empty() {
        // A sequential loop whose last child ended (a parallel one started all at once).
        return if *sequential {
            Check::Start
        } else {
            Check::Wait
        };
    }
    let mut failed = Vec::new();
    let mut details = Vec::with_capacity(started.len());
    for id in started {
        let child = &known[id];
        if child.status != JobStatus::Complete {
            failed.push(format!("{id} ({})", child.status.as_str()));
        }
        let mut variables = child.variables.clone().unwrap_or_default();
        // The id is among a job's variables; a child's are listed with it whatever they hold.
        variables.insert("_id".to_owned(), Value::from(id.as_str()));
        details.push(Value::Object(variables));
    }
    let job_details = if *looped {
        json!({ "loop": details })
    } else {
        details.pop().unwrap_or(Value::Null)
    };
    let outgoing = Map::from_iter([("job_details".to_owned(), job_details)]);
    if failed.is_empty() {
        Check::Done {
            finish_state: FinishState::Success,
            outgoing,
            error: None,
        }
    } else {
        Check::Done {
            finish_state: FinishState::Error,
            outgoing,
            error: Some(format!("child job {} did not complete", failed.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;

    fn scope_plan(incoming: Value) -> Result<Progress, String> {
        let job = object(json!({"suppress": true, "devices": ["a", "b"]}));
        let outgoing = HashMap::from([(
            "ed1e".to_owned(),
            object(json!({"deviceArray": ["r1"], "templateVars": {"x": 1}})),
        )]);
        let tasks = |id: &str| outgoing.get(id);
        let scope = Scope {
            job: &job,
            tasks: &tasks,
        };
        plan(&object(incoming), &scope)
    }

    #[test]
    fn a_corpus_child_job_resolves_its_variables_from_the_job_tasks_and_statics() {
        // cisco-asa/software-upgrade.json, task 2113.
        let progress = scope_plan(json!({
            "data_array": "", "loopType": "", "task": "", "transformation": "",
            "variables": {
                "devices": {"task": "ed1e", "value": "deviceArray"},
                "reattempt": {"task": "static", "value": true},
                "suppressFailureMessage": {"task": "job", "value": "suppress"},
                "templateVariables": {"task": "ed1e", "value": "templateVars"},
                "missing": {"task": "job", "value": "nothing"}
            },
            "workflow": "@66d0ccea21161b4df27174c0: Command Template Runner"
        }))
        .unwrap();
        let Progress::Children {
            workflow,
            looped,
            pending,
            ..
        } = progress
        else {
            panic!()
        };
        assert_eq!(
            workflow,
            "@66d0ccea21161b4df27174c0: Command Template Runner"
        );
        assert!(!looped);
        assert_eq!(
            Value::Object(pending[0].clone()),
            json!({"devices": ["r1"], "reattempt": true, "suppressFailureMessage": true,
                   "templateVariables": {"x": 1}, "missing": null})
        );
    }

    #[test]
    fn a_loop_starts_one_child_per_element_with_its_entries_added() {
        let progress = scope_plan(json!({
            "workflow": "W", "loopType": "sequential",
            "data_array": [{"device": "r1"}, {"device": "r2", "reattempt": false}],
            "variables": {"reattempt": {"task": "static", "value": true}}
        }))
        .unwrap();
        let Progress::Children {
            looped,
            sequential,
            pending,
            ..
        } = progress
        else {
            panic!()
        };
        assert!(looped && sequential);
        assert_eq!(
            Value::Array(pending.into_iter().map(Value::Object).collect()),
            json!([{"reattempt": true, "device": "r1"}, {"reattempt": false, "device": "r2"}])
        );
    }

    #[test]
    fn unusable_incoming_values_say_what_is_wrong() {
        for (incoming, expected) in [
            (json!({"workflow": ""}), "workflow must name"),
            (
                json!({"workflow": "W", "loopType": "parallel", "data_array": 3}),
                "data_array must be an array, not a number",
            ),
            (
                json!({"workflow": "W", "loopType": "parallel", "data_array": [1]}),
                "data_array[0] must be an object",
            ),
            (
                json!({"workflow": "W", "loopType": "sideways"}),
                "loopType must be parallel, sequential or empty",
            ),
            (
                json!({"workflow": "W", "transformation": "5f1c0a"}),
                "transformation (JST)",
            ),
            (
                json!({"workflow": "W", "loopType": "parallel",
                       "data_array": vec![json!({}); MAX_CHILDREN + 1]}),
                "at most 1000 child jobs",
            ),
        ] {
            let message = scope_plan(incoming).unwrap_err();
            assert!(message.contains(expected), "{message}");
        }
    }

    fn children(looped: bool, sequential: bool, started: &[&str], pending: usize) -> Progress {
        Progress::Children {
            workflow: "W".into(),
            looped,
            sequential,
            started: started.iter().map(|s| s.to_string()).collect(),
            pending: vec![Map::new(); pending],
        }
    }

    fn outcome(status: JobStatus, vars: Value) -> ChildOutcome {
        ChildOutcome {
            status,
            variables: Some(object(vars)),
        }
    }

    #[test]
    fn a_task_waits_for_its_children_then_takes_their_variables() {
        assert_eq!(check(&children(false, false, &[], 1), None), Check::Start);
        assert_eq!(
            check(&children(false, false, &["c1"], 0), None),
            Check::Wait
        );
        let running = HashMap::from([(
            "c1".to_owned(),
            ChildOutcome {
                status: JobStatus::Running,
                variables: None,
            },
        )]);
        assert_eq!(
            check(&children(false, false, &["c1"], 0), Some(&running)),
            Check::Wait
        );
        let done = HashMap::from([(
            "c1".to_owned(),
            outcome(JobStatus::Complete, json!({"returnStatus": "SUCCESS"})),
        )]);
        let Check::Done {
            finish_state,
            outgoing,
            error,
        } = check(&children(false, false, &["c1"], 0), Some(&done))
        else {
            panic!()
        };
        assert_eq!(finish_state, FinishState::Success);
        assert_eq!(error, None);
        assert_eq!(
            outgoing["job_details"],
            json!({"returnStatus": "SUCCESS", "_id": "c1"})
        );
    }

    #[test]
    fn a_sequential_loop_starts_the_next_child_when_one_ends_and_reports_failures() {
        let known = HashMap::from([
            ("c1".to_owned(), outcome(JobStatus::Error, json!({"r": 1}))),
            (
                "c2".to_owned(),
                outcome(JobStatus::Complete, json!({"r": 2})),
            ),
        ]);
        assert_eq!(
            check(&children(true, true, &["c1"], 1), Some(&known)),
            Check::Start
        );
        assert_eq!(
            check(&children(true, false, &["c1"], 1), Some(&known)),
            Check::Wait,
            "a parallel loop never starts late"
        );
        let Check::Done {
            finish_state,
            outgoing,
            error,
        } = check(&children(true, true, &["c1", "c2"], 0), Some(&known))
        else {
            panic!()
        };
        assert_eq!(finish_state, FinishState::Error);
        assert_eq!(
            outgoing["job_details"],
            json!({"loop": [{"r": 1, "_id": "c1"}, {"r": 2, "_id": "c2"}]})
        );
        assert!(error.unwrap().contains("c1 (error)"));
        // An empty loop is done at once.
        assert!(matches!(
            check(&children(true, false, &[], 0), Some(&HashMap::new())),
            Check::Done {
                finish_state: FinishState::Success,
                ..
            }
        ));
    }
}
