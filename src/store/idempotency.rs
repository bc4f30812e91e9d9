//! The `idempotency_keys` table: locking and reading keys. A key is stored with its job, by the
//! statement that inserts the job (`starts::insert_started`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::translate;
use crate::domain::Error;

/// A key as its caller used it: keys are scoped to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopedKey {
    pub caller: String,
    pub key: String,
}

/// What is stored for a key: the request's fingerprint and the job it made.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub fingerprint: String,
    pub job_id: String,
}

/// Waits until no other transaction holds any of `keys`, and holds them until this
/// transaction ends: racing requests with one key run one after the other, so the second sees
/// the first's job. The locks are taken in one order (by hash), so two transactions locking
/// several keys cannot deadlock. Keys that hash alike only wait for each other, which is
/// harmless.
pub async fn lock_many(conn: &mut PgConnection, keys: &[ScopedKey]) -> Result<(), Error> {
    let (callers, names) = split(keys);
    sqlx::query(
        "select pg_advisory_xact_lock(h)
         from (select distinct hashtextextended(c || chr(31) || k, 0) as h
               from unnest($1::text[], $2::text[]) as t(c, k)
               order by h) as ordered",
    )
    .bind(&callers)
    .bind(&names)
    .execute(conn)
    .await
    .map_err(translate)?;
    Ok(())
}

/// What is stored for those of `keys` that are stored.
pub async fn find_many(
    conn: &mut PgConnection,
    keys: &[ScopedKey],
) -> Result<HashMap<ScopedKey, StoredKey>, Error> {
    let (callers, names) = split(keys);
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        // A lookup in the primary key for each key, whatever the table's statistics say (see
        // `starts::keys_not_stored`).
        "select i.caller, i.key, i.fingerprint, i.job_id
         from unnest($1::text[], $2::text[]) as t(c, k),
              lateral (select * from idempotency_keys i
                       where i.caller = t.c and i.key = t.k limit 1) i",
    )
    .bind(&callers)
    .bind(&names)
    .fetch_all(conn)
    .await
    .map_err(translate)?;
    Ok(rows
        .into_iter()
        .map(|(caller, key, fingerprint, job_id)| {
            (
                ScopedKey { caller, key },
                StoredKey {
                    fingerprint,
                    job_id,
                },
            )
        })
        .collect())
}

fn split(keys: &[ScopedKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter()
        .map(|k| (k.caller.as_str(), k.key.as_str()))
        .unzip()
}

/// Forgets keys stored before `before`; their jobs stay. Returns how many were removed.
pub(super) async fn purge(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, Error> {
    sqlx::query("delete from idempotency_keys where created_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(translate)
}
