//! The corpus of real workflow exports (`tests/data/itential-assets`), for the crate's tests.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::{Job, TaskGraph};

/// Every workflow of the corpus, read once: (its file's path, its document), by path.
pub fn workflows() -> &'static [(String, Map<String, Value>)] {
    static CORPUS: OnceLock<Vec<(String, Map<String, Value>)>> = OnceLock::new();
    CORPUS.get_or_init(read)
}

/// The task graph of a corpus workflow: its `tasks` and `transitions` (empty when missing).
pub fn graph(workflow: &Map<String, Value>) -> TaskGraph {
    let object = |key: &str| match workflow.get(key) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    TaskGraph::build(&object("tasks"), &object("transitions"))
}

/// `base` with the task graph of each corpus workflow in turn, by the workflow's path.
pub fn jobs_like(base: &Job) -> impl Iterator<Item = (&'static str, Job)> + '_ {
    workflows().iter().map(|(path, workflow)| {
        let graph = graph(workflow);
        let job = Job {
            tasks: graph.tasks().clone(),
            transitions: graph.transitions().clone(),
            ..base.clone()
        };
        (path.as_str(), job)
    })
}

fn read() -> Vec<(String, Map<String, Value>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/itential-assets");
    let mut found = Vec::new();
    let mut folders = vec![root];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).unwrap_or_else(|why| panic!("{why}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|why| panic!("{why}")).path();
            if path.is_dir() {
                folders.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|why| panic!("{why}"));
                let workflow: Value =
                    serde_json::from_str(&text).unwrap_or_else(|why| panic!("{why}"));
                let Value::Object(workflow) = workflow else {
                    panic!("{} is not a JSON object", path.display());
                };
                found.push((path.display().to_string(), workflow));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}
