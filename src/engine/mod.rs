//! What happens after a start: jobs advance along their task graphs by Itential's rules
//! (`advance`), the tasks the service runs itself (`builtin`, with `variables` resolving
//! `$var` references), task workers' leases (`workers`), manual tasks, timers, the lifecycle
//! calls (cancel, pause, resume, retry) and the events WatchJob streams (`watch`). It calls the
//! store as the service does; every step is one committed transaction that holds the job's
//! row, so a crash resumes where it stopped and instances never step one job at once.
//!
//! How work reaches an instance: a start takes its job's first step itself when its instance
//! runs jobs (`service::group_commit`), and a worker's or a person's result advances the job in
//! the call that reports it (workers' completions in batches, `completions`). What is left,
//! jobs started by an instance that does not run jobs, due timers, expired leases and resumed
//! jobs, are rows of `job_wakeups`; PostgreSQL notifications (`LISTEN`) wake the instances at
//! once, and a sweep every `--engine-sweep` catches what a lost notification or a dead worker
//! left. Steps and completions lock and write their jobs a batch at a time.

pub mod advance;
pub mod builtin;
pub mod children;
mod completions;
pub mod loops;
mod spawn;
pub mod variables;
mod watch;
mod workers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch as signal, Notify};
use uuid::Uuid;

pub use advance::Limits;

use crate::batch::Batcher;
use crate::domain::run::{
    Heartbeat, JobControl, JobEvent, Progress, Runner, TaskResult, WorkerTask, MAX_JOB_IDS,
};
use crate::domain::task::{owned_by_other, require_task_groups, task_groups, TaskRef};
use crate::domain::{Action, Caller, Error, JobId, TaskGraph};
use crate::store::compiled::CompiledWorkflows;
use crate::store::graphs::GraphCache;
use crate::store::runs::{self, Lease, LockedJob};
use crate::store::tasks;
use crate::store::{Store, Tx};

/// Settings of the engine.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    /// How often the engine looks for due work without being told (lost notifications,
    /// expired leases).
    pub sweep: Duration,
    /// Jobs stepped in one transaction.
    pub batch: i64,
    /// Open PollTasks streams an instance serves at once.
    pub max_pollers: usize,
    /// Open WatchJob streams an instance serves at once.
    pub max_watchers: usize,
    /// Whether this instance steps jobs and hands out tasks (else it only serves the API).
    pub run_jobs: bool,
    /// Most tasks one PollTasks stream may hold (`max_tasks`).
    pub max_tasks_per_stream: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            sweep: Duration::from_secs(1),
            batch: 32,
            max_pollers: 1000,
            max_watchers: 1000,
            max_tasks_per_stream: 1000,
            run_jobs: true,
        }
    }
}

/// The engine of one service instance. Any number of instances share one database.
pub struct Engine {
    store: Store,
    graphs: Arc<GraphCache>,
    /// Compiled workflows, to start child jobs from.
    workflows: Arc<CompiledWorkflows>,
    settings: Settings,
    /// Wakes the step loop (new jobs, finished tasks, due timers).
    wakeups: Notify,
    workers: Arc<workers::Dispatcher>,
    /// Workers' completions, applied in batches.
    completions: Batcher<completions::Completer>,
    watchers: watch::Watchers,
    /// Turns true when the service drains: the loops stop and open streams end.
    stop: signal::Sender<bool>,
}

/// How long a job whose step failed waits before the engine tries it again.
const POISON_DELAY: Duration = Duration::from_secs(60);

/// What a lifecycle call did to one job.
pub type ControlOutcome = (String, Result<(), Error>);

impl Engine {
    pub fn new(
        store: Store,
        graphs: Arc<GraphCache>,
        workflows: Arc<CompiledWorkflows>,
        settings: Settings,
    ) -> Self {
        let workers = Arc::new(workers::Dispatcher::new(settings.max_pollers));
        let completer = completions::Completer {
            store: store.dedicated(completions::CONCURRENT_BATCHES as u32),
            graphs: graphs.clone(),
            limits: settings.limits,
            workers: workers.clone(),
        };
        Engine {
            completions: Batcher::spawn(
                Arc::new(completer),
                settings.max_pollers.max(completions::MAX_BATCH),
                completions::MAX_BATCH,
                completions::CONCURRENT_BATCHES,
            ),
            store,
            graphs,
            workflows,
            workers,
            watchers: watch::Watchers::new(settings.max_watchers),
            settings,
            wakeups: Notify::new(),
            stop: signal::channel(false).0,
        }
    }

