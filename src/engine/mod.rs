//! What happens after a start: jobs advance along their task graphs by Itential's rules
//! (`advance`), the tasks the service runs itself (`builtin`, with `variables` resolving
//! `$var` references), task workers' leases, manual tasks, timers, the lifecycle calls
//! (cancel, pause, resume, retry) and the events WatchJob streams. It calls the store as the
//! service does; every step is one committed transaction, so a crash resumes where it stopped.

pub mod builtin;
pub mod variables;

use tokio::sync::mpsc;

use crate::domain::run::{Heartbeat, JobControl, JobEvent, TaskResult, WorkerTask};
use crate::domain::{Caller, Error};
use crate::store::Store;

/// The engine of one service instance. Any number of instances share one database: each
/// advances the jobs and hands out the tasks it claims there.
pub struct Engine {
    #[allow(dead_code)]
    store: Store,
}

/// What a lifecycle call did to one job.
pub type ControlOutcome = (String, Result<(), Error>);

impl Engine {
    pub fn new(store: Store) -> Self {
        Engine { store }
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
        caller.require(crate::domain::Action::RunTasks)?;
        let _ = (caller, worker_id, apps, max_tasks);
        todo!()
    }

    /// `HeartbeatTask`: extends the lease of the task `task_token` names.
    pub async fn heartbeat(&self, caller: &Caller, task_token: &str) -> Result<Heartbeat, Error> {
        caller.require(crate::domain::Action::RunTasks)?;
        let _ = (caller, task_token);
        todo!()
    }

    /// `CompleteTask`: records a worker's result; the job advances.
    pub async fn complete_task(
        &self,
        caller: &Caller,
        task_token: &str,
        result: TaskResult,
    ) -> Result<(), Error> {
        caller.require(crate::domain::Action::RunTasks)?;
        let _ = (caller, task_token, result);
        todo!()
    }

    /// `FinishTask`: a person finishes a manual task.
    pub async fn finish_task(
        &self,
        caller: &Caller,
        job_id: &str,
        task_id: &str,
        result: TaskResult,
    ) -> Result<(), Error> {
        caller.require(crate::domain::Action::ControlJobs)?;
        let _ = (caller, job_id, task_id, result);
        todo!()
    }

    /// `RetryTask`: runs a task that ended in error again, its incoming values overridden by
    /// `variables`.
    pub async fn retry_task(
        &self,
        caller: &Caller,
        job_id: &str,
        task_id: &str,
        variables: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        caller.require(crate::domain::Action::ControlJobs)?;
        let _ = (caller, job_id, task_id, variables);
        todo!()
    }

    /// `CancelJobs`, `PauseJobs`, `ResumeJobs`: each id gets its own outcome, in order.
    pub async fn control_jobs(
        &self,
        caller: &Caller,
        control: JobControl,
        job_ids: Vec<String>,
    ) -> Result<Vec<ControlOutcome>, Error> {
        caller.require(crate::domain::Action::ControlJobs)?;
        let _ = (caller, control, job_ids);
        todo!()
    }

    /// `WatchJob`: the job's events after `after_sequence`, then new ones as they happen;
    /// the stream ends after the job's final event.
    pub async fn watch_job(
        &self,
        caller: &Caller,
        job_id: &str,
        after_sequence: u64,
    ) -> Result<mpsc::Receiver<Result<JobEvent, Error>>, Error> {
        caller.require(crate::domain::Action::WatchJobs)?;
        let _ = (caller, job_id, after_sequence);
        todo!()
    }
}
