//! `operations_manager.v1.JobService` adapters.

use tonic::{Request, Response, Status};

use super::answer::StartJobAnswer;
use super::convert::{job_id, job_ids, job_status_filter, time_from_proto, ManualFinish, Retry};
use super::pb;
use super::servers::job_service_server::JobService;
use super::{stream_of, GrpcApi, Streamed};
use crate::domain::page::JobFilter;
use crate::domain::run::JobControl;
use crate::domain::{idempotency, storable, Caller, IdempotencyKey, RawStartJob, StartJob};
use crate::observe::record_job_id;
use crate::service::ListJobs;

#[tonic::async_trait]
impl JobService for GrpcApi {
    async fn start_job(
        &self,
        request: Request<pb::StartJobRequest>,
    ) -> Result<Response<StartJobAnswer>, Status> {
        let caller = self.caller(&request)?;
        let key = match request.metadata().get(idempotency::FIELD) {
            None => None,
            Some(value) => Some(IdempotencyKey::from_header(value.as_bytes())?),
        };
        let start = StartJob::parse(RawStartJob::try_from(request.into_inner())?)?;
        let started = self.service.start_job(&caller, start, key).await?;
        self.metrics.job_started(started.created);
        record_job_id(&started.job.id);
        Ok(Response::new(StartJobAnswer::new(
            started.job,
            started.created,
            &self.graphs,
        )))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let job = self
            .service
            .get_job(&caller, &request.into_inner().id)
            .await?;
        record_job_id(&job.id);
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job.into()),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let list = ListJobs {
            filter: JobFilter {
                status: job_status_filter(request.status)?,
                workflow: match request.workflow.as_str() {
                    "" => None,
                    name => Some(storable::text(name, "workflow")?.to_owned()),
                },
                created_after: request
                    .created_after
                    .map(|t| time_from_proto(&t, "created_after"))
                    .transpose()?,
                created_before: request
                    .created_before
                    .map(|t| time_from_proto(&t, "created_before"))
                    .transpose()?,
            },
            page_size: request.page_size,
            page_token: request.page_token,
        };
        let page = self.service.list_jobs(&caller, list).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn cancel_jobs(
        &self,
        request: Request<pb::CancelJobsRequest>,
    ) -> Result<Response<pb::CancelJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::ControlJobs)?;
        let ids = request.into_inner().job_ids;
        let outcomes = self.control_jobs(&caller, JobControl::Cancel, ids).await?;
        Ok(Response::new(pb::CancelJobsResponse { outcomes }))
    }

    async fn pause_jobs(
        &self,
        request: Request<pb::PauseJobsRequest>,
    ) -> Result<Response<pb::PauseJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::ControlJobs)?;
        let ids = request.into_inner().job_ids;
        let outcomes = self.control_jobs(&caller, JobControl::Pause, ids).await?;
        Ok(Response::new(pb::PauseJobsResponse { outcomes }))
    }

    async fn resume_jobs(
        &self,
        request: Request<pb::ResumeJobsRequest>,
    ) -> Result<Response<pb::ResumeJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::ControlJobs)?;
        let ids = request.into_inner().job_ids;
        let outcomes = self.control_jobs(&caller, JobControl::Resume, ids).await?;
        Ok(Response::new(pb::ResumeJobsResponse { outcomes }))
    }

    async fn finish_task(
        &self,
        request: Request<pb::FinishTaskRequest>,
    ) -> Result<Response<pb::FinishTaskResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::ControlJobs)?;
        let finish = ManualFinish::try_from(request.into_inner())?;
        record_job_id(&finish.job_id);
        self.engine
            .finish_task(&caller, &finish.job_id, &finish.task_id, finish.result)
            .await?;
        Ok(Response::new(pb::FinishTaskResponse {}))
    }

    async fn retry_task(
        &self,
        request: Request<pb::RetryTaskRequest>,
    ) -> Result<Response<pb::RetryTaskResponse>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::ControlJobs)?;
        let retry = Retry::try_from(request.into_inner())?;
        record_job_id(&retry.job_id);
        self.engine
            .retry_task(&caller, &retry.job_id, &retry.task_id, retry.variables)
            .await?;
        Ok(Response::new(pb::RetryTaskResponse {}))
    }

    type WatchJobStream = Streamed<pb::JobEvent>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = self.caller(&request)?;
        caller.require(crate::domain::Action::WatchJobs)?;
        let request = request.into_inner();
        let id = job_id(&request.job_id, "job_id")?;
        record_job_id(id.as_str());
        let events = self
            .engine
            .watch_job(&caller, id.as_str(), request.after_sequence)
            .await?;
        Ok(Response::new(stream_of(events)))
    }
}

impl GrpcApi {
    /// CancelJobs, PauseJobs and ResumeJobs: the same call but for what it does.
    async fn control_jobs(
        &self,
        caller: &Caller,
        control: JobControl,
        ids: Vec<String>,
    ) -> Result<Vec<pb::JobOutcome>, Status> {
        let ids = job_ids(ids)?;
        let outcomes = self.engine.control_jobs(caller, control, ids).await?;
        Ok(outcomes.into_iter().map(Into::into).collect())
    }
}
