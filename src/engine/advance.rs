//! Advancing a job along its task graph, by Itential's rules (CONTRACT "Running jobs"). Pure:
//! the caller loads a job's run state, applies one step here in memory (a finished task, a
//! lifecycle call, a due timer) and saves the result in the same transaction, so a crash
//! between steps loses nothing and repeats nothing.
//!
//! The rules:
//! - A task that finishes with finish state S fires every outgoing transition whose state is
//!   S; several may fire (parallel branches).
//! - A task runs once every task with a standard transition into it has finished or will
//!   never run, and at least one fired transition reached it. When none did, it will never
//!   run, and that spreads to what follows it (dead-path elimination).
//! - A `revert` transition runs its target again, and what follows it, counting iterations up
//!   to a bound past which the job ends in `error`.
//! - Reaching `workflow_end` completes the job. When nothing is left to run and it was not
//!   reached, the job ends in `error` with "Job has no available transitions".

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::builtin::{self, Builtin, Outcome};
use super::variables::{self, Scope};
use super::{children, loops};
use crate::domain::graph::{IncomingEdges, JobTask, TaskStatus, WORKFLOW_END, WORKFLOW_START};
use crate::domain::run::{FinishState, Progress, Runner, RunningJob, TaskRun};
use crate::domain::{json, Error, JobStatus, TaskGraph};

/// Bounds on what one job may make the engine do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Times one task may run in a job (revert loops), past which the job ends in `error`.
    pub max_iterations: u32,
    /// Offers of one run of a task to workers (expired leases), past which it ends in `error`.
    pub max_attempts: u32,
    /// How long a worker holds a task without a heartbeat.
    pub lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_iterations: 100,
            max_attempts: 10,
            lease: Duration::from_secs(30),
        }
    }
}

/// What [`dead`] worked out in one pass over a job's tasks: `None` while a task's answer is
/// being worked out (a circle), then whether it will never run. Filled for every task at
/// every pass of a step, hence a fast hasher (seeded per process: task ids come from callers).
type Memo<'g> = HashMap<&'g str, Option<bool>, foldhash::fast::RandomState>;

/// Whether each task will never run in the current iteration: every task before it has
/// finished or will never run, and no transition that fired reached it. Computed from the
/// tasks before it, remembered in `memo`; a circle of standard transitions (which Itential's
/// editor does not make) counts as still waiting.
fn dead<'g>(
    task: &'g str,
    job: &RunningJob,
    edges: &'g IncomingEdges,
    memo: &mut Memo<'g>,
) -> bool {
    if job.started(task) {
        return false;
    }
    match memo.get(task) {
        Some(Some(known)) => return *known,
        Some(None) => return false,
        None => {}
    }
    memo.insert(task, None);
    let predecessors = edges.get(task).map(Vec::as_slice).unwrap_or_default();
    let mut all_resolved = true;
    let mut fired = false;
    for (source, state) in predecessors {
        match job.fired(source, state) {
            Some(yes) => fired |= yes,
            None if dead(source.as_str(), job, edges, memo) => {}
            None => all_resolved = false,
        }
    }
    let is_dead = all_resolved && !fired;
    memo.insert(task, Some(is_dead));
    is_dead
}

/// Whether the task may start now: every task before it has finished or will never run, and
/// a fired transition reached it.
fn ready<'g>(
    task: &'g str,
    job: &RunningJob,
    edges: &'g IncomingEdges,
    memo: &mut Memo<'g>,
) -> bool {
    if job.started(task) {
        return false;
    }
    let Some(predecessors) = edges.get(task) else {
        return false;
    };
    let mut fired = false;
    for (source, state) in predecessors {
        match job.fired(source, state) {
            Some(yes) => fired |= yes,
            None if dead(source.as_str(), job, edges, memo) => {}
            None => return false,
        }
    }
    fired
}

/// Runs the job on as far as it goes now: due timers and expired leases first, then every
/// task that is ready, again and again (tasks the service runs itself finish at once), then
/// the end of the job if nothing is left.
pub fn advance(job: &mut RunningJob, graph: &TaskGraph, now: DateTime<Utc>, limits: &Limits) {
    if job.status != JobStatus::Running {
        return;
    }
    expire_and_fire_timers(job, graph, now, limits);
    let mut forced: BTreeSet<String> = BTreeSet::new();
    let waiting_for_children: Vec<String> = job
        .runs
        .iter()
        .filter(|(_, run)| run.status == TaskStatus::Running)
        .filter(|(_, run)| matches!(run.progress, Some(Progress::Children { .. })))
        .map(|(id, _)| id.clone())
        .collect();
    for id in waiting_for_children {
        if let Some(targets) = child_jobs_moved(job, graph, &id, now, limits) {
            forced.extend(targets);
        }
    }
    let edges = graph.standard_incoming();
    let mut memo = Memo::with_capacity_and_hasher(graph.tasks().len(), Default::default());
    loop {
        if job.status != JobStatus::Running {
            return;
        }
        memo.clear();
        let next: Vec<String> = graph
            .tasks()
            .keys()
            .filter(|id| forced.contains(id.as_str()) || ready(id, job, edges, &mut memo))
            .cloned()
            .collect();
        if next.is_empty() {
            // Nothing more runs now: a forEach whose loop body is done goes on to its next
            // element (or finishes), and what that makes ready runs.
            match next_pass(job, graph, now, limits) {
                Pass::None => break,
                Pass::Moved => continue,
                Pass::Finished(targets) => {
                    forced.extend(targets);
                    continue;
                }
            }
        }
        forced.clear();
        for id in next {
            if job.status != JobStatus::Running {
                return;
            }
            if let Some(targets) = start(job, graph, &id, now, limits, Start::Fresh) {
                forced.extend(targets);
            }
        }
    }
    let in_flight = job
        .runs
        .values()
        .any(|run| matches!(run.status, TaskStatus::Scheduled | TaskStatus::Running));
    if !in_flight {
        dead_end(job, graph, now);
    }
}

