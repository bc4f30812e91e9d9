//! `operations_manager.v1.WorkerService` adapters.

use tonic::{Request, Response, Status};

use super::convert::{task_token, Completion, Poll};
use super::pb;
use super::servers::worker_service_server::WorkerService;
use super::{stream_of, GrpcApi, Streamed};

#[tonic::async_trait]
impl WorkerService for GrpcApi {
    type PollTasksStream = Streamed<pb::WorkerTask>;

    async fn poll_tasks(
        &self,
        request: Request<pb::PollTasksRequest>,
    ) -> Result<Response<Self::PollTasksStream>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::RunTasks)?;
        let poll = Poll::try_from(request.into_inner())?;
        let tasks = self
            .engine
            .poll_tasks(&caller, poll.worker_id, poll.apps, poll.max_tasks)
            .await?;
        Ok(Response::new(stream_of(tasks)))
    }

    async fn heartbeat_task(
        &self,
        request: Request<pb::HeartbeatTaskRequest>,
    ) -> Result<Response<pb::HeartbeatTaskResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::RunTasks)?;
        let request = request.into_inner();
        let heartbeat = self
            .engine
            .heartbeat(&caller, task_token(&request.task_token)?)
            .await?;
        Ok(Response::new(heartbeat.into()))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::RunTasks)?;
        let completion = Completion::try_from(request.into_inner())?;
        self.engine
            .complete_task(&caller, &completion.task_token, completion.result)
            .await?;
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }
}
