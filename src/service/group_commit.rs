//! Group commit of StartJob: starts that arrive while earlier ones are being committed wait in
//! a queue and are then written together (`crate::batch`), usually by one statement that is a
//! transaction of its own (workflows compiled here, checked unchanged by the statement itself),
//! else in one transaction of a handful of statements, instead of one transaction of five or
//! six statements each. Durability is unchanged: a start is answered only after the
//! transaction holding its job has committed.
//!
//! Each start in a batch keeps its own outcome: a workflow that does not exist, variables that
//! fail the schema or a reused idempotency key fail that start alone.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use super::Started;
use crate::batch::{Batch, Batcher, Queued};
use crate::domain::run::RunningJob;
use crate::domain::{Caller, CompiledWorkflow, Error, Job, StartJob, TaskGraph};
use crate::engine::{advance, Limits};
use crate::store::compiled::CompiledWorkflows;
use crate::store::graphs::{self, GraphCache};
use crate::store::idempotency::{self, ScopedKey, StoredKey};
use crate::store::jobs::{self, NewJob};
use crate::store::runs::LockedJob;
use crate::store::starts;
use crate::store::workflows::{self, StartTarget};
use crate::store::{PoolStats, Store};

/// Most starts committed in one transaction.
const MAX_BATCH: usize = 64;
/// Transactions of batches in flight at once: while one waits for its commit to reach the
/// disk, the next is already gathering. Two, not more: each batch in flight makes the others
/// smaller, and a batch costs the service and PostgreSQL much the same whether it holds 4
/// starts or 14 (measured against 4 in flight: 10 to 30% less CPU a start and 5 to 30% more
/// starts a second at concurrency 16 and 64, BENCHMARKS.md; one in flight leaves the CPU idle
/// while its commit waits for the disk).
const CONCURRENT_BATCHES: usize = 2;

/// One StartJob waiting for its batch.
pub(super) struct Start {
    caller: Caller,
    request: StartJob,
    /// The idempotency key and the fingerprint of the request, when the call has a key.
    key: Option<(ScopedKey, String)>,
}

/// The queue of starts and the task that commits them in batches.
#[derive(Debug)]
pub(super) struct GroupCommit {
    batcher: Batcher<Committer>,
    /// The batches' own connections.
    store: Store,
    committer: Arc<Committer>,
}

impl GroupCommit {
    /// Starts the committing task; it ends when this handle is dropped and the queue is empty.
    /// Batches have connections of their own, one per batch in flight: they neither wait for
    /// nor hold up the connections of other calls, and only these few connections grow the
    /// buffers that whole batches need.
    pub(super) fn spawn(
        store: &Store,
        graphs: Arc<GraphCache>,
        workflows: Arc<CompiledWorkflows>,
        queue_size: usize,
        first_step: Option<Limits>,
    ) -> Self {
        let store = store.dedicated(CONCURRENT_BATCHES as u32);
        let committer = Arc::new(Committer {
            store: store.clone(),
            first_step,
            workflows,
            graphs,
        });
        let batcher = Batcher::spawn(committer.clone(), queue_size, MAX_BATCH, CONCURRENT_BATCHES);
        GroupCommit {
            batcher,
            store,
            committer,
        }
    }

    /// Forgets the compiled workflow `name` and its graph (the workflow was deleted), so that
    /// what it held is freed now rather than when the caches need the room.
    pub(super) fn forget_workflow(&self, name: &str) {
        if let Some(compiled) = self.committer.workflows.forget(name) {
            self.committer.graphs.forget(compiled.job_graph().id());
        }
    }

    /// The batches' connections.
    pub(super) fn pool_stats(&self) -> PoolStats {
        self.store.pool_stats()
    }

    /// Queues a start and waits for its outcome, which is known only once its batch has
    /// committed (or failed). If the caller gives up first (deadline, disconnect), its start is
    /// dropped from the batch unless the batch already wrote it.
    pub(super) async fn start(
        &self,
        caller: Caller,
        request: StartJob,
        key: Option<(ScopedKey, String)>,
    ) -> Result<Started, Error> {
        self.batcher
            .call(Start {
                caller,
                request,
                key,
            })
            .await
    }
}

struct Committer {
    store: Store,
    /// The engine's limits when this instance runs jobs: each start then takes its job's
    /// first step in the start's transaction.
    first_step: Option<Limits>,
    /// Compiled workflows by name, with the revision they were compiled from.
    workflows: Arc<CompiledWorkflows>,
    /// The job graphs known to be stored: starts from them need not store them again.
    graphs: Arc<GraphCache>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("compiled_workflows", &self.workflows)
            .finish_non_exhaustive()
    }
}

