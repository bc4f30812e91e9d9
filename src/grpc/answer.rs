//! StartJob's answer, written from the job's own fields and its task graph encoded once.
//!
//! A job's `tasks` and `transitions` depend only on its workflow revision, and every job of the
//! revision shares them (`Arc`s built when the workflow was compiled, or read once with a
//! stored job). Converting them into protobuf messages (each task's fields as a `Struct`) and
//! encoding them was most of the cost of a StartJob answer, and made gRPC slower than the JSON
//! gateway. [`EncodedGraphs`] keeps each graph's encoded fields; a [`StartJobAnswer`] encodes
//! the job's own fields with prost around those bytes.
//!
//! The bytes are exactly those prost writes for the whole `StartJobResponse`: prost writes a
//! message's fields in the order of their numbers, and the graph's fields (`tasks` 6,
//! `transitions` 7) come between `status` (5) and `variables` (8). So a job is written as its
//! fields numbered below 6, the graph's bytes, then its fields numbered above 7, each part
//! encoded by prost (a field left at its default is not written at all). A test compares both
//! encodings.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use serde_json::{Map, Value};

use super::convert::{job_without_graph, task_graph};
use super::pb;
use crate::domain::graph::JobTask;
use crate::domain::Job;
use crate::store::cache::GraphMemo;

/// The `StartJobResponse` the server sends (the generated server takes it in place of the
/// generated message; clients decode the generated `pb::StartJobResponse`).
#[derive(Debug, Default)]
pub struct StartJobAnswer {
    /// The job's fields numbered below the graph's: `id` to `status`.
    head: pb::Job,
    /// The job's `tasks` and `transitions`, encoded.
    graph: Bytes,
    /// The job's fields numbered above the graph's, from `variables` on.
    tail: pb::Job,
    /// The length of the encoded job: all three parts.
    job_len: usize,
    created: bool,
}

impl StartJobAnswer {
    /// The answer to a start of `job`, its graph taken from `graphs` (and encoded into it the
    /// first time).
    pub fn new(job: Job, created: bool, graphs: &EncodedGraphs) -> Self {
        let graph = graphs.get(&job.tasks, &job.transitions);
        let mut tail = job_without_graph(job);
        let head = pb::Job {
            id: std::mem::take(&mut tail.id),
            name: std::mem::take(&mut tail.name),
            description: std::mem::take(&mut tail.description),
            r#type: std::mem::take(&mut tail.r#type),
            status: std::mem::take(&mut tail.status),
            ..Default::default()
        };
        let job_len = head.encoded_len() + graph.len() + tail.encoded_len();
        StartJobAnswer {
            head,
            graph,
            tail,
            job_len,
            created,
        }
    }
}

/// Field numbers of `StartJobResponse`.
const JOB: u32 = 1;
const CREATED: u32 = 2;

impl Message for StartJobAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::encode_key(JOB, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.job_len as u64, buf);
        self.head.encode_raw(buf);
        buf.put_slice(&self.graph);
        self.tail.encode_raw(buf);
        if self.created {
            encoding::bool::encode(CREATED, &self.created, buf);
        }
    }

    fn encoded_len(&self) -> usize {
        let created = match self.created {
            true => encoding::bool::encoded_len(CREATED, &self.created),
            false => 0,
        };
        encoding::key_len(JOB)
            + encoding::encoded_len_varint(self.job_len as u64)
            + self.job_len
            + created
    }

    /// The server never decodes its own answers: whatever comes is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn clear(&mut self) {
        *self = StartJobAnswer::default();
    }
}

/// The task graphs of jobs, encoded as the `tasks` and `transitions` fields of a `Job`, by the
/// graph they were encoded from (see [`GraphMemo`]).
pub struct EncodedGraphs {
    memo: GraphMemo,
}

impl EncodedGraphs {
    /// Memory for at most `bytes` of encoded graphs.
    pub fn new(bytes: u64) -> Self {
        EncodedGraphs {
            memo: GraphMemo::new(bytes),
        }
    }

