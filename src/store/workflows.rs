//! The `workflows` table.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{is_unique_violation, rows_within, translate};
use crate::domain::{Error, Workflow, WorkflowDocument};

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    document: Json<Map<String, Value>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WorkflowRow> for Workflow {
    fn from(row: WorkflowRow) -> Self {
        Workflow {
            document: WorkflowDocument::from_stored(row.document.0),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    workflow: &WorkflowDocument,
) -> Result<Workflow, Error> {
    sqlx::query_as::<_, WorkflowRow>(
        "insert into workflows (name, groups, document) values ($1, $2, $3)
         returning document, created_at, updated_at",
    )
    .bind(workflow.name())
    .bind(workflow.groups())
    .bind(Json(workflow.document()))
    .fetch_one(conn)
    .await
    .map(Workflow::from)
    .map_err(|error| {
        if is_unique_violation(&error) {
            Error::AlreadyExists(format!("Workflow {} already exists", workflow.name()))
        } else {
            translate(error)
        }
    })
}

/// The workflow named `name`.
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Workflow, Error> {
    sqlx::query_as::<_, WorkflowRow>(
        "select document, created_at, updated_at from workflows where name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(translate)?
    .map(Workflow::from)
    .ok_or_else(|| Error::workflow_not_found(name))
}

/// Up to `limit` workflows in name order, after `after` when given, and no more than about
/// `max_bytes` of them ([`rows_within`]); with `visible_to`, only those without groups or
/// sharing one of these groups.
pub async fn list(
    conn: &mut PgConnection,
    name_prefix: &str,
    visible_to: Option<&[String]>,
    after: Option<&str>,
    limit: i64,
    max_bytes: usize,
) -> Result<Vec<Workflow>, Error> {
    let sizes: Vec<(String, i32)> = sqlx::query_as(
        "select name, document_bytes from workflows
         where starts_with(name, $1) and ($2::text is null or name > $2)
           and ($4::text[] is null or cardinality(groups) = 0 or groups && $4)
         order by name
         limit $3",
    )
    .bind(name_prefix)
    .bind(after)
    .bind(limit)
    .bind(visible_to)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)?;
    by_name(conn, &sizes, max_bytes).await
}

/// The workflows of a page whose names (in name order) and sizes are `sizes`, as many as
/// [`rows_within`] `max_bytes` allows, in that order.
async fn by_name(
    conn: &mut PgConnection,
    sizes: &[(String, i32)],
    max_bytes: usize,
) -> Result<Vec<Workflow>, Error> {
    let taken = rows_within(sizes.iter().map(|(_, size)| *size), max_bytes);
    let names: Vec<&str> = sizes[..taken]
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let mut workflows: Vec<Workflow> = sqlx::query_as::<_, WorkflowRow>(
        "select document, created_at, updated_at from workflows where name = any($1)",
    )
    .bind(&names)
    .fetch_all(conn)
    .await
    .map_err(translate)?
    .into_iter()
    .map(Workflow::from)
    .collect();
    // In the database's order of names, which the page tokens follow (its collation may not
    // order as Rust compares strings).
    let position: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, i))
        .collect();
    workflows.sort_unstable_by_key(|workflow| position.get(workflow.document.name()).copied());
    Ok(workflows)
}

pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<(), Error> {
    let result = sqlx::query("delete from workflows where name = $1")
        .bind(name)
        .execute(conn)
        .await
        .map_err(translate)?;
    if result.rows_affected() == 0 {
        return Err(Error::workflow_not_found(name));
    }
    Ok(())
}

/// A page of workflows by name (exact or prefix) in name order (no more than about
/// `max_bytes` of it, [`rows_within`]), and how many match in all.
pub async fn search(
    conn: &mut PgConnection,
    name_equals: Option<&str>,
    name_prefix: Option<&str>,
    visible_to: Option<&[String]>,
    (limit, skip): (i64, i64),
    max_bytes: usize,
) -> Result<(Vec<Workflow>, i64), Error> {
    const FILTER: &str = "($1::text is null or name = $1)
           and ($2::text is null or starts_with(name, $2))
           and ($3::text[] is null or cardinality(groups) = 0 or groups && $3)";
    let total: i64 = sqlx::query_scalar(&format!("select count(*) from workflows where {FILTER}"))
        .bind(name_equals)
        .bind(name_prefix)
        .bind(visible_to)
        .fetch_one(&mut *conn)
        .await
        .map_err(translate)?;
    let query = format!(
        "select name, document_bytes from workflows where {FILTER}
         order by name limit $4 offset $5"
    );
    let sizes: Vec<(String, i32)> = sqlx::query_as(&query)
        .bind(name_equals)
        .bind(name_prefix)
        .bind(visible_to)
        .bind(limit)
        .bind(skip)
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    Ok((by_name(conn, &sizes, max_bytes).await?, total))
}

/// What a start needs of a workflow before it reads the document (only when its cache lacks
/// that revision).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StartTarget {
    pub name: String,
    pub revision: i64,
    pub groups: Vec<String>,
}

/// Locks the workflows named in `names` that exist against deletion until the transaction
/// ends (a job never starts from a workflow deleted under it) and returns their revision and
/// groups, without the documents.
pub async fn lock_for_start(
    conn: &mut PgConnection,
    names: &[&str],
) -> Result<Vec<StartTarget>, Error> {
    sqlx::query_as(
        "select name, revision, groups from workflows where name = any($1) order by name
         for key share",
    )
    .bind(names)
    .fetch_all(conn)
    .await
    .map_err(translate)
}