impl Batch for Committer {
    type Item = Start;
    type Output = Started;

    async fn apply(
        &self,
        batch: &[Queued<Committer>],
    ) -> Result<Vec<Result<Started, Error>>, Error> {
        self.try_commit(batch).await
    }
}

/// A batch's workflows by name: the revision (and its groups) each start is made from, and
/// what was compiled of it.
type Targets = HashMap<String, (StartTarget, Arc<CompiledWorkflow>)>;

/// The jobs a batch made: each with its start's place in the batch and its workflow.
type Made = Vec<(usize, Job, Arc<CompiledWorkflow>)>;

/// Each start's outcome as far as known, in batch order.
type Outcomes = Vec<Option<Result<Started, Error>>>;

impl Committer {
    /// Writes the batch and returns each start's outcome, in batch order. An error is a
    /// failure of the transaction: nothing of the batch was written.
    async fn try_commit(
        &self,
        batch: &[Queued<Committer>],
    ) -> Result<Vec<Result<Started, Error>>, Error> {
        if let Some(outcomes) = self.try_in_one_statement(batch).await? {
            return Ok(outcomes);
        }
        // A key that a racing start (on the one-statement path, or another instance) stored
        // after this transaction looked for it: the transaction wrote nothing, and the next
        // one finds the key stored and replays it.
        for _ in 0..2 {
            if let Some(outcomes) = self.commit_locked(batch).await? {
                return Ok(outcomes);
            }
        }
        Err(Error::Unavailable(
            "starts with the same idempotency keys are racing, try again".to_owned(),
        ))
    }

    /// The usual batch in one statement, a transaction of its own: one round trip where
    /// [`Self::commit_locked`] takes four or more, each a wait on a busy machine (a batch then
    /// costs the same whether it holds 4 starts or 14, so at low concurrency its round trips
    /// are most of a start's time). It serves a batch whose workflows were all compiled here,
    /// visible to their callers and with their graphs stored; the statement writes only if
    /// those workflows are still at the revisions compiled (another instance may have
    /// replaced or deleted one), and locks them against deletion until it commits, as
    /// [`Self::commit_locked`] does. Starts with idempotency keys are written with their keys
    /// if none of the keys is stored yet; racing starts with one key are told apart by the
    /// keys' primary key, where [`Self::commit_locked`] locks the keys first. `None` when the
    /// batch is not such a batch, a workflow changed or a key is stored (a retry, a replay):
    /// nothing was written.
    async fn try_in_one_statement(
        &self,
        batch: &[Queued<Committer>],
    ) -> Result<Option<Vec<Result<Started, Error>>>, Error> {
        let mut targets = Targets::new();
        for pending in batch {
            let name = &pending.item.request.workflow;
            if !targets.contains_key(name) {
                let Some(latest) = self.workflows.latest(name) else {
                    return Ok(None);
                };
                targets.insert(name.clone(), latest);
            }
            // One the caller cannot see may have been replaced by one it can: only a locked
            // read tells.
            if !pending.item.caller.can_see(&targets[name].0.groups) {
                return Ok(None);
            }
        }
        let now = Utc::now();
        let mut outcomes: Outcomes = batch.iter().map(|_| None).collect();
        let made = make_jobs(batch, &targets, &mut outcomes, now);
        if made
            .iter()
            .any(|(_, _, compiled)| !self.graphs.contains(compiled.job_graph().id()))
        {
            return Ok(None);
        }
        // Even with no job to insert, the outcomes (variables that fail the input schema)
        // hold only if the workflows are unchanged: the statement checks them all the same.
        let mut names: Vec<&str> = targets.keys().map(String::as_str).collect();
        names.sort_unstable();
        let revisions: Vec<i64> = names.iter().map(|name| targets[*name].0.revision).collect();
        let keys = keys_of(batch, &made);
        let mut conn = self.store.conn().await?;
        let written = self
            .insert(&mut conn, &made, (&names, &revisions), &keys, now)
            .await?;
        self.store.keep(conn);
        if !written {
            return Ok(None);
        }
        Ok(Some(answers(made, outcomes)))
    }

