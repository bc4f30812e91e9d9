//! `operations_manager.v1.JobService` adapters.

use tonic::{Request, Response, Status};

use super::convert::{job_status_filter, time_from_proto};
use super::pb::{self, job_service_server::JobService};
use super::GrpcApi;
use crate::domain::page::JobFilter;
use crate::domain::{idempotency, storable, IdempotencyKey, RawStartJob, StartJob};
use crate::observe::record_job_id;
use crate::service::ListJobs;

#[tonic::async_trait]
impl JobService for GrpcApi {
    async fn start_job(
        &self,
        request: Request<pb::StartJobRequest>,
    ) -> Result<Response<pb::StartJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let key = match request.metadata().get(idempotency::FIELD) {
            None => None,
            Some(value) => Some(IdempotencyKey::from_header(value.as_bytes())?),
        };
        let start = StartJob::parse(RawStartJob::try_from(request.into_inner())?)?;
        let started = self.service.start_job(&caller, start, key).await?;
        self.metrics.job_started(started.created);
        record_job_id(&started.job.id);
        Ok(Response::new(pb::StartJobResponse {
            job: Some(started.job.into()),
            created: started.created,
        }))
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
}
