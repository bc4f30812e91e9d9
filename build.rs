//! Compiles the protobuf contract with protox (pure Rust, so no system `protoc` is needed) and
//! generates the tonic services. The encoded descriptor set is written beside the generated code:
//! server reflection serves it, and the strict codec uses it to find fields a client sent that
//! this version does not know.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/operations_manager/v1/jobs.proto",
        "proto/operations_manager/v1/tasks.proto",
        "proto/operations_manager/v1/workflows.proto",
        "proto/operations_manager/v1/workers.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("operations_manager_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
