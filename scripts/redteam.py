"""The attacks of scripts/redteam, one after the other, against a running job-service, with the
service's resident memory sampled throughout.

Usage: redteam.py PID GRPC_ADDR HTTP_URL TOKEN WORKDIR (scripts/redteam passes them);
REDTEAM_ONLY=streams,pages runs only the attacks whose names hold one of those words. Prints one
line per attack (peak and settled RSS, what the service answered) and the verdict: peak RSS
under 256 MiB. Exits 1 when over.
"""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
from google.protobuf import struct_pb2

PID, GRPC_ADDR, HTTP_URL, TOKEN, WORK = sys.argv[1:6]
sys.path.insert(0, os.path.join(WORK, "generated"))
from operations_manager.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: E402

LIMIT_MIB = 256
MIB = 1024 * 1024


def rss():
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples the service's RSS every 20 ms; `peak` is the highest since the last reset."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.overall = 0

    def run(self):
        while True:
            now = rss()
            self.peak = max(self.peak, now)
            self.overall = max(self.overall, now)
            time.sleep(0.02)


sampler = Sampler()
results = []


ATTACKS = []


def attack(name):
    """Registers an attack; main() runs them in order, measuring each."""

    def wrap(run):
        ATTACKS.append((name, run))
        return run

    return wrap


def measure(name, run):
    sampler.peak = rss()
    note = run()
    time.sleep(1.0)
    after = rss()
    results.append((name, sampler.peak, after, note))
    print(f"{name:<48} peak {sampler.peak / MIB:6.1f} MiB  after {after / MIB:6.1f} MiB  {note}", flush=True)


def http(method, path, body=None, raw=None, timeout=60):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(HTTP_URL + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


METADATA = [("authorization", f"Bearer {TOKEN}")]
channel = grpc.insecure_channel(GRPC_ADDR, options=[("grpc.max_receive_message_length", 64 * MIB)])
jobs = jobs_pb2_grpc.JobServiceStub(channel)


def grpc_code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def workflow(name, tasks, description_bytes):
    """A workflow of `tasks` tasks in a row, each with a description of `description_bytes`."""
    ids = [f"t{i}" for i in range(tasks)]
    document = {
        "name": name,
        "tasks": {"workflow_start": {"name": "workflow_start"}, "workflow_end": {"name": "workflow_end"}},
        "transitions": {"workflow_end": {}},
    }
    chain = ["workflow_start"] + ids + ["workflow_end"]
    for task in ids:
        document["tasks"][task] = {
            "name": "query", "app": "WorkFlowEngine", "type": "operation",
            "description": f"{name} {task} " + "d" * description_bytes,
            "variables": {"incoming": {"pass": "$var.job.device"}, "outgoing": {"return_data": None}},
        }
    for source, target in zip(chain, chain[1:]):
        document["transitions"][source] = {target: {"state": "success", "type": "standard"}}
    return document


@attack("60 distinct 1.6 MB workflows, a job of each")
def large_workflows():
    statuses = set()
    for i in range(60):
        statuses.add(http("POST", "/automation-studio/automations", {"automation": workflow(f"Large {i}", 400, 4000)})[0])
        statuses.add(http("POST", "/operations-manager/jobs/start", {"workflow": f"Large {i}", "options": {}})[0])
    return f"answers {sorted(statuses)}"


@attack("... and the 60 workflows deleted")
def delete_large_workflows():
    statuses = {http("DELETE", f"/workflow_builder/workflows/delete/Large%20{i}")[0] for i in range(60)}
    return f"answers {sorted(statuses)}"


@attack("8 x 4 MB bodies of 2,000,000 values (HTTP)")
def many_values_http():
    body = b'{"workflow": "W", "options": {"variables": {"x": [' + b",".join([b"0"] * 2_000_000) + b"]}}}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http("POST", "/operations-manager/jobs/start", raw=body)[0], range(8)))
    return f"answers {sorted(set(statuses))}, {len(body) / MIB:.1f} MiB each"


@attack("8 x 4 MB messages of 370,000 values (gRPC)")
def many_values_grpc():
    variables = struct_pb2.Struct()
    variables.update({"x": [0] * 370_000})
    request = jobs_pb2.StartJobRequest(workflow="W", options=jobs_pb2.JobOptions(variables=variables))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: grpc_code(lambda: jobs.StartJob(request, metadata=METADATA)), range(8)))
    return f"answers {sorted(set(codes))}, {request.ByteSize() / MIB:.1f} MiB each"


@attack("8 x 4 MB job variables (HTTP, accepted)")
def large_strings():
    body = {"workflow": "W", "options": {"variables": {"blob": "b" * (4 * MIB - 200)}}}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http("POST", "/operations-manager/jobs/start", body)[0], range(8)))
    return f"answers {sorted(set(statuses))}"


