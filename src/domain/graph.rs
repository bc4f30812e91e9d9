//! Task graphs: the tasks of a workflow and the transitions between them, as every job started
//! from the workflow carries them. A graph depends on the workflow alone, so it is built once
//! per workflow revision, shared by its jobs and stored once under a digest of its content.
//!
//! A document writes transitions as `{source: {target: {"state": ..., "type": ...}}}`;
//! [`Transition`] is the one place they are read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::Problem;
use super::json::map_heap_size;

pub const WORKFLOW_START: &str = "workflow_start";
pub const WORKFLOW_END: &str = "workflow_end";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Incomplete,
    Scheduled,
    Running,
    Complete,
    Error,
    Canceled,
}

/// One outgoing transition of a job's task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTransition {
    pub task: String,
    #[serde(rename = "type")]
    pub transition_type: String,
}

impl TaskTransition {
    /// Neither `revert` nor `loop`: a transition a join waits for.
    pub fn is_standard(&self) -> bool {
        self.transition_type != "revert" && self.transition_type != "loop"
    }
}

/// A task of a job: the workflow's task as it was, plus its run state and its edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTask {
    pub status: TaskStatus,
    /// Outgoing transitions by end state.
    pub transitions: BTreeMap<String, Vec<TaskTransition>>,
    /// Ids of the tasks with a transition into this one, by end state.
    pub previous: BTreeMap<String, Vec<String>>,
    /// Every field of the workflow's task, unchanged.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// A transition of a task graph as a document writes it: from its source task to `target`,
/// taken when the source ends in `state`. State and kind are kept as written, `""` when missing
/// or not text (a document read back from storage is not checked again): nothing branches on
/// them yet, and a job shows them as its workflow held them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<'a> {
    pub target: &'a str,
    /// The end state of the source that takes it: `success`, `failure`, `error` or `loop`.
    pub state: &'a str,
    /// The transition's `type`: `standard` or `revert`.
    pub kind: &'a str,
}

impl<'a> Transition<'a> {
    /// The transitions of one source task's entry (`{target: {"state": ..., "type": ...}}`), in
    /// the document's order; none when the entry is not an object.
    pub fn all_in(targets: &'a Value) -> impl Iterator<Item = Transition<'a>> + 'a {
        targets
            .as_object()
            .into_iter()
            .flatten()
            .map(|(target, transition)| {
                let field = |key: &str| {
                    transition
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                };
                Transition {
                    target,
                    state: field("state"),
                    kind: field("type"),
                }
            })
    }
}

/// The transitions out of `task` in a graph's `transitions`.
fn successors<'a>(
    transitions: &'a Map<String, Value>,
    task: &str,
) -> impl Iterator<Item = Transition<'a>> + 'a {
    transitions
        .get(task)
        .into_iter()
        .flat_map(Transition::all_in)
}

/// The task graph of a workflow as its jobs carry it: each task with its run state and edges,
/// and the workflow's `transitions` as written. Its id is a SHA-256 of both as JSON, so equal
/// graphs have one id whichever instance built them.
#[derive(Debug, Clone)]
pub struct TaskGraph {
    id: String,
    tasks: Arc<BTreeMap<String, JobTask>>,
    transitions: Arc<Map<String, Value>>,
    /// [`TaskGraph::standard_incoming`], worked out once for all the jobs of the graph.
    incoming: Arc<OnceLock<IncomingEdges>>,
}

/// The standard transitions into each task, as (source, end state) pairs, by target. Looked up
/// for every task at every pass of a step: with a fast hasher (seeded per process).
pub type IncomingEdges = HashMap<String, Vec<(String, String)>, foldhash::fast::RandomState>;

impl TaskGraph {
    /// The graph of a workflow's `tasks` and `transitions` (its document's objects).
    pub fn build(tasks: &Map<String, Value>, transitions: &Map<String, Value>) -> Self {
        let tasks = build_tasks(tasks, transitions);
        let transitions = transitions.clone();
        TaskGraph {
            id: digest(&tasks, &transitions),
            tasks: Arc::new(tasks),
            transitions: Arc::new(transitions),
            incoming: Arc::default(),
        }
    }

