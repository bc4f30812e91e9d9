//! The run state of jobs: `job_tasks` (each task a job reached), `job_wakeups` (jobs the
//! engine must look at, and when) and `job_event_batches` (what happened, in order; the events
//! one statement records for a job are one row, see its migration). Every change of a job's
//! run state is made while its `jobs` row is locked ([`lock`]); workers' claims and heartbeats
//! touch only their task's row.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::translate;
use crate::domain::graph::TaskStatus;
use crate::domain::run::{
    ChildOutcome, FinishState, JobEvent, Progress, Runner, RunningJob, TaskRun, WorkerTask,
};
use crate::domain::{Error, Job, JobStatus, TaskGraph};

/// Channels of PostgreSQL notifications the engine listens on.
pub const WAKEUPS: &str = "job_service_wakeups";
pub const TASKS: &str = "job_service_tasks";
pub const EVENTS: &str = "job_service_events";

/// A job loaded for one step, its `jobs` row locked until the transaction ends.
#[derive(Debug)]
pub struct LockedJob {
    pub job: RunningJob,
    pub graph_id: String,
    pub groups: Vec<String>,
    /// The account that started the job (its children act for it).
    pub created_by: String,
    /// The job's `ancestors`: the ids of its parents, outermost first, and its own.
    pub ancestors: Vec<String>,
    /// The job that started this one with a childJob task, woken when this one ends.
    pub parent_id: Option<String>,
    event_sequence: i64,
    /// The lease of each task a worker holds: its token.
    leases: HashMap<String, Uuid>,
}

impl LockedJob {
    /// A job not inserted yet (no other transaction sees it), whose first step
    /// [`super::starts::insert_started`] inserts with it.
    pub fn started(job: &Job, run: RunningJob, graph_id: String) -> Self {
        LockedJob {
            job: run,
            graph_id,
            groups: job.groups.clone(),
            created_by: job.created_by.clone(),
            ancestors: job.ancestors.clone(),
            parent_id: parent_of(&job.parent),
            event_sequence: 0,
            leases: HashMap::new(),
        }
    }

    /// The sequence of the job's last event.
    pub fn event_sequence(&self) -> i64 {
        self.event_sequence + self.job.events.len() as i64
    }

    /// Each task a worker holds, with its lease token.
    pub fn leases(&self) -> impl Iterator<Item = (&str, Uuid)> {
        self.leases
            .iter()
            .map(|(task, token)| (task.as_str(), *token))
    }
}

/// The id of the job a job's `parent` names, if any.
fn parent_of(parent: &Value) -> Option<String> {
    parent.get("job").and_then(Value::as_str).map(str::to_owned)
}

fn task_status(text: &str) -> TaskStatus {
    serde_json::from_value(Value::String(text.to_owned())).unwrap_or(TaskStatus::Incomplete)
}

fn status_text(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Incomplete => "incomplete",
        TaskStatus::Scheduled => "scheduled",
        TaskStatus::Running => "running",
        TaskStatus::Complete => "complete",
        TaskStatus::Error => "error",
        TaskStatus::Canceled => "canceled",
    }
}

fn runner_of(kind: &str, app: String) -> Runner {
    match kind {
        "engine" => Runner::Engine,
        "manual" => Runner::Manual,
        _ => Runner::Worker { app },
    }
}

fn runner_text(runner: &Runner) -> (&'static str, &str) {
    match runner {
        Runner::Engine => ("engine", ""),
        Runner::Manual => ("manual", ""),
        Runner::Worker { app } => ("worker", app.as_str()),
    }
}

