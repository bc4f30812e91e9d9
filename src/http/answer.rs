//! StartJob's JSON answer, written from the job's own fields and its task graph serialized
//! once.
//!
//! As over gRPC (`crate::grpc::answer`), a job's `tasks` and `transitions` depend only on its
//! workflow revision, and every job of the revision shares them; serializing them was most of
//! the work of writing a StartJob answer. [`JsonGraphs`] keeps each graph's two fields as
//! JSON, and an answer is the envelope serde writes for the job with an empty graph, the
//! graph's fields in place of the empty ones. The bytes `"tasks":{},"transitions":{}` can
//! only be the job's own there, and the first such bytes of the body: before them come only
//! strings (the envelope's `message`, the job's `_id` to `status`), and inside a JSON string
//! every `"` is escaped. A test compares the bytes with those of the whole envelope.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::rest::Envelope;
use crate::domain::graph::JobTask;
use crate::domain::Job;
use crate::store::cache::GraphMemo;

/// What an empty graph looks like in a serialized job.
const EMPTY_GRAPH: &[u8] = br#""tasks":{},"transitions":{}"#;

/// The task graphs of jobs as the JSON of a job's `tasks` and `transitions` fields, by the
/// graph they were serialized from (see [`GraphMemo`]).
pub struct JsonGraphs {
    memo: GraphMemo,
}

/// A graph's fields as a job writes them.
#[derive(Serialize)]
struct GraphFields<'a> {
    tasks: &'a BTreeMap<String, JobTask>,
    transitions: &'a Map<String, Value>,
}

impl JsonGraphs {
    /// Memory for at most `bytes` of serialized graphs.
    pub fn new(bytes: u64) -> Self {
        JsonGraphs {
            memo: GraphMemo::new(bytes),
        }
    }

    /// The body of `Envelope::new(message, job)`, byte for byte as serde writes it.
    pub fn envelope(&self, message: &'static str, mut job: Job) -> serde_json::Result<Vec<u8>> {
        let tasks = std::mem::take(&mut job.tasks);
        let transitions = std::mem::take(&mut job.transitions);
        let graph = self.memo.get(&tasks, &transitions, |tasks, transitions| {
            let object = serde_json::to_vec(&GraphFields { tasks, transitions })
                .expect("a task graph is JSON");
            // `{"tasks":...,"transitions":...}` without its braces.
            object[1..object.len() - 1].to_vec()
        });
        let body = serde_json::to_vec(&Envelope::new(message, &job))?;
        match body
            .windows(EMPTY_GRAPH.len())
            .position(|w| w == EMPTY_GRAPH)
        {
            Some(at) => {
                let mut answer = Vec::with_capacity(body.len() - EMPTY_GRAPH.len() + graph.len());
                answer.extend_from_slice(&body[..at]);
                answer.extend_from_slice(&graph);
                answer.extend_from_slice(&body[at + EMPTY_GRAPH.len()..]);
                Ok(answer)
            }
            // Cannot be (see above); if it were, the whole envelope is still right.
            None => {
                job.tasks = tasks;
                job.transitions = transitions;
                serde_json::to_vec(&Envelope::new(message, &job))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::start::JobOptions;
    use crate::domain::workflow::WorkflowDocument;
    use crate::domain::{corpus, Caller, CompiledWorkflow};
    use serde_json::json;
    use std::sync::Arc;

    const MESSAGE: &str = "Successfully created the requested item";

    fn whole(job: &Job) -> Vec<u8> {
        serde_json::to_vec(&Envelope::new(MESSAGE, job)).unwrap()
    }

    /// A job whose strings and variables hold what the graph's fields look like, of a
    /// workflow without an input schema (the tests give it the corpus graphs).
    fn started() -> Job {
        let workflow = json!({
            "name": "answers",
            "tasks": {
                "workflow_start": {"name": "workflow_start", "groups": []},
                "a1": {"name": "query", "app": "WorkFlowEngine"},
                "workflow_end": {"name": "workflow_end", "groups": []}
            },
            "transitions": {
                "workflow_start": {"a1": {"state": "success", "type": "standard"}},
                "a1": {"workflow_end": {"state": "success", "type": "standard"}},
                "workflow_end": {}
            }
        });
        let lookalike = r#""tasks":{},"transitions":{}"#;
        Job::start(
            &CompiledWorkflow::compile(WorkflowDocument::parse(workflow, "workflow").unwrap()),
            JobOptions {
                variables: json!({
                    "tasks": {},
                    "transitions": {},
                    "text": lookalike,
                    "nested": {"list": [1, 2.5, -3, null, true, "x\u{1f}"], "empty": {}},
                })
                .as_object()
                .unwrap()
                .clone(),
                description: Some(lookalike.to_owned()),
                ..JobOptions::default()
            },
            &Caller::test_admin(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_start_answer_has_the_bytes_serde_writes_for_the_whole_envelope() {
        let graphs = JsonGraphs::new(64 << 20);
        assert_eq!(corpus::workflows().len(), 180);
        let base = started();
        for (path, job) in corpus::jobs_like(&base) {
            // Twice: the graph serialized, then from the memo.
            for _ in 0..2 {
                let body = graphs.envelope(MESSAGE, job.clone()).unwrap();
                assert_eq!(body, whole(&job), "{path}");
            }
        }
        assert_eq!(graphs.memo.len(), 180);
    }

    #[test]
    fn a_job_with_an_empty_graph_has_the_same_bytes_too() {
        let graphs = JsonGraphs::new(1 << 20);
        let job = Job {
            tasks: Arc::new(BTreeMap::new()),
            transitions: Arc::new(Map::new()),
            ..started()
        };
        assert_eq!(graphs.envelope(MESSAGE, job.clone()).unwrap(), whole(&job));
    }

    #[test]
    fn a_graph_only_its_job_holds_is_written_and_not_remembered() {
        let graphs = JsonGraphs::new(1 << 20);
        let shared = started();
        // A job read back with its own run state: its tasks are a copy of its own.
        let own = Job {
            tasks: Arc::new((*shared.tasks).clone()),
            ..shared.clone()
        };
        let expected = whole(&own);
        assert_eq!(graphs.envelope(MESSAGE, own).unwrap(), expected);
        assert!(graphs.memo.is_empty());
        assert_eq!(
            graphs.envelope(MESSAGE, shared.clone()).unwrap(),
            whole(&shared)
        );
        assert_eq!(graphs.memo.len(), 1);
    }

    #[test]
    fn a_graph_is_known_by_its_tasks_and_its_transitions_together() {
        let graphs = JsonGraphs::new(1 << 20);
        let job = started();
        graphs.envelope(MESSAGE, job.clone()).unwrap();
        // Other transitions with the same tasks: another graph, serialized anew.
        let mut transitions = (*job.transitions).clone();
        transitions.insert("workflow_end".into(), json!({"x": {"state": "success"}}));
        let other = Job {
            transitions: Arc::new(transitions),
            ..job
        };
        assert_eq!(
            graphs.envelope(MESSAGE, other.clone()).unwrap(),
            whole(&other)
        );
    }
}
