//! Inserting new jobs, each with its first step or a wakeup for an engine, with one statement:
//! a batch of starts (`service::group_commit`) or the children a step starts
//! (`engine::spawn`). The statement takes the parameters of [`super::runs::save_many`]'s (the
//! rows of the steps, `SaveRows`) and the new jobs' rows (`JobRows`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::Row;

use super::jobs::{JobRows, NewJob};
use super::runs::{
    graph_of, save_event_rows, save_task_rows, save_wakeups, LockedJob, SaveRows, WAKEUPS,
};
use super::translate;
use crate::domain::{Error, TaskGraph};

/// Inserts new jobs with one statement: their rows (`jobs`, each showing its first step when
/// it was taken) and, when `steps` holds the first steps (one a job, in the order of `jobs`,
/// with a map holding their graphs), what the steps did; else a wakeup each, for an engine to
/// take it. Only if every workflow in
/// `unchanged` (names, each with its revision) still exists at that revision: those rows are
/// locked against deletion until the transaction ends, and otherwise nothing is written and
/// the answer is false. Alone on its connection, the statement is a transaction of its own.
pub async fn insert_started(
    conn: &mut PgConnection,
    jobs: &[NewJob<'_>],
    steps: Option<(&[LockedJob], &HashMap<String, TaskGraph>)>,
    unchanged: (&[&str], &[i64]),
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let mut rows = SaveRows::default();
    let statement = if steps.is_some() {
        INSERT_STEPPED
    } else {
        INSERT_WOKEN
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
    let new_jobs = JobRows::new(jobs);
    let written: bool = new_jobs
        .bind(rows.query(statement, now))
        .bind(unchanged.0)
        .bind(unchanged.1)
        .fetch_one(conn)
        .await
        .map_err(translate)?
        .get(0);
    Ok(written)
}

/// The start of [`insert_started`]'s statements, which take `runs::save_many`'s parameters,
/// then the new jobs' rows (`JobRows`, $41 to $50), then the workflows that must be unchanged
/// (names $51, revisions $52): those workflows, locked against deletion, whether they are
/// unchanged (`unchanged`), and the new jobs' rows. Every write is conditional on
/// `unchanged`.
macro_rules! insert_jobs_if_unchanged {
    () => {
        "with workflows_now as (
    select name, revision from workflows where name = any($51::text[]) order by name
    for key share
),
unchanged as (
    select count(*) = cardinality($51::text[]) as ok
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

/// [`insert_started`] with the first steps: the jobs' rows show them, and their task rows
/// and events are inserted too (new, so without `on conflict`).
const INSERT_STEPPED: &str = concat!(
    insert_jobs_if_unchanged!(),
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
",
    insert_wakeups_if_unchanged!()
);

/// [`insert_started`] without first steps: the jobs and their wakeups only. A statement of
/// its own, not [`INSERT_STEPPED`] with no task rows: PostgreSQL would still open and lock
/// `job_tasks`, `job_event_batches` and their indexes at every execution.
const INSERT_WOKEN: &str = concat!(insert_jobs_if_unchanged!(), insert_wakeups_if_unchanged!());
