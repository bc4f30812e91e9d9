//! CompleteTask in batches (`crate::batch`): completions that arrive together are applied in
//! one transaction that locks their jobs at once, advances each, and writes them all in one
//! statement, instead of a transaction of about ten round trips each. A worker is answered
//! once its completion has committed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::workers::Dispatcher;
use super::{advance, stale_token, Limits};
use crate::batch::{Batch, Queued};
use crate::domain::graph::TaskStatus;
use crate::domain::run::TaskResult;
use crate::domain::Error;
use crate::store::graphs::GraphCache;
use crate::store::runs;
use crate::store::Store;

/// Most completions applied in one transaction.
pub(super) const MAX_BATCH: usize = 64;
/// Transactions of completions in flight at once.
pub(super) const CONCURRENT_BATCHES: usize = 2;

/// A worker's result for the task its lease token names.
pub(super) struct Completion {
    pub token: Uuid,
    pub result: TaskResult,
}

pub(super) struct Completer {
    pub store: Store,
    pub graphs: Arc<GraphCache>,
    pub limits: Limits,
    /// Told which leases ended, so that their streams get room again.
    pub workers: Arc<Dispatcher>,
}

impl Batch for Completer {
    type Item = Completion;
    type Output = ();

    async fn apply(&self, batch: &[Queued<Completer>]) -> Result<Vec<Result<(), Error>>, Error> {
        let tokens: Vec<Uuid> = batch.iter().map(|queued| queued.item.token).collect();
        let mut conn = self.store.conn().await?;
        let mut tx = self.store.begin_on(&mut conn).await?;
        let mut jobs = runs::lock_holders(&mut tx, &tokens).await?;
        let graph_ids: Vec<&str> = jobs.iter().map(|locked| locked.graph_id.as_str()).collect();
        let graphs = self.graphs.get_many(&mut tx, &graph_ids).await?;
        // Which job and task each token is the lease of, as read under the jobs' locks.
        let holders: HashMap<Uuid, (usize, String)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(i, locked)| {
                locked
                    .leases()
                    .map(move |(task_id, token)| (token, (i, task_id.to_owned())))
            })
            .collect();
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(batch.len());
        for queued in batch {
            let Completion { token, result } = &queued.item;
            let Some((i, task_id)) = holders.get(token) else {
                outcomes.push(Err(stale_token()));
                continue;
            };
            let locked = &mut jobs[*i];
            // The lease must still run: a task completed twice in one batch (a worker's
            // retry), or whose lease ran out, is stale.
            let held = locked.job.runs.get(task_id).is_some_and(|run| {
                run.status == TaskStatus::Running && run.due_at.is_some_and(|at| at > now)
            });
            let Some(graph) = graphs.get(&locked.graph_id).filter(|_| held) else {
                outcomes.push(Err(stale_token()));
                continue;
            };
            advance::complete(
                &mut locked.job,
                graph,
                task_id,
                result.finish_state,
                result.outgoing.clone(),
                &result.error_message,
                now,
                &self.limits,
            );
            outcomes.push(Ok(()));
        }
        runs::save_many(&mut tx, &mut jobs, &graphs, now).await?;
        self.store.commit(tx).await?;
        self.store.keep(conn);
        for (queued, outcome) in batch.iter().zip(&outcomes) {
            if outcome.is_ok() {
                self.workers.released(queued.item.token);
            }
        }
        Ok(outcomes)
    }
}
