//! A workflow document and job variables, as JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: (&[u8], &[u8])| {
    job_service::fuzzing::build_job(data.0, data.1);
});
