//! Compiles the protobuf contract with protox (pure Rust, so no system `protoc` is needed) and
//! generates the messages, the tonic clients and, apart, the tonic servers. The encoded
//! descriptor set is written beside the generated code: server reflection serves it, and the
//! strict codec uses it to find fields a client sent that this version does not know.

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
    // `sqlx::migrate!` embeds the migrations when the crate is compiled, and a new file in
    // the directory does not make cargo compile it again by itself.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("operations_manager_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // The messages and the clients. Maps are `BTreeMap`s, so a message is encoded the same way
    // every time (a `HashMap` writes its entries in a random order): StartJob's answer is
    // written from parts encoded once (src/grpc/answer.rs), and a test holds it to the bytes of
    // the whole message encoded by prost.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::StrictCodec")
        .build_server(false)
        .compile_fds_with_config(descriptors.clone(), config)?;
    // The servers, on the messages generated above, except StartJob's answer: the server sends
    // its own type, which writes the job's task graph from bytes encoded once per graph.
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::StrictCodec")
        .build_client(false)
        .out_dir(servers)
        .extern_path(".operations_manager.v1", "crate::grpc::pb")
        .extern_path(
            ".operations_manager.v1.StartJobResponse",
            "crate::grpc::answer::StartJobAnswer",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