/// The run of every task of `job_id`, with the lease token of those a worker holds.
async fn runs_of(
    conn: &mut PgConnection,
    job_ids: &[&str],
) -> Result<Vec<(String, String, TaskRun, Option<Uuid>)>, Error> {
    let rows = sqlx::query(
        "select job_id, task_id, status, runner, app, finish_state, start_time, end_time,
                iteration, attempt, retries, incoming, outgoing, error, due_at, lease_token,
                lease_deadline, progress
         from job_tasks where job_id = any($1)",
    )
    .bind(job_ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)?;
    rows.into_iter()
        .map(|row| {
            let status = task_status(row.try_get::<&str, _>("status")?);
            let runner = runner_of(row.try_get("runner")?, row.try_get("app")?);
            let lease_deadline: Option<DateTime<Utc>> = row.try_get("lease_deadline")?;
            let due_at: Option<DateTime<Utc>> = row.try_get("due_at")?;
            // A lease is a timer too: when it runs out, the engine offers the task again.
            let due_at = match (status, &runner) {
                (TaskStatus::Running, Runner::Worker { .. }) => lease_deadline,
                _ => due_at,
            };
            let finish_state: Option<String> = row.try_get("finish_state")?;
            let run = TaskRun {
                status,
                runner,
                finish_state: finish_state.as_deref().and_then(FinishState::parse),
                start_time: row.try_get("start_time")?,
                end_time: row.try_get("end_time")?,
                iteration: row.try_get::<i32, _>("iteration")?.max(0) as u32,
                attempt: row.try_get::<i32, _>("attempt")?.max(0) as u32,
                retries: row.try_get::<i32, _>("retries")?.max(0) as u32,
                incoming: row.try_get::<Json<Map<String, Value>>, _>("incoming")?.0,
                outgoing: row.try_get::<Json<Map<String, Value>>, _>("outgoing")?.0,
                error: row.try_get::<Option<Json<Value>>, _>("error")?.map(|e| e.0),
                due_at,
                progress: row
                    .try_get::<Option<Json<Value>>, _>("progress")?
                    .and_then(|p| serde_json::from_value(p.0).ok()),
            };
            Ok((
                row.try_get("job_id")?,
                row.try_get("task_id")?,
                run,
                row.try_get("lease_token")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(translate)
}

/// The run state of these jobs, by job id and task id (for reading jobs).
pub async fn runs_by_job(
    conn: &mut PgConnection,
    job_ids: &[&str],
) -> Result<HashMap<String, BTreeMap<String, TaskRun>>, Error> {
    let mut by_job: HashMap<String, BTreeMap<String, TaskRun>> = HashMap::new();
    for (job_id, task_id, run, _) in runs_of(conn, job_ids).await? {
        by_job.entry(job_id).or_default().insert(task_id, run);
    }
    Ok(by_job)
}

/// The columns of a job that a step reads, for the jobs `$filter` picks, their rows locked: in
/// id order, so that two transactions locking overlapping sets of jobs wait for each other
/// instead of deadlocking.
macro_rules! lock_jobs_where {
    ($filter:literal) => {
        concat!(
            "select id, status, graph_id, groups, event_sequence, created_by,
                    coalesce(document->'variables', '{}') as variables,
                    coalesce(document->'error', '[]') as errors,
                    coalesce(document->'ancestors', '[]') as ancestors,
                    document->'parent'->>'job' as parent_id
             from jobs where ",
            $filter,
            " order by id for update"
        )
    };
}

const LOCK_JOBS: &str = lock_jobs_where!("id = any($1)");

/// The same, for the jobs holding the leases `$1` names.
const LOCK_HOLDERS: &str =
    lock_jobs_where!("id in (select job_id from job_tasks where lease_token = any($1))");

/// Loads `job_ids` for one step each and locks their rows until the transaction ends; ids
/// with no job are left out.
pub async fn lock_many(conn: &mut PgConnection, job_ids: &[&str]) -> Result<Vec<LockedJob>, Error> {
    let rows = sqlx::query(LOCK_JOBS)
        .bind(job_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    locked_jobs(conn, rows).await
}

/// Loads and locks the jobs of the tasks whose leases `tokens` name (tokens that name none
/// are left out).
pub async fn lock_holders(
    conn: &mut PgConnection,
    tokens: &[Uuid],
) -> Result<Vec<LockedJob>, Error> {
    let rows = sqlx::query(LOCK_HOLDERS)
        .bind(tokens)
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?;
    locked_jobs(conn, rows).await
}

/// The locked jobs of `rows` with the run of each of their tasks, read after the lock so that
/// they are the latest committed.
async fn locked_jobs(
    conn: &mut PgConnection,
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<Vec<LockedJob>, Error> {
    let read = |row: &sqlx::postgres::PgRow| -> Result<LockedJob, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let variables = match row.try_get::<Json<Value>, _>("variables")?.0 {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let errors = match row.try_get::<Json<Value>, _>("errors")?.0 {
            Value::Array(list) => list,
            _ => Vec::new(),
        };
        let status = job_status(status);
        let ancestors = match row.try_get::<Json<Value>, _>("ancestors")?.0 {
            Value::Array(list) => list
                .into_iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(LockedJob {
            job: RunningJob::new(row.try_get("id")?, status, variables, errors),
            graph_id: row.try_get("graph_id")?,
            groups: row.try_get("groups")?,
            created_by: row.try_get("created_by")?,
            ancestors,
            parent_id: row.try_get("parent_id")?,
            event_sequence: row.try_get("event_sequence")?,
            leases: HashMap::new(),
        })
    };
    let mut jobs = rows
        .iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()
        .map_err(translate)?;
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let ids: Vec<&str> = jobs.iter().map(|locked| locked.job.id.as_str()).collect();
    let runs = runs_of(conn, &ids).await?;
    let position: HashMap<String, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, locked)| (locked.job.id.clone(), i))
        .collect();
    for (job_id, task_id, run, token) in runs {
        let Some(&i) = position.get(&job_id) else {
            continue;
        };
        let locked = &mut jobs[i];
        if let Some(token) = token {
            locked.leases.insert(task_id.clone(), token);
        }
        locked.job.runs.insert(task_id, run);
    }
    children_of(conn, &mut jobs).await?;
    Ok(jobs)
}

/// Loads what a step needs to know of the child jobs of `jobs`' childJob tasks under way:
/// each child's status, and the variables of those whose task can finish (every child
/// ended). Two small reads, only for jobs waiting for children.
async fn children_of(conn: &mut PgConnection, jobs: &mut [LockedJob]) -> Result<(), Error> {
    // Per job, the children each of its running childJob tasks waits for, and whether the
    // task has started all it will.
    let waiting: Vec<Vec<(bool, Vec<String>)>> = jobs
        .iter()
        .map(|locked| {
            locked
                .job
                .runs
                .values()
                .filter(|run| run.status == TaskStatus::Running)
                .filter_map(|run| match &run.progress {
                    Some(Progress::Children {
                        started, pending, ..
                    }) if !started.is_empty() => Some((pending.is_empty(), started.clone())),
                    _ => None,
                })
                .collect()
        })
        .collect();
    for locked in jobs.iter_mut() {
        locked.job.children = Some(HashMap::new());
    }
    let ids: Vec<&String> = waiting.iter().flatten().flat_map(|(_, ids)| ids).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let statuses: HashMap<String, JobStatus> =
        sqlx::query_as::<_, (String, String)>("select id, status from jobs where id = any($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(translate)?
            .into_iter()
            .map(|(id, status)| (id, job_status(status)))
            .collect();
    let open = |id: &String| {
        statuses
            .get(id)
            .is_some_and(|s| matches!(s, JobStatus::Running | JobStatus::Paused))
    };
    // The children of tasks that are done waiting: their variables become the task's result.
    let finishing: Vec<&String> = waiting
        .iter()
        .flatten()
        .filter(|(all_started, started)| *all_started && !started.iter().any(open))
        .flat_map(|(_, started)| started)
        .collect();
    let mut variables: HashMap<String, Map<String, Value>> = HashMap::new();
    if !finishing.is_empty() {
        variables = sqlx::query_as::<_, (String, Json<Map<String, Value>>)>(
            "select id, coalesce(document->'variables', '{}') from jobs where id = any($1)",
        )
        .bind(&finishing)
        .fetch_all(&mut *conn)
        .await
        .map_err(translate)?
        .into_iter()
        .map(|(id, vars)| (id, vars.0))
        .collect();
    }
    for (locked, tasks) in jobs.iter_mut().zip(waiting) {
        let known = locked.job.children.get_or_insert_with(HashMap::new);
        for id in tasks.into_iter().flat_map(|(_, ids)| ids) {
            // A child deleted by hand counts as canceled: its parent must not wait for ever.
            let status = statuses.get(&id).copied().unwrap_or(JobStatus::Canceled);
            let vars = variables.remove(&id);
            known.insert(
                id,
                ChildOutcome {
                    status,
                    variables: vars,
                },
            );
        }
    }
    Ok(())
}

fn job_status(text: String) -> JobStatus {
    serde_json::from_value::<JobStatus>(Value::String(text)).unwrap_or(JobStatus::Running)
}

/// The groups of `job_id` (who may see it), without locking it; None when there is no such job.
pub async fn groups_of(
    conn: &mut PgConnection,
    job_id: &str,
) -> Result<Option<Vec<String>>, Error> {
    sqlx::query_scalar("select groups from jobs where id = $1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(translate)
}

/// Writes what steps changed in `jobs`, all in one statement: the touched task runs, each
/// job's status, variables, errors and metrics, its events, when to look at it again, and the
/// notifications that wake workers and watchers (delivered when the transaction commits).
/// `graphs` holds the graph of every job.
pub async fn save_many(
    conn: &mut PgConnection,
    jobs: &mut [LockedJob],
    graphs: &HashMap<String, TaskGraph>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    {
        let mut rows = SaveRows::default();
        for locked in jobs.iter() {
            rows.add(locked, graph_of(graphs, locked)?, true, now);
        }
        rows.query(SAVE, now)
            .execute(&mut *conn)
            .await
            .map_err(translate)?;
    }

    for locked in jobs.iter_mut() {
        locked.event_sequence += locked.job.events.len() as i64;
        let job = &mut locked.job;
        for id in &job.touched {
            if job
                .runs
                .get(id)
                .is_none_or(|run| run.status != TaskStatus::Running)
            {
                locked.leases.remove(id);
            }
        }
        job.touched.clear();
        job.events.clear();
        job.job_changed = false;
        job.offers = false;
    }
    Ok(())
}

/// The graph of `locked`, which `graphs` must hold.
pub(super) fn graph_of<'g>(
    graphs: &'g HashMap<String, TaskGraph>,
    locked: &LockedJob,
) -> Result<&'g TaskGraph, Error> {
    graphs
        .get(&locked.graph_id)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("job graph {} is missing", locked.graph_id)))
}

/// What [`save_many`] and [`super::starts::insert_started`] write, a column a parameter
/// (arrays that `unnest` turns into rows): encoded straight from the jobs, with no JSON built
/// in the service and parsed again by PostgreSQL but the free-form values.
#[derive(Default)]
pub(super) struct SaveRows<'a> {
    // job_tasks
    task_job: Vec<&'a str>,
    task_id: Vec<&'a str>,
    task_status: Vec<&'static str>,
    runner: Vec<&'static str>,
    app: Vec<&'a str>,
    name: Vec<&'a str>,
    finish_state: Vec<Option<&'static str>>,
    start_time: Vec<Option<DateTime<Utc>>>,
    end_time: Vec<Option<DateTime<Utc>>>,
    iteration: Vec<i32>,
    attempt: Vec<i32>,
    retries: Vec<i32>,
    incoming: Vec<Json<&'a Map<String, Value>>>,
    outgoing: Vec<Json<&'a Map<String, Value>>>,
    error: Vec<Option<Json<&'a Value>>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    task_progress: Vec<Option<Json<&'a Progress>>>,
    // job_event_batches: a row a job (its id, its last event's sequence, and where its events
    // begin and end, from 1, in the arrays of events that follow)
    event_job: Vec<&'a str>,
    sequence: Vec<i64>,
    events_from: Vec<i32>,
    events_to: Vec<i32>,
    event_task: Vec<&'a str>,
    kind: Vec<&'static str>,
    event_status: Vec<&'a str>,
    event_finish: Vec<&'a str>,
    at: Vec<DateTime<Utc>>,
    // jobs
    job_id: Vec<&'a str>,
    job_status: Vec<&'static str>,
    event_sequence: Vec<i64>,
    variables: Vec<Json<&'a Map<String, Value>>>,
    errors: Vec<Json<&'a Vec<Value>>>,
    progress: Vec<f64>,
    job_end: Vec<Option<i64>>,
    // job_wakeups, and notifications
    woken: Vec<&'a str>,
    woken_at: Vec<DateTime<Utc>>,
    asleep: Vec<&'a str>,
    channels: Vec<&'static str>,
    payloads: Vec<&'a str>,
}

impl<'a> SaveRows<'a> {
    pub(super) fn add(
        &mut self,
        locked: &'a LockedJob,
        graph: &'a TaskGraph,
        update_jobs: bool,
        now: DateTime<Utc>,
    ) {
        let job = &locked.job;
        for (id, run) in job
            .touched
            .iter()
            .filter_map(|id| job.runs.get(id).map(|run| (id, run)))
        {
            let (runner, app) = runner_text(&run.runner);
            self.task_job.push(&job.id);
            self.task_id.push(id);
            self.task_status.push(status_text(run.status));
            self.runner.push(runner);
            self.app.push(app);
            self.name.push(
                graph
                    .tasks()
                    .get(id)
                    .and_then(|task| task.fields.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            self.finish_state
                .push(run.finish_state.map(FinishState::as_str));
            self.start_time.push(run.start_time);
            self.end_time.push(run.end_time);
            self.iteration.push(clamp(run.iteration));
            self.attempt.push(clamp(run.attempt));
            self.retries.push(clamp(run.retries));
            self.incoming.push(Json(&run.incoming));
            self.outgoing.push(Json(&run.outgoing));
            self.error.push(run.error.as_ref().map(Json));
            // A running worker task's timer is its lease, kept in the lease columns.
            self.due_at.push(match (run.status, &run.runner) {
                (TaskStatus::Running, Runner::Worker { .. }) => None,
                _ => run.due_at,
            });
            self.task_progress.push(run.progress.as_ref().map(Json));
        }
        if !job.events.is_empty() {
            self.event_job.push(&job.id);
            self.sequence
                .push(locked.event_sequence + job.events.len() as i64);
            self.events_from
                .push(array_index(self.event_task.len() + 1));
            for event in &job.events {
                self.event_task.push(&event.task_id);
                self.kind.push(event.kind);
                self.event_status.push(&event.status);
                self.event_finish.push(&event.finish_state);
                self.at.push(event.at);
            }
            self.events_to.push(array_index(self.event_task.len()));
        }
        if update_jobs && (job.job_changed || !job.touched.is_empty() || !job.events.is_empty()) {
            self.job_id.push(&job.id);
            self.job_status.push(job.status.as_str());
            self.event_sequence
                .push(locked.event_sequence + job.events.len() as i64);
            self.variables.push(Json(&job.variables));
            self.errors.push(Json(&job.errors));
            self.progress.push(job.progress(graph));
            self.job_end
                .push(job.end_time.map(|at| at.timestamp_millis()));
        }
        match job.next_wakeup() {
            Some(at) => self.wake(&job.id, at),
            // A job just inserted has no wakeup to remove.
            None if update_jobs => self.asleep.push(&job.id),
            None => {}
        }
        // A child job that ended wakes its parent, whose childJob task waits for it.
        if let (Some(parent), true) = (&locked.parent_id, job.status.is_final()) {
            if job.job_changed {
                self.wake(parent, now);
            }
        }
        if job.offers && !self.channels.contains(&TASKS) {
            self.channels.push(TASKS);
            self.payloads.push("");
        }
        // Watchers are told of new events, but not of a job's first: no one can be watching a
        // job whose start has not been answered yet, and each notification costs every
        // listening instance a wakeup.
        if update_jobs && !job.events.is_empty() {
            self.channels.push(EVENTS);
            self.payloads.push(&job.id);
        }
    }

    /// Sends `payload` on `channel` when the transaction commits.
    pub(super) fn notify(&mut self, channel: &'static str, payload: &'a str) {
        self.channels.push(channel);
        self.payloads.push(payload);
    }

    /// Wakes `job_id` at `at` (the earliest, if it is woken twice): one row a job, which one
    /// statement may not write twice.
    pub(super) fn wake(&mut self, job_id: &'a str, at: DateTime<Utc>) {
        match self.woken.iter().position(|id| *id == job_id) {
            Some(i) => self.woken_at[i] = self.woken_at[i].min(at),
            None => {
                self.woken.push(job_id);
                self.woken_at.push(at);
            }
        }
        self.asleep.retain(|id| *id != job_id);
    }

    pub(super) fn query(
        &'a self,
        statement: &'static str,
        now: DateTime<Utc>,
    ) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(statement)
            .bind(&self.task_job)
            .bind(&self.task_id)
            .bind(&self.task_status)
            .bind(&self.runner)
            .bind(&self.app)
            .bind(&self.name)
            .bind(&self.finish_state)
            .bind(&self.start_time)
            .bind(&self.end_time)
            .bind(&self.iteration)
            .bind(&self.attempt)
            .bind(&self.retries)
            .bind(&self.incoming)
            .bind(&self.outgoing)
            .bind(&self.error)
            .bind(&self.due_at)
            .bind(&self.event_job)
            .bind(&self.sequence)
            .bind(&self.event_task)
            .bind(&self.kind)
            .bind(&self.event_status)
            .bind(&self.event_finish)
            .bind(&self.at)
            .bind(&self.job_id)
            .bind(&self.job_status)
            .bind(&self.event_sequence)
            .bind(&self.variables)
            .bind(&self.errors)
            .bind(&self.progress)
            .bind(&self.job_end)
            .bind(&self.woken)
            .bind(&self.woken_at)
            .bind(&self.asleep)
            .bind(&self.channels)
            .bind(&self.payloads)
            .bind(now)
            .bind(now.to_rfc3339_opts(SecondsFormat::Millis, true))
            .bind(&self.task_progress)
            .bind(&self.events_from)
            .bind(&self.events_to)
    }
}

/// A position in an array parameter, from 1 (a statement's arrays are far shorter than
/// `i32::MAX`).
fn array_index(position: usize) -> i32 {
    i32::try_from(position).unwrap_or(i32::MAX)
}

/// A count stored in an `integer` column.
fn clamp(count: u32) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// The parts [`SAVE`] and `starts::INSERT_STEPPED` share (`concat!` takes only literals, hence
/// macros): the task rows, selected from the statement's parameters, to insert into
/// `job_tasks as t`; the events, a row a job holding its slice of the event arrays; the
/// wakeups to insert; the notifications.
macro_rules! save_task_rows {
    () => {
        "insert into job_tasks as t (job_id, task_id, status, runner, app, name, finish_state,
        start_time, end_time, iteration, attempt, retries, incoming, outgoing, error, due_at,
        progress, ready_at)
    select r.*, now()
    from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[], $9::timestamptz[], $10::int4[], $11::int4[],
                $12::int4[], $13::jsonb[], $14::jsonb[], $15::jsonb[], $16::timestamptz[],
                $38::jsonb[])
         as r(job_id, task_id, status, runner, app, name, finish_state, start_time, end_time,
              iteration, attempt, retries, incoming, outgoing, error, due_at, progress)"
    };
}
macro_rules! save_event_rows {
    () => {
        "insert into job_event_batches (job_id, sequence, task_ids, kinds, statuses, finish_states,
                                   ats)
    select b.job_id, b.sequence, ($19::text[])[b.first:b.last], ($20::text[])[b.first:b.last],
           ($21::text[])[b.first:b.last], ($22::text[])[b.first:b.last],
           ($23::timestamptz[])[b.first:b.last]
    from unnest($17::text[], $18::int8[], $39::int4[], $40::int4[])
         as b(job_id, sequence, first, last)"
    };
}
macro_rules! save_wakeups {
    () => {
        "insert into job_wakeups (job_id, due_at)
    select * from unnest($31::text[], $32::timestamptz[])"
    };
}
pub(super) use {save_event_rows, save_task_rows, save_wakeups};
macro_rules! save_notifications {
    () => {
        "select pg_notify(n.channel, n.payload) from unnest($34::text[], $35::text[]) as n(channel, payload)"
    };
}

