//! The use cases both front doors call. Each owns its transaction, except StartJob, whose
//! transactions are shared by the starts that arrive together (`group_commit`).

mod group_commit;
mod tasks;

use chrono::Utc;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::instrument;

use crate::domain::page::{self, JobCursor, JobFilter};
use crate::domain::search::{JobSearch, WorkflowSearch};
use crate::domain::{
    Action, Caller, Error, IdempotencyKey, Job, JobId, StartJob, Workflow, WorkflowDocument,
};
use crate::observe::Escaped;
use crate::store::compiled::CompiledWorkflows;
use crate::store::graphs::GraphCache;
use crate::store::idempotency::ScopedKey;
use crate::store::jobs;
use crate::store::{workflows, PoolStats, Store};
use group_commit::GroupCommit;

/// A page of results and the token of the next page (`None` on the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// A started job, and whether this call created it (false: an idempotent replay).
#[derive(Debug)]
pub struct Started {
    pub job: Job,
    pub created: bool,
}

/// What ListJobs asks for.
#[derive(Debug, Clone, Default)]
pub struct ListJobs {
    pub filter: JobFilter,
    pub page_size: i32,
    pub page_token: String,
}

#[derive(Debug)]
pub struct Service {
    store: Store,
    /// Calls in flight, both front doors together: a call that finds none free is refused.
    in_flight: Arc<Semaphore>,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending work.
    draining: AtomicBool,
    /// `store::resource_errors()` when a write last succeeded in readiness: while the count
    /// has grown since, a write failed for want of resources (disk full) and readiness probes
    /// a write before it answers true.
    writes_probed: AtomicU64,
    /// StartJobs are committed in batches.
    starts: GroupCommit,
    /// The task graphs of stored jobs, shared by the jobs read with them.
    graphs: Arc<GraphCache>,
    /// Compiled workflows, shared by starts and the engine's child jobs.
    workflows: Arc<CompiledWorkflows>,
    /// Most bytes of items (as JSON) in one page of results.
    max_page_bytes: usize,
}

/// The bounds the service keeps to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Calls in flight at once, both front doors together.
    pub max_in_flight: usize,
    /// Memory (estimated) for compiled workflows and the task graphs of stored jobs.
    pub cache_bytes: u64,
    /// Most bytes of items (as JSON) in one page of results.
    pub max_page_bytes: usize,
    /// The engine's limits when this instance runs jobs (`--run-jobs`): a start then takes
    /// its job's first step before it commits. None: the jobs wait for an instance that runs
    /// them.
    pub first_step: Option<crate::engine::Limits>,
}

impl Service {
    /// The service over `store`. Needs a Tokio runtime: it starts the task that commits
    /// StartJobs.
    pub fn new(store: Store, settings: Settings) -> Self {
        // Half of the cache budget for the graphs of stored jobs, half for compiled workflows.
        let graphs = Arc::new(GraphCache::new(settings.cache_bytes / 2));
        let workflows = Arc::new(CompiledWorkflows::new(settings.cache_bytes / 2));
        Service {
            starts: GroupCommit::spawn(
                &store,
                graphs.clone(),
                workflows.clone(),
                settings.max_in_flight,
                settings.first_step,
            ),
            graphs,
            workflows,
            store,
            max_page_bytes: settings.max_page_bytes,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            draining: AtomicBool::new(false),
            writes_probed: AtomicU64::new(crate::store::resource_errors()),
        }
    }

    /// The cache of task graphs, shared with the engine.
    pub fn graphs(&self) -> Arc<GraphCache> {
        self.graphs.clone()
    }

    /// The cache of compiled workflows, shared with the engine (child jobs).
    pub fn workflows(&self) -> Arc<CompiledWorkflows> {
        self.workflows.clone()
    }

