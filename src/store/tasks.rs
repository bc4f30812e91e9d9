//! Tasks read across jobs (`job_tasks` joined with `jobs`), and the owners of manual tasks
//! (`job_tasks.owner`, `owner_assigned_by`, `owner_assigned_at`). The run state itself is
//! written by [`super::runs`] only; this module writes nothing but owners, and the database
//! clears an owner whenever the run state moves on (see the migration
//! `manual_task_owners`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::graphs::GraphCache;
use super::{rows_within, translate};
use crate::domain::graph::TaskStatus;
use crate::domain::run::FinishState;
use crate::domain::search::{TaskCondition, TaskField, TaskSearch};
use crate::domain::task::{status_name, OwnerRef, TaskJob, TaskKind, TaskOwner, TaskRef, TaskView};
use crate::domain::{Error, JobStatus};

/// The columns of a task answer.
const TASK_COLUMNS: &str = "select t.job_id, t.task_id, t.status, t.runner, t.finish_state,
        t.start_time, t.end_time, t.iteration, t.incoming, t.outgoing, t.error, t.owner,
        t.owner_username, t.owner_assigned_by, t.owner_assigned_at, j.graph_id, j.workflow_name,
        j.status as job_status, coalesce(j.document->>'description', '') as job_description,
        j.groups as job_groups
     from job_tasks t join jobs j on j.id = t.job_id";

fn parse_status(text: &str) -> TaskStatus {
    serde_json::from_value(Value::String(text.to_owned())).unwrap_or(TaskStatus::Incomplete)
}

/// The `runner` column of tasks of a kind.
fn runner_text(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Manual => "manual",
        TaskKind::Automatic => "worker",
        TaskKind::Operation => "engine",
    }
}

fn kind_of(runner: &str) -> TaskKind {
    match runner {
        "manual" => TaskKind::Manual,
        "engine" => TaskKind::Operation,
        _ => TaskKind::Automatic,
    }
}

/// The SQL of a sortable field.
fn sort_column(field: TaskField) -> &'static str {
    match field {
        TaskField::Status => "t.status",
        TaskField::Name => "t.name",
        TaskField::App => "t.app",
        TaskField::Id | TaskField::Job => "t.job_id",
        TaskField::Type => "t.runner",
        TaskField::Owner => "t.owner",
        TaskField::StartTime => "t.start_time",
    }
}

fn push_conditions(
    query: &mut QueryBuilder<'_, Postgres>,
    search: &TaskSearch,
    visible_to: Option<&[String]>,
) {
    query.push(" where true");
    for condition in &search.conditions {
        match condition {
            TaskCondition::Ids(ids) => {
                let jobs: Vec<String> = ids.iter().map(|id| id.job_id.clone()).collect();
                let tasks: Vec<String> = ids.iter().map(|id| id.task_id.clone()).collect();
                query
                    .push(" and (t.job_id, t.task_id) in (select * from unnest(")
                    .push_bind(jobs)
                    .push("::text[], ")
                    .push_bind(tasks)
                    .push("::text[]))");
            }
            TaskCondition::Jobs(jobs) => {
                query
                    .push(" and t.job_id = any(")
                    .push_bind(jobs.clone())
                    .push(")");
            }
            TaskCondition::Statuses(statuses) => {
                let texts: Vec<&str> = statuses.iter().map(|s| status_name(*s)).collect();
                query
                    .push(" and t.status = any(")
                    .push_bind(texts)
                    .push(")");
            }
            TaskCondition::Kinds(kinds) => {
                let texts: Vec<&str> = kinds.iter().map(|k| runner_text(*k)).collect();
                query
                    .push(" and t.runner = any(")
                    .push_bind(texts)
                    .push(")");
            }
            TaskCondition::Owners(owners) => {
                // An empty value stands for "no owner".
                let unowned = owners.iter().any(String::is_empty);
                query
                    .push(" and (t.owner = any(")
                    .push_bind(owners.clone())
                    .push(")");
                if unowned {
                    query.push(" or t.owner is null");
                }
                query.push(")");
            }
            TaskCondition::Text(field, values) => {
                query
                    .push(format!(" and {} = any(", sort_column(*field)))
                    .push_bind(values.clone())
                    .push(")");
            }
            TaskCondition::Prefix(field, prefix) => {
                query
                    .push(format!(" and starts_with({}, ", sort_column(*field)))
                    .push_bind(prefix.clone())
                    .push(")");
            }
            TaskCondition::StartedAfter(time) => {
                query.push(" and t.start_time > ").push_bind(*time);
            }
            TaskCondition::StartedBefore(time) => {
                query.push(" and t.start_time < ").push_bind(*time);
            }
        }
    }
    if let Some(groups) = visible_to {
        query
            .push(" and (cardinality(j.groups) = 0 or j.groups && ")
            .push_bind(groups.to_vec())
            .push(")");
    }
}