/// One statement for [`save_many`]: data-modifying `with` queries all run, whether the final
/// query reads them or not; each touches rows the others do not.
const SAVE: &str = concat!(
    "with tasks as (",
    save_task_rows!(),
    "
    on conflict (job_id, task_id) do update set
        status = excluded.status, runner = excluded.runner, app = excluded.app,
        name = excluded.name, finish_state = excluded.finish_state,
        start_time = excluded.start_time, end_time = excluded.end_time,
        iteration = excluded.iteration, attempt = excluded.attempt,
        retries = excluded.retries, incoming = excluded.incoming,
        outgoing = excluded.outgoing, error = excluded.error, due_at = excluded.due_at,
        progress = excluded.progress,
        -- A task offered again goes to the back of the line; a lease ends with the task's run.
        ready_at = case when excluded.status = 'scheduled' and t.status <> 'scheduled'
                        then now() else t.ready_at end,
        -- A canceled task keeps its token, so its worker's heartbeat learns why.
        lease_token = case when excluded.status in ('running', 'canceled')
                           then t.lease_token end,
        lease_deadline = case when excluded.status = 'running' then t.lease_deadline end,
        stream_id = case when excluded.status = 'running' then t.stream_id end,
        worker_id = case when excluded.status = 'running' then t.worker_id end
),
events as (",
    save_event_rows!(),
    "),
changed as (
    update jobs set status = u.status, updated_at = $36, event_sequence = u.event_sequence,
        document = document || jsonb_build_object(
            'status', u.status, 'variables', u.variables, 'error', u.errors,
            'last_updated', $37::text,
            'metrics', (coalesce(document->'metrics', '{}')
                        - case when u.status in ('running', 'paused') then array['end_time']
                               else array[]::text[] end)
                       || jsonb_build_object('progress', u.progress)
                       || case when u.end_time is null then '{}'::jsonb
                               else jsonb_build_object('end_time', u.end_time) end)
    from unnest($24::text[], $25::text[], $26::int8[], $27::jsonb[], $28::jsonb[],
                $29::float8[], $30::int8[])
         as u(id, status, event_sequence, variables, errors, progress, end_time)
    where jobs.id = u.id
),
woken as (",
    save_wakeups!(),
    "
    on conflict (job_id) do update set due_at = excluded.due_at
),
asleep as (
    delete from job_wakeups where job_id = any($33)
)
",
    save_notifications!()
);