    /// A slot for one call, or RESOURCE_EXHAUSTED when every slot is taken: overload is
    /// answered at once instead of queueing without bound.
    fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted("too many calls in flight, try again shortly".to_owned())
        })
    }

    /// The database connections of the service: those of its calls and those of its batches of
    /// starts, together.
    pub fn pool_stats(&self) -> PoolStats {
        self.store.pool_stats() + self.starts.pool_stats()
    }

    /// Each cache's name and the memory it holds (estimated): `workflows`, compiled workflows;
    /// `graphs`, the task graphs of stored jobs.
    pub fn cache_stats(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("workflows", self.workflows.bytes()),
            ("graphs", self.graphs.bytes()),
        ]
    }

    /// Marks the service as shutting down: readiness answers false from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Starts a job: the workflow is read, the job built, stored and returned in one
    /// transaction, shared with other starts arriving at the same time (group commit). The
    /// returned job is committed.
    ///
    /// With an idempotency key, the key is stored in the same transaction; a later call by the
    /// same caller with the same key and the same request returns the first job
    /// (`created: false`), one with a different request fails. Racing calls with one key are
    /// serialised, so they make one job.
    #[instrument(skip_all, fields(workflow = %Escaped(&request.workflow), job_id))]
    pub async fn start_job(
        &self,
        caller: &Caller,
        request: StartJob,
        key: Option<IdempotencyKey>,
    ) -> Result<Started, Error> {
        caller.require(Action::StartJob)?;
        let _slot = self.admit()?;
        if let Some(groups) = &request.options.groups {
            caller.require_own_groups(groups, "options.groups")?;
        }
        let key = key.map(|key| {
            let scoped = ScopedKey {
                caller: caller.sub.clone(),
                key: key.as_str().to_owned(),
            };
            (scoped, request.fingerprint())
        });
        let started = self.starts.start(caller.clone(), request, key).await?;
        tracing::Span::current().record("job_id", started.job.id.as_str());
        if started.created {
            tracing::info!("job started");
        } else {
            tracing::info!("idempotent replay");
        }
        Ok(started)
    }

    /// Forgets idempotency keys older than `retention`.
    pub async fn purge_idempotency_keys(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, Error> {
        let before =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(1));
        self.store.purge_keys(before).await
    }

    #[instrument(skip_all, fields(job_id = %Escaped(id)))]
    pub async fn get_job(&self, caller: &Caller, id: &str) -> Result<Job, Error> {
        caller.require(Action::ReadJobs)?;
        let _slot = self.admit()?;
        let id = JobId::parse(id).map_err(|reason| Error::invalid("id", reason))?;
        let mut conn = self.store.conn().await?;
        jobs::get(&mut conn, &self.graphs, &id)
            .await?
            .filter(|job| caller.can_see(&job.groups))
            .ok_or_else(|| Error::NotFound(format!("Cannot find job {id}")))
    }

    /// gRPC's ListJobs: newest first, in cursor pages (`page_token`), filtered by status,
    /// workflow and creation time. Cursors stay correct while jobs are added and cost the same
    /// on every page; the REST routes page by `skip`/`limit` with a total instead, as
    /// Itential's clients expect, so they have their own use case, [`Service::search_jobs`].
    #[instrument(skip_all)]
    pub async fn list_jobs(&self, caller: &Caller, request: ListJobs) -> Result<Page<Job>, Error> {
        caller.require(Action::ReadJobs)?;
        let _slot = self.admit()?;
        let limit = page::page_size(request.page_size, "page_size")?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(JobCursor::decode(token, "page_token")?),
        };
        if let (Some(after), Some(before)) =
            (request.filter.created_after, request.filter.created_before)
        {
            if after >= before {
                return Err(Error::invalid(
                    "created_after",
                    "must be before created_before",
                ));
            }
        }
        let mut conn = self.store.conn().await?;
        // One more row than asked says whether there is a next page.
        let mut items = jobs::list(
            &mut conn,
            &self.graphs,
            &request.filter,
            caller.visibility_filter(),
            after.as_ref(),
            limit + 1,
            self.max_page_bytes,
        )
        .await?;
        let next_page_token =
            next_token(&mut items, limit, self.max_page_bytes, job_sizes(), |job| {
                JobCursor {
                    created_at: job.created,
                    id: job.id.clone(),
                }
                .encode()
            });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Stores one workflow; `field` names the document in errors (`workflow`, `automation`).
    #[instrument(skip_all)]
    pub async fn create_workflow(
        &self,
        caller: &Caller,
        document: Value,
        field: &str,
    ) -> Result<Workflow, Error> {
        caller.require(Action::WriteWorkflows)?;
        let _slot = self.admit()?;
        let document = WorkflowDocument::parse(document, field)?;
        caller.require_own_groups(document.groups(), &format!("{field}.groups"))?;
        let mut tx = self.store.begin().await?;
        let workflow = match workflows::insert(&mut tx, &document).await {
            Ok(workflow) => workflow,
            Err(error) => {
                drop(tx);
                return Err(self.name_taken(caller, document.name(), error).await);
            }
        };
        self.store.commit(tx).await?;
        tracing::info!(workflow = %Escaped(workflow.document.name()), "workflow created");
        Ok(workflow)
    }

    /// Stores every workflow or none: all are parsed first (every bad field of every document
    /// is reported), then inserted in one transaction. `field` names the list in errors
    /// (`workflows`, `automations`).
    #[instrument(skip_all, fields(count = documents.len()))]
    pub async fn import_workflows(
        &self,
        caller: &Caller,
        documents: Vec<Value>,
        field: &str,
    ) -> Result<Vec<Workflow>, Error> {
        caller.require(Action::WriteWorkflows)?;
        let _slot = self.admit()?;
        let mut violations = Vec::new();
        let mut parsed = Vec::with_capacity(documents.len());
        for (i, document) in documents.into_iter().enumerate() {
            match WorkflowDocument::parse(document, &format!("{field}[{i}]")) {
                Ok(workflow) => parsed.push(workflow),
                Err(Error::InvalidArgument { violations: v }) => violations.extend(v),
                Err(other) => return Err(other),
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument { violations });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, workflow) in parsed.iter().enumerate() {
            caller.require_own_groups(workflow.groups(), &format!("{field}[{i}].groups"))?;
            if !seen.insert(workflow.name()) {
                return Err(Error::AlreadyExists(format!(
                    "Workflow {} appears more than once in the import",
                    workflow.name()
                )));
            }
        }
        let mut tx = self.store.begin().await?;
        let mut stored = Vec::with_capacity(parsed.len());
        for workflow in &parsed {
            match workflows::insert(&mut tx, workflow).await {
                Ok(workflow) => stored.push(workflow),
                Err(error) => {
                    drop(tx);
                    return Err(self.name_taken(caller, workflow.name(), error).await);
                }
            }
        }
        self.store.commit(tx).await?;
        tracing::info!("workflows imported");
        Ok(stored)
    }

    /// `error` of storing the workflow `name`, as `caller` may hear it: a name taken by a
    /// workflow the caller cannot see is answered PERMISSION_DENIED, the answer to a name the
    /// caller may not use, so that neither the workflow nor anything of it is confirmed.
    async fn name_taken(&self, caller: &Caller, name: &str, error: Error) -> Error {
        if !matches!(error, Error::AlreadyExists(_)) || caller.is_admin() {
            return error;
        }
        let existing = match self.store.conn().await {
            Ok(mut conn) => workflows::get(&mut conn, name).await,
            Err(unavailable) => return unavailable,
        };
        match existing {
            Ok(workflow) if caller.can_see(workflow.document.groups()) => error,
            Ok(_) => Error::PermissionDenied(format!(
                "{} may not use the workflow name {name}",
                caller.username
            )),
            // Deleted since: nothing is hidden any more.
            Err(Error::NotFound(_)) => error,
            Err(other) => other,
        }
    }

    #[instrument(skip_all, fields(workflow = %Escaped(name)))]
    pub async fn get_workflow(&self, caller: &Caller, name: &str) -> Result<Workflow, Error> {
        caller.require(Action::ReadWorkflows)?;
        let _slot = self.admit()?;
        let mut conn = self.store.conn().await?;
        let workflow = workflows::get(&mut conn, name).await?;
        if !caller.can_see(workflow.document.groups()) {
            return Err(Error::workflow_not_found(name));
        }
        Ok(workflow)
    }

    #[instrument(skip_all)]
    pub async fn list_workflows(
        &self,
        caller: &Caller,
        name_prefix: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Workflow>, Error> {
        caller.require(Action::ReadWorkflows)?;
        let _slot = self.admit()?;
        let limit = page::page_size(page_size, "page_size")?;
        let after = match page_token {
            "" => None,
            token => Some(page::decode_name_cursor(token, "page_token")?),
        };
        let mut conn = self.store.conn().await?;
        let mut items = workflows::list(
            &mut conn,
            name_prefix,
            caller.visibility_filter(),
            after.as_deref(),
            limit + 1,
            self.max_page_bytes,
        )
        .await?;
        let next_page_token =
            next_token(&mut items, limit, self.max_page_bytes, workflow_size, |w| {
                page::encode_name_cursor(w.document.name())
            });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    #[instrument(skip_all, fields(workflow = %Escaped(name)))]
    pub async fn delete_workflow(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        caller.require(Action::WriteWorkflows)?;
        let _slot = self.admit()?;
        let mut tx = self.store.begin().await?;
        let workflow = workflows::get(&mut tx, name).await?;
        if !caller.can_see(workflow.document.groups()) {
            return Err(Error::workflow_not_found(name));
        }
        workflows::delete(&mut tx, name).await?;
        self.store.commit(tx).await?;
        self.starts.forget_workflow(name);
        tracing::info!("workflow deleted");
        Ok(())
    }
}

impl Service {
    /// A REST job search (Itential's `equals[field]`, `in[field]`, ..., `skip`, `limit`, `sort`):
    /// a page and the number of visible jobs matching in all. See [`Service::list_jobs`] for
    /// why gRPC lists jobs differently.
    #[instrument(skip_all)]
    pub async fn search_jobs(
        &self,
        caller: &Caller,
        search: &JobSearch,
    ) -> Result<(Vec<Job>, i64), Error> {
        caller.require(Action::ReadJobs)?;
        let _slot = self.admit()?;
        let mut conn = self.store.conn().await?;
        let (mut items, total) = jobs::search(
            &mut conn,
            &self.graphs,
            search,
            caller.visibility_filter(),
            self.max_page_bytes,
        )
        .await?;
        // Large jobs make a short page; the caller pages on with `skip`.
        page::fit_page(&mut items, search.limit, self.max_page_bytes, job_sizes());
        Ok((items, total))
    }

    /// A REST workflow search by exact name or name prefix, with offset paging.
    #[instrument(skip_all)]
    pub async fn search_workflows(
        &self,
        caller: &Caller,
        search: &WorkflowSearch,
    ) -> Result<(Vec<Workflow>, i64), Error> {
        caller.require(Action::ReadWorkflows)?;
        let _slot = self.admit()?;
        let mut conn = self.store.conn().await?;
        let (mut items, total) = workflows::search(
            &mut conn,
            search.name_equals.as_deref(),
            search.name_prefix.as_deref(),
            caller.visibility_filter(),
            (search.limit, search.skip),
            self.max_page_bytes,
        )
        .await?;
        page::fit_page(&mut items, search.limit, self.max_page_bytes, workflow_size);
        Ok((items, total))
    }

    /// Whether the service takes work (`Err` says why not): not draining, and the database
    /// answers within a second.
    /// After a write failed for want of resources (disk full), the database must also take a
    /// write: until then StartJob would fail, though reads answer.
    pub async fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("the service is shutting down".to_owned());
        }
        let ping = async {
            self.store
                .ping()
                .await
                .map_err(|_| "the database does not answer".to_owned())?;
            let errors = crate::store::resource_errors();
            if errors != self.writes_probed.load(Ordering::SeqCst) {
                self.store
                    .probe_write()
                    .await
                    .map_err(|error| format!("the database does not take writes: {error}"))?;
                // Errors counted during the probe are newer than it: they keep the mark.
                self.writes_probed.store(errors, Ordering::SeqCst);
                tracing::info!("the database takes writes again");
            }
            Ok::<_, String>(())
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), ping)
            .await
            .unwrap_or_else(|_| Err("the database did not answer within 1s".to_owned()))
    }
}

/// Cuts `items` (fetched with one extra row) to `limit` items and `max_bytes` bytes, and
/// returns the token of the page after, when there is one.
fn next_token<T>(
    items: &mut Vec<T>,
    limit: i64,
    max_bytes: usize,
    size_of: impl Fn(&T) -> usize,
    token_of: impl Fn(&T) -> String,
) -> Option<String> {
    if page::fit_page(items, limit, max_bytes, size_of) {
        items.last().map(token_of)
    } else {
        None
    }
}

/// The size of each job as JSON, measuring each distinct task graph once: the jobs of a page
/// mostly share a few graphs.
fn job_sizes() -> impl Fn(&Job) -> usize {
    let graphs: std::cell::RefCell<std::collections::HashMap<usize, usize>> = Default::default();
    move |job: &Job| {
        let graph = Arc::as_ptr(&job.tasks) as usize;
        let graph_size = *graphs
            .borrow_mut()
            .entry(graph)
            .or_insert_with(|| page::json_size(&*job.tasks) + page::json_size(&*job.transitions));
        page::json_size(&job.record()) + graph_size
    }
}

fn workflow_size(workflow: &Workflow) -> usize {
    page::json_size(workflow.document.document())
}
