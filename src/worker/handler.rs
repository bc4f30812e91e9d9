//! What runs one task: a command (`--exec`) or an HTTP endpoint (`--http`), given the task as
//! JSON, its result read back as JSON, within the worker's time and size bounds.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{outgoing_object, MAX_ERROR_MESSAGE};
use crate::config::{ExecHandler, HttpHandler, WorkerConfig};

/// The bounds of one handler's run.
pub struct Limits {
    pub timeout: Duration,
    pub max_output: usize,
}

/// How a task ended, as CompleteTask reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub finish_state: String,
    pub outgoing: Map<String, Value>,
    pub error_message: String,
}

impl TaskResult {
    pub fn error(message: impl Into<String>) -> TaskResult {
        TaskResult {
            finish_state: "error".to_owned(),
            outgoing: Map::new(),
            error_message: cut_tail(message.into().trim(), MAX_ERROR_MESSAGE),
        }
    }
}

pub enum Handler {
    Exec {
        program: String,
        args: Vec<String>,
    },
    Http {
        url: String,
        client: reqwest::Client,
    },
}

/// The HTTP client of every `--http` handler. It follows no redirect (a handler answers for
/// itself), honours the usual proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...), and trusts
/// https:// endpoints through `--http-ca` only.
pub fn http_client(config: &WorkerConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &config.http_ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("--http-ca: cannot read {}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--http-ca: {} holds no PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("the HTTP client cannot be built")
}

impl Handler {
    pub fn exec(config: &ExecHandler) -> Handler {
        Handler::Exec {
            program: config.program.clone(),
            args: config.args.clone(),
        }
    }

    pub fn http(config: &HttpHandler, client: reqwest::Client) -> Handler {
        Handler::Http {
            url: config.url.clone(),
            client,
        }
    }

    /// Runs the handler on `task` (the JSON the handler is given). Dropping the future stops
    /// the handler: the command's process group is killed, the HTTP call dropped.
    pub async fn run(&self, task: &Value, limits: &Limits) -> TaskResult {
        let body = task.to_string().into_bytes();
        let run = async {
            match self {
                Handler::Exec { program, args } => exec(program, args, body, limits).await,
                Handler::Http { url, client } => http(client, url, body, limits).await,
            }
        };
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(result) => result,
            Err(_) => TaskResult::error(format!(
                "the handler ran past --task-timeout ({}) and was stopped",
                humantime::format_duration(limits.timeout)
            )),
        }
    }
}

/// Kills a command's whole process group when dropped: a shell script's children (a `sleep`,
/// a `curl`) go with it, and none keeps running, or holds the output pipe open, after its
/// task has ended.
struct ProcessGroup(Option<nix::unistd::Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // ESRCH (every process of the group already gone) is the common case.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn exec(program: &str, args: &[String], input: Vec<u8>, limits: &Limits) -> TaskResult {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // The worker's own secret is not the handler's business.
        .env_remove("JOB_SERVICE_TOKEN")
        // A group of its own, so that stopping the task stops everything it started.
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return TaskResult::error(format!("cannot run {program}: {error}")),
    };
    let _group = ProcessGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return TaskResult::error("the handler's pipes could not be opened");
    };
    // Written while the output is read: a program that answers before reading all of its
    // input must not block on a full pipe. A program that does not read its input at all
    // closes the pipe, which is not an error.
    let write = async move {
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let (_, output, errors, status) = tokio::join!(
        write,
        read_bounded(stdout, limits.max_output),
        read_tail(stderr, MAX_ERROR_MESSAGE),
        child.wait()
    );
    // Before the exit status: a program stopped for writing too much dies of SIGPIPE, and
    // the output's size is what went wrong.
    let output = match output {
        Ok(output) => output,
        Err(why) => return TaskResult::error(format!("{program}: {why}")),
    };
    let status = match status {
        Ok(status) => status,
        Err(error) => return TaskResult::error(format!("waiting for {program} failed: {error}")),
    };
    if !status.success() {
        let errors = String::from_utf8_lossy(&errors);
        let errors = errors.trim();
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("{program} exited with status {code}"),
            (None, Some(signal)) => format!("{program} was killed by signal {signal}"),
            (None, None) => format!("{program} failed"),
        };
        return TaskResult::error(if errors.is_empty() {
            how
        } else {
            errors.to_owned()
        });
    }
    result_from(&output)
}