/// Takes up to `limit` jobs whose wakeup is due and locks them (other instances skip them
/// until this transaction ends), and removes their wakeups; a step that needs one later writes
/// it again. A job locked by another transaction (a lifecycle call, a completion) is skipped:
/// waiting for it while holding its wakeup, which that transaction writes too, would deadlock.
pub async fn take_due(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>, Error> {
    sqlx::query_scalar(
        "delete from job_wakeups where job_id in (
             select w.job_id from job_wakeups w join jobs j on j.id = w.job_id
             where w.due_at <= now()
             order by w.due_at limit $1 for update of w, j skip locked)
         returning job_id",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)
}

/// Wakes the jobs whose workers' leases ran out (a worker that died holds none any more). A
/// safety net beside the wakeups steps write: it needs no job lock.
pub async fn wake_expired_leases(conn: &mut PgConnection) -> Result<u64, Error> {
    let done = sqlx::query(
        "insert into job_wakeups (job_id, due_at)
         select distinct job_id, now() from job_tasks
         where status = 'running' and runner = 'worker' and lease_deadline < now()
         on conflict (job_id) do update set due_at = least(job_wakeups.due_at, excluded.due_at)",
    )
    .execute(&mut *conn)
    .await
    .map_err(translate)?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` scheduled tasks of `apps` for a worker's stream, oldest first, each
/// with a new lease, and records that each started (a `running` event for the job's
/// watchers); tasks of paused or ended jobs wait.
pub async fn claim(
    conn: &mut PgConnection,
    apps: &[String],
    limit: i64,
    lease: Duration,
    worker_id: &str,
) -> Result<Vec<WorkerTask>, Error> {
    let rows = sqlx::query(
        // Each app's oldest tasks through its own ordered index scan (`job_tasks_offer_idx`
        // is by app, then age), merged by age: one scan over every app would have to read and
        // sort all their ready tasks to find the oldest, however few are wanted. The task's
        // job is locked too, for its event sequence; a job being stepped is skipped (its
        // step may be about to cancel the task) and its tasks are claimed at the next round.
        "with picked as (
             select p.job_id, p.task_id from unnest($1::text[]) as a(app)
             cross join lateral (
                 select t.job_id, t.task_id, t.ready_at from job_tasks t join jobs j on j.id = t.job_id
                 where t.status = 'scheduled' and t.runner = 'worker' and t.app = a.app
                   and t.due_at is null and j.status = 'running'
                 order by t.ready_at limit $2
                 for update of t, j skip locked) p
             order by p.ready_at limit $2),
         claimed as (
             update job_tasks t set status = 'running', lease_token = gen_random_uuid(),
                    lease_deadline = now() + make_interval(secs => $3), attempt = t.attempt + 1,
                    worker_id = $4
             from picked where t.job_id = picked.job_id and t.task_id = picked.task_id
             returning t.job_id, t.task_id, t.app, t.name, t.incoming, t.lease_token,
                       t.lease_deadline, t.attempt),
         numbered as (
             select c.job_id, c.task_id,
                    row_number() over (partition by c.job_id order by c.task_id) as n,
                    count(*) over (partition by c.job_id) as claims
             from claimed c),
         sequenced as (
             update jobs j set event_sequence = j.event_sequence + b.claims
             from (select distinct job_id, claims from numbered) b where j.id = b.job_id
             returning j.id, j.event_sequence - b.claims as base),
         recorded as (
             insert into job_event_batches (job_id, sequence, task_ids, kinds, statuses,
                                            finish_states, ats)
             select n.job_id, s.base + max(n.n), array_agg(n.task_id order by n.n),
                    array_agg('task'::text), array_agg('running'::text),
                    array_agg(''::text), array_agg(now())
             from numbered n join sequenced s on s.id = n.job_id
             group by n.job_id, s.base
             returning job_id)
         select c.*, (select count(pg_notify($5, s.id)) from sequenced s) as notified
         from claimed c",
    )
    .bind(apps)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(worker_id)
    .bind(EVENTS)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)?;
    rows.into_iter()
        .map(|row| {
            Ok(WorkerTask {
                task_token: row.try_get::<Uuid, _>("lease_token")?.to_string(),
                job_id: row.try_get("job_id")?,
                task_id: row.try_get("task_id")?,
                app: row.try_get("app")?,
                name: row.try_get("name")?,
                incoming: row.try_get::<Json<Map<String, Value>>, _>("incoming")?.0,
                lease_deadline: row.try_get("lease_deadline")?,
                attempt: row.try_get::<i32, _>("attempt")?.max(0) as u32,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(translate)
}

/// What a lease token names now.
pub enum Lease {
    /// Held: extended to the new deadline.
    Extended(DateTime<Utc>),
    /// The task's job was canceled (or ended) while the worker held it.
    Canceled,
    /// Expired, completed, or never issued.
    Stale,
}

/// Extends the lease `token` names by `lease`, when it is still held.
pub async fn heartbeat(
    conn: &mut PgConnection,
    token: Uuid,
    lease: Duration,
) -> Result<Lease, Error> {
    let extended: Option<DateTime<Utc>> = sqlx::query_scalar(
        "update job_tasks set lease_deadline = now() + make_interval(secs => $2)
         where lease_token = $1 and status = 'running' and lease_deadline > now()
         returning lease_deadline",
    )
    .bind(token)
    .bind(lease.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await
    .map_err(translate)?;
    if let Some(deadline) = extended {
        return Ok(Lease::Extended(deadline));
    }
    Ok(match canceled_holder(conn, token).await? {
        true => Lease::Canceled,
        false => Lease::Stale,
    })
}

/// Whether `token` was the lease of a task whose job canceled it.
async fn canceled_holder(conn: &mut PgConnection, token: Uuid) -> Result<bool, Error> {
    // The lease columns are cleared when a task stops running; a canceled task keeps its
    // token in `canceled_leases` so that its worker's heartbeat can be told.
    let found: Option<String> =
        sqlx::query_scalar("select t.status from job_tasks t where t.lease_token = $1")
            .bind(token)
            .fetch_optional(&mut *conn)
            .await
            .map_err(translate)?;
    Ok(found.as_deref() == Some("canceled"))
}

/// A job's events after `after`, in order, at most `limit`.
pub async fn events(
    conn: &mut PgConnection,
    job_id: &str,
    after: u64,
    limit: i64,
) -> Result<Vec<JobEvent>, Error> {
    let rows = sqlx::query(
        "select b.sequence - cardinality(b.kinds) + e.n as sequence, e.task_id, e.kind, e.status,
                e.finish_state, e.at
         from job_event_batches b,
              unnest(b.task_ids, b.kinds, b.statuses, b.finish_states, b.ats)
                  with ordinality as e(task_id, kind, status, finish_state, at, n)
         where b.job_id = $1 and b.sequence > $2 and b.sequence - cardinality(b.kinds) + e.n > $2
         order by b.sequence, e.n limit $3",
    )
    .bind(job_id)
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)?;
    rows.into_iter()
        .map(|row| {
            Ok(JobEvent {
                sequence: row.try_get::<i64, _>("sequence")?.max(0) as u64,
                job_id: job_id.to_owned(),
                task_id: row.try_get("task_id")?,
                kind: row.try_get("kind")?,
                status: row.try_get("status")?,
                finish_state: row.try_get("finish_state")?,
                at: row.try_get("at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(translate)
}

/// Ends the leases `tokens` name now (their stream closed): the tasks are offered again at the
/// next sweep, without waiting for the lease to run out.
pub async fn end_leases(conn: &mut PgConnection, tokens: &[Uuid]) -> Result<(), Error> {
    sqlx::query(
        "update job_tasks set lease_deadline = now()
         where lease_token = any($1) and status = 'running'",
    )
    .bind(tokens)
    .execute(&mut *conn)
    .await
    .map_err(translate)?;
    Ok(())
}

/// Which of `tokens` still name a task a worker holds.
pub async fn still_running(conn: &mut PgConnection, tokens: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    sqlx::query_scalar(
        "select lease_token from job_tasks
         where lease_token = any($1) and status = 'running' and lease_deadline > now()",
    )
    .bind(tokens)
    .fetch_all(&mut *conn)
    .await
    .map_err(translate)
}

/// Whether the job has ended (`complete`, `error` or `canceled`); false when there is no such
/// job.
pub async fn has_ended(conn: &mut PgConnection, job_id: &str) -> Result<bool, Error> {
    let status: Option<String> = sqlx::query_scalar("select status from jobs where id = $1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(translate)?;
    Ok(matches!(
        status.as_deref(),
        Some("complete" | "error" | "canceled")
    ))
}

/// Puts the job's wakeup off by `delay` (its step failed; it is tried again then).
pub async fn put_off(conn: &mut PgConnection, job_id: &str, delay: Duration) -> Result<(), Error> {
    sqlx::query(
        "update job_wakeups set due_at = now() + make_interval(secs => $2) where job_id = $1",
    )
    .bind(job_id)
    .bind(delay.as_secs_f64())
    .execute(&mut *conn)
    .await
    .map_err(translate)?;
    Ok(())
}
