//! Closed-loop load generator for the job service.
//!
//! `concurrency` workers each send one request, wait for the answer, and send the next, for
//! `seconds` seconds. Prints one JSON line: requests, errors, throughput and latency
//! percentiles. Reads `JOB_SERVICE_GRPC_ADDR`, `JOB_SERVICE_HTTP_URL` and `JOB_SERVICE_TOKEN`.
//!
//! Like pgbench's client, it does not parse the answers: it reads every byte of each but does
//! not decode the jobs, so the service under test keeps the CPU that decoding would take.
//!
//! ```text
//! loadgen grpc CONCURRENCY SECONDS WORKFLOW VARIABLES_JSON   # StartJob over gRPC
//! loadgen http CONCURRENCY SECONDS WORKFLOW VARIABLES_JSON   # POST /operations-manager/jobs/start
//! loadgen keyed CONCURRENCY SECONDS WORKFLOW VARIABLES_JSON  # StartJob over gRPC, each with an
//!                                                            # idempotency key of its own
//! loadgen get  CONCURRENCY SECONDS IDS_FILE                  # GetJob, ids (one per line) in turn
//! loadgen list CONCURRENCY SECONDS [CREATED_AT_MICROS JOB_ID] # ListJobs, 50 a page, the page
//!                                                            # after that job, else the first
//! loadgen body WORKFLOW VARIABLES_JSON  # writes a framed gRPC StartJobRequest to stdout, the
//!                                       # body another load generator (h2load) sends
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use job_service::domain::page::JobCursor;
use job_service::grpc::pb;
use prost::bytes::Buf;
use prost::Message;
use serde_json::{json, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Status;

/// Encodes requests of type `T`; takes each answer as its size in bytes, undecoded.
struct Undecoded<T>(PhantomData<T>);

impl<T> Default for Undecoded<T> {
    fn default() -> Self {
        Undecoded(PhantomData)
    }
}

impl<T: Message + Send + 'static> Codec for Undecoded<T> {
    type Encode = T;
    type Decode = usize;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self::default()
    }

    fn decoder(&mut self) -> Self {
        Self::default()
    }
}

impl<T: Message> Encoder for Undecoded<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<T> Decoder for Undecoded<T> {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let size = buf.remaining();
        buf.advance(size);
        Ok(Some(size))
    }
}

/// What each request asks for.
enum Load {
    StartGrpc(pb::StartJobRequest),
    /// StartJob with a new idempotency key each time: this prefix, the worker and the count.
    StartKeyed(pb::StartJobRequest, String),
    StartHttp(Value),
    Get(Vec<String>),
    List(pb::ListJobsRequest),
}

/// One worker's connection(s), as a separate client would have.
struct Client {
    grpc: tonic::client::Grpc<Channel>,
    http: reqwest::Client,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    token: String,
    http_url: String,
}

impl Client {
    async fn grpc<T: Message + Send + 'static>(
        &mut self,
        path: &'static str,
        message: T,
        key: Option<String>,
    ) -> bool {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        if let Some(key) = key {
            let key = key.parse().expect("an idempotency key is ASCII");
            request.metadata_mut().insert("idempotency-key", key);
        }
        if self.grpc.ready().await.is_err() {
            return false;
        }
        self.grpc
            .unary(
                request,
                PathAndQuery::from_static(path),
                Undecoded::<T>::default(),
            )
            .await
            .is_ok_and(|reply| *reply.get_ref() > 0)
    }

    async fn http_start(&self, body: &Value) -> bool {
        let sent = self
            .http
            .post(format!("{}/operations-manager/jobs/start", self.http_url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                response.bytes().await.is_ok_and(|body| !body.is_empty())
            }
            _ => false,
        }
    }

    /// Sends the `n`th request of `load` (worker `worker`'s).
    async fn send(&mut self, load: &Load, worker: usize, n: usize) -> bool {
        match load {
            Load::StartGrpc(request) => {
                self.grpc(
                    "/operations_manager.v1.JobService/StartJob",
                    request.clone(),
                    None,
                )
                .await
            }
            Load::StartKeyed(request, prefix) => {
                self.grpc(
                    "/operations_manager.v1.JobService/StartJob",
                    request.clone(),
                    Some(format!("{prefix}-{worker}-{n}")),
                )
                .await
            }
            Load::StartHttp(body) => self.http_start(body).await,
            Load::Get(ids) => {
                let id = ids[n % ids.len()].clone();
                self.grpc(
                    "/operations_manager.v1.JobService/GetJob",
                    pb::GetJobRequest { id },
                    None,
                )
                .await
            }
            Load::List(request) => {
                self.grpc(
                    "/operations_manager.v1.JobService/ListJobs",
                    request.clone(),
                    None,
                )
                .await
            }
        }
    }
}

