//! `operations_manager.v1.WorkflowService` adapters.

use tonic::{Request, Response, Status};

use super::convert::workflow_document;
use super::pb;
use super::servers::workflow_service_server::WorkflowService;
use super::GrpcApi;
use crate::domain::storable;

#[tonic::async_trait]
impl WorkflowService for GrpcApi {
    async fn create_workflow(
        &self,
        request: Request<pb::CreateWorkflowRequest>,
    ) -> Result<Response<pb::CreateWorkflowResponse>, Status> {
        let caller = self.caller(&request)?;
        let document = workflow_document(request.into_inner().workflow, "workflow")?;
        let workflow = self
            .service
            .create_workflow(&caller, document, "workflow")
            .await?;
        Ok(Response::new(pb::CreateWorkflowResponse {
            workflow: Some(workflow.into()),
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        let workflow = self
            .service
            .get_workflow(&caller, storable::text(&name, "name")?)
            .await?;
        Ok(Response::new(pb::GetWorkflowResponse {
            workflow: Some(workflow.into()),
        }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let page = self
            .service
            .list_workflows(
                &caller,
                storable::text(&request.name_prefix, "name_prefix")?,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_workflow(
        &self,
        request: Request<pb::DeleteWorkflowRequest>,
    ) -> Result<Response<pb::DeleteWorkflowResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        self.service
            .delete_workflow(&caller, storable::text(&name, "name")?)
            .await?;
        Ok(Response::new(pb::DeleteWorkflowResponse {}))
    }

    async fn import_workflows(
        &self,
        request: Request<pb::ImportWorkflowsRequest>,
    ) -> Result<Response<pb::ImportWorkflowsResponse>, Status> {
        let caller = self.caller(&request)?;
        let documents = request
            .into_inner()
            .workflows
            .into_iter()
            .enumerate()
            .map(|(i, document)| workflow_document(Some(document), &format!("workflows[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let workflows = self
            .service
            .import_workflows(&caller, documents, "workflows")
            .await?;
        Ok(Response::new(pb::ImportWorkflowsResponse {
            workflows: workflows.into_iter().map(Into::into).collect(),
        }))
    }
}
