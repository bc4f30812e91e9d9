//! The `jobs` table, the task graphs its jobs share (`job_graphs`), and the view of whole job
//! documents (`job_documents`) for people reading the database. The service reads a job's own
//! fields and takes its graph from a cache ([`GraphCache`]): each graph is read and parsed once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::cache::{weighted_cache, Weighed, WeightedCache};
use super::{rows_within, translate};
use crate::domain::job::{tasks_heap_size, Job, JobTask};
use crate::domain::page::{JobCursor, JobFilter};
use crate::domain::search::{Condition, JobField, JobSearch};
use crate::domain::{Error, JobGraph, JobId, JobRecord};

/// Stores `graphs`, those not stored yet (graphs are never changed or deleted, so one already
/// there is the same).
pub async fn insert_graphs(conn: &mut PgConnection, graphs: &[&JobGraph]) -> Result<(), Error> {
    let ids: Vec<&str> = graphs.iter().map(|graph| graph.id.as_str()).collect();
    let tasks: Vec<Json<&RawValue>> = graphs.iter().map(|graph| Json(&*graph.tasks)).collect();
    let transitions: Vec<Json<&RawValue>> = graphs
        .iter()
        .map(|graph| Json(&*graph.transitions))
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

/// Inserts `jobs`, each with the id of its (stored) graph, with one statement: one round trip
/// whatever their number. Each row holds the job's own fields (`Job::record`), not its graph.
/// Groups travel as JSON arrays because PostgreSQL arrays cannot hold rows of different
/// lengths.
pub async fn insert_many(conn: &mut PgConnection, jobs: &[(&Job, &str)]) -> Result<(), Error> {
    let ids: Vec<&str> = jobs.iter().map(|(job, _)| job.id.as_str()).collect();
    let names: Vec<&str> = jobs.iter().map(|(job, _)| job.name.as_str()).collect();
    let statuses: Vec<&str> = jobs.iter().map(|(job, _)| job.status.as_str()).collect();
    let groups: Vec<Json<&Vec<String>>> = jobs.iter().map(|(job, _)| Json(&job.groups)).collect();
    let created: Vec<DateTime<Utc>> = jobs.iter().map(|(job, _)| job.created).collect();
    let updated: Vec<DateTime<Utc>> = jobs.iter().map(|(job, _)| job.last_updated).collect();
    let created_by: Vec<&str> = jobs
        .iter()
        .map(|(job, _)| job.created_by.as_str())
        .collect();
    let documents: Vec<Json<JobRecord<'_>>> =
        jobs.iter().map(|(job, _)| Json(job.record())).collect();
    let graph_ids: Vec<&str> = jobs.iter().map(|(_, graph)| *graph).collect();
    sqlx::query(
        "insert into jobs (id, workflow_name, status, groups, created_at, updated_at, created_by,
                           document, graph_id)
         select id, workflow_name, status, array(select jsonb_array_elements_text(groups)),
                created_at, updated_at, created_by, document, graph_id
         from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[],
                     $6::timestamptz[], $7::text[], $8::jsonb[], $9::text[])
              as j(id, workflow_name, status, groups, created_at, updated_at, created_by,
                   document, graph_id)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&statuses)
    .bind(&groups)
    .bind(&created)
    .bind(&updated)
    .bind(&created_by)
    .bind(&documents)
    .bind(&graph_ids)
    .execute(conn)
    .await
    .map_err(translate)?;
    Ok(())
}