@attack("JSON nested 120 deep (HTTP) and 40 deep (gRPC)")
def deep():
    value = 1
    for _ in range(120):
        value = [value]
    status = http("POST", "/operations-manager/jobs/start", {"workflow": "W", "options": {"variables": {"x": value}}})[0]
    value = 1
    for _ in range(40):
        value = [value]
    variables = struct_pb2.Struct()
    variables.update({"x": value})
    code = grpc_code(lambda: jobs.StartJob(jobs_pb2.StartJobRequest(workflow="W", options=jobs_pb2.JobOptions(variables=variables)), metadata=METADATA))
    return f"answers {status} and {code}"


@attack("error echoes: 1 MiB name, 50,000 bad groups")
def echoes():
    code = grpc_code(lambda: jobs.StartJob(jobs_pb2.StartJobRequest(workflow="n" * MIB, options=jobs_pb2.JobOptions()), metadata=METADATA))
    status, body = http("POST", "/operations-manager/jobs/start", {"workflow": "W", "options": {"groups": [f"g{i}" for i in range(50_000)]}})
    return f"answers {code} and {status} ({len(body)} bytes)"


@attack("pages of 1000 jobs of 60 KB, 8 at once")
def pages():
    blob = "p" * 60_000
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: http("POST", "/operations-manager/jobs/start", {"workflow": "W", "options": {"variables": {"device": f"r{i}", "blob": blob}}}), range(400)))
        sizes = list(pool.map(lambda _: len(http("GET", "/operations-manager/jobs?limit=1000")[1]), range(8)))
        grpc_sizes = list(pool.map(lambda _: jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=1000), metadata=METADATA).ByteSize(), range(8)))
    return f"REST page {max(sizes) / MIB:.1f} MiB, gRPC page {max(grpc_sizes) / MIB:.1f} MiB"


@attack("40,000 half-sent streams on one HTTP/2 connection")
def stream_flood():
    script = r"""
const http2 = require('http2');
const [addr, token] = process.argv.slice(1);
const session = http2.connect('http://' + addr);
let opened = 0, refused = 0, answered = 0;
session.on('error', () => {});
session.on('remoteSettings', (s) => { console.error('max concurrent streams', s.maxConcurrentStreams); });
for (let i = 0; i < 40000; i++) {
  let stream;
  try {
    stream = session.request({':method': 'POST', ':path': '/operations_manager.v1.JobService/StartJob',
      'content-type': 'application/grpc', 'te': 'trailers', 'authorization': 'Bearer ' + token}, {endStream: false});
  } catch (e) { refused++; continue; }
  opened++;
  stream.on('error', () => { refused++; });
  stream.on('response', () => { answered++; });
  stream.write(Buffer.from([0, 0, 0, 4, 0, 1, 2]));
}
setTimeout(() => { console.log(JSON.stringify({opened, refused, answered})); session.destroy(); process.exit(0); }, 15000);
"""
    timeline = []
    done = threading.Event()

    def follow():
        started = time.monotonic()
        while not done.is_set():
            timeline.append((round(time.monotonic() - started, 1), rss() // MIB))
            time.sleep(0.5)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    output = subprocess.run(["node", "-e", script, GRPC_ADDR, TOKEN], capture_output=True, text=True, timeout=120)
    done.set()
    if os.environ.get("REDTEAM_TIMELINE"):
        print(timeline)
    return output.stdout.strip() + " " + output.stderr.strip().replace("\n", " ")


@attack("1000 slow HTTP and 1000 idle gRPC connections")
def slow_connections():
    sockets = []
    http_host, http_port = HTTP_URL.removeprefix("http://").rsplit(":", 1)
    grpc_host, grpc_port = GRPC_ADDR.rsplit(":", 1)
    for _ in range(1000):
        s = socket.create_connection((http_host, int(http_port)))
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
        sockets.append(socket.create_connection((grpc_host, int(grpc_port))))
    worst = 0.0
    ready = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status, _ = http("GET", "/health/ready", timeout=30)
            ready += status == 200
        except Exception:
            pass
        worst = max(worst, time.monotonic() - started)
        time.sleep(1)
    closed = 0
    for s in sockets:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except (BlockingIOError, ConnectionResetError):
            closed += 0
        s.close()
    return f"health 200 {ready} times, slowest {worst:.2f} s; {closed} of {len(sockets)} closed by the service"


def main():
    sampler.start()
    time.sleep(0.2)
    print(f"{'attack':<48} resident memory of the service (RSS)", flush=True)
    http("POST", "/automation-studio/automations", {"automation": workflow("W", 1, 10)})
    baseline = rss()
    only = os.environ.get("REDTEAM_ONLY")
    for name, run in ATTACKS:
        if only is None or any(word in name for word in only.split(",")):
            measure(name, run)
    overall = sampler.overall
    print(f"baseline {baseline / MIB:.1f} MiB, peak over all attacks {overall / MIB:.1f} MiB (limit {LIMIT_MIB} MiB): "
          f"{'within' if overall < LIMIT_MIB * MIB else 'OVER'}")
    sys.exit(0 if overall < LIMIT_MIB * MIB else 1)


if __name__ == "__main__":
    main()
