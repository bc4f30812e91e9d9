//! The `jobs` table, and the view of whole job documents (`job_documents`) for people reading
//! the database. A row holds a job's own fields ([`JobRecord`]) and the id of its task graph,
//! stored once in `job_graphs` ([`super::graphs`]); a job read is completed with its graph.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::graphs::GraphCache;
use super::{rows_within, translate};
use crate::domain::job::{millis_rfc3339, Decorator, Job, JobMetrics, UserRef};
use crate::domain::page::{JobCursor, JobFilter};
use crate::domain::run::overlay;
use crate::domain::search::{Condition, JobField, JobSearch};
use crate::domain::{Error, JobId, JobStatus};

/// A job's own fields: its document without `tasks` and `transitions`, which every job of a
/// workflow revision shares and which are stored once per graph (`job_graphs`). Serializes
/// with the same names as [`Job`]; a test checks the two stay in step.
#[derive(Debug, Serialize)]
pub struct JobRecord<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    uuid: &'a str,
    name: &'a str,
    description: &'a str,
    #[serde(rename = "type")]
    job_type: &'a str,
    status: JobStatus,
    variables: &'a Map<String, Value>,
    groups: &'a [String],
    watchers: &'a [String],
    ancestors: &'a [String],
    parent: &'a Value,
    metrics: &'a JobMetrics,
    error: &'a [Value],
    warnings: &'a [Value],
    #[serde(with = "millis_rfc3339")]
    created: DateTime<Utc>,
    created_by: &'a str,
    #[serde(with = "millis_rfc3339")]
    last_updated: DateTime<Utc>,
    last_updated_by: &'a UserRef,
    #[serde(rename = "canvasVersion")]
    canvas_version: i64,
    #[serde(rename = "encodingVersion")]
    encoding_version: i64,
    font_size: i64,
    #[serde(rename = "preAutomationTime")]
    pre_automation_time: &'a Number,
    sla: &'a Number,
    decorators: &'a [Decorator],
    tags: &'a [Value],
    #[serde(rename = "errorHandler")]
    error_handler: &'a Value,
    #[serde(rename = "createdVersion")]
    created_version: &'a str,
    #[serde(rename = "lastUpdatedVersion")]
    last_updated_version: &'a str,
    #[serde(rename = "migrationVersion")]
    migration_version: i64,
    #[serde(rename = "validationErrors")]
    validation_errors: &'a [Value],
}

/// Written here, beside the table whose rows it fills, so that the domain holds no storage shape.
impl Job {
    /// The job's own fields, as stored beside its graph.
    pub fn record(&self) -> JobRecord<'_> {
        JobRecord {
            id: &self.id,
            uuid: &self.uuid,
            name: &self.name,
            description: &self.description,
            job_type: &self.job_type,
            status: self.status,
            variables: &self.variables,
            groups: &self.groups,
            watchers: &self.watchers,
            ancestors: &self.ancestors,
            parent: &self.parent,
            metrics: &self.metrics,
            error: &self.error,
            warnings: &self.warnings,
            created: self.created,
            created_by: &self.created_by,
            last_updated: self.last_updated,
            last_updated_by: &self.last_updated_by,
            canvas_version: self.canvas_version,
            encoding_version: self.encoding_version,
            font_size: self.font_size,
            pre_automation_time: &self.pre_automation_time,
            sla: &self.sla,
            decorators: &self.decorators,
            tags: &self.tags,
            error_handler: &self.error_handler,
            created_version: &self.created_version,
            last_updated_version: &self.last_updated_version,
            migration_version: self.migration_version,
            validation_errors: &self.validation_errors,
        }
    }
}

/// A job to insert: its document, its graph's id, and the sequence of its last event (0
/// unless its first step was taken before the insert).
pub struct NewJob<'a> {
    pub job: &'a Job,
    pub graph_id: &'a str,
    pub event_sequence: i64,
}