/// Handles timers that are due (a delay ends, a retry's delay is over) and leases that
/// expired (the task is offered again, or ends in error after too many attempts).
fn expire_and_fire_timers(
    job: &mut RunningJob,
    graph: &TaskGraph,
    now: DateTime<Utc>,
    limits: &Limits,
) {
    let due: Vec<String> = job
        .runs
        .iter()
        .filter(|(_, run)| run.due_at.is_some_and(|at| at <= now))
        .filter(|(_, run)| matches!(run.status, TaskStatus::Scheduled | TaskStatus::Running))
        .map(|(id, _)| id.clone())
        .collect();
    for id in due {
        let run = job.runs.get_mut(&id).expect("listed above");
        run.due_at = None;
        job.touched.insert(id.clone());
        match (run.status, run.runner.clone()) {
            (TaskStatus::Running, Runner::Worker { .. }) => {
                if run.attempt >= limits.max_attempts {
                    let message = format!(
                        "the task was offered to workers {} times and no worker completed it before its lease expired",
                        run.attempt
                    );
                    fail_task(job, graph, &id, message, now, limits);
                } else {
                    run.status = TaskStatus::Scheduled;
                    job.offers = true;
                    job.event(&id, "task", "scheduled", "", now);
                }
            }
            (TaskStatus::Scheduled, Runner::Engine) if run.start_time.is_some() => {
                // A wait that is over (a delay, a stub with a delay).
                let incoming = run.incoming.clone();
                let builtin = graph
                    .tasks()
                    .get(&id)
                    .and_then(|task| Builtin::of(&task.fields));
                if let Some(builtin) = builtin {
                    let outcome = builtin::finish_wait(builtin, &incoming);
                    apply_outcome(job, graph, &id, outcome, now, limits);
                }
            }
            (TaskStatus::Scheduled, _) => {
                // A retry whose delay is over: run the task again.
                start(job, graph, &id, now, limits, Start::Retry(&Map::new()));
            }
            _ => {}
        }
    }
}

/// How a task starts: as a new iteration, or as a retry of the current one (its incoming
/// values overridden by the caller's).
enum Start<'a> {
    Fresh,
    Retry(&'a Map<String, Value>),
}

/// Starts a task; returns the targets of revert transitions it fired, which must run again.
fn start(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    now: DateTime<Utc>,
    limits: &Limits,
    how: Start,
) -> Option<Vec<String>> {
    let task = graph.tasks().get(id)?;
    let previous = job.runs.get(id).map_or(0, |run| run.iteration);
    let iteration = match how {
        Start::Fresh => previous + 1,
        Start::Retry(_) => previous.max(1),
    };
    if iteration > limits.max_iterations {
        fail_job(
            job,
            id,
            format!(
                "task {id} would run a {iteration}th time: a job runs a task at most {} times",
                limits.max_iterations
            ),
            now,
        );
        return None;
    }
    let incoming = {
        let spec = task_variables(task, "incoming");
        let outgoing_of = |task_id: &str| job.runs.get(task_id).map(|run| &run.outgoing);
        let scope = Scope {
            job: &job.variables,
            tasks: &outgoing_of,
        };
        let mut incoming = variables::resolve_incoming(spec, &scope);
        if let Start::Retry(overrides) = how {
            incoming.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        incoming
    };
    let runner = runner_of(task, id);
    let retries = job.runs.get(id).map_or(0, |run| run.retries);
    job.runs.insert(
        id.to_owned(),
        TaskRun {
            status: TaskStatus::Scheduled,
            runner: runner.clone(),
            finish_state: None,
            start_time: Some(now),
            end_time: None,
            iteration,
            attempt: 0,
            retries,
            incoming,
            outgoing: Map::new(),
            error: None,
            due_at: None,
            progress: None,
        },
    );
    job.touched.insert(id.to_owned());
    if id == WORKFLOW_END {
        finish(
            job,
            graph,
            id,
            FinishState::Success,
            Map::new(),
            Vec::new(),
            None,
            now,
            limits,
        );
        return None;
    }
    match runner {
        Runner::Engine if children::is_child_job(task) => {
            let plan = {
                let outgoing_of = |task_id: &str| job.runs.get(task_id).map(|run| &run.outgoing);
                let scope = Scope {
                    job: &job.variables,
                    tasks: &outgoing_of,
                };
                children::plan(&job.runs[id].incoming, &scope)
            };
            job.event(id, "task", "running", "", now);
            match plan {
                Ok(progress) => {
                    let run = job.runs.get_mut(id).expect("started");
                    run.status = TaskStatus::Running;
                    run.progress = Some(progress);
                    child_jobs_moved(job, graph, id, now, limits)
                }
                Err(message) => fail_task(job, graph, id, message, now, limits),
            }
        }
        Runner::Engine if loops::is_for_each(task) => {
            job.event(id, "task", "running", "", now);
            let items = match job.runs[id].incoming.get("data_array") {
                Some(Value::Array(items)) if items.len() <= loops::MAX_ITEMS => Ok(items),
                Some(Value::Array(items)) => Err(format!(
                    "forEach: data_array has {} elements; a loop runs at most {}",
                    items.len(),
                    loops::MAX_ITEMS
                )),
                other => Err(format!(
                    "forEach: data_array must be an array, not {}",
                    other.map_or("missing".to_owned(), |v| json::type_name(v).to_owned())
                )),
            };
            match items.map(|items| items.first().cloned()) {
                Ok(Some(first)) => {
                    let run = job.runs.get_mut(id).expect("started");
                    run.status = TaskStatus::Running;
                    run.progress = Some(Progress::Items { index: 0 });
                    run.outgoing = Map::from_iter([("current_item".to_owned(), first)]);
                    None
                }
                // Nothing to loop over: what follows the loop runs at once.
                Ok(None) => finish(
                    job,
                    graph,
                    id,
                    FinishState::Success,
                    Map::new(),
                    Vec::new(),
                    None,
                    now,
                    limits,
                ),
                Err(message) => fail_task(job, graph, id, message, now, limits),
            }
        }
        Runner::Engine => {
            let builtin = Builtin::of(&task.fields).expect("the runner says it is built in");
            let outcome = {
                let run = &job.runs[id];
                let outgoing_of = |task_id: &str| job.runs.get(task_id).map(|run| &run.outgoing);
                let scope = Scope {
                    job: &job.variables,
                    tasks: &outgoing_of,
                };
                builtin::run(builtin, &run.incoming, &scope, now)
            };
            job.event(id, "task", "running", "", now);
            apply_outcome(job, graph, id, outcome, now, limits)
        }
        Runner::Worker { .. } => {
            job.offers = true;
            job.event(id, "task", "scheduled", "", now);
            None
        }
        Runner::Manual => {
            job.event(id, "task", "scheduled", "", now);
            None
        }
    }
}

/// Who runs a task: the service (a WorkFlowEngine task it implements), a person (a manual
/// task), or a worker serving its app (everything else; nothing is skipped).
pub fn runner_of(task: &JobTask, id: &str) -> Runner {
    if id == WORKFLOW_END
        || Builtin::of(&task.fields).is_some()
        || children::is_child_job(task)
        || loops::is_for_each(task)
    {
        return Runner::Engine;
    }
    if task.fields.get("type").and_then(Value::as_str) == Some("manual") {
        return Runner::Manual;
    }
    let app = task
        .fields
        .get("app")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Runner::Worker {
        app: app.to_owned(),
    }
}

/// Moves a childJob task on by what is known of its children: asks for children to be
/// started (and keeps the job due until they are), or finishes it once they all ended.
/// Returns the targets of revert transitions it fired.
fn child_jobs_moved(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Option<Vec<String>> {
    let check = {
        let progress = job.runs.get(id)?.progress.as_ref()?;
        children::check(progress, job.children.as_ref())
    };
    match check {
        children::Check::Wait => None,
        children::Check::Start => {
            if !job.spawns.iter().any(|s| s == id) {
                job.spawns.push(id.to_owned());
            }
            // Until the step loop has started them, the job stays due.
            job.runs.get_mut(id).expect("checked").due_at = Some(now);
            job.touched.insert(id.to_owned());
            None
        }
        children::Check::Done {
            finish_state,
            outgoing,
            error,
        } => finish(
            job,
            graph,
            id,
            finish_state,
            outgoing,
            Vec::new(),
            error.map(Value::from),
            now,
            limits,
        ),
    }
}

/// What [`next_pass`] did.
enum Pass {
    /// No forEach task's loop body is done.
    None,
    /// A forEach task's loop body runs again, for its next element.
    Moved,
    /// A forEach task ran its body for its last element and finished; the revert
    /// transitions it fired lead to these.
    Finished(Vec<String>),
}

/// Moves on the first forEach task under way whose loop body is done (nothing of it is
/// scheduled or running): to its next element, its body's tasks not reached again, or to
/// its end.
fn next_pass(job: &mut RunningJob, graph: &TaskGraph, now: DateTime<Utc>, limits: &Limits) -> Pass {
    let looping: Vec<(String, usize)> = job
        .runs
        .iter()
        .filter(|(_, run)| run.status == TaskStatus::Running)
        .filter_map(|(id, run)| match run.progress {
            Some(Progress::Items { index }) => Some((id.clone(), index)),
            _ => None,
        })
        .collect();
    for (id, index) in looping {
        let body = loops::body(graph, &id);
        let busy = body.iter().any(|task| {
            job.runs.get(task).is_some_and(|run| {
                matches!(run.status, TaskStatus::Scheduled | TaskStatus::Running)
            })
        });
        if busy {
            continue;
        }
        let run = job.runs.get_mut(&id).expect("listed above");
        let next = match run.incoming.get("data_array") {
            Some(Value::Array(items)) => items.get(index + 1).cloned(),
            _ => None,
        };
        let Some(item) = next else {
            let outgoing = std::mem::take(&mut run.outgoing);
            let reverts = finish(
                job,
                graph,
                &id,
                FinishState::Success,
                outgoing,
                Vec::new(),
                None,
                now,
                limits,
            );
            return Pass::Finished(reverts.unwrap_or_default());
        };
        run.progress = Some(Progress::Items { index: index + 1 });
        run.outgoing = Map::from_iter([("current_item".to_owned(), item)]);
        job.touched.insert(id.clone());
        // The body runs afresh: its tasks are not reached, and a pass's runs do not count
        // toward the bound on runs of a task (that bounds revert loops, not arrays).
        for task in &body {
            if let Some(run) = job.runs.get_mut(task) {
                run.status = TaskStatus::Incomplete;
                run.finish_state = None;
                run.retries = 0;
                run.iteration = 0;
                run.due_at = None;
                run.progress = None;
                job.touched.insert(task.clone());
            }
        }
        return Pass::Moved;
    }
    Pass::None
}

/// A task's `variables.incoming` or `variables.outgoing` as its graph holds it (empty when
/// it has none), borrowed: a step reads it for every task it starts or finishes.
fn task_variables<'t>(task: &'t JobTask, which: &str) -> &'t Map<String, Value> {
    static NONE: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    task.fields
        .get("variables")
        .and_then(|v| v.get(which))
        .and_then(Value::as_object)
        .unwrap_or(&NONE)
}