    /// Runs the engine's loops until `drain` turns true: stepping due jobs, handing tasks to
    /// workers, and listening for notifications. Then open PollTasks and WatchJob streams end,
    /// so that draining is not held up by them (workers and watchers reconnect elsewhere).
    pub fn spawn(
        self: &Arc<Self>,
        mut drain: signal::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let stop = self.stop.subscribe();
        let engine = self.clone();
        let mut tasks = vec![
            tokio::spawn(async move {
                let _ = drain.wait_for(|d| *d).await;
                let _ = engine.stop.send(true);
            }),
            tokio::spawn(self.clone().listen(stop.clone())),
        ];
        if self.settings.run_jobs {
            tasks.push(tokio::spawn(self.clone().step_loop(stop.clone())));
            tasks.push(tokio::spawn(self.clone().dispatch_loop(stop)));
        }
        tasks
    }

    /// Listens for notifications and wakes the loops; when the connection drops, wakes them
    /// all (notifications may have been missed) and listens again.
    async fn listen(self: Arc<Self>, mut stop: signal::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                listener = self.store.listen(&[runs::WAKEUPS, runs::TASKS, runs::EVENTS]) => listener,
            };
            let mut listener = match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for engine notifications; retrying");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.wake_all();
            loop {
                let received = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    received = listener.recv() => received,
                };
                match received {
                    Ok(Some((channel, payload))) => match channel.as_str() {
                        runs::WAKEUPS => self.wakeups.notify_one(),
                        runs::TASKS => self.workers.wake(),
                        runs::EVENTS => self.watchers.wake(&payload),
                        _ => {}
                    },
                    Ok(None) => self.wake_all(),
                    Err(error) => {
                        tracing::warn!(error = %error, "engine notifications lost; listening again");
                        self.wake_all();
                        break;
                    }
                }
            }
        }
    }

    fn wake_all(&self) {
        self.wakeups.notify_one();
        self.workers.wake();
        self.watchers.wake_all();
    }

    /// Steps the jobs whose wakeups are due, a batch a transaction, until none is; then waits
    /// for a notification or the sweep.
    async fn step_loop(self: Arc<Self>, mut stop: signal::Receiver<bool>) {
        let mut sweeps = tokio::time::interval(self.settings.sweep);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let swept = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.wakeups.notified() => false,
                _ = sweeps.tick() => true,
            };
            if swept {
                if let Err(error) = self.wake_expired_leases().await {
                    tracing::warn!(error = %error, "cannot look for expired leases");
                }
            }
            loop {
                let stopped = *stop.borrow();
                if stopped {
                    return;
                }
                match self.step_due(self.settings.batch).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = ?error, "cannot step a batch of due jobs; stepping them one by one");
                        // One job that cannot be stepped must not hold up the others: alone,
                        // it is put off (see step_alone) and the rest go on.
                        if let Err(error) = self.step_alone(self.settings.batch).await {
                            tracing::warn!(error = ?error, "cannot step due jobs; retrying at the next sweep");
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn wake_expired_leases(&self) -> Result<(), Error> {
        let mut conn = self.store.conn().await?;
        if runs::wake_expired_leases(&mut conn).await? > 0 {
            self.wakeups.notify_one();
        }
        Ok(())
    }

    /// Steps up to `count` due jobs, each in a transaction of its own; a job whose step fails
    /// is put off by [`POISON_DELAY`] and logged, so that it cannot block the jobs due after it.
    async fn step_alone(&self, count: i64) -> Result<(), Error> {
        for _ in 0..count {
            let mut tx = self.store.begin().await?;
            let Some(job_id) = runs::take_due(&mut tx, 1).await?.pop() else {
                return Ok(());
            };
            match self.step_jobs(&mut tx, std::slice::from_ref(&job_id)).await {
                Ok(stored) => {
                    self.store.commit(tx).await?;
                    self.remember(&stored);
                }
                Err(error) => {
                    self.store.rollback(tx).await;
                    tracing::error!(job_id = %job_id, error = ?error, "cannot step the job; trying again later");
                    let mut conn = self.store.conn().await?;
                    runs::put_off(&mut conn, &job_id, POISON_DELAY).await?;
                }
            }
        }
        Ok(())
    }

    /// Steps up to `limit` due jobs in one transaction; how many there were.
    async fn step_due(&self, limit: i64) -> Result<usize, Error> {
        let mut tx = self.store.begin().await?;
        let due = runs::take_due(&mut tx, limit).await?;
        let stored = match self.step_jobs(&mut tx, &due).await {
            Ok(stored) => stored,
            Err(error) => {
                // The batch's jobs go back at once, to be stepped one by one.
                self.store.rollback(tx).await;
                return Err(error);
            }
        };
        self.store.commit(tx).await?;
        self.remember(&stored);
        Ok(due.len())
    }

    /// Remembers graphs stored by a committed transaction, so starts need not store them.
    fn remember(&self, stored: &[TaskGraph]) {
        for graph in stored {
            self.graphs.insert(graph);
        }
    }

    /// Advances each of `jobs` as far as it goes now, in `tx`, starting the child jobs their
    /// steps ask for; returns the graphs stored for those, to remember once `tx` commits.
    async fn step_jobs(&self, tx: &mut Tx, jobs: &[String]) -> Result<Vec<TaskGraph>, Error> {
        let ids: Vec<&str> = jobs.iter().map(String::as_str).collect();
        let mut locked = runs::lock_many(&mut *tx, &ids).await?;
        let graph_ids: Vec<&str> = locked.iter().map(|job| job.graph_id.as_str()).collect();
        let graphs = self.graphs.get_many(&mut *tx, &graph_ids).await?;
        let now = Utc::now();
        let sources = spawn::Sources {
            workflows: &self.workflows,
            graphs: &self.graphs,
        };
        let mut stored = Vec::new();
        for job in &mut locked {
            let graph = graphs
                .get(&job.graph_id)
                .ok_or_else(|| missing_graph(&job.graph_id))?;
            advance::advance(&mut job.job, graph, now, &self.settings.limits);
            if !job.job.spawns.is_empty() {
                stored.extend(
                    spawn::start_children(tx, &sources, job, graph, now, &self.settings.limits)
                        .await?,
                );
            }
        }
        runs::save_many(&mut *tx, &mut locked, &graphs, now).await?;
        Ok(stored)
    }

    /// Runs `step` on `job_id` in one transaction holding its row, then saves and commits.
    /// NOT_FOUND when there is no such job or the caller may not see it.
    async fn with_job<T>(
        &self,
        caller: Option<&Caller>,
        job_id: &str,
        step: impl FnOnce(&mut LockedJob, &TaskGraph) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut tx = self.store.begin().await?;
        let (mut locked, graphs) = self.lock_job(&mut tx, caller, job_id).await?;
        let graph = only_graph(&locked, &graphs)?;
        let answer = step(&mut locked[0], graph)?;
        runs::save_many(&mut tx, &mut locked, &graphs, Utc::now()).await?;
        self.store.commit(tx).await?;
        Ok(answer)
    }

    /// Locks `job_id` in `tx` and reads it with its graph: one job, for [`only_graph`].
    /// NOT_FOUND when there is no such job or the caller may not see it.
    async fn lock_job(
        &self,
        tx: &mut Tx,
        caller: Option<&Caller>,
        job_id: &str,
    ) -> Result<(Vec<LockedJob>, HashMap<String, TaskGraph>), Error> {
        let not_found = || Error::NotFound(format!("Cannot find job {job_id}"));
        let locked = runs::lock_many(&mut *tx, &[job_id]).await?;
        let job = locked.first().ok_or_else(not_found)?;
        if caller.is_some_and(|caller| !caller.can_see(&job.groups)) {
            return Err(not_found());
        }
        let graphs = self
            .graphs
            .get_many(&mut *tx, &[job.graph_id.as_str()])
            .await?;
        Ok((locked, graphs))
    }

    /// `PollTasks`: a stream of tasks for a worker serving `apps`, holding at most
    /// `max_tasks` unfinished tasks from this stream at once. The stream ends when the
    /// receiver is dropped or the service shuts down.
    pub async fn poll_tasks(
        &self,
        caller: &Caller,
        worker_id: String,
        apps: Vec<String>,
        max_tasks: u32,
    ) -> Result<mpsc::Receiver<Result<WorkerTask, Error>>, Error> {
        caller.require(Action::RunTasks)?;
        if !self.settings.run_jobs {
            return Err(Error::Unavailable(
                "this instance does not run jobs (--run-jobs false): poll another".to_owned(),
            ));
        }
        if apps.is_empty() {
            return Err(Error::invalid(
                "apps",
                "name at least one app the worker serves",
            ));
        }
        let limit = self.settings.max_tasks_per_stream;
        if max_tasks == 0 || max_tasks > limit {
            return Err(Error::invalid(
                "max_tasks",
                format!("must be from 1 to {limit}"),
            ));
        }
        self.workers.register(worker_id, apps, max_tasks)
    }

    /// `HeartbeatTask`: extends the lease of the task `task_token` names.
    pub async fn heartbeat(&self, caller: &Caller, task_token: &str) -> Result<Heartbeat, Error> {
        caller.require(Action::RunTasks)?;
        let token = parse_token(task_token)?;
        let mut conn = self.store.conn().await?;
        match runs::heartbeat(&mut conn, token, self.settings.limits.lease).await? {
            Lease::Extended(lease_deadline) => Ok(Heartbeat {
                lease_deadline,
                cancel_requested: false,
            }),
            Lease::Canceled => Ok(Heartbeat {
                lease_deadline: Utc::now(),
                cancel_requested: true,
            }),
            Lease::Stale => Err(stale_token()),
        }
    }

    /// `CompleteTask`: records a worker's result; the job advances.
    pub async fn complete_task(
        &self,
        caller: &Caller,
        task_token: &str,
        result: TaskResult,
    ) -> Result<(), Error> {
        caller.require(Action::RunTasks)?;
        let token = parse_token(task_token)?;
        self.completions
            .call(completions::Completion { token, result })
            .await
    }

    /// `FinishTask`: a person finishes a manual task. A task with `groups` is for members of
    /// them; a task someone claimed or was assigned is for its owner alone (its row is locked
    /// before the owner is read, so a claim under way is waited for, not overtaken).
    pub async fn finish_task(
        &self,
        caller: &Caller,
        job_id: &str,
        task_id: &str,
        result: TaskResult,
    ) -> Result<(), Error> {
        caller.require(Action::ControlJobs)?;
        let job_id = parse_job_id(job_id, "job_id")?;
        let mut tx = self.store.begin().await?;
        let (mut locked, graphs) = self
            .lock_job(&mut tx, Some(caller), job_id.as_str())
            .await?;
        let graph = only_graph(&locked, &graphs)?;
        let job = &mut locked[0];
        let waiting = job.job.runs.get(task_id).is_some_and(|run| {
            run.runner == Runner::Manual
                && run.status == crate::domain::graph::TaskStatus::Scheduled
        });
        if !waiting {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "task {task_id} of job {} is not a manual task waiting to be finished",
                    job.job.id
                ),
                problems: Vec::new(),
            });
        }
        if job.job.status != crate::domain::JobStatus::Running {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "job {} is {}: its tasks cannot be finished",
                    job.job.id,
                    job.job.status.as_str()
                ),
                problems: Vec::new(),
            });
        }
        let task = TaskRef::new(&job.job.id, task_id);
        let groups = graph
            .tasks()
            .get(task_id)
            .map(|task| task_groups(&task.fields))
            .unwrap_or_default();
        require_task_groups(caller, &task, &groups)?;
        let owner = tasks::lock_owner(&mut tx, &task)
            .await?
            .and_then(|locked| locked.owner);
        if let Some(owner) = owner.filter(|owner| owner.id != caller.sub) {
            return Err(owned_by_other(&task, &owner));
        }
        advance::complete(
            &mut job.job,
            graph,
            task_id,
            result.finish_state,
            result.outgoing,
            &result.error_message,
            Utc::now(),
            &self.settings.limits,
        );
        runs::save_many(&mut tx, &mut locked, &graphs, Utc::now()).await?;
        self.store.commit(tx).await?;
        Ok(())
    }

    /// `RetryTask`: runs a task that ended in error again, its incoming values overridden by
    /// `variables`.
    pub async fn retry_task(
        &self,
        caller: &Caller,
        job_id: &str,
        task_id: &str,
        variables: Map<String, Value>,
    ) -> Result<(), Error> {
        caller.require(Action::ControlJobs)?;
        let job_id = parse_job_id(job_id, "job_id")?;
        let limits = self.settings.limits;
        self.with_job(Some(caller), job_id.as_str(), |locked, graph| {
            advance::retry(
                &mut locked.job,
                graph,
                task_id,
                variables,
                Utc::now(),
                &limits,
            )
        })
        .await
    }

    /// `CancelJobs`, `PauseJobs`, `ResumeJobs`: each id gets its own outcome, in order.
    pub async fn control_jobs(
        &self,
        caller: &Caller,
        control: JobControl,
        job_ids: Vec<String>,
    ) -> Result<Vec<ControlOutcome>, Error> {
        caller.require(Action::ControlJobs)?;
        if job_ids.is_empty() || job_ids.len() > MAX_JOB_IDS {
            return Err(Error::invalid(
                "job_ids",
                format!("give from 1 to {MAX_JOB_IDS} job ids"),
            ));
        }
        let limits = self.settings.limits;
        let mut outcomes = Vec::with_capacity(job_ids.len());
        for id in job_ids {
            let outcome = match parse_job_id(&id, "job_ids") {
                Err(error) => Err(error),
                Ok(job_id) if control == JobControl::Cancel => {
                    self.cancel_with_children(caller, job_id.as_str()).await
                }
                Ok(job_id) => {
                    self.with_job(Some(caller), job_id.as_str(), |locked, graph| {
                        let now = Utc::now();
                        match control {
                            JobControl::Cancel => advance::cancel(&mut locked.job, now),
                            JobControl::Pause => advance::pause(&mut locked.job, now),
                            JobControl::Resume => {
                                advance::resume(&mut locked.job, graph, now, &limits)
                            }
                        }
                    })
                    .await
                }
            };
            outcomes.push((id, outcome));
        }
        Ok(outcomes)
    }

    /// Cancels `job_id` and, in the same transaction, the child jobs its childJob tasks
    /// started that are still under way, and theirs, down to [`children::MAX_DEPTH`] levels.
    async fn cancel_with_children(&self, caller: &Caller, job_id: &str) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        let not_found = || Error::NotFound(format!("Cannot find job {job_id}"));
        let mut locked = runs::lock_many(&mut tx, &[job_id]).await?;
        let job = locked.first_mut().ok_or_else(not_found)?;
        if !caller.can_see(&job.groups) {
            return Err(not_found());
        }
        let now = Utc::now();
        advance::cancel(&mut job.job, now)?;
        let mut level = children_of(job);
        for _ in 0..children::MAX_DEPTH {
            if level.is_empty() {
                break;
            }
            let ids: Vec<&str> = level.iter().map(String::as_str).collect();
            let mut children = runs::lock_many(&mut tx, &ids).await?;
            let mut next = Vec::new();
            for child in &mut children {
                if advance::cancel(&mut child.job, now).is_ok() {
                    next.extend(children_of(child));
                }
            }
            locked.append(&mut children);
            level = next;
        }
        let graph_ids: Vec<&str> = locked.iter().map(|job| job.graph_id.as_str()).collect();
        let graphs = self.graphs.get_many(&mut tx, &graph_ids).await?;
        runs::save_many(&mut tx, &mut locked, &graphs, now).await?;
        self.store.commit(tx).await
    }

    /// `WatchJob`: the job's events after `after_sequence`, then new ones as they happen;
    /// the stream ends after the job's final event.
    pub async fn watch_job(
        &self,
        caller: &Caller,
        job_id: &str,
        after_sequence: u64,
    ) -> Result<mpsc::Receiver<Result<JobEvent, Error>>, Error> {
        caller.require(Action::WatchJobs)?;
        let job_id = parse_job_id(job_id, "job_id")?;
        {
            let mut conn = self.store.conn().await?;
            let groups = runs::groups_of(&mut conn, job_id.as_str()).await?;
            let visible = groups.is_some_and(|groups| caller.can_see(&groups));
            if !visible {
                return Err(Error::NotFound(format!("Cannot find job {job_id}")));
            }
        }
        self.watchers.watch(
            self.store.clone(),
            job_id.as_str().to_owned(),
            after_sequence,
            self.stop.subscribe(),
        )
    }

    /// Hands tasks to the open PollTasks streams whenever tasks or capacity appear.
    async fn dispatch_loop(self: Arc<Self>, stop: signal::Receiver<bool>) {
        self.workers
            .run(
                self.store.clone(),
                self.settings.limits.lease,
                self.settings.sweep,
                stop,
            )
            .await;
    }
}

