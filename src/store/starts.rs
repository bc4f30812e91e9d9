//! Inserting new jobs, each with its first step or a wakeup for an engine, with one statement:
//! a batch of starts (`service::group_commit`) or the children a step starts
//! (`engine::spawn`). The statement takes the parameters of [`super::runs::save_many`]'s (the
//! rows of the steps, `SaveRows`) and the new jobs' rows (`JobRows`), and the idempotency keys
//! of starts that have one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::Row;

use super::idempotency::{ScopedKey, StoredKey};
use super::jobs::{JobRows, NewJob};
use super::runs::{
    graph_of, save_event_rows, save_task_rows, save_wakeups, LockedJob, SaveRows, WAKEUPS,
};
use super::{sqlstate, translate};
use crate::domain::{Error, TaskGraph};

/// Inserts new jobs with one statement: their rows (`jobs`, each showing its first step when
/// it was taken) and, when `steps` holds the first steps (one a job, in the order of `jobs`,
/// with a map holding their graphs), what the steps did; else a wakeup each, for an engine to
/// take it; and `keys`, the idempotency keys of the starts that have one, each with its job.
/// Only if every workflow in `unchanged` (names, each with its revision) still exists at that
/// revision, and none of `keys` is stored yet: those workflows are locked against deletion
/// until the transaction ends, and otherwise nothing is written and the answer is false. A key
/// that another transaction stores meanwhile fails the statement, which then writes nothing
/// either: the answer is false too (the caller's transaction, if it has one, must be rolled
/// back). Alone on its connection, the statement is a transaction of its own.
pub async fn insert_started(
    conn: &mut PgConnection,
    jobs: &[NewJob<'_>],
    steps: Option<(&[LockedJob], &HashMap<String, TaskGraph>)>,
    unchanged: (&[&str], &[i64]),
    keys: &[(ScopedKey, StoredKey)],
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let mut rows = SaveRows::default();
    let statement = match (steps.is_some(), keys.is_empty()) {
        (true, true) => INSERT_STEPPED,
        (true, false) => INSERT_STEPPED_KEYED,
        (false, true) => INSERT_WOKEN,
        (false, false) => INSERT_WOKEN_KEYED,
    };
    match steps {
        Some((steps, graphs)) => {
            for locked in steps {
                rows.add(locked, graph_of(graphs, locked)?, false, now);
            }
        }
        None => {
            for new in jobs {
                rows.wake(&new.job.id, now);
            }
            if !jobs.is_empty() {
                rows.notify(WAKEUPS, "");
            }
        }
    }
    // In one order, so that two transactions storing some of the same keys wait for each
    // other instead of deadlocking.
    let mut keys: Vec<&(ScopedKey, StoredKey)> = keys.iter().collect();
    keys.sort_unstable_by(|(a, _), (b, _)| (&a.caller, &a.key).cmp(&(&b.caller, &b.key)));
    let callers: Vec<&str> = keys.iter().map(|(k, _)| k.caller.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.key.as_str()).collect();
    let fingerprints: Vec<&str> = keys.iter().map(|(_, s)| s.fingerprint.as_str()).collect();
    let job_ids: Vec<&str> = keys.iter().map(|(_, s)| s.job_id.as_str()).collect();
    let new_jobs = JobRows::new(jobs);
    let mut query = new_jobs
        .bind(rows.query(statement, now))
        .bind(unchanged.0)
        .bind(unchanged.1);
    if !keys.is_empty() {
        query = query
            .bind(&callers)
            .bind(&names)
            .bind(&fingerprints)
            .bind(&job_ids);
    }
    match query.fetch_one(conn).await {
        Ok(row) => Ok(row.get(0)),
        Err(sqlx::Error::Database(db))
            if db.code().as_deref() == Some(sqlstate::UNIQUE_VIOLATION)
                && db.constraint() == Some("idempotency_keys_pkey") =>
        {
            Ok(false)
        }
        Err(error) => Err(translate(error)),
    }
}

/// The start of [`insert_started`]'s statements, which take `runs::save_many`'s parameters,
/// then the new jobs' rows (`JobRows`, $41 to $50), then the workflows that must be unchanged
/// (names $51, revisions $52), then in the statements with keys the keys (callers $53, keys
/// $54, fingerprints $55, job ids $56): those workflows, locked against deletion, whether they
/// are unchanged and the keys not stored (`unchanged`, given `keys_not_stored!` for the
/// keys), and the new jobs' rows. Every write is conditional on `unchanged`.
macro_rules! insert_jobs_if_unchanged {
    ($($keys_not_stored:expr)?) => {
        concat!("with workflows_now as (
    select name, revision from workflows where name = any($51::text[]) order by name
    for key share
),
unchanged as (
    select count(*) = cardinality($51::text[])", $($keys_not_stored,)? " as ok
    from workflows_now w join unnest($51::text[], $52::int8[]) as e(name, revision)
         on e.name = w.name and e.revision = w.revision
),
new_jobs as (
    insert into jobs (id, workflow_name, status, groups, created_at, updated_at, created_by,
                      document, graph_id, event_sequence)
    select id, workflow_name, status, array(select jsonb_array_elements_text(groups)),
           created_at, updated_at, created_by, document, graph_id, event_sequence
    from unnest($41::text[], $42::text[], $43::text[], $44::jsonb[], $45::timestamptz[],
                $46::timestamptz[], $47::text[], $48::jsonb[], $49::text[], $50::int8[])
         as j(id, workflow_name, status, groups, created_at, updated_at, created_by, document,
              graph_id, event_sequence)
    where (select ok from unchanged)
),
")
    };
}

/// The condition on the keys of `insert_jobs_if_unchanged!`: none is stored, as far as the
/// statement sees (one stored by a transaction that commits meanwhile fails the insert of
/// `insert_keys!` instead). A lookup in the primary key for each key, whatever the table's
/// statistics say: a join could be planned as a scan of the whole table while the table is
/// new, and batches keep their plans (`Store::dedicated`).
macro_rules! keys_not_stored {
    () => {
        "
           and not exists (select from unnest($53::text[], $54::text[]) as k(caller, key),
                           lateral (select from idempotency_keys i
                                    where i.caller = k.caller and i.key = k.key limit 1) stored)"
    };
}

/// The keys' rows (without `on conflict`: a key stored meanwhile fails the statement).
macro_rules! insert_keys {
    () => {
        "keys as (
    insert into idempotency_keys (caller, key, fingerprint, job_id)
    select * from unnest($53::text[], $54::text[], $55::text[], $56::text[])
    where (select ok from unchanged)
),
"
    };
}