/// A page of a task search (no more than about `max_bytes` of free-form values,
/// [`rows_within`]) and the number of tasks matching it in all. With `visible_to`, only tasks
/// of jobs without groups or sharing one of these groups.
pub async fn search(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    search: &TaskSearch,
    visible_to: Option<&[String]>,
    max_bytes: usize,
) -> Result<(Vec<TaskView>, i64), Error> {
    let mut count: QueryBuilder<Postgres> =
        QueryBuilder::new("select count(*) from job_tasks t join jobs j on j.id = t.job_id");
    push_conditions(&mut count, search, visible_to);
    let total: i64 = count
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(translate)?;

    // The keys and sizes of the page first, then only the rows within the byte budget: a
    // task's incoming and outgoing values may be large.
    let mut page: QueryBuilder<Postgres> = QueryBuilder::new(
        "select t.job_id, t.task_id,
                (pg_column_size(t.incoming) + pg_column_size(t.outgoing)
                 + coalesce(pg_column_size(t.error), 0))::int4 as size
         from job_tasks t join jobs j on j.id = t.job_id",
    );
    push_conditions(&mut page, search, visible_to);
    let direction = if search.descending { "desc" } else { "asc" };
    let nulls = if search.descending {
        "nulls last"
    } else {
        "nulls first"
    };
    page.push(format!(
        " order by {} {direction} {nulls}, t.job_id {direction}, t.task_id {direction} limit ",
        sort_column(search.sort)
    ))
    .push_bind(search.limit)
    .push(" offset ")
    .push_bind(search.skip);
    let keys: Vec<(String, String, i32)> = page
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    let taken = rows_within(keys.iter().map(|(_, _, size)| *size), max_bytes);
    let refs: Vec<TaskRef> = keys[..taken]
        .iter()
        .map(|(job, task, _)| TaskRef::new(job, task))
        .collect();
    let position: std::collections::HashMap<&TaskRef, usize> =
        refs.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let mut tasks = get_many(conn, graphs, &refs).await?;
    tasks.sort_unstable_by_key(|task| position.get(&task.task).copied());
    Ok((tasks, total))
}

/// One task; None when its job has not reached it, or there is no such job.
pub async fn get(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    task: &TaskRef,
) -> Result<Option<TaskView>, Error> {
    Ok(get_many(conn, graphs, std::slice::from_ref(task))
        .await?
        .pop())
}

/// The tasks `refs` names that exist, in no particular order.
async fn get_many(
    conn: &mut PgConnection,
    graphs: &GraphCache,
    refs: &[TaskRef],
) -> Result<Vec<TaskView>, Error> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let jobs: Vec<&str> = refs.iter().map(|r| r.job_id.as_str()).collect();
    let tasks: Vec<&str> = refs.iter().map(|r| r.task_id.as_str()).collect();
    let rows = sqlx::query(&format!(
        "{TASK_COLUMNS} where (t.job_id, t.task_id) in
             (select * from unnest($1::text[], $2::text[]))"
    ))
    .bind(&jobs)
    .bind(&tasks)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)?;
    let graph_ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get::<String, _>("graph_id"))
        .collect::<Result<_, _>>()
        .map_err(translate)?;
    let graph_refs: Vec<&str> = graph_ids.iter().map(String::as_str).collect();
    let graphs = graphs.get_many(&mut *conn, &graph_refs).await?;
    rows.iter()
        .map(|row| {
            let view = read_task(row).map_err(translate)?;
            let graph_id: &str = row.try_get("graph_id").map_err(translate)?;
            let task = graphs
                .get(graph_id)
                .and_then(|graph| graph.tasks().get(&view.task.task_id));
            let fields = task.map(|task| task.fields.clone()).unwrap_or_default();
            let finish_states = [
                FinishState::Success,
                FinishState::Failure,
                FinishState::Error,
            ]
            .into_iter()
            .filter(|state| {
                task.and_then(|task| task.transitions.get(state.as_str()))
                    .is_some_and(|targets| !targets.is_empty())
            })
            .collect();
            Ok(TaskView {
                fields,
                finish_states,
                ..view
            })
        })
        .collect()
}

