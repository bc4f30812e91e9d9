//! The task graphs jobs share (`job_graphs`): each stored once under its digest, and read
//! through a cache ([`GraphCache`]) so that each is read and parsed once.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::cache::{weighted_cache, Weighed, WeightedCache};
use super::translate;
use crate::domain::graph::JobTask;
use crate::domain::{Error, TaskGraph};

/// Stores `graphs`, those not stored yet (graphs are never changed or deleted, so one already
/// there is the same).
pub async fn insert_many(conn: &mut PgConnection, graphs: &[&TaskGraph]) -> Result<(), Error> {
    let ids: Vec<&str> = graphs.iter().map(|graph| graph.id()).collect();
    let tasks: Vec<Json<&BTreeMap<String, JobTask>>> =
        graphs.iter().map(|graph| Json(&**graph.tasks())).collect();
    let transitions: Vec<Json<&Map<String, Value>>> = graphs
        .iter()
        .map(|graph| Json(&**graph.transitions()))
        .collect();
    sqlx::query(
        "insert into job_graphs (id, tasks, transitions)
         select * from unnest($1::text[], $2::jsonb[], $3::jsonb[])
         on conflict (id) do nothing",
    )
    .bind(&ids)
    .bind(&tasks)
    .bind(&transitions)
    .execute(conn)
    .await
    .map_err(translate)?;
    Ok(())
}

/// The task graphs of stored jobs, by id, read once and shared by every job read with them.
/// Graphs never change (an id is a digest of the content), so what is cached is never stale.
/// The cache holds at most its budget of memory (as estimated by [`TaskGraph::heap_size`]),
/// keeping the graphs used most.
pub struct GraphCache {
    graphs: WeightedCache<TaskGraph>,
}

impl std::fmt::Debug for GraphCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCache")
            .field("graphs", &self.graphs.len())
            .field("bytes", &self.graphs.weight())
            .finish()
    }
}

/// A row of `job_graphs`: id, tasks, transitions.
type GraphRow = (
    String,
    Json<BTreeMap<String, JobTask>>,
    Json<Map<String, Value>>,
);

impl GraphCache {
    /// A cache of at most `bytes` of graphs (estimated).
    pub fn new(bytes: u64) -> Self {
        GraphCache {
            graphs: weighted_cache(bytes),
        }
    }

    /// The memory the cached graphs hold (estimated).
    pub fn bytes(&self) -> u64 {
        self.graphs.weight()
    }

    /// Whether the graph `id` is known to be stored.
    pub fn contains(&self, id: &str) -> bool {
        self.graphs.contains_key(id)
    }

    /// Remembers a graph that was just stored with its jobs.
    pub fn insert(&self, graph: &TaskGraph) {
        self.remember(graph.clone());
    }

    /// Forgets the graph `id` (its workflow was deleted): a job of it that is read later reads
    /// it again.
    pub fn forget(&self, id: &str) {
        self.graphs.remove(id);
    }

    fn remember(&self, graph: TaskGraph) {
        let bytes = graph.heap_size();
        self.graphs.insert(
            graph.id().to_owned(),
            Weighed {
                value: graph,
                bytes: bytes as u64,
            },
        );
    }

    /// The graphs `ids` (one an entry, repeated or not) by id, each read from the database
    /// when not cached. A graph that is not stored is missing from the answer.
    pub async fn get_many(
        &self,
        conn: &mut PgConnection,
        ids: &[&str],
    ) -> Result<HashMap<String, TaskGraph>, Error> {
        // Taken from the cache now: a later clear of the cache cannot lose them.
        let mut found: HashMap<String, TaskGraph> = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        for id in ids {
            match self.graphs.get(*id) {
                Some(graph) => {
                    found.insert((*id).to_owned(), graph.value);
                }
                None => missing.push(id),
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let stored: Vec<GraphRow> =
                sqlx::query_as("select id, tasks, transitions from job_graphs where id = any($1)")
                    .bind(&missing)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(translate)?;
            for (id, tasks, transitions) in stored {
                let graph = TaskGraph::from_stored(id.clone(), tasks.0, transitions.0);
                self.remember(graph.clone());
                found.insert(id, graph);
            }
        }
        Ok(found)
    }
}