pub async fn get(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    id: &JobId,
) -> Result<Option<Job>, Error> {
    let row = sqlx::query_as::<_, JobRow>("select document, graph_id from jobs where id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(translate)?;
    match row {
        None => Ok(None),
        Some(row) => Ok(graphs.complete(conn, vec![row]).await?.pop()),
    }
}

/// The jobs with these ids that exist, in no particular order.
pub async fn get_many(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    ids: &[&str],
) -> Result<Vec<Job>, Error> {
    let rows =
        sqlx::query_as::<_, JobRow>("select document, graph_id from jobs where id = any($1)")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(translate)?;
    graphs.complete(conn, rows).await
}

/// A stored job: its own fields, and the id of its graph.
#[derive(sqlx::FromRow)]
pub struct JobRow {
    document: Json<Job>,
    graph_id: String,
}

/// The task graphs of stored jobs, by id, read once and shared by every job read with them.
/// Graphs never change (an id is a digest of the content), so what is cached is never stale.
/// The cache holds at most its budget of memory (as estimated by `tasks_heap_size`), keeping
/// the graphs used most.
pub struct GraphCache {
    graphs: WeightedCache<SharedGraph>,
}

impl std::fmt::Debug for GraphCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCache")
            .field("graphs", &self.graphs.len())
            .field("bytes", &self.graphs.weight())
            .finish()
    }
}

/// A graph's tasks and transitions, as jobs hold them.
type SharedGraph = (Arc<BTreeMap<String, JobTask>>, Arc<Map<String, Value>>);

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
    pub fn insert(
        &self,
        graph: &JobGraph,
        tasks: &Arc<BTreeMap<String, JobTask>>,
        transitions: &Arc<Map<String, Value>>,
    ) {
        self.remember(graph.id.clone(), (tasks.clone(), transitions.clone()));
    }

    /// Forgets the graph `id` (its workflow was deleted): a job of it that is read later reads
    /// it again.
    pub fn forget(&self, id: &str) {
        self.graphs.remove(id);
    }

    fn remember(&self, id: String, graph: SharedGraph) {
        let bytes = tasks_heap_size(&graph.0) + crate::domain::json::map_heap_size(&graph.1);
        self.graphs.insert(
            id,
            Weighed {
                value: graph,
                bytes: bytes as u64,
            },
        );
    }

    /// The jobs of `rows`, whole: each with its graph, read from the database when not cached.
    pub async fn complete(
        &self,
        conn: &mut PgConnection,
        rows: Vec<JobRow>,
    ) -> Result<Vec<Job>, Error> {
        // The graphs these rows need, taken from the cache now: a later clear of the cache
        // cannot lose them.
        let mut found: HashMap<String, SharedGraph> = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        for row in &rows {
            match self.graphs.get(&row.graph_id) {
                Some(graph) => {
                    found.insert(row.graph_id.clone(), graph.value);
                }
                None => missing.push(&row.graph_id),
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
                let graph = (Arc::new(tasks.0), Arc::new(transitions.0));
                self.remember(id.clone(), graph.clone());
                found.insert(id, graph);
            }
        }
        rows.into_iter()
            .map(|row| {
                let (tasks, transitions) = found.get(&row.graph_id).ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("job graph {} is missing", row.graph_id))
                })?;
                let mut job = row.document.0;
                job.tasks = tasks.clone();
                job.transitions = transitions.clone();
                Ok(job)
            })
            .collect()
    }
}

/// Up to `limit` jobs newest first (creation time, then id), after `after` when given, and
/// no more than about `max_bytes` of them ([`rows_within`]); with `visible_to`, only jobs
/// without groups or sharing one of these groups. Each condition is added only when set, so
/// the planner can use the matching index.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    filter: &JobFilter,
    visible_to: Option<&[String]>,
    after: Option<&JobCursor>,
    limit: i64,
    max_bytes: usize,
) -> Result<Vec<Job>, Error> {
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new("select id, document_bytes from jobs where true");
    if let Some(status) = filter.status {
        query.push(" and status = ").push_bind(status.as_str());
    }
    if let Some(workflow) = &filter.workflow {
        query
            .push(" and workflow_name = ")
            .push_bind(workflow.clone());
    }
    if let Some(time) = filter.created_after {
        query.push(" and created_at >= ").push_bind(time);
    }
    if let Some(time) = filter.created_before {
        query.push(" and created_at < ").push_bind(time);
    }
    push_visible_to(&mut query, visible_to);
    if let Some(cursor) = after {
        query
            .push(" and (created_at, id) < (")
            .push_bind(cursor.created_at)
            .push(", ")
            .push_bind(cursor.id.clone())
            .push(")");
    }
    query
        .push(" order by created_at desc, id desc limit ")
        .push_bind(limit);
    let sizes: Vec<(String, i32)> = query
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    in_order(conn, graphs, &sizes, max_bytes).await
}

