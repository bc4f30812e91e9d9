//! A StartJob request as an HTTP body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    job_service::fuzzing::http_start_job(data);
});