/// The child jobs `locked`'s childJob tasks started.
fn children_of(locked: &LockedJob) -> Vec<String> {
    locked
        .job
        .runs
        .values()
        .filter_map(|run| match &run.progress {
            Some(Progress::Children { started, .. }) => Some(started.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn parse_job_id(id: &str, field: &str) -> Result<JobId, Error> {
    JobId::parse(id).map_err(|description| Error::invalid(field, description))
}

fn parse_token(token: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(token)
        .map_err(|_| Error::invalid("task_token", "is not a task token this service issued"))
}

/// The graph of the one job [`Engine::lock_job`] locked.
fn only_graph<'a>(
    locked: &[LockedJob],
    graphs: &'a HashMap<String, TaskGraph>,
) -> Result<&'a TaskGraph, Error> {
    let job = locked
        .first()
        .ok_or_else(|| Error::internal(anyhow::anyhow!("no job was locked")))?;
    graphs
        .get(&job.graph_id)
        .ok_or_else(|| missing_graph(&job.graph_id))
}

fn missing_graph(id: &str) -> Error {
    Error::internal(anyhow::anyhow!("job graph {id} is missing"))
}

fn stale_token() -> Error {
    Error::FailedPrecondition {
        message:
            "the task token is stale: its lease expired, or the task was completed or canceled"
                .to_owned(),
        problems: Vec::new(),
    }
}
