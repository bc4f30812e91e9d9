//! Entry points for the fuzz targets in `fuzz/`: each runs one edge of the service on arbitrary
//! input, as a request would reach it, without a database. They must never panic.

use serde_json::Value;

use crate::domain::job::Job;
use crate::domain::{Caller, WorkflowDocument};

/// A StartJob request as gRPC bytes: strict decoding, conversion and parsing.
pub fn grpc_start_job(bytes: &[u8]) {
    let _ = crate::grpc::parse_start_request(bytes);
}

/// A StartJob request as an HTTP body: JSON parsing, the reference schema's checks, parsing.
pub fn http_start_job(bytes: &[u8]) {
    let _ = crate::http::parse_start_body(bytes);
}

/// A workflow document and job variables, both as JSON: workflow parsing, the task graph and
/// input schema checks, and building the job.
pub fn build_job(workflow: &[u8], variables: &[u8]) {
    let Ok(document) = serde_json::from_slice::<Value>(workflow) else {
        return;
    };
    let Ok(workflow) = WorkflowDocument::parse(document, "workflow") else {
        return;
    };
    let variables = match serde_json::from_slice::<Value>(variables) {
        Ok(Value::Object(variables)) => variables,
        _ => serde_json::Map::new(),
    };
    let options = crate::domain::start::JobOptions {
        variables,
        ..Default::default()
    };
    let caller = Caller {
        sub: "0123456789abcdef01234567".into(),
        username: "fuzz".into(),
        groups: Vec::new(),
        roles: vec!["admin".into()],
    };
    let workflow = crate::domain::CompiledWorkflow::compile(workflow);
    if let Ok(job) = Job::start(&workflow, options, &caller, chrono::Utc::now()) {
        // The stored form must read back as the same job.
        let text = serde_json::to_string(&job).expect("a job serializes");
        let back: Job = serde_json::from_str(&text).expect("a job reads back");
        assert_eq!(back, job);
        let _ = crate::grpc::job_message(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz entry points on a spread of awkward inputs, so the suite runs them too.
    #[test]
    fn entry_points_survive_awkward_input() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97).map(|_| next() as u8).collect();
            grpc_start_job(&bytes);
            http_start_job(&bytes);
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        http_start_job(deep.as_bytes());
        http_start_job(br#"{"workflow": "w\u0000", "options": {"variables": {"a\u0000": 1}, "groups": [1e400]}}"#);
        let workflow = include_str!("../tests/data/itential-assets/cisco-ios/port-turn-up.json");
        build_job(workflow.as_bytes(), br#"{"deviceName": 1}"#);
        build_job(workflow.as_bytes(), b"not json");
        build_job(br#"{"name": "x", "tasks": {}, "transitions": {}, "inputSchema": {"$ref": "http://x"}}"#, b"{}");
    }
}