/// StartJob of `workflow` with `variables` (a JSON object).
fn start_request(workflow: &str, variables: &Value) -> pb::StartJobRequest {
    pb::StartJobRequest {
        workflow: workflow.to_owned(),
        options: Some(pb::JobOptions {
            variables: Some(job_service::grpc::map_to_struct(
                variables.as_object().expect("VARIABLES_JSON is an object"),
            )),
            ..Default::default()
        }),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen grpc|http|keyed CONCURRENCY SECONDS WORKFLOW VARIABLES_JSON\n       \
         loadgen get CONCURRENCY SECONDS IDS_FILE\n       \
         loadgen list CONCURRENCY SECONDS [CREATED_AT_MICROS JOB_ID]\n       \
         loadgen body WORKFLOW VARIABLES_JSON"
    );
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(concurrency), Some(seconds)) = (args.get(1), args.get(2), args.get(3))
    else {
        usage()
    };
    if let [_, command, workflow, variables] = args.as_slice() {
        if command == "body" {
            let variables: Value = serde_json::from_str(variables).expect("VARIABLES_JSON is JSON");
            let message = start_request(workflow, &variables).encode_to_vec();
            // gRPC framing: not compressed, then the length (4 bytes, big-endian).
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            std::io::Write::write_all(&mut std::io::stdout(), &framed).expect("stdout is writable");
            return;
        }
    }
    let rest = &args[4..];
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    let duration = Duration::from_secs(seconds.parse().expect("SECONDS is a number"));
    let load = match (target.as_str(), rest) {
        ("grpc" | "http" | "keyed", [workflow, variables]) => {
            let variables: Value = serde_json::from_str(variables).expect("VARIABLES_JSON is JSON");
            match target.as_str() {
                "http" => Load::StartHttp(
                    json!({"workflow": workflow, "options": {"variables": variables}}),
                ),
                "keyed" => Load::StartKeyed(
                    start_request(workflow, &variables),
                    // Keys of earlier runs against the same database are not used again.
                    format!("{}", chrono::Utc::now().timestamp_micros()),
                ),
                _ => Load::StartGrpc(start_request(workflow, &variables)),
            }
        }
        ("get", [file]) => {
            let ids: Vec<String> = std::fs::read_to_string(file)
                .expect("IDS_FILE can be read")
                .lines()
                .map(str::to_owned)
                .collect();
            assert!(!ids.is_empty(), "IDS_FILE holds no id");
            Load::Get(ids)
        }
        ("list", after) => {
            let page_token = match after {
                [] => String::new(),
                [micros, id] => JobCursor {
                    created_at: DateTime::from_timestamp_micros(
                        micros.parse().expect("CREATED_AT_MICROS is a number"),
                    )
                    .expect("CREATED_AT_MICROS is a time"),
                    id: id.clone(),
                }
                .encode(),
                _ => usage(),
            };
            Load::List(pb::ListJobsRequest {
                page_size: 50,
                page_token,
                ..Default::default()
            })
        }
        _ => usage(),
    };
    let load = Arc::new(load);
    let token = std::env::var("JOB_SERVICE_TOKEN").expect("JOB_SERVICE_TOKEN is set");
    let grpc_addr =
        std::env::var("JOB_SERVICE_GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let http_url =
        std::env::var("JOB_SERVICE_HTTP_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());

    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = Client {
            grpc: tonic::client::Grpc::new(channel),
            http: reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
            bearer: format!("Bearer {token}").parse().unwrap(),
            token: token.clone(),
            http_url: http_url.clone(),
        };
        let load = load.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            // Workers start at different ids of a get load.
            let mut n = worker * 7919;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if client.send(&load, worker, n).await {
                    latencies.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                n += 1;
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