    /// Writes the batch in one transaction that first locks its workflows (and idempotency
    /// keys), then reads what it needs of them. `None` when a racing start stored one of the
    /// keys after this transaction looked for it: nothing was written.
    async fn commit_locked(
        &self,
        batch: &[Queued<Committer>],
    ) -> Result<Option<Vec<Result<Started, Error>>>, Error> {
        let mut outcomes: Outcomes = batch.iter().map(|_| None).collect();
        let mut conn = self.store.conn().await?;
        let mut tx = self.store.begin_on(&mut conn).await?;

        // Idempotency keys: held until commit, so racing calls with one key (here or on
        // another instance) see each other's job; stored keys are replays or conflicts.
        let keys: Vec<ScopedKey> = batch
            .iter()
            .filter_map(|p| p.item.key.as_ref().map(|(key, _)| key.clone()))
            .collect();
        if !keys.is_empty() {
            idempotency::lock_many(&mut tx, &keys).await?;
            let stored = idempotency::find_many(&mut tx, &keys).await?;
            if !stored.is_empty() {
                self.replay(&mut tx, batch, &stored, &mut outcomes).await?;
            }
        }

        // The workflows, locked against deletion until commit.
        let mut names: Vec<&str> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(p, _)| p.item.request.workflow.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut targets = Targets::new();
        for target in workflows::lock_for_start(&mut tx, &names).await? {
            let compiled = self.workflows.get(&mut tx, &target).await?;
            targets.insert(target.name.clone(), (target, compiled));
        }
        // Deleted workflows: the one-statement path would try them again and again.
        for name in names.iter().filter(|name| !targets.contains_key(**name)) {
            self.workflows.forget(name);
        }

        let now = Utc::now();
        let made = make_jobs(batch, &targets, &mut outcomes, now);
        if !made.is_empty() {
            // Each distinct graph is stored once, by whichever start first uses it.
            let mut new_graphs: Vec<&TaskGraph> = Vec::new();
            for (_, _, compiled) in &made {
                let graph = compiled.job_graph();
                if !self.graphs.contains(graph.id())
                    && !new_graphs.iter().any(|g| g.id() == graph.id())
                {
                    new_graphs.push(graph);
                }
            }
            if !new_graphs.is_empty() {
                // In one order, so that two batches storing the same new graphs cannot
                // deadlock.
                new_graphs.sort_unstable_by(|a, b| a.id().cmp(b.id()));
                graphs::insert_many(&mut tx, &new_graphs).await?;
            }
            let keys = keys_of(batch, &made);
            if !self.insert(&mut tx, &made, (&[], &[]), &keys, now).await? {
                // The transaction failed or saw a key stored: roll it back, and drop its
                // connection rather than keep it.
                drop(tx);
                return Ok(None);
            }
        }
        self.store.commit(tx).await?;
        self.store.keep(conn);

        for (_, _, compiled) in &made {
            let graph = compiled.job_graph();
            if !self.graphs.contains(graph.id()) {
                self.graphs.insert(graph);
            }
        }
        Ok(Some(answers(made, outcomes)))
    }

    /// Inserts the jobs made, their graphs stored, and the idempotency keys of those that have
    /// one. With the engine running here, each takes its first step now, in the same
    /// statement (what it runs at once, what it offers to workers): the engine need not take,
    /// lock, read and write it again. Callers are answered with the job as started; its stored
    /// document shows the step. Without, each is left for an engine. False, and nothing
    /// written, when a workflow is not at its revision in `unchanged` or a key is stored.
    async fn insert(
        &self,
        conn: &mut sqlx::PgConnection,
        made: &Made,
        unchanged: (&[&str], &[i64]),
        keys: &[(ScopedKey, StoredKey)],
        now: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut shown: Vec<Job> = Vec::new();
        let mut first_steps: Vec<LockedJob> = Vec::new();
        if let Some(limits) = &self.first_step {
            for (_, job, compiled) in made {
                let graph = compiled.job_graph();
                let mut run = RunningJob::of_new(job);
                advance::advance(&mut run, graph, now, limits);
                let mut stepped = job.clone();
                run.show_on(&mut stepped, graph);
                shown.push(stepped);
                first_steps.push(LockedJob::started(job, run, graph.id().to_owned()));
            }
        }
        let rows: Vec<NewJob<'_>> = made
            .iter()
            .enumerate()
            .map(|(n, (_, job, compiled))| NewJob {
                job: shown.get(n).unwrap_or(job),
                graph_id: compiled.job_graph().id(),
                event_sequence: first_steps.get(n).map_or(0, LockedJob::event_sequence),
            })
            .collect();
        let graphs: HashMap<String, TaskGraph> = if self.first_step.is_some() {
            made.iter()
                .map(|(_, _, compiled)| {
                    let graph = compiled.job_graph();
                    (graph.id().to_owned(), graph.clone())
                })
                .collect()
        } else {
            HashMap::new()
        };
        let steps = self
            .first_step
            .is_some()
            .then_some((first_steps.as_slice(), &graphs));
        starts::insert_started(conn, &rows, steps, unchanged, keys, now).await
    }

