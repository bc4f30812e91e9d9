//! A StartJob request as gRPC bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    job_service::fuzzing::grpc_start_job(data);
});
