//! Closed-loop load generator for StartJob, over gRPC or the JSON gateway.
//!
//! `concurrency` workers each send one request, wait for the answer, and send the next, for
//! `duration` seconds. Prints one JSON line: requests, errors, throughput and latency
//! percentiles. Reads `JOB_SERVICE_GRPC_ADDR`, `JOB_SERVICE_HTTP_URL` and `JOB_SERVICE_TOKEN`.
//!
//! Like pgbench's client, it does not parse the answers: it reads every byte of each but does
//! not decode the job, so the service under test keeps the CPU that decoding would take from it.
//!
//! cargo run --release --example loadgen -- grpc 16 10 'Workflow Name' '{"adapterId": "x"}'

use std::time::{Duration, Instant};

use job_service::grpc::pb;
use prost::bytes::Buf;
use prost::Message;
use serde_json::{json, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Status;

/// Encodes StartJob requests; takes each answer as its size in bytes, undecoded.
#[derive(Clone, Copy, Default)]
struct UndecodedReply;

impl Codec for UndecodedReply {
    type Encode = pb::StartJobRequest;
    type Decode = usize;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for UndecodedReply {
    type Item = pb::StartJobRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for UndecodedReply {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let size = buf.remaining();
        buf.advance(size);
        Ok(Some(size))
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, concurrency, seconds, workflow, variables] = args.as_slice() else {
        eprintln!("usage: loadgen grpc|http CONCURRENCY SECONDS WORKFLOW VARIABLES_JSON");
        std::process::exit(2);
    };
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    let duration = Duration::from_secs(seconds.parse().expect("SECONDS is a number"));
    let variables: Value = serde_json::from_str(variables).expect("VARIABLES_JSON is JSON");
    let token = std::env::var("JOB_SERVICE_TOKEN").expect("JOB_SERVICE_TOKEN is set");
    let grpc_addr =
        std::env::var("JOB_SERVICE_GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let http_url =
        std::env::var("JOB_SERVICE_HTTP_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());

    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (target, workflow, variables, token) = (
            target.clone(),
            workflow.clone(),
            variables.clone(),
            token.clone(),
        );
        let (grpc_addr, http_url) = (grpc_addr.clone(), http_url.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            // One connection per worker, as separate clients would have.
            let channel = Channel::from_shared(format!("http://{grpc_addr}"))
                .unwrap()
                .connect_lazy();
            let mut grpc = tonic::client::Grpc::new(channel);
            let start_job = PathAndQuery::from_static("/operations_manager.v1.JobService/StartJob");
            let http = reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            let body = json!({"workflow": workflow, "options": {"variables": variables}});
            let pb_variables = job_service::grpc::map_to_struct(
                variables.as_object().expect("VARIABLES_JSON is an object"),
            );
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = if target == "grpc" {
                    let mut request = tonic::Request::new(pb::StartJobRequest {
                        workflow: workflow.clone(),
                        options: Some(pb::JobOptions {
                            variables: Some(pb_variables.clone()),
                            ..Default::default()
                        }),
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                    match grpc.ready().await {
                        Ok(()) => grpc
                            .unary(request, start_job.clone(), UndecodedReply)
                            .await
                            .is_ok_and(|reply| *reply.get_ref() > 0),
                        Err(_) => false,
                    }
                } else {
                    match http
                        .post(format!("{http_url}/operations-manager/jobs/start"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|r| r.bytes())
                    {
                        Some(body) => body.await.is_ok_and(|body| !body.is_empty()),
                        None => false,
                    }
                };
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        let (l, e) = done.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index] as f64 / 1000.0
    };
    println!(
        "{}",
        json!({
            "target": target,
            "concurrency": concurrency,
            "seconds": elapsed,
            "requests": latencies.len(),
            "errors": errors,
            "throughput": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "p999_ms": percentile(0.999),
        })
    );
}
