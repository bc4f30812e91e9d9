//! The `idempotency_keys` table.

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
        "select i.caller, i.key, i.fingerprint, i.job_id
         from idempotency_keys i
         join unnest($1::text[], $2::text[]) as t(c, k) on i.caller = t.c and i.key = t.k",
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

/// Stores each key with the fingerprint of its request and the id of the job it made.
pub async fn insert_many(
    conn: &mut PgConnection,
    keys: &[(ScopedKey, StoredKey)],
) -> Result<(), Error> {
    let callers: Vec<&str> = keys.iter().map(|(k, _)| k.caller.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.key.as_str()).collect();
    let fingerprints: Vec<&str> = keys.iter().map(|(_, s)| s.fingerprint.as_str()).collect();
    let job_ids: Vec<&str> = keys.iter().map(|(_, s)| s.job_id.as_str()).collect();
    sqlx::query(
        "insert into idempotency_keys (caller, key, fingerprint, job_id)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::text[])",
    )
    .bind(&callers)
    .bind(&names)
    .bind(&fingerprints)
    .bind(&job_ids)
    .execute(conn)
    .await
    .map_err(translate)?;
    Ok(())
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