async fn http(client: &reqwest::Client, url: &str, body: Vec<u8>, limits: &Limits) -> TaskResult {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => return TaskResult::error(format!("POST {url} failed: {error}")),
    };
    let status = response.status();
    let mut body = Vec::new();
    let mut too_large = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limits.max_output {
                    too_large = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => {
                return TaskResult::error(format!("POST {url}: reading the answer failed: {error}"))
            }
        }
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        return TaskResult::error(if text.is_empty() {
            format!("POST {url} answered {status}")
        } else {
            format!(
                "POST {url} answered {status}: {}",
                cut_tail(text, MAX_ERROR_MESSAGE - 200)
            )
        });
    }
    if too_large {
        return TaskResult::error(format!(
            "POST {url}: the answer is larger than --max-output ({} bytes)",
            limits.max_output
        ));
    }
    result_from(&body)
}

/// A handler's result: `{"finish_state", "outgoing", "error_message"}`, each optional
/// (`success`, none, none); empty output is success with no outgoing values.
pub fn result_from(output: &[u8]) -> TaskResult {
    if output.iter().all(u8::is_ascii_whitespace) {
        return TaskResult {
            finish_state: "success".to_owned(),
            outgoing: Map::new(),
            error_message: String::new(),
        };
    }
    let value: Value = match serde_json::from_slice(output) {
        Ok(value) => value,
        Err(error) => {
            return TaskResult::error(format!("the handler's output is not JSON: {error}"))
        }
    };
    let Value::Object(result) = value else {
        return TaskResult::error(
            "the handler's output must be a JSON object such as {\"finish_state\": \"success\", \"outgoing\": {}}",
        );
    };
    let finish_state = match result.get("finish_state") {
        None | Some(Value::Null) => "success",
        Some(Value::String(state)) if matches!(state.as_str(), "success" | "failure" | "error") => {
            state.as_str()
        }
        Some(other) => {
            return TaskResult::error(format!(
                "the handler's finish_state must be success, failure or error, not {other}"
            ))
        }
    };
    let outgoing = match outgoing_object(result.get("outgoing")) {
        Ok(outgoing) => outgoing,
        Err(why) => return TaskResult::error(format!("the handler's {why}")),
    };
    let error_message = match result.get("error_message") {
        Some(Value::String(message)) => cut_tail(message, MAX_ERROR_MESSAGE),
        _ if finish_state == "error" => "the handler ended the task in error".to_owned(),
        _ => String::new(),
    };
    TaskResult {
        finish_state: finish_state.to_owned(),
        outgoing,
        error_message,
    }
}

/// All of `reader`, or an error once it holds more than `max` bytes (then the pipe is closed,
/// which stops a program that goes on writing).
async fn read_bounded(reader: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, String> {
    let mut output = Vec::new();
    let mut limited = reader.take(max as u64 + 1);
    if let Err(error) = limited.read_to_end(&mut output).await {
        return Err(format!("reading its output failed: {error}"));
    }
    if output.len() > max {
        return Err(format!(
            "its output is larger than --max-output ({max} bytes)"
        ));
    }
    Ok(output)
}

/// The last `keep` bytes of `reader`, read to its end in pieces, so that a program writing
/// much to stderr neither blocks nor fills memory.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(keep * 2);
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buffer[..n]);
                if tail.len() > keep * 2 {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn cut_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_are_read_with_defaults_and_checked() {
        let ok = result_from(br#"{"outgoing": {"id": 7}}"#);
        assert_eq!(ok.finish_state, "success");
        assert_eq!(Value::Object(ok.outgoing), json!({"id": 7}));
        assert_eq!(result_from(b"  \n").finish_state, "success");
        let failure = result_from(br#"{"finish_state": "failure"}"#);
        assert_eq!(failure.finish_state, "failure");
        let error =
            result_from(br#"{"finish_state": "error", "error_message": "no such network"}"#);
        assert_eq!(error.error_message, "no such network");
        for (output, says) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "JSON object"),
            (br#"{"finish_state": "done"}"#, "finish_state"),
            (br#"{"outgoing": [1]}"#, "outgoing must be an object"),
        ] {
            let result = result_from(output);
            assert_eq!(result.finish_state, "error");
            assert!(
                result.error_message.contains(says),
                "{}",
                result.error_message
            );
        }
    }

    #[test]
    fn error_messages_keep_the_tail_at_a_character_boundary() {
        assert_eq!(cut_tail("abcdef", 3), "def");
        assert_eq!(cut_tail("aé", 1), "");
        assert_eq!(cut_tail("short", 10), "short");
    }
}
