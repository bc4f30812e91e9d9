//! Starting the child jobs that childJob tasks ask for (`RunningJob::spawns`), in the step
//! loop's transaction: each child is inserted as a running job the engine steps next, and its
//! id recorded in its task's progress ([`super::children`] has the rules).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::children::MAX_DEPTH;
use crate::domain::run::{FinishState, Progress};
use crate::domain::start::JobOptions;
use crate::domain::{Caller, Error, Job, TaskGraph};
use crate::store::compiled::CompiledWorkflows;
use crate::store::graphs::{self, GraphCache};
use crate::store::jobs::NewJob;
use crate::store::runs::LockedJob;
use crate::store::starts;
use crate::store::workflows;
use crate::store::Tx;

/// What starting children needs besides the job: where workflows and graphs come from.
pub struct Sources<'a> {
    pub workflows: &'a CompiledWorkflows,
    pub graphs: &'a GraphCache,
}

/// Starts the children `locked`'s step asked for (`RunningJob::spawns`), in `tx`: each is
/// inserted as a running job that the engine steps next, and its id recorded in its task's
/// progress. A childJob task whose children cannot start (no such workflow, variables that
/// fail its input schema, too deep) ends in error, and the job advances from there; that may
/// ask for more children, which start in the same way, a bounded number of rounds. Returns
/// the graphs stored in `tx`, to remember once it commits.
pub async fn start_children(
    tx: &mut Tx,
    sources: &Sources<'_>,
    locked: &mut LockedJob,
    graph: &TaskGraph,
    now: DateTime<Utc>,
    limits: &super::Limits,
) -> Result<Vec<TaskGraph>, Error> {
    let mut stored = Vec::new();
    for _ in 0..8 {
        let spawns = std::mem::take(&mut locked.job.spawns);
        if spawns.is_empty() {
            break;
        }
        for task_id in spawns {
            if let Err(message) = spawn(tx, sources, locked, &task_id, now, &mut stored).await? {
                super::advance::complete(
                    &mut locked.job,
                    graph,
                    &task_id,
                    FinishState::Error,
                    Map::new(),
                    &message,
                    now,
                    limits,
                );
            }
        }
    }
    Ok(stored)
}

/// Starts the children task `task_id` asks for now; `Ok(Err(why))` when they cannot start.
async fn spawn(
    tx: &mut Tx,
    sources: &Sources<'_>,
    locked: &mut LockedJob,
    task_id: &str,
    now: DateTime<Utc>,
    stored: &mut Vec<TaskGraph>,
) -> Result<Result<(), String>, Error> {
    let (iteration, workflow, variables) = {
        let Some(run) = locked.job.runs.get(task_id) else {
            return Ok(Ok(()));
        };
        let Some(Progress::Children {
            workflow,
            sequential,
            pending,
            ..
        }) = &run.progress
        else {
            return Ok(Ok(()));
        };
        let take = if *sequential { 1 } else { pending.len() };
        (
            run.iteration,
            workflow.clone(),
            pending[..take.min(pending.len())].to_vec(),
        )
    };
    if locked.ancestors.len() >= MAX_DEPTH {
        return Ok(Err(format!(
            "childJob: job {} is {} levels of child jobs deep; jobs nest at most {MAX_DEPTH} deep",
            locked.job.id,
            locked.ancestors.len()
        )));
    }
    let targets = workflows::lock_for_start(&mut *tx, &[workflow.as_str()]).await?;
    let Some(target) = targets.first() else {
        return Ok(Err(format!(
            "childJob: cannot start a child job: workflow {workflow:?} does not exist"
        )));
    };
    let compiled: Arc<_> = sources.workflows.get(&mut *tx, target).await?;
    // The child acts for whoever started its parent, within the parent's groups.
    let caller = Caller {
        sub: locked.created_by.clone(),
        username: locked
            .job
            .variables
            .get("initiator")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        groups: locked.groups.clone(),
        roles: Vec::new(),
    };
    let mut children = Vec::with_capacity(variables.len());
    for (n, variables) in variables.into_iter().enumerate() {
        let options = JobOptions {
            variables,
            groups: Some(locked.groups.clone()),
            ..JobOptions::default()
        };
        let mut child = match Job::start(&compiled, options, &caller, now) {
            Ok(child) => child,
            Err(error) => {
                return Ok(Err(format!(
                    "childJob: cannot start child job {} of workflow {workflow:?}: {}",
                    n + 1,
                    error.bounded()
                )))
            }
        };
        child.parent = json!({"job": locked.job.id, "task": task_id, "iteration": iteration});
        let mut ancestors = locked.ancestors.clone();
        ancestors.push(child.id.clone());
        child.ancestors = ancestors;
        children.push(child);
    }
    let graph = compiled.job_graph();
    if !sources.graphs.contains(graph.id()) && !stored.iter().any(|g| g.id() == graph.id()) {
        graphs::insert_many(&mut *tx, &[graph]).await?;
        stored.push(graph.clone());
    }
    let rows: Vec<NewJob<'_>> = children
        .iter()
        .map(|child| NewJob {
            job: child,
            graph_id: graph.id(),
            event_sequence: 0,
        })
        .collect();
    starts::insert_started(&mut *tx, &rows, None, (&[], &[]), &[], now).await?;
    let run = locked.job.runs.get_mut(task_id).expect("read above");
    if let Some(Progress::Children {
        started, pending, ..
    }) = &mut run.progress
    {
        pending.drain(..children.len());
        started.extend(children.iter().map(|child| child.id.clone()));
    }
    run.due_at = None;
    locked.job.touched.insert(task_id.to_owned());
    Ok(Ok(()))
}