    /// A graph read back from storage, under the id it was stored with.
    pub fn from_stored(
        id: String,
        tasks: BTreeMap<String, JobTask>,
        transitions: Map<String, Value>,
    ) -> Self {
        TaskGraph {
            id,
            tasks: Arc::new(tasks),
            transitions: Arc::new(transitions),
            incoming: Arc::default(),
        }
    }

    /// The digest of the graph, which stored graphs are keyed by.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn tasks(&self) -> &Arc<BTreeMap<String, JobTask>> {
        &self.tasks
    }

    pub fn transitions(&self) -> &Arc<Map<String, Value>> {
        &self.transitions
    }

    /// The standard transitions into each task: (source, state). Revert and loop transitions
    /// are left out: a join waits for the tasks before it, not for the ones that may send it
    /// back. Worked out at the first call, for every job of the graph.
    pub fn standard_incoming(&self) -> &IncomingEdges {
        self.incoming.get_or_init(|| {
            let mut edges = IncomingEdges::default();
            for (source, task) in self.tasks.iter() {
                for (state, transitions) in &task.transitions {
                    for transition in transitions.iter().filter(|t| t.is_standard()) {
                        edges
                            .entry(transition.task.clone())
                            .or_default()
                            .push((source.clone(), state.clone()));
                    }
                }
            }
            edges
        })
    }

    /// An estimate of the memory the graph holds (see [`super::json::heap_size`]), which caches
    /// of task graphs weigh their entries by: with its incoming edges, whether worked out yet
    /// or not.
    pub fn heap_size(&self) -> usize {
        tasks_heap_size(&self.tasks)
            + map_heap_size(&self.transitions)
            + incoming_heap_size(&self.tasks)
    }
}

/// A SHA-256 of `tasks` and `transitions` as compact JSON, separated by a unit separator
/// (0x1f). Stored graphs are keyed by it, so it must stay the same for the same graph.
fn digest(tasks: &BTreeMap<String, JobTask>, transitions: &Map<String, Value>) -> String {
    let mut hasher = Sha256::new();
    serde_json::to_writer(&mut hasher, tasks).expect("a task graph is JSON");
    hasher.update([0x1f]);
    serde_json::to_writer(&mut hasher, transitions).expect("transitions are JSON");
    hex::encode(hasher.finalize())
}

/// Everything that keeps the task graph of a workflow (its `tasks` and `transitions`) from
/// running, in a stable order: the document's, which is why it reads the document's objects
/// and not a built graph (whose tasks are sorted by id). Empty when a job can start from it.
pub fn problems(tasks: &Map<String, Value>, transitions: &Map<String, Value>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for required in [WORKFLOW_START, WORKFLOW_END] {
        if !tasks.contains_key(required) {
            problems.push(Problem {
                subject: format!("tasks.{required}"),
                description: format!("the workflow has no {required} task"),
            });
        }
    }
    for task in tasks.keys() {
        if !transitions.contains_key(task) {
            problems.push(Problem {
                subject: format!("transitions.{task}"),
                description: format!("task {task} has no transitions entry"),
            });
        }
    }
    // Entries for tasks that no longer exist are left over by the editor when a task is
    // deleted; real exports carry them, and they never run, so only their targets matter
    // when they have any.
    for (source, targets) in transitions {
        for Transition { target, .. } in Transition::all_in(targets) {
            if !tasks.contains_key(target) {
                problems.push(Problem {
                    subject: format!("transitions.{source}.{target}"),
                    description: format!(
                        "transition from {source} leads to task {target}, which does not exist"
                    ),
                });
            }
        }
    }
    if tasks.contains_key(WORKFLOW_START)
        && tasks.contains_key(WORKFLOW_END)
        && !reachable_from_start(transitions).contains(WORKFLOW_END)
    {
        problems.push(Problem {
            subject: format!("tasks.{WORKFLOW_END}"),
            description: format!("{WORKFLOW_END} cannot be reached from {WORKFLOW_START}"),
        });
    }
    problems
}

fn reachable_from_start(transitions: &Map<String, Value>) -> HashSet<&str> {
    let mut seen = HashSet::from([WORKFLOW_START]);
    let mut stack = vec![WORKFLOW_START];
    while let Some(task) = stack.pop() {
        for Transition { target, .. } in successors(transitions, task) {
            if seen.insert(target) {
                stack.push(target);
            }
        }
    }
    seen
}