    /// Fills the outcomes of starts whose key is already stored: the stored job when the
    /// request is the same, a conflict when it is not.
    async fn replay(
        &self,
        tx: &mut sqlx::PgConnection,
        batch: &[Queued<Committer>],
        stored: &HashMap<ScopedKey, StoredKey>,
        outcomes: &mut [Option<Result<Started, Error>>],
    ) -> Result<(), Error> {
        let ids: Vec<&str> = stored.values().map(|s| s.job_id.as_str()).collect();
        let jobs: HashMap<String, Job> = jobs::get_many(tx, &self.graphs, &ids)
            .await?
            .into_iter()
            .map(|job| (job.id.clone(), job))
            .collect();
        for (pending, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            let Some((key, fingerprint)) = &pending.item.key else {
                continue;
            };
            let Some(stored) = stored.get(key) else {
                continue;
            };
            *outcome = Some(if &stored.fingerprint != fingerprint {
                Err(conflict(key))
            } else {
                match jobs.get(&stored.job_id) {
                    // A replay shows the job only to a caller who may still see it, as GetJob.
                    Some(job) if pending.item.caller.can_see(&job.groups) => Ok(Started {
                        job: job.clone(),
                        created: false,
                    }),
                    Some(_) => Err(Error::NotFound(format!(
                        "Cannot find the job of idempotency key {}",
                        key.key
                    ))),
                    None => Err(Error::internal(anyhow::anyhow!(
                        "idempotency key without its job"
                    ))),
                }
            });
        }
        Ok(())
    }
}

/// Makes the jobs of the starts without an outcome yet from their workflows in `targets`,
/// filling in the outcomes of those that fail: the caller gave up, no such workflow (or not
/// one the caller may see), variables that fail its input schema, an idempotency key used
/// earlier in the batch (a replay or a conflict).
fn make_jobs(
    batch: &[Queued<Committer>],
    targets: &Targets,
    outcomes: &mut Outcomes,
    now: chrono::DateTime<Utc>,
) -> Made {
    let mut made: Made = Vec::with_capacity(batch.len());
    // Keys first used in this batch: a second start with one of them replays the first.
    let mut made_by_key: HashMap<&ScopedKey, (&str, usize)> = HashMap::new();
    for (i, pending) in batch.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        if pending.abandoned() {
            outcomes[i] = Some(Err(Error::DeadlineExceeded(
                "the caller gave up".to_owned(),
            )));
            continue;
        }
        if let Some((key, fingerprint)) = &pending.item.key {
            if let Some((first_fingerprint, first)) = made_by_key.get(key) {
                outcomes[i] = Some(if first_fingerprint == fingerprint {
                    Ok(Started {
                        job: made[*first].1.clone(),
                        created: false,
                    })
                } else {
                    Err(conflict(key))
                });
                continue;
            }
        }
        let workflow = &pending.item.request.workflow;
        let Some((_, compiled)) = targets
            .get(workflow)
            .filter(|(target, _)| pending.item.caller.can_see(&target.groups))
        else {
            outcomes[i] = Some(Err(Error::workflow_not_found(workflow)));
            continue;
        };
        match Job::start(
            compiled,
            pending.item.request.options.clone(),
            &pending.item.caller,
            now,
        ) {
            Ok(job) => {
                if let Some((key, fingerprint)) = &pending.item.key {
                    made_by_key.insert(key, (fingerprint.as_str(), made.len()));
                }
                made.push((i, job, compiled.clone()));
            }
            Err(error) => outcomes[i] = Some(Err(error)),
        }
    }
    made
}

/// The idempotency keys of the starts that made jobs, each with its job.
fn keys_of(batch: &[Queued<Committer>], made: &Made) -> Vec<(ScopedKey, StoredKey)> {
    made.iter()
        .filter_map(|(i, job, _)| {
            batch[*i].item.key.as_ref().map(|(key, fingerprint)| {
                (
                    key.clone(),
                    StoredKey {
                        fingerprint: fingerprint.clone(),
                        job_id: job.id.clone(),
                    },
                )
            })
        })
        .collect()
}

/// Every start's outcome, the jobs made among them.
fn answers(made: Made, mut outcomes: Outcomes) -> Vec<Result<Started, Error>> {
    for (i, job, _) in made {
        outcomes[i] = Some(Ok(Started { job, created: true }));
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every start has an outcome"))
        .collect()
}

fn conflict(key: &ScopedKey) -> Error {
    Error::IdempotencyConflict(format!(
        "idempotency key {} was used for a different request",
        key.key
    ))
}