/// Most memory a job's variables, or one task's outgoing values, may take (as estimated by
/// [`json::heap_size`]): what a step loads, and what every read of the job returns.
pub const MAX_VALUES_BYTES: usize = 16 << 20;

/// Why keeping a task's `outgoing` values and `job_writes` (with those its outgoing values are
/// mapped to) would take more than [`MAX_VALUES_BYTES`]; None when they fit.
fn oversized(
    variables: &Map<String, Value>,
    outgoing: &Map<String, Value>,
    job_writes: &[(String, Value)],
    task: &JobTask,
) -> Option<String> {
    if outgoing.is_empty() && job_writes.is_empty() {
        return None;
    }
    let task_bytes = json::map_heap_size(outgoing);
    if task_bytes > MAX_VALUES_BYTES {
        return Some(format!(
            "the task's outgoing values take about {task_bytes} bytes, more than the limit of {MAX_VALUES_BYTES}"
        ));
    }
    let mapped = variables::job_writes(task_variables(task, "outgoing"), outgoing);
    let written = || job_writes.iter().chain(&mapped);
    let kept: usize = variables
        .iter()
        .filter(|(name, _)| !written().any(|(n, _)| n == *name))
        .map(|(name, value)| json::entry_heap_size(name, value))
        .sum();
    let total = kept
        + written()
            .map(|(name, value)| json::entry_heap_size(name, value))
            .sum::<usize>();
    (total > MAX_VALUES_BYTES).then(|| {
        format!(
            "the job variables the task writes would make them take about {total} bytes, more than the limit of {MAX_VALUES_BYTES}"
        )
    })
}