/// What [`TaskGraph::standard_incoming`] holds: an entry a target, a pair a transition.
fn incoming_heap_size(tasks: &BTreeMap<String, JobTask>) -> usize {
    const ENTRY: usize = std::mem::size_of::<(String, Vec<(String, String)>)>() + 8;
    tasks
        .iter()
        .flat_map(|(source, task)| {
            task.transitions.iter().flat_map(move |(state, list)| {
                list.iter().filter(|t| t.is_standard()).map(move |t| {
                    ENTRY
                        + t.task.len()
                        + std::mem::size_of::<(String, String)>()
                        + source.len()
                        + state.len()
                })
            })
        })
        .sum()
}

fn tasks_heap_size(tasks: &BTreeMap<String, JobTask>) -> usize {
    const NODE: usize = std::mem::size_of::<String>() + 16;
    tasks
        .iter()
        .map(|(id, task)| {
            let transitions: usize = task
                .transitions
                .iter()
                .flat_map(|(state, list)| {
                    std::iter::once(NODE + state.len()).chain(list.iter().map(|t| {
                        std::mem::size_of::<TaskTransition>()
                            + t.task.len()
                            + t.transition_type.len()
                    }))
                })
                .sum();
            let previous: usize = task
                .previous
                .iter()
                .flat_map(|(state, list)| {
                    std::iter::once(NODE + state.len()).chain(
                        list.iter()
                            .map(|id| std::mem::size_of::<String>() + id.len()),
                    )
                })
                .sum();
            NODE + id.len()
                + std::mem::size_of::<JobTask>()
                + map_heap_size(&task.fields)
                + transitions
                + previous
        })
        .sum()
}