/// A row of [`TASK_COLUMNS`], without the workflow's fields of the task.
fn read_task(row: &sqlx::postgres::PgRow) -> Result<TaskView, sqlx::Error> {
    let owner: Option<String> = row.try_get("owner")?;
    let owner = match owner {
        Some(id) => Some(TaskOwner {
            who: OwnerRef {
                id,
                username: row.try_get("owner_username")?,
            },
            assigned_by: row
                .try_get::<Option<String>, _>("owner_assigned_by")?
                .unwrap_or_default(),
            assigned_at: row
                .try_get::<Option<DateTime<Utc>>, _>("owner_assigned_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let job_status: String = row.try_get("job_status")?;
    let finish_state: Option<String> = row.try_get("finish_state")?;
    Ok(TaskView {
        task: TaskRef::new(row.try_get("job_id")?, row.try_get("task_id")?),
        fields: Map::new(),
        status: parse_status(row.try_get("status")?),
        kind: kind_of(row.try_get("runner")?),
        finish_state: finish_state.as_deref().and_then(FinishState::parse),
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        iteration: row.try_get::<i32, _>("iteration")?.max(0) as u32,
        incoming: row.try_get::<Json<Map<String, Value>>, _>("incoming")?.0,
        outgoing: row.try_get::<Json<Map<String, Value>>, _>("outgoing")?.0,
        error: row.try_get::<Option<Json<Value>>, _>("error")?.map(|e| e.0),
        owner,
        job: TaskJob {
            id: row.try_get("job_id")?,
            name: row.try_get("workflow_name")?,
            description: row.try_get("job_description")?,
            status: serde_json::from_value(Value::String(job_status)).unwrap_or(JobStatus::Running),
            groups: row.try_get("job_groups")?,
        },
        finish_states: Vec::new(),
    })
}

/// What decides whether a task's owner may change: its row, locked until the transaction
/// ends, so that two callers changing one task's owner take turns and each sees what the
/// other did.
#[derive(Debug, Clone)]
pub struct LockedOwner {
    pub owner: Option<OwnerRef>,
    pub status: TaskStatus,
    pub kind: TaskKind,
    /// Who may see the task's job.
    pub job_groups: Vec<String>,
    pub graph_id: String,
}

/// Locks the run of `task` and reads its owner; None when its job has not reached it, or
/// there is no such job.
pub async fn lock_owner(
    conn: &mut PgConnection,
    task: &TaskRef,
) -> Result<Option<LockedOwner>, Error> {
    let row = sqlx::query(
        "select t.owner, t.owner_username, t.status, t.runner, j.groups, j.graph_id
         from job_tasks t join jobs j on j.id = t.job_id
         where t.job_id = $1 and t.task_id = $2
         for update of t",
    )
    .bind(&task.job_id)
    .bind(&task.task_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(translate)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let read = || -> Result<LockedOwner, sqlx::Error> {
        Ok(LockedOwner {
            owner: match row.try_get::<Option<String>, _>("owner")? {
                Some(id) => Some(OwnerRef {
                    id,
                    username: row.try_get("owner_username")?,
                }),
                None => None,
            },
            status: parse_status(row.try_get("status")?),
            kind: kind_of(row.try_get("runner")?),
            job_groups: row.try_get("groups")?,
            graph_id: row.try_get("graph_id")?,
        })
    };
    read().map(Some).map_err(translate)
}

/// Makes `owner` the owner of `task`, made so by `by` (an account id), or clears the owner
/// (`None`). The caller holds the row ([`lock_owner`]) and has checked the change is allowed.
pub async fn set_owner(
    conn: &mut PgConnection,
    task: &TaskRef,
    owner: Option<(&OwnerRef, &str)>,
) -> Result<(), Error> {
    let (owner, by) = owner.unzip();
    sqlx::query(
        "update job_tasks set owner = $3, owner_username = $4, owner_assigned_by = $5,
                owner_assigned_at = case when $3::text is null then null else now() end
         where job_id = $1 and task_id = $2",
    )
    .bind(&task.job_id)
    .bind(&task.task_id)
    .bind(owner.map(|owner| owner.id.as_str()))
    .bind(owner.and_then(|owner| owner.username.as_deref()))
    .bind(by)
    .execute(&mut *conn)
    .await
    .map_err(translate)?;
    Ok(())
}