fn apply_outcome(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    outcome: Outcome,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Option<Vec<String>> {
    match outcome {
        Outcome::Finished {
            finish_state,
            outgoing,
            job_writes,
            error,
        } => finish(
            job,
            graph,
            id,
            finish_state,
            outgoing,
            job_writes,
            error,
            now,
            limits,
        ),
        Outcome::Wait { delay: for_ } => {
            let run = job.runs.get_mut(id).expect("started");
            run.due_at =
                Some(now + chrono::Duration::from_std(for_).unwrap_or(chrono::Duration::MAX));
            job.touched.insert(id.to_owned());
            None
        }
    }
}

/// Ends task `id` in error with `message`, nothing of it kept; returns what [`finish`] does.
fn fail_task(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    message: impl Into<Value>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Option<Vec<String>> {
    finish(
        job,
        graph,
        id,
        FinishState::Error,
        Map::new(),
        Vec::new(),
        Some(message.into()),
        now,
        limits,
    )
}

/// Records that a task finished: its result, the job variables it writes (`job_writes`, a
/// WorkFlowEngine task's own, beside those its outgoing values and error are mapped to), a
/// retry when its `retrySettings` ask for one, and the revert transitions it fires (whose targets run again:
/// returned, after what follows them was reset).
#[allow(clippy::too_many_arguments)]
pub fn finish(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    finish_state: FinishState,
    outgoing: Map<String, Value>,
    job_writes: Vec<(String, Value)>,
    error: Option<Value>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Option<Vec<String>> {
    let _ = limits;
    let task = graph.tasks().get(id)?;
    if finish_state == FinishState::Error {
        if let Some(delay) = retry_delay(task, job.runs.get(id).map_or(0, |run| run.retries)) {
            let run = job.runs.get_mut(id).expect("started");
            run.retries += 1;
            run.status = TaskStatus::Scheduled;
            run.error = error;
            run.due_at = Some(now + delay);
            job.touched.insert(id.to_owned());
            job.event(id, "task", "scheduled", "", now);
            return None;
        }
    }
    if let Some(problem) = oversized(&job.variables, &outgoing, &job_writes, task) {
        // Kept, the values would grow the job without bound (a loop appending to a variable):
        // the task ends in error instead, and what it made is not kept.
        return fail_task(job, graph, id, problem, now, limits);
    }
    let mut writes = job_writes;
    writes.extend(variables::job_writes(
        task_variables(task, "outgoing"),
        &outgoing,
    ));
    // A task's `variables.error` names where its error goes, as its outgoing values do:
    // `"error": "$var.job.netboxError"` writes the error to job variable `netboxError`.
    if let (Some(error), Some(spec)) = (
        &error,
        task.fields.get("variables").and_then(|v| v.get("error")),
    ) {
        let spec = Map::from_iter([("error".to_owned(), spec.clone())]);
        let value = Map::from_iter([("error".to_owned(), error.clone())]);
        writes.extend(variables::job_writes(&spec, &value));
    }
    for (name, value) in writes {
        job.variables.insert(name, value);
        job.job_changed = true;
    }
    let status = if finish_state == FinishState::Error {
        TaskStatus::Error
    } else {
        TaskStatus::Complete
    };
    if let Some(error) = &error {
        job.errors
            .push(json!({"task": id, "message": error, "timestamp": now.timestamp_millis()}));
        job.job_changed = true;
    }
    let run = job.runs.get_mut(id).expect("started");
    run.status = status;
    run.finish_state = Some(finish_state);
    run.end_time = Some(now);
    run.outgoing = outgoing;
    run.error = error;
    run.due_at = None;
    job.touched.insert(id.to_owned());
    job.event(
        id,
        "task",
        if status == TaskStatus::Error {
            "error"
        } else {
            "complete"
        },
        finish_state.as_str(),
        now,
    );
    if id == WORKFLOW_END {
        job.job_changed = true;
        job.end(JobStatus::Complete, now);
        return None;
    }
    let reverts: Vec<String> = task
        .transitions
        .get(finish_state.as_str())
        .into_iter()
        .flatten()
        .filter(|transition| transition.transition_type == "revert")
        .map(|transition| transition.task.clone())
        .collect();
    if reverts.is_empty() {
        return None;
    }
    for target in &reverts {
        reset_from(job, graph, target);
    }
    Some(reverts)
}

/// Makes `target` and every task after it (by standard transitions) not reached again, their
/// iteration counts kept, so that they run again. With `waiting`, tasks scheduled but not
/// taken by anyone yet (a manual task, a task waiting for a worker or its timer) are undone
/// too: a retry takes back the path its task's error opened.
fn reset_from(job: &mut RunningJob, graph: &TaskGraph, target: &str) {
    reset_path(job, graph, target, false);
}

fn reset_path(job: &mut RunningJob, graph: &TaskGraph, target: &str, waiting: bool) {
    let mut seen = HashSet::new();
    let mut stack = vec![target.to_owned()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) || id == WORKFLOW_START {
            continue;
        }
        if let Some(run) = job.runs.get_mut(&id) {
            let undo = matches!(run.status, TaskStatus::Complete | TaskStatus::Error)
                || (waiting && run.status == TaskStatus::Scheduled);
            if undo {
                run.status = TaskStatus::Incomplete;
                run.finish_state = None;
                run.retries = 0;
                run.due_at = None;
                job.touched.insert(id.clone());
            }
        }
        if let Some(task) = graph.tasks().get(&id) {
            for transition in task.transitions.values().flatten() {
                if transition.is_standard() {
                    stack.push(transition.task.clone());
                }
            }
        }
    }
}

/// The delay before a retry, when the task's `retrySettings` ask for one after `retries`
/// retries: `autoRetry` true and fewer than `limit` retries; `delay` in seconds.
fn retry_delay(task: &JobTask, retries: u32) -> Option<chrono::Duration> {
    let settings = task.fields.get("retrySettings")?;
    if settings.get("autoRetry").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let limit = settings.get("limit").and_then(Value::as_u64).unwrap_or(0);
    if u64::from(retries) >= limit.min(100) {
        return None;
    }
    let seconds = settings
        .get("delay")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(86_400);
    Some(chrono::Duration::seconds(seconds as i64))
}

fn fail_job(job: &mut RunningJob, task: &str, message: String, now: DateTime<Utc>) {
    job.errors
        .push(json!({"task": task, "message": message, "timestamp": now.timestamp_millis()}));
    job.end(JobStatus::Error, now);
}

/// Nothing is left to run and `workflow_end` was not reached: the job ends in error, naming the
/// tasks that finished without leading on.
fn dead_end(job: &mut RunningJob, graph: &TaskGraph, now: DateTime<Utc>) {
    let edges_out = |id: &str| graph.tasks().get(id).map(|task| &task.transitions);
    let mut stuck: Vec<&str> = Vec::new();
    for id in graph.tasks().keys() {
        let Some(finish) = job.finish_state(id) else {
            continue;
        };
        let leads_on = edges_out(id)
            .and_then(|transitions| transitions.get(finish.as_str()))
            .is_some_and(|list| {
                list.iter()
                    .any(|t| job.started(&t.task) || t.transition_type == "revert")
            });
        if !leads_on {
            stuck.push(id);
        }
    }
    let names = if stuck.is_empty() {
        "No task".to_owned()
    } else {
        stuck.join(", ")
    };
    let message = format!(
        "Job has no available transitions. {names} could have led to the workflow end task, but did not. \
         These tasks performed in a way that the end of the workflow could not be reached."
    );
    fail_job(job, "job", message, now);
}

/// A worker's or a person's result for a task that is under way: recorded, then the job
/// advances.
#[allow(clippy::too_many_arguments)]
pub fn complete(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    finish_state: FinishState,
    outgoing: Map<String, Value>,
    error_message: &str,
    now: DateTime<Utc>,
    limits: &Limits,
) {
    let error = (finish_state == FinishState::Error).then(|| {
        if error_message.is_empty() {
            json!("the task ended in error")
        } else {
            json!(error_message)
        }
    });
    if let Some(targets) = finish(
        job,
        graph,
        id,
        finish_state,
        outgoing,
        Vec::new(),
        error,
        now,
        limits,
    ) {
        for target in targets {
            if job.status == JobStatus::Running {
                start(job, graph, &target, now, limits, Start::Fresh);
            }
        }
    }
    advance(job, graph, now, limits);
}

/// Cancels the job: unfinished tasks are canceled.
pub fn cancel(job: &mut RunningJob, now: DateTime<Utc>) -> Result<(), Error> {
    match job.status {
        JobStatus::Running | JobStatus::Paused => {
            job.end(JobStatus::Canceled, now);
            Ok(())
        }
        other => Err(Error::FailedPrecondition {
            message: format!(
                "job {} is {} and cannot be canceled",
                job.id,
                other.as_str()
            ),
            problems: Vec::new(),
        }),
    }
}

/// Pauses the job: tasks under way finish, nothing new is scheduled.
pub fn pause(job: &mut RunningJob, now: DateTime<Utc>) -> Result<(), Error> {
    match job.status {
        JobStatus::Running => {
            job.status = JobStatus::Paused;
            job.job_changed = true;
            job.event("", "job", "paused", "", now);
            Ok(())
        }
        other => Err(Error::FailedPrecondition {
            message: format!("job {} is {} and cannot be paused", job.id, other.as_str()),
            problems: Vec::new(),
        }),
    }
}

/// Resumes a paused job, which then advances.
pub fn resume(
    job: &mut RunningJob,
    graph: &TaskGraph,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), Error> {
    match job.status {
        JobStatus::Paused => {
            job.status = JobStatus::Running;
            job.job_changed = true;
            job.event("", "job", "running", "", now);
            advance(job, graph, now, limits);
            Ok(())
        }
        other => Err(Error::FailedPrecondition {
            message: format!("job {} is {} and cannot be resumed", job.id, other.as_str()),
            problems: Vec::new(),
        }),
    }
}

/// Runs a task that ended in error again, its incoming values overridden by `variables`; a
/// job that ended in error because of it runs again.
pub fn retry(
    job: &mut RunningJob,
    graph: &TaskGraph,
    id: &str,
    variables: Map<String, Value>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), Error> {
    let errored = job
        .runs
        .get(id)
        .is_some_and(|run| run.status == TaskStatus::Error);
    if !errored {
        return Err(Error::FailedPrecondition {
            message: format!("task {id} of job {} did not end in error", job.id),
            problems: Vec::new(),
        });
    }
    if !matches!(job.status, JobStatus::Running | JobStatus::Error) {
        return Err(Error::FailedPrecondition {
            message: format!(
                "job {} is {}: only a running job or one that ended in error retries tasks",
                job.id,
                job.status.as_str()
            ),
            problems: Vec::new(),
        });
    }
    if job.status == JobStatus::Error {
        job.status = JobStatus::Running;
        job.end_time = None;
        job.job_changed = true;
        job.event("", "job", "running", "", now);
    }
    // What followed the failed task's error path is undone: the task decides anew.
    if let Some(task) = graph.tasks().get(id) {
        for transition in task.transitions.get("error").into_iter().flatten() {
            if transition.transition_type != "revert" {
                reset_path(job, graph, &transition.task, true);
            }
        }
    }
    let run = job.runs.get_mut(id).expect("checked above");
    run.retries = 0;
    start(job, graph, id, now, limits, Start::Retry(&variables));
    advance(job, graph, now, limits);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json::object;

    /// A graph of `tasks` (id -> app; `stub` for a WorkFlowEngine stub, `manual` for a manual
    /// task) and `edges` (source, target, state, type).
    fn graph(tasks: &[(&str, &str)], edges: &[(&str, &str, &str, &str)]) -> TaskGraph {
        let mut task_map = Map::new();
        for id in [WORKFLOW_START, WORKFLOW_END] {
            task_map.insert(id.into(), json!({"name": id}));
        }
        for (id, app) in tasks {
            let task = match *app {
                "stub" => json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                                 "variables": {"incoming": {}, "outgoing": {}}}),
                "manual" => json!({"name": "ViewData", "app": "WorkFlowEngine", "type": "manual"}),
                app => json!({"name": "run", "app": app, "type": "automatic",
                              "variables": {"incoming": {"device": "$var.job.device"},
                                            "outgoing": {"result": "$var.job.result"}}}),
            };
            task_map.insert((*id).into(), task);
        }
        let mut transitions = Map::new();
        for id in task_map.keys() {
            transitions.insert(id.clone(), json!({}));
        }
        for (source, target, state, kind) in edges {
            transitions[*source][*target] = json!({"state": state, "type": kind});
        }
        TaskGraph::build(&task_map, &transitions)
    }

    fn job() -> RunningJob {
        RunningJob::new(
            "0123456789abcdef01234567".into(),
            JobStatus::Running,
            object(json!({"device": "fw-1"})),
            Vec::new(),
        )
    }

    fn status(job: &RunningJob, id: &str) -> Option<TaskStatus> {
        job.runs.get(id).map(|run| run.status)
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn done(job: &mut RunningJob, graph: &TaskGraph, id: &str, finish: FinishState) {
        done_with(job, graph, id, finish, json!({}), "");
    }

    /// A worker's result for task `id`: `outgoing` values, `error_message`.
    fn done_with(
        job: &mut RunningJob,
        graph: &TaskGraph,
        id: &str,
        finish: FinishState,
        outgoing: Value,
        error_message: &str,
    ) {
        complete(
            job,
            graph,
            id,
            finish,
            object(outgoing),
            error_message,
            now(),
            &Limits::default(),
        );
    }

    /// workflow_start -> a (a task of `app`) -> workflow_end.
    fn one_task(app: &str) -> TaskGraph {
        graph(
            &[("a", app)],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
            ],
        )
    }

    #[test]
    fn a_linear_job_waits_for_its_worker_then_completes() {
        let g = one_task("Netbox");
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "a"), Some(TaskStatus::Scheduled));
        assert_eq!(
            j.runs["a"].runner,
            Runner::Worker {
                app: "Netbox".into()
            }
        );
        assert_eq!(
            j.runs["a"].incoming["device"],
            json!("fw-1"),
            "incoming $var.job resolved"
        );
        assert!(j.offers);
        assert_eq!(j.status, JobStatus::Running);
        let mut outgoing = Map::new();
        outgoing.insert("result".into(), json!("ok"));
        complete(
            &mut j,
            &g,
            "a",
            FinishState::Success,
            outgoing,
            "",
            now(),
            &Limits::default(),
        );
        assert_eq!(j.status, JobStatus::Complete);
        assert_eq!(
            j.variables["result"],
            json!("ok"),
            "outgoing mapped to $var.job.result"
        );
        assert_eq!(j.progress(&g), 1.0);
        assert!(j
            .events
            .last()
            .is_some_and(|e| e.kind == "job" && e.status == "complete"));
    }

    #[test]
    fn a_task_error_is_written_where_its_error_variable_points() {
        let tasks = json!({
            "workflow_start": {"name": "workflow_start"},
            "workflow_end": {"name": "workflow_end"},
            "a": {"name": "postIpamPrefixes", "app": "Netbox", "type": "automatic",
                  "variables": {"error": "$var.job.netboxError", "incoming": {},
                                "outgoing": {"result": "$var.job.created"}}},
        });
        let transitions = json!({
            "workflow_start": {"a": {"state": "success", "type": "standard"}},
            "a": {"workflow_end": {"state": "error", "type": "standard"}},
            "workflow_end": {},
        });
        let g = TaskGraph::build(&object(tasks), &object(transitions));
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done_with(
            &mut j,
            &g,
            "a",
            FinishState::Error,
            json!({}),
            "prefix exists",
        );
        assert_eq!(j.variables["netboxError"], json!("prefix exists"));
        assert!(!j.variables.contains_key("created"), "no result on error");
        assert_eq!(
            j.status,
            JobStatus::Complete,
            "the error path reached the end"
        );

        // A task that succeeds writes nothing there.
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Success);
        assert!(!j.variables.contains_key("netboxError"));
    }

    #[test]
    fn values_past_the_bound_end_the_task_in_error_and_are_not_kept() {
        let g = one_task("Netbox");
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        let big = "x".repeat(MAX_VALUES_BYTES);
        done_with(
            &mut j,
            &g,
            "a",
            FinishState::Success,
            json!({"result": big}),
            "",
        );
        assert_eq!(j.runs["a"].status, TaskStatus::Error);
        assert!(j.runs["a"].outgoing.is_empty(), "what it made is not kept");
        assert!(!j.variables.contains_key("result"));
        let message = j.runs["a"].error.as_ref().unwrap().as_str().unwrap();
        assert!(message.contains("more than the limit"), "{message}");
        assert_eq!(
            j.status,
            JobStatus::Error,
            "no error transition: the job ends"
        );

        // Under the bound, the same task's values are kept.
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        let large = "x".repeat(1 << 20);
        done_with(
            &mut j,
            &g,
            "a",
            FinishState::Success,
            json!({"result": large}),
            "",
        );
        assert_eq!(j.status, JobStatus::Complete);
        assert_eq!(j.variables["result"].as_str().unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_join_waits_for_every_branch() {
        let g = graph(
            &[("a", "X"), ("b", "X"), ("c", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("workflow_start", "b", "success", "standard"),
                ("a", "c", "success", "standard"),
                ("b", "c", "success", "standard"),
                ("c", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(
            (status(&j, "a"), status(&j, "b")),
            (Some(TaskStatus::Scheduled), Some(TaskStatus::Scheduled))
        );
        done(&mut j, &g, "a", FinishState::Success);
        assert_eq!(status(&j, "c"), None, "c waits for b");
        done(&mut j, &g, "b", FinishState::Success);
        assert_eq!(status(&j, "c"), Some(TaskStatus::Scheduled));
        done(&mut j, &g, "c", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn a_path_not_taken_dies_and_the_join_after_it_runs() {
        let g = graph(
            &[("a", "X"), ("b", "X"), ("c", "X"), ("d", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "b", "success", "standard"),
                ("a", "c", "failure", "standard"),
                ("b", "d", "success", "standard"),
                ("c", "d", "success", "standard"),
                ("d", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Success);
        assert_eq!(status(&j, "b"), Some(TaskStatus::Scheduled));
        assert_eq!(status(&j, "c"), None, "c is on the failure path");
        done(&mut j, &g, "b", FinishState::Success);
        assert_eq!(
            status(&j, "d"),
            Some(TaskStatus::Scheduled),
            "d does not wait for the dead c"
        );
        done(&mut j, &g, "d", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
        assert_eq!(j.progress(&g), 1.0, "c never ran, and the job is done");
    }

    #[test]
    fn a_dead_end_ends_the_job_in_error_naming_the_task() {
        let g = graph(
            &[("a", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Failure);
        assert_eq!(j.status, JobStatus::Error);
        let message = j.errors.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with("Job has no available transitions. a could have led"),
            "{message}"
        );
        assert_eq!(j.errors.last().unwrap()["task"], json!("job"));
    }

    #[test]
    fn an_error_transition_is_followed() {
        let g = graph(
            &[("a", "X"), ("handle", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
                ("a", "handle", "error", "standard"),
                ("handle", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        complete(
            &mut j,
            &g,
            "a",
            FinishState::Error,
            Map::new(),
            "device unreachable",
            now(),
            &Limits::default(),
        );
        assert_eq!(status(&j, "a"), Some(TaskStatus::Error));
        assert_eq!(status(&j, "handle"), Some(TaskStatus::Scheduled));
        assert_eq!(j.errors[0]["message"], json!("device unreachable"));
        done(&mut j, &g, "handle", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn a_revert_runs_the_loop_again_up_to_the_bound() {
        let g = graph(
            &[("a", "X"), ("check", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "check", "success", "standard"),
                ("check", "workflow_end", "success", "standard"),
                ("check", "a", "failure", "revert"),
            ],
        );
        let limits = Limits {
            max_iterations: 3,
            ..Limits::default()
        };
        let mut j = job();
        advance(&mut j, &g, now(), &limits);
        for round in 1..=3 {
            assert_eq!(j.runs["a"].iteration, round);
            complete(
                &mut j,
                &g,
                "a",
                FinishState::Success,
                Map::new(),
                "",
                now(),
                &limits,
            );
            assert_eq!(status(&j, "check"), Some(TaskStatus::Scheduled));
            complete(
                &mut j,
                &g,
                "check",
                FinishState::Failure,
                Map::new(),
                "",
                now(),
                &limits,
            );
        }
        assert_eq!(j.status, JobStatus::Error, "a fourth run is past the bound");
        assert!(j.errors.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 times"));
    }

    #[test]
    fn a_revert_that_succeeds_next_time_completes() {
        let g = graph(
            &[("a", "X"), ("check", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "check", "success", "standard"),
                ("check", "workflow_end", "success", "standard"),
                ("check", "a", "failure", "revert"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Success);
        done(&mut j, &g, "check", FinishState::Failure);
        assert_eq!(
            (status(&j, "a"), status(&j, "check")),
            (Some(TaskStatus::Scheduled), Some(TaskStatus::Incomplete))
        );
        done(&mut j, &g, "a", FinishState::Success);
        done(&mut j, &g, "check", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
        assert_eq!(j.runs["check"].iteration, 2);
    }

    #[test]
    fn tasks_the_service_runs_finish_at_once() {
        let g = graph(
            &[("s1", "stub"), ("s2", "stub")],
            &[
                ("workflow_start", "s1", "success", "standard"),
                ("s1", "s2", "success", "standard"),
                ("s2", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(j.status, JobStatus::Complete);
        assert_eq!(status(&j, "s2"), Some(TaskStatus::Complete));
        assert!(!j.offers);
    }

    #[test]
    fn a_manual_task_waits_for_a_person() {
        let g = graph(
            &[("m", "manual")],
            &[
                ("workflow_start", "m", "success", "standard"),
                ("m", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(j.runs["m"].runner, Runner::Manual);
        assert_eq!(status(&j, "m"), Some(TaskStatus::Scheduled));
        assert!(!j.offers, "no worker is woken for a manual task");
        done(&mut j, &g, "m", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn cancel_cancels_what_is_under_way_and_pause_holds_the_job() {
        let g = graph(
            &[("a", "X"), ("b", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "b", "success", "standard"),
                ("b", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        pause(&mut j, now()).unwrap();
        done(&mut j, &g, "a", FinishState::Success);
        assert_eq!(status(&j, "b"), None, "a paused job schedules nothing new");
        assert!(pause(&mut j, now()).is_err());
        resume(&mut j, &g, now(), &Limits::default()).unwrap();
        assert_eq!(status(&j, "b"), Some(TaskStatus::Scheduled));
        cancel(&mut j, now()).unwrap();
        assert_eq!(
            (j.status, status(&j, "b")),
            (JobStatus::Canceled, Some(TaskStatus::Canceled))
        );
        assert!(
            cancel(&mut j, now()).is_err(),
            "an ended job cannot be canceled"
        );
    }

    #[test]
    fn a_retried_task_runs_again_with_new_values_and_revives_the_job() {
        let g = graph(
            &[("a", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Error);
        assert_eq!(j.status, JobStatus::Error);
        retry(
            &mut j,
            &g,
            "a",
            object(json!({"device": "fw-2"})),
            now(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(status(&j, "a"), Some(TaskStatus::Scheduled));
        assert_eq!(j.runs["a"].incoming["device"], json!("fw-2"));
        done(&mut j, &g, "a", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
        assert!(retry(&mut j, &g, "a", Map::new(), now(), &Limits::default()).is_err());
    }

    #[test]
    fn a_retry_takes_back_the_manual_task_its_error_path_scheduled() {
        let g = graph(
            &[("a", "X"), ("ask", "manual")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
                ("a", "ask", "error", "standard"),
                ("ask", "workflow_end", "success", "standard"),
            ],
        );
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "a", FinishState::Error);
        assert_eq!(status(&j, "ask"), Some(TaskStatus::Scheduled));
        retry(&mut j, &g, "a", Map::new(), now(), &Limits::default()).unwrap();
        assert_eq!(
            status(&j, "ask"),
            Some(TaskStatus::Incomplete),
            "the error path is undone"
        );
        done(&mut j, &g, "a", FinishState::Success);
        assert_eq!(
            j.status,
            JobStatus::Complete,
            "nobody has to answer the stale question"
        );
    }

    #[test]
    fn an_expired_lease_offers_the_task_again_until_the_attempts_run_out() {
        let g = graph(
            &[("a", "X")],
            &[
                ("workflow_start", "a", "success", "standard"),
                ("a", "workflow_end", "success", "standard"),
            ],
        );
        let limits = Limits {
            max_attempts: 2,
            ..Limits::default()
        };
        let mut j = job();
        advance(&mut j, &g, now(), &limits);
        for attempt in 1..=2 {
            // A claim: the store marks the task running with a lease.
            let run = j.runs.get_mut("a").unwrap();
            run.status = TaskStatus::Running;
            run.attempt = attempt;
            run.due_at = Some(now());
            advance(&mut j, &g, now() + chrono::Duration::seconds(1), &limits);
        }
        assert_eq!(status(&j, "a"), Some(TaskStatus::Error));
        assert_eq!(j.status, JobStatus::Error);
    }

    /// workflow_start -> fe (forEach over `$var.job.items`) -loop-> body (a task of `app`, its
    /// `device` the current item) ; fe -success-> workflow_end.
    fn for_each(app: &str) -> TaskGraph {
        let body = match app {
            "stub" => json!({"name": "stub", "app": "WorkFlowEngine", "type": "automatic",
                             "variables": {"incoming": {}, "outgoing": {}}}),
            app => json!({"name": "run", "app": app, "type": "automatic",
                          "variables": {"incoming": {"device": "$var.fe.current_item"},
                                        "outgoing": {}}}),
        };
        let tasks = json!({
            "workflow_start": {"name": "workflow_start"},
            "workflow_end": {"name": "workflow_end"},
            "fe": {"name": "forEach", "app": "WorkFlowEngine", "type": "operation",
                   "variables": {"incoming": {"data_array": "$var.job.items"},
                                 "outgoing": {"current_item": null}}},
            "body": body,
        });
        let transitions = json!({
            "workflow_start": {"fe": {"state": "success", "type": "standard"}},
            "fe": {"body": {"state": "loop", "type": "standard"},
                   "workflow_end": {"state": "success", "type": "standard"}},
            "body": {}, "workflow_end": {},
        });
        TaskGraph::build(&object(tasks), &object(transitions))
    }

    fn job_with(variables: Value) -> RunningJob {
        RunningJob::new(
            "0123456789abcdef01234567".into(),
            JobStatus::Running,
            object(variables),
            Vec::new(),
        )
    }

    #[test]
    fn a_for_each_runs_its_body_once_per_element_then_goes_on() {
        let g = for_each("Netbox");
        let mut j = job_with(json!({"items": ["r1", "r2", "r3"]}));
        advance(&mut j, &g, now(), &Limits::default());
        for item in ["r1", "r2", "r3"] {
            assert_eq!(status(&j, "fe"), Some(TaskStatus::Running));
            assert_eq!(status(&j, "body"), Some(TaskStatus::Scheduled));
            assert_eq!(j.runs["body"].incoming["device"], json!(item));
            assert_eq!(j.status, JobStatus::Running);
            done(&mut j, &g, "body", FinishState::Success);
        }
        assert_eq!(status(&j, "fe"), Some(TaskStatus::Complete));
        assert_eq!(j.runs["fe"].finish_state, Some(FinishState::Success));
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn a_pass_that_ends_in_error_does_not_stop_the_loop() {
        let g = for_each("Netbox");
        let mut j = job_with(json!({"items": ["r1", "r2"]}));
        advance(&mut j, &g, now(), &Limits::default());
        done(&mut j, &g, "body", FinishState::Error);
        assert_eq!(j.runs["body"].incoming["device"], json!("r2"));
        done(&mut j, &g, "body", FinishState::Success);
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn a_loop_longer_than_the_revert_bound_runs_every_pass() {
        let g = for_each("stub");
        let items: Vec<Value> = (0..250).map(Value::from).collect();
        let mut j = job_with(json!({ "items": items }));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(j.status, JobStatus::Complete, "{:?}", j.errors);
        let passes = j
            .events
            .iter()
            .filter(|e| e.task_id == "body" && e.status == "complete")
            .count();
        assert_eq!(passes, 250);
    }

    #[test]
    fn a_for_each_over_nothing_goes_on_and_over_a_non_array_errs() {
        let g = for_each("Netbox");
        let mut j = job_with(json!({"items": []}));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "body"), None, "the body never runs");
        assert_eq!(j.status, JobStatus::Complete);

        let mut j = job_with(json!({"items": "r1"}));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "fe"), Some(TaskStatus::Error));
        let message = j.runs["fe"].error.as_ref().unwrap().as_str().unwrap();
        assert!(
            message.contains("data_array must be an array, not a string"),
            "{message}"
        );
    }

    fn child_job(loop_type: &str, data_array: Value) -> TaskGraph {
        let tasks = json!({
            "workflow_start": {"name": "workflow_start"},
            "workflow_end": {"name": "workflow_end"},
            "cj": {"name": "childJob", "app": "WorkFlowEngine", "type": "operation",
                   "variables": {"incoming": {
                        "workflow": "Child", "loopType": loop_type, "data_array": data_array,
                        "task": "", "transformation": "",
                        "variables": {"device": {"task": "job", "value": "device"}}},
                     "outgoing": {"job_details": "$var.job.details"}}},
        });
        let transitions = json!({
            "workflow_start": {"cj": {"state": "success", "type": "standard"}},
            "cj": {"workflow_end": {"state": "success", "type": "standard"}},
            "workflow_end": {},
        });
        TaskGraph::build(&object(tasks), &object(transitions))
    }

    /// Marks the children of `task` as started with ids `c0`, `c1`, ... as the step loop
    /// would.
    fn children_started(j: &mut RunningJob, task: &str) {
        j.spawns.clear();
        let run = j.runs.get_mut(task).unwrap();
        let Some(Progress::Children {
            started,
            pending,
            sequential,
            ..
        }) = &mut run.progress
        else {
            panic!("no children")
        };
        let take = if *sequential { 1 } else { pending.len() };
        for _ in 0..take {
            pending.remove(0);
            started.push(format!("c{}", started.len()));
        }
        run.due_at = None;
    }

    fn child_ended(j: &mut RunningJob, id: &str, status: JobStatus, variables: Value) {
        j.children.get_or_insert_with(Default::default).insert(
            id.to_owned(),
            crate::domain::run::ChildOutcome {
                status,
                variables: Some(object(variables)),
            },
        );
    }

    #[test]
    fn a_child_job_task_asks_for_its_child_waits_and_takes_its_variables() {
        let g = child_job("", json!(""));
        let mut j = job();
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "cj"), Some(TaskStatus::Running));
        assert_eq!(j.spawns, ["cj"]);
        assert_eq!(
            j.next_wakeup(),
            Some(now()),
            "due until its child is started"
        );
        children_started(&mut j, "cj");
        j.children = Some(Default::default());
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(
            status(&j, "cj"),
            Some(TaskStatus::Running),
            "waits: c0 unknown"
        );
        child_ended(&mut j, "c0", JobStatus::Complete, json!({"result": "ok"}));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "cj"), Some(TaskStatus::Complete));
        assert_eq!(j.variables["details"], json!({"result": "ok", "_id": "c0"}));
        assert_eq!(j.status, JobStatus::Complete);
    }

    #[test]
    fn a_sequential_child_loop_starts_each_after_the_last_and_a_failed_child_errs() {
        let g = child_job("sequential", json!([{"n": 1}, {"n": 2}]));
        let mut j = job();
        j.children = Some(Default::default());
        advance(&mut j, &g, now(), &Limits::default());
        children_started(&mut j, "cj");
        child_ended(&mut j, "c0", JobStatus::Error, json!({"n": 1}));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(j.spawns, ["cj"], "the second child is asked for");
        children_started(&mut j, "cj");
        advance(&mut j, &g, now(), &Limits::default());
        assert!(j.spawns.is_empty(), "waits for c1");
        child_ended(&mut j, "c1", JobStatus::Complete, json!({"n": 2}));
        advance(&mut j, &g, now(), &Limits::default());
        assert_eq!(status(&j, "cj"), Some(TaskStatus::Error));
        assert_eq!(
            j.runs["cj"].outgoing["job_details"],
            json!({"loop": [{"n": 1, "_id": "c0"}, {"n": 2, "_id": "c1"}]})
        );
        assert_eq!(j.status, JobStatus::Error, "no error transition");
    }
}