/// The jobs of a page whose ids and sizes are `sizes`, in that order, as many as
/// [`rows_within`] `max_bytes` allows.
async fn in_order(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    sizes: &[(String, i32)],
    max_bytes: usize,
) -> Result<Vec<Job>, Error> {
    let taken = rows_within(sizes.iter().map(|(_, size)| *size), max_bytes);
    let ids: Vec<&str> = sizes[..taken].iter().map(|(id, _)| id.as_str()).collect();
    let position: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut jobs = get_many(conn, graphs, &ids).await?;
    jobs.sort_unstable_by_key(|job| position.get(job.id.as_str()).copied());
    Ok(jobs)
}

/// Group-based access: only jobs without groups or sharing one of `visible_to` (`None`: all).
fn push_visible_to(query: &mut QueryBuilder<'_, Postgres>, visible_to: Option<&[String]>) {
    if let Some(groups) = visible_to {
        query
            .push(" and (cardinality(groups) = 0 or groups && ")
            .push_bind(groups.to_vec())
            .push(")");
    }
}

/// The SQL expression of a searchable field.
fn column(field: JobField) -> &'static str {
    match field {
        JobField::Id => "id",
        JobField::Name => "workflow_name",
        JobField::Status => "status",
        JobField::Type => "(document->>'type')",
        JobField::Description => "(document->>'description')",
        JobField::CreatedBy => "created_by",
        JobField::Created => "created_at",
        JobField::LastUpdated => "updated_at",
    }
}

fn push_search_conditions(
    query: &mut QueryBuilder<'_, Postgres>,
    search: &JobSearch,
    visible_to: Option<&[String]>,
) {
    query.push(" where true");
    for condition in &search.conditions {
        match condition {
            Condition::Equals(field, value) => {
                query
                    .push(format!(" and {} = ", column(*field)))
                    .push_bind(value.clone());
            }
            Condition::In(field, values) => {
                query
                    .push(format!(" and {} = any(", column(*field)))
                    .push_bind(values.clone())
                    .push(")");
            }
            Condition::StartsWith(field, prefix) => {
                query
                    .push(format!(" and starts_with({}, ", column(*field)))
                    .push_bind(prefix.clone())
                    .push(")");
            }
            Condition::After(field, time) => {
                query
                    .push(format!(" and {} > ", column(*field)))
                    .push_bind(*time);
            }
            Condition::Before(field, time) => {
                query
                    .push(format!(" and {} < ", column(*field)))
                    .push_bind(*time);
            }
        }
    }
    push_visible_to(query, visible_to);
}

/// A page of a REST search (no more than about `max_bytes` of it, [`rows_within`]) and the
/// number of jobs matching it in all.
pub async fn search(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    search: &JobSearch,
    visible_to: Option<&[String]>,
    max_bytes: usize,
) -> Result<(Vec<Job>, i64), Error> {
    let mut count: QueryBuilder<Postgres> = QueryBuilder::new("select count(*) from jobs");
    push_search_conditions(&mut count, search, visible_to);
    let total: i64 = count
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(translate)?;

    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new("select id, document_bytes from jobs");
    push_search_conditions(&mut query, search, visible_to);
    let direction = if search.descending { "desc" } else { "asc" };
    query
        .push(format!(
            " order by {} {direction}, id {direction} limit ",
            column(search.sort)
        ))
        .push_bind(search.limit)
        .push(" offset ")
        .push_bind(search.skip);
    let sizes: Vec<(String, i32)> = query
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    Ok((in_order(conn, graphs, &sizes, max_bytes).await?, total))
}
