//! The `workflows` table.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{fetch_bounded, is_unique_violation, translate};
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

/// A workflow of a list: its document as stored, parsed once the rows of a page are chosen.
#[derive(sqlx::FromRow)]
struct ListedRow {
    document: Json<Box<RawValue>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ListedRow {
    fn size(&self) -> usize {
        self.document.0.get().len()
    }

    fn into_workflow(self) -> Result<Workflow, Error> {
        let document = serde_json::from_str(self.document.0.get())
            .map_err(|error| Error::internal(anyhow::anyhow!("stored workflow: {error}")))?;
        Ok(Workflow {
            document: WorkflowDocument::from_stored(document),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
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
/// `max_bytes` of them ([`fetch_bounded`]); with `visible_to`, only those without groups or
/// sharing one of these groups.
pub async fn list(
    conn: &mut PgConnection,
    name_prefix: &str,
    visible_to: Option<&[String]>,
    after: Option<&str>,
    limit: i64,
    max_bytes: usize,
) -> Result<Vec<Workflow>, Error> {
    let rows = sqlx::query_as::<_, ListedRow>(
        "select document, created_at, updated_at from workflows
         where starts_with(name, $1) and ($2::text is null or name > $2)
           and ($4::text[] is null or cardinality(groups) = 0 or groups && $4)
         order by name
         limit $3",
    )
    .bind(name_prefix)
    .bind(after)
    .bind(limit)
    .bind(visible_to)
    .fetch(conn);
    fetch_bounded(rows, max_bytes, ListedRow::size)
        .await?
        .into_iter()
        .map(ListedRow::into_workflow)
        .collect()
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
/// `max_bytes` of it, [`fetch_bounded`]), and how many match in all.
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
        "select document, created_at, updated_at from workflows where {FILTER}
         order by name limit $4 offset $5"
    );
    let rows = sqlx::query_as::<_, ListedRow>(&query)
        .bind(name_equals)
        .bind(name_prefix)
        .bind(visible_to)
        .bind(limit)
        .bind(skip)
        .fetch(&mut *conn);
    let items = fetch_bounded(rows, max_bytes, ListedRow::size)
        .await?
        .into_iter()
        .map(ListedRow::into_workflow)
        .collect::<Result<_, _>>()?;
    Ok((items, total))
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