    /// The encoded `tasks` and `transitions` fields of the graph, from the cache or encoded
    /// now (and cached).
    pub fn get(
        &self,
        tasks: &Arc<BTreeMap<String, JobTask>>,
        transitions: &Arc<Map<String, Value>>,
    ) -> Bytes {
        self.memo.get(tasks, transitions, |tasks, transitions| {
            let (tasks, transitions) = task_graph(tasks, transitions);
            pb::Job {
                tasks,
                transitions,
                ..Default::default()
            }
            .encode_to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::start::JobOptions;
    use crate::domain::workflow::WorkflowDocument;
    use crate::domain::{corpus, Caller, CompiledWorkflow};
    use serde_json::json;

    /// The answer as prost writes the whole generated message: what StartJob sent before
    /// graphs were encoded once, and what clients decode.
    fn encoded_whole(job: &Job, created: bool) -> Vec<u8> {
        pb::StartJobResponse {
            job: Some(pb::Job::from(job.clone())),
            created,
        }
        .encode_to_vec()
    }

    fn corpus_workflow(file: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/itential-assets")
            .join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// A job of the corpus workflow the benchmark starts, with variables of every JSON type.
    fn started() -> Job {
        let document = WorkflowDocument::parse(
            corpus_workflow("aws-ec2/detach-and-delete-internet-gateways-by-vpc.json"),
            "workflow",
        )
        .unwrap();
        let variables = json!({
            "adapterId": "AWS",
            "vpcId": "vpc-0123456789abcdef0",
            "nested": {"list": [1, 2.5, -3, null, true, "x"], "empty": {}},
            "count": 9007199254740993_u64,
        });
        Job::start(
            &CompiledWorkflow::compile(document),
            JobOptions {
                variables: variables.as_object().unwrap().clone(),
                description: Some("a job with variables".into()),
                ..JobOptions::default()
            },
            &Caller::test_admin(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_start_answer_has_the_bytes_of_the_whole_message_encoded_by_prost() {
        let graphs = EncodedGraphs::new(1 << 20);
        let job = started();
        assert!(job.tasks.len() > 2 && job.variables.len() > 2);
        for created in [true, false] {
            // Twice: the graph encoded, then from the cache.
            for _ in 0..2 {
                let answer = StartJobAnswer::new(job.clone(), created, &graphs);
                assert_eq!(answer.encoded_len(), encoded_whole(&job, created).len());
                assert_eq!(answer.encode_to_vec(), encoded_whole(&job, created));
            }
        }
        assert_eq!(graphs.memo.len(), 1);
    }

    #[test]
    fn every_corpus_graph_is_encoded_as_prost_encodes_it() {
        let graphs = EncodedGraphs::new(64 << 20);
        let base = started();
        let mut seen = 0;
        for (path, job) in corpus::jobs_like(&base) {
            let answer = StartJobAnswer::new(job.clone(), true, &graphs);
            assert_eq!(answer.encode_to_vec(), encoded_whole(&job, true), "{path}");
            seen += 1;
        }
        assert_eq!(seen, 180);
    }

    #[test]
    fn a_job_with_an_empty_graph_and_no_variables_is_encoded_as_prost_encodes_it() {
        let graphs = EncodedGraphs::new(1 << 20);
        let job = Job {
            tasks: Arc::new(BTreeMap::new()),
            transitions: Arc::new(Map::new()),
            variables: Map::new(),
            description: String::new(),
            ..started()
        };
        let answer = StartJobAnswer::new(job.clone(), false, &graphs);
        assert_eq!(answer.encode_to_vec(), encoded_whole(&job, false));
    }

    #[test]
    fn a_graph_is_known_by_its_tasks_and_its_transitions_together() {
        let graphs = EncodedGraphs::new(1 << 20);
        let job = started();
        let first = graphs.get(&job.tasks, &job.transitions);
        // Other transitions with the same tasks: another graph, encoded anew.
        let mut transitions = (*job.transitions).clone();
        transitions.insert("workflow_end".into(), json!({}));
        transitions.remove("workflow_start");
        let other = Arc::new(transitions);
        let second = graphs.get(&job.tasks, &other);
        assert_ne!(first, second);
        let (tasks, transitions) = task_graph(&job.tasks, &other);
        let whole = pb::Job {
            tasks,
            transitions,
            ..Default::default()
        };
        assert_eq!(second, whole.encode_to_vec());
    }

    #[test]
    fn the_cache_holds_no_more_than_its_budget() {
        let job = started();
        let size = EncodedGraphs::new(1 << 20)
            .get(&job.tasks, &job.transitions)
            .len();
        let graphs = EncodedGraphs::new(size as u64 * 2);
        let mut kept = Vec::new();
        for _ in 0..10 {
            // Held twice, as a compiled workflow's graph and its job hold it.
            let tasks = Arc::new((*job.tasks).clone());
            kept.push(tasks.clone());
            graphs.get(&tasks, &job.transitions);
        }
        assert!(graphs.memo.weight() <= size as u64 * 2);
        assert!(graphs.memo.len() < 10);
    }
}
