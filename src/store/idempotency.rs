//! The `idempotency_keys` table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::translate;
use crate::domain::{Error, IdempotencyKey};

/// Waits until no other transaction holds (caller, key), and holds it until this transaction
/// ends: racing requests with one key run one after the other, so the second sees the first's
/// job. Keys that hash alike only wait for each other, which is harmless.
pub async fn lock(
    conn: &mut PgConnection,
    caller: &str,
    key: &IdempotencyKey,
) -> Result<(), Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))")
        .bind(caller)
        .bind(key.as_str())
        .execute(conn)
        .await
        .map_err(translate)?;
    Ok(())
}

/// The fingerprint and job id stored for (caller, key), if any.
pub async fn find(
    conn: &mut PgConnection,
    caller: &str,
    key: &IdempotencyKey,
) -> Result<Option<(String, String)>, Error> {
    sqlx::query_as(
        "select fingerprint, job_id from idempotency_keys where caller = $1 and key = $2",
    )
    .bind(caller)
    .bind(key.as_str())
    .fetch_optional(conn)
    .await
    .map_err(translate)
}

pub async fn insert(
    conn: &mut PgConnection,
    caller: &str,
    key: &IdempotencyKey,
    fingerprint: &str,
    job_id: &str,
) -> Result<(), Error> {
    sqlx::query(
        "insert into idempotency_keys (caller, key, fingerprint, job_id) values ($1, $2, $3, $4)",
    )
    .bind(caller)
    .bind(key.as_str())
    .bind(fingerprint)
    .bind(job_id)
    .execute(conn)
    .await
    .map_err(translate)?;
    Ok(())
}

/// Forgets keys stored before `before`; their jobs stay. Returns how many were removed.
pub async fn purge(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, Error> {
    sqlx::query("delete from idempotency_keys where created_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(translate)
}