/// The end of [`insert_started`]'s statements: the new jobs' wakeups (without `on conflict`,
/// a speculative insertion a row: they are new), the notifications, and the answer.
macro_rules! insert_wakeups_if_unchanged {
    () => {
        concat!(
            "woken as (",
            save_wakeups!(),
            "
    where (select ok from unchanged)
)
select u.ok, (select count(pg_notify(n.channel, n.payload))
              from unnest($34::text[], $35::text[]) as n(channel, payload) where u.ok)
from unchanged u"
        )
    };
}

/// What [`insert_started`] inserts with the first steps beside the jobs: their task rows and
/// events (new, so without `on conflict`).
macro_rules! insert_steps_if_unchanged {
    () => {
        concat!(
            "tasks as (",
            save_task_rows!(),
            "
    where (select ok from unchanged)
),
events as (",
            save_event_rows!(),
            "
    where (select ok from unchanged)
),
"
        )
    };
}

/// [`insert_started`] with the first steps: the jobs' rows show them, and their task rows
/// and events are inserted too.
const INSERT_STEPPED: &str = concat!(
    insert_jobs_if_unchanged!(),
    insert_steps_if_unchanged!(),
    insert_wakeups_if_unchanged!()
);

/// [`INSERT_STEPPED`] with idempotency keys.
const INSERT_STEPPED_KEYED: &str = concat!(
    insert_jobs_if_unchanged!(keys_not_stored!()),
    insert_keys!(),
    insert_steps_if_unchanged!(),
    insert_wakeups_if_unchanged!()
);

/// [`insert_started`] without first steps: the jobs and their wakeups only. A statement of
/// its own, not [`INSERT_STEPPED`] with no task rows: PostgreSQL would still open and lock
/// `job_tasks`, `job_event_batches` and their indexes at every execution.
const INSERT_WOKEN: &str = concat!(insert_jobs_if_unchanged!(), insert_wakeups_if_unchanged!());

/// [`INSERT_WOKEN`] with idempotency keys.
const INSERT_WOKEN_KEYED: &str = concat!(
    insert_jobs_if_unchanged!(keys_not_stored!()),
    insert_keys!(),
    insert_wakeups_if_unchanged!()
);
