//! The gRPC front door: generated code, thin adapters, proto <-> domain conversions. Generated
//! `pb` types never leave this module.

pub mod codec;
mod convert;
mod jobs;
mod status;
mod workflows;

use std::sync::Arc;

use crate::domain::Caller;
use crate::service::Service;

/// Code generated from `proto/operations_manager/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("operations_manager.v1");
}

/// The encoded descriptor set of our protos (and the well-known types they import), for
/// server reflection and for the strict codec.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/operations_manager_descriptor.bin"
));

pub use pb::job_service_client::JobServiceClient;
pub use pb::job_service_server::JobServiceServer;
pub use pb::workflow_service_client::WorkflowServiceClient;
pub use pb::workflow_service_server::WorkflowServiceServer;

/// What every adapter holds: the use cases.
#[derive(Clone)]
pub struct GrpcApi {
    service: Arc<Service>,
}

impl GrpcApi {
    pub fn new(service: Arc<Service>) -> Self {
        GrpcApi { service }
    }

    /// The identity a call acts for. Every call runs as the built-in administrator until
    /// authentication is configured.
    fn caller<T>(&self, _request: &tonic::Request<T>) -> Caller {
        Caller::builtin_admin()
    }
}

/// The router with both services, health and reflection (v1 and v1alpha, so every grpcurl
/// version works).
pub fn router(
    service: Arc<Service>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<tonic::service::Routes> {
    let api = GrpcApi::new(service);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(JobServiceServer::new(api.clone()))
        .add_service(WorkflowServiceServer::new(api));
    Ok(routes.routes())
}
