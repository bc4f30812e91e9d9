//! Tasks across jobs, and who works a manual task: list and read tasks, claim, assign and
//! release manual tasks, and what a manual task shows. Finishing a task is the engine's
//! (it advances the job); it checks the owner these calls set.

use tracing::instrument;

use super::Service;
use crate::domain::graph::TaskStatus;
use crate::domain::page;
use crate::domain::search::TaskSearch;
use crate::domain::task::{
    not_claimable, owned_by_other, require_task_groups, status_name, task_groups, OwnerRef,
    Ownership, TaskKind, TaskRef, TaskView,
};
use crate::domain::{Action, Caller, Error};
use crate::observe::Escaped;
use crate::store::tasks;

fn task_not_found(task: &TaskRef) -> Error {
    Error::NotFound(format!("Cannot find task {task}"))
}

impl Service {
    /// A REST-style task search over the jobs the caller sees: a page and the number of
    /// matching tasks in all. Only tasks a job has reached are stored, so only those are found.
    #[instrument(skip_all)]
    pub async fn search_tasks(
        &self,
        caller: &Caller,
        search: &TaskSearch,
    ) -> Result<(Vec<TaskView>, i64), Error> {
        caller.require(Action::ReadJobs)?;
        let _slot = self.admit()?;
        let mut conn = self.store.conn().await?;
        let (mut items, total) = tasks::search(
            &mut conn,
            &self.graphs,
            search,
            caller.visibility_filter(),
            self.max_page_bytes,
        )
        .await?;
        // Large tasks make a short page; the caller pages on with `skip`.
        page::fit_page(&mut items, search.limit, self.max_page_bytes, task_size);
        Ok((items, total))
    }

    /// One task of a job the caller sees.
    #[instrument(skip_all, fields(task = %Escaped(&task.to_string())))]
    pub async fn get_task(&self, caller: &Caller, task: &TaskRef) -> Result<TaskView, Error> {
        caller.require(Action::ReadJobs)?;
        let _slot = self.admit()?;
        let mut conn = self.store.conn().await?;
        tasks::get(&mut conn, &self.graphs, task)
            .await?
            .filter(|view| caller.can_see(&view.job.groups))
            .ok_or_else(|| task_not_found(task))
    }

    /// What a manual task shows (its incoming values as resolved when it was scheduled) and
    /// the finish states a person may choose. FAILED_PRECONDITION for a task that is not
    /// manual.
    #[instrument(skip_all, fields(task = %Escaped(&task.to_string())))]
    pub async fn manual_controller(
        &self,
        caller: &Caller,
        task: &TaskRef,
    ) -> Result<TaskView, Error> {
        let view = self.get_task(caller, task).await?;
        if view.kind != TaskKind::Manual {
            return Err(not_claimable(
                task,
                format!("is not a manual task: it is {}", view.kind.as_str()),
            ));
        }
        Ok(view)
    }

    /// Claims, assigns or releases a manual task waiting for a person; the task as it is
    /// then. The task's row is locked for the change, so of two callers claiming it at once,
    /// one wins and the other is told who did.
    ///
    /// A claim needs the task to be unowned (claiming one's own task again changes nothing);
    /// an assignment replaces whoever owned it; a release is for the owner. A task with
    /// `groups` may be claimed, and assigned, only by members of one of them (or an admin).
    #[instrument(skip_all, fields(task = %Escaped(&task.to_string())))]
    pub async fn change_task_owner(
        &self,
        caller: &Caller,
        task: &TaskRef,
        change: Ownership,
    ) -> Result<TaskView, Error> {
        caller.require(Action::ControlJobs)?;
        let _slot = self.admit()?;
        let mut tx = self.store.begin().await?;
        let locked = tasks::lock_owner(&mut tx, task)
            .await?
            .filter(|locked| caller.can_see(&locked.job_groups))
            .ok_or_else(|| task_not_found(task))?;
        if locked.kind != TaskKind::Manual {
            return Err(not_claimable(
                task,
                format!(
                    "is not a manual task: it is {}, and nobody claims it",
                    locked.kind.as_str()
                ),
            ));
        }
        if locked.status != TaskStatus::Scheduled {
            return Err(not_claimable(
                task,
                format!(
                    "is not waiting for a person: it is {}",
                    status_name(locked.status)
                ),
            ));
        }
        let graphs = self
            .graphs
            .get_many(&mut tx, &[locked.graph_id.as_str()])
            .await?;
        let groups = graphs
            .get(&locked.graph_id)
            .and_then(|graph| graph.tasks().get(&task.task_id))
            .map(|task| task_groups(&task.fields))
            .unwrap_or_default();
        let new_owner = match (&change, &locked.owner) {
            (Ownership::Claim, Some(owner)) if owner.id == caller.sub => None,
            (Ownership::Claim, Some(owner)) => {
                require_task_groups(caller, task, &groups)?;
                return Err(not_claimable(
                    task,
                    format!("is already claimed by {owner}"),
                ));
            }
            (Ownership::Claim, None) => {
                require_task_groups(caller, task, &groups)?;
                Some(Some(OwnerRef::caller(caller)))
            }
            (Ownership::Assign(user), owner) => {
                require_task_groups(caller, task, &groups)?;
                // Assigning the owner again keeps the task as it is (and the owner's name).
                let assignee = OwnerRef {
                    id: user.clone(),
                    username: (*user == caller.sub).then(|| caller.username.clone()),
                };
                owner
                    .as_ref()
                    .is_none_or(|owner| owner.id != *user)
                    .then_some(Some(assignee))
            }
            (Ownership::Release, None) => {
                return Err(not_claimable(task, "is not claimed by anyone".to_owned()));
            }
            (Ownership::Release, Some(owner)) if owner.id == caller.sub => Some(None),
            (Ownership::Release, Some(owner)) => return Err(owned_by_other(task, owner)),
        };
        if let Some(owner) = new_owner {
            let owner = owner.as_ref().map(|owner| (owner, caller.sub.as_str()));
            tasks::set_owner(&mut tx, task, owner).await?;
        }
        let view = tasks::get(&mut tx, &self.graphs, task)
            .await?
            .ok_or_else(|| task_not_found(task))?;
        self.store.commit(tx).await?;
        tracing::info!(change = ?change, "task owner changed");
        Ok(view)
    }
}

/// The size of a task as JSON (its free-form parts, which are nearly all of it).
fn task_size(task: &TaskView) -> usize {
    page::json_size(&task.fields)
        + page::json_size(&task.incoming)
        + page::json_size(&task.outgoing)
        + task.error.as_ref().map_or(0, page::json_size)
}