/// Each task of the workflow with its run state, its outgoing transitions grouped by end state
/// and the tasks leading into it (`previous`), also grouped by end state.
fn build_tasks(
    tasks: &Map<String, Value>,
    transitions: &Map<String, Value>,
) -> BTreeMap<String, JobTask> {
    let mut outgoing: BTreeMap<&str, BTreeMap<String, Vec<TaskTransition>>> = BTreeMap::new();
    let mut previous: BTreeMap<&str, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (source, targets) in transitions {
        if !tasks.contains_key(source) {
            continue;
        }
        for transition in Transition::all_in(targets) {
            outgoing
                .entry(source.as_str())
                .or_default()
                .entry(transition.state.to_owned())
                .or_default()
                .push(TaskTransition {
                    task: transition.target.to_owned(),
                    transition_type: transition.kind.to_owned(),
                });
            previous
                .entry(transition.target)
                .or_default()
                .entry(transition.state.to_owned())
                .or_default()
                .push(source.clone());
        }
    }
    tasks
        .iter()
        .map(|(id, task)| {
            let mut fields = task.as_object().cloned().unwrap_or_default();
            // These are the job's own; a workflow task carrying them would clash.
            for key in ["status", "transitions", "previous"] {
                fields.remove(key);
            }
            let status = if id == WORKFLOW_START {
                TaskStatus::Complete
            } else {
                TaskStatus::Incomplete
            };
            let job_task = JobTask {
                status,
                transitions: outgoing.remove(id.as_str()).unwrap_or_default(),
                previous: previous.remove(id.as_str()).unwrap_or_default(),
                fields,
            };
            (id.clone(), job_task)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;
    use serde_json::json;

    /// The `tasks` and `transitions` of a workflow that can run.
    fn minimal() -> (Map<String, Value>, Map<String, Value>) {
        let tasks = json!({
            "workflow_start": {"name": "workflow_start", "groups": []},
            "a1": {"name": "query", "app": "WorkFlowEngine", "variables": {}},
            "workflow_end": {"name": "workflow_end", "groups": []}
        });
        let transitions = json!({
            "workflow_start": {"a1": {"state": "success", "type": "standard"}},
            "a1": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {}
        });
        (object(tasks), object(transitions))
    }

    #[test]
    fn a_minimal_graph_has_no_problems() {
        let (tasks, transitions) = minimal();
        assert!(problems(&tasks, &transitions).is_empty());
    }

    #[test]
    fn graph_problems_lists_every_problem() {
        let (mut tasks, mut transitions) = minimal();
        tasks.remove("workflow_end");
        tasks.insert("b2".into(), json!({"name": "orphan"}));
        transitions["workflow_start"]["ffff"] = json!({"state": "success", "type": "standard"});
        let subjects: Vec<_> = problems(&tasks, &transitions)
            .into_iter()
            .map(|p| p.subject)
            .collect();
        assert_eq!(
            subjects,
            [
                "tasks.workflow_end",
                "transitions.b2",
                "transitions.workflow_start.ffff",
                "transitions.a1.workflow_end",
            ]
        );
    }

    #[test]
    fn an_unreachable_end_is_a_problem() {
        let (tasks, mut transitions) = minimal();
        transitions["a1"] = json!({});
        let problems = problems(&tasks, &transitions);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].description,
            "workflow_end cannot be reached from workflow_start"
        );
    }

    #[test]
    fn transitions_are_read_as_written_and_empty_when_missing() {
        let targets = json!({
            "b": {"state": "failure", "type": "revert"},
            "a": {"state": 7},
            "c": "not an object"
        });
        let read: Vec<_> = Transition::all_in(&targets).collect();
        assert_eq!(
            read,
            [
                Transition {
                    target: "b",
                    state: "failure",
                    kind: "revert"
                },
                Transition {
                    target: "a",
                    state: "",
                    kind: ""
                },
                Transition {
                    target: "c",
                    state: "",
                    kind: ""
                },
            ]
        );
        assert_eq!(Transition::all_in(&json!([1])).count(), 0);
    }

    #[test]
    fn a_join_waits_only_for_the_standard_transitions_into_it() {
        let tasks = object(json!({
            "workflow_start": {"name": "workflow_start"},
            "a": {"name": "a"},
            "b": {"name": "b"},
            "workflow_end": {"name": "workflow_end"}
        }));
        let transitions = object(json!({
            "workflow_start": {"a": {"state": "success", "type": "standard"}},
            "a": {
                "b": {"state": "success", "type": "standard"},
                "workflow_end": {"state": "failure", "type": "standard"}
            },
            "b": {
                "a": {"state": "failure", "type": "revert"},
                "workflow_end": {"state": "success", "type": "standard"},
                "b": {"state": "loop", "type": "loop"}
            },
            "workflow_end": {}
        }));
        let graph = TaskGraph::build(&tasks, &transitions);
        let before = graph.heap_size();
        let incoming = graph.standard_incoming();
        let pairs = |target: &str| {
            let mut pairs: Vec<(&str, &str)> = incoming[target]
                .iter()
                .map(|(source, state)| (source.as_str(), state.as_str()))
                .collect();
            pairs.sort_unstable();
            pairs
        };
        assert_eq!(pairs("a"), [("workflow_start", "success")]);
        assert_eq!(pairs("b"), [("a", "success")]);
        assert_eq!(pairs("workflow_end"), [("a", "failure"), ("b", "success")]);
        assert!(!incoming.contains_key("workflow_start"));
        // Counted in the graph's weight before it is worked out, and shared by its copies.
        assert_eq!(graph.heap_size(), before);
        assert!(std::ptr::eq(graph.clone().standard_incoming(), incoming));
    }

    #[test]
    fn the_id_of_a_graph_is_the_digest_its_stored_copy_is_keyed_by() {
        let tasks = object(json!({
            "workflow_start": {"name": "workflow_start"},
            "b": {"name": "b", "app": "X"},
            "a": {"name": "a"},
            "workflow_end": {"name": "workflow_end"}
        }));
        let transitions = object(json!({
            "workflow_start": {
                "b": {"state": "success", "type": "standard"},
                "a": {"state": "success", "type": "standard"}
            },
            "b": {"workflow_end": {"state": "success", "type": "standard"}},
            "a": {
                "workflow_end": {"state": "failure", "type": "standard"},
                "b": {"state": "error", "type": "revert"}
            },
            "workflow_end": {},
            "ghost": {}
        }));
        let graph = TaskGraph::build(&tasks, &transitions);
        // Graphs already stored are keyed by this digest: a change would store them again.
        assert_eq!(
            graph.id(),
            "2ffb71b57ccac32d2c25257187e6d4013dd223bc228ac4b5dfa31f66014589d1"
        );
        assert_eq!(graph.tasks()["b"].previous["success"], ["workflow_start"]);
        assert_eq!(graph.tasks()["b"].previous["error"], ["a"]);
        assert_eq!(graph.tasks()["workflow_start"].status, TaskStatus::Complete);
        assert_eq!(**graph.transitions(), transitions);
    }
}