/// The columns of new `jobs` rows, a parameter each (arrays that `unnest` turns into rows,
/// [`super::starts::insert_started`] inserts them). Each row holds the job's own fields
/// (`Job::record`), not its graph. Groups travel as JSON arrays because PostgreSQL arrays
/// cannot hold rows of different lengths.
pub(super) struct JobRows<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    statuses: Vec<&'static str>,
    groups: Vec<Json<&'a Vec<String>>>,
    created: Vec<DateTime<Utc>>,
    updated: Vec<DateTime<Utc>>,
    created_by: Vec<&'a str>,
    documents: Vec<Json<JobRecord<'a>>>,
    graph_ids: Vec<&'a str>,
    sequences: Vec<i64>,
}

impl<'a> JobRows<'a> {
    pub(super) fn new(jobs: &[NewJob<'a>]) -> Self {
        JobRows {
            ids: jobs.iter().map(|new| new.job.id.as_str()).collect(),
            names: jobs.iter().map(|new| new.job.name.as_str()).collect(),
            statuses: jobs.iter().map(|new| new.job.status.as_str()).collect(),
            groups: jobs.iter().map(|new| Json(&new.job.groups)).collect(),
            created: jobs.iter().map(|new| new.job.created).collect(),
            updated: jobs.iter().map(|new| new.job.last_updated).collect(),
            created_by: jobs.iter().map(|new| new.job.created_by.as_str()).collect(),
            documents: jobs.iter().map(|new| Json(new.job.record())).collect(),
            graph_ids: jobs.iter().map(|new| new.graph_id).collect(),
            sequences: jobs.iter().map(|new| new.event_sequence).collect(),
        }
    }

    /// Binds the columns, in the order `starts::insert_jobs_if_unchanged!` reads them, after
    /// `query`'s other parameters.
    pub(super) fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.ids)
            .bind(&self.names)
            .bind(&self.statuses)
            .bind(&self.groups)
            .bind(&self.created)
            .bind(&self.updated)
            .bind(&self.created_by)
            .bind(&self.documents)
            .bind(&self.graph_ids)
            .bind(&self.sequences)
    }
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
        Some(row) => Ok(complete(conn, graphs, vec![row]).await?.pop()),
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
    complete(conn, graphs, rows).await
}

/// A stored job: its own fields, and the id of its graph.
#[derive(sqlx::FromRow)]
pub struct JobRow {
    document: Json<Job>,
    graph_id: String,
}

/// The jobs of `rows`, whole: each with its graph.
async fn complete(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    rows: Vec<JobRow>,
) -> Result<Vec<Job>, Error> {
    let ids: Vec<&str> = rows.iter().map(|row| row.graph_id.as_str()).collect();
    let found = graphs.get_many(conn, &ids).await?;
    let job_ids: Vec<&str> = rows.iter().map(|row| row.document.0.id.as_str()).collect();
    let mut runs = super::runs::runs_by_job(conn, &job_ids).await?;
    rows.into_iter()
        .map(|row| {
            let graph = found.get(&row.graph_id).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("job graph {} is missing", row.graph_id))
            })?;
            let mut job = row.document.0;
            // The graph is shared; a job that ran shows its own run state on a copy.
            job.tasks = match runs.remove(&job.id) {
                Some(runs) => std::sync::Arc::new(overlay(graph.tasks(), &runs)),
                None => graph.tasks().clone(),
            };
            job.transitions = graph.transitions().clone();
            Ok(job)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, CompiledWorkflow, WorkflowDocument};
    use serde_json::json;

    fn started() -> Job {
        let workflow = WorkflowDocument::parse(
            json!({
                "name": "Record",
                "tasks": {
                    "workflow_start": {"name": "workflow_start"},
                    "a1": {"name": "query"},
                    "workflow_end": {"name": "workflow_end"}
                },
                "transitions": {
                    "workflow_start": {"a1": {"state": "success", "type": "standard"}},
                    "a1": {"workflow_end": {"state": "success", "type": "standard"}},
                    "workflow_end": {}
                }
            }),
            "workflow",
        )
        .unwrap();
        Job::start(
            &CompiledWorkflow::compile(workflow),
            Default::default(),
            &Caller::test_admin(),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn the_record_is_the_document_without_the_graph() {
        let job = started();
        let mut document = serde_json::to_value(&job).unwrap();
        let record = serde_json::to_value(job.record()).unwrap();
        let whole = document.as_object_mut().unwrap();
        assert!(whole.remove("tasks").is_some());
        assert!(whole.remove("transitions").is_some());
        assert_eq!(record, document);
    }
}
