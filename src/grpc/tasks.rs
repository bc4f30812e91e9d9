//! `operations_manager.v1.TaskService` adapters.

use tonic::{Request, Response, Status};

use super::convert::task_search;
use super::pb;
use super::servers::task_service_server::TaskService;
use super::GrpcApi;
use crate::domain::page;
use crate::domain::run::check_task_id;
use crate::domain::task::{parse_assignment, Ownership, TaskRef};
use crate::domain::{Action, Caller, JobId, Violations};
use crate::observe::record_job_id;

impl GrpcApi {
    /// The caller, allowed `action`, and the task `id` names, its job recorded in the call's
    /// span.
    fn task_call<T>(
        &self,
        request: &Request<T>,
        action: Action,
        id: &str,
    ) -> Result<(Caller, TaskRef), Status> {
        let caller = self.caller(request)?;
        caller.require(action)?;
        let task = TaskRef::parse(id, "id")?;
        record_job_id(&task.job_id);
        Ok((caller, task))
    }
}

#[tonic::async_trait]
impl TaskService for GrpcApi {
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(Action::ReadJobs)?;
        let search = task_search(request.get_ref())?;
        let (tasks, total) = self.service.search_tasks(&caller, &search).await?;
        let next = search.skip + tasks.len() as i64;
        Ok(Response::new(pb::ListTasksResponse {
            next_page_token: match next < total && !tasks.is_empty() {
                true => page::encode_skip_cursor(next),
                false => String::new(),
            },
            tasks: tasks.into_iter().map(Into::into).collect(),
            total,
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let (caller, task) = self.task_call(&request, Action::ReadJobs, &request.get_ref().id)?;
        let view = self.service.get_task(&caller, &task).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(view.into()),
        }))
    }

    async fn claim_task(
        &self,
        request: Request<pb::ClaimTaskRequest>,
    ) -> Result<Response<pb::ClaimTaskResponse>, Status> {
        let (caller, task) =
            self.task_call(&request, Action::ControlJobs, &request.get_ref().id)?;
        let view = self
            .service
            .change_task_owner(&caller, &task, Ownership::Claim)
            .await?;
        Ok(Response::new(pb::ClaimTaskResponse {
            task: Some(view.into()),
        }))
    }

    async fn assign_task(
        &self,
        request: Request<pb::AssignTaskRequest>,
    ) -> Result<Response<pb::AssignTaskResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(Action::ControlJobs)?;
        let request = request.into_inner();
        let (task, user) = parse_assignment(&request.id, &request.user_id, "id", "user_id")?;
        record_job_id(&task.job_id);
        let view = self
            .service
            .change_task_owner(&caller, &task, Ownership::Assign(user))
            .await?;
        Ok(Response::new(pb::AssignTaskResponse {
            task: Some(view.into()),
        }))
    }

    async fn release_task(
        &self,
        request: Request<pb::ReleaseTaskRequest>,
    ) -> Result<Response<pb::ReleaseTaskResponse>, Status> {
        let (caller, task) =
            self.task_call(&request, Action::ControlJobs, &request.get_ref().id)?;
        let view = self
            .service
            .change_task_owner(&caller, &task, Ownership::Release)
            .await?;
        Ok(Response::new(pb::ReleaseTaskResponse {
            task: Some(view.into()),
        }))
    }

    async fn get_manual_controller(
        &self,
        request: Request<pb::GetManualControllerRequest>,
    ) -> Result<Response<pb::GetManualControllerResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(Action::ReadJobs)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        if let Err(reason) = JobId::parse(&request.job_id) {
            violations.push("job_id", reason);
        }
        check_task_id(&request.task_id, "task_id", &mut violations);
        violations.into_result(())?;
        record_job_id(&request.job_id);
        let task = TaskRef::new(&request.job_id, &request.task_id);
        let view = self.service.manual_controller(&caller, &task).await?;
        Ok(Response::new(view.into()))
    }
}
