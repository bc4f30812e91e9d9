//! Loops: WorkFlowEngine's `forEach` task runs its loop body once per element of its
//! `data_array`, after Itential's documentation of the task: the body is what its `loop`
//! transitions lead to (the tasks reached from them by standard transitions); each pass sees
//! the element as the forEach task's outgoing `current_item`; a pass ends when nothing of the
//! body is left to run, and once the last one has, the forEach task finishes with `success`
//! and the transitions after it fire. How the passes advance is in [`super::advance`].

use std::collections::BTreeSet;

use serde_json::Value;

use crate::domain::graph::{JobTask, WORKFLOW_END, WORKFLOW_START};
use crate::domain::TaskGraph;

/// Most elements one forEach task loops over: each pass runs the body's tasks, and a job's
/// passes are stepped in memory.
pub const MAX_ITEMS: usize = 10_000;

/// The finish state of a forEach task's transitions into its loop body.
pub const LOOP: &str = "loop";

/// Whether the task is WorkFlowEngine's `forEach`.
pub fn is_for_each(task: &JobTask) -> bool {
    task.fields.get("app").and_then(Value::as_str) == Some("WorkFlowEngine")
        && task.fields.get("name").and_then(Value::as_str) == Some("forEach")
        && task.fields.get("type").and_then(Value::as_str) != Some("manual")
}

/// The loop body of forEach task `id`: every task its `loop` transitions reach, and those
/// reached from them by standard transitions, but the forEach task itself and the ends of
/// the workflow.
pub fn body(graph: &TaskGraph, id: &str) -> BTreeSet<String> {
    let mut body = BTreeSet::new();
    let Some(task) = graph.tasks().get(id) else {
        return body;
    };
    let mut stack: Vec<&str> = task
        .transitions
        .get(LOOP)
        .into_iter()
        .flatten()
        .map(|t| t.task.as_str())
        .collect();
    while let Some(next) = stack.pop() {
        if next == id || next == WORKFLOW_START || next == WORKFLOW_END {
            continue;
        }
        if !body.insert(next.to_owned()) {
            continue;
        }
        if let Some(task) = graph.tasks().get(next) {
            for transition in task.transitions.values().flatten() {
                if transition.transition_type != "revert" {
                    stack.push(transition.task.as_str());
                }
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;
    use serde_json::json;

    #[test]
    fn the_body_is_what_the_loop_transitions_lead_to() {
        // gitlab/update-project-variables.json: forEach 9d94 loops over 411d -> f3e5 -> 89ca
        // (whose error path goes on to 998c), and its success goes to the end.
        let tasks = json!({
            "workflow_start": {"name": "workflow_start"}, "workflow_end": {"name": "workflow_end"},
            "c191": {"name": "query", "app": "WorkFlowEngine"},
            "9d94": {"name": "forEach", "app": "WorkFlowEngine", "type": "operation"},
            "411d": {"name": "query", "app": "WorkFlowEngine"},
            "f3e5": {"name": "query", "app": "WorkFlowEngine"},
            "89ca": {"name": "putV4ProjectsIdVariablesKey", "app": "GitLab"},
            "998c": {"name": "ViewData", "app": "WorkFlowEngine", "type": "manual"},
        });
        let transitions = json!({
            "workflow_start": {"c191": {"state": "success", "type": "standard"}},
            "c191": {"9d94": {"state": "success", "type": "standard"}},
            "9d94": {"411d": {"state": "loop", "type": "standard"},
                     "workflow_end": {"state": "success", "type": "standard"}},
            "411d": {"f3e5": {"state": "success", "type": "standard"}},
            "f3e5": {"89ca": {"state": "success", "type": "standard"}},
            "89ca": {"998c": {"state": "error", "type": "standard"}},
            "998c": {}, "workflow_end": {},
        });
        let graph = TaskGraph::build(&object(tasks), &object(transitions));
        assert!(is_for_each(&graph.tasks()["9d94"]));
        assert!(!is_for_each(&graph.tasks()["411d"]));
        let body: Vec<String> = body(&graph, "9d94").into_iter().collect();
        assert_eq!(body, ["411d", "89ca", "998c", "f3e5"]);
    }
}
