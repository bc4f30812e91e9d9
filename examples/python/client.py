"""A job-service client in Python, with stubs generated from the repository's .proto files.

Imports the workflow in examples/workflows/create-network.json, starts a job from it, reads the
job back over gRPC and over the JSON gateway, and finds it in the job list. Prints each step;
exits non-zero on the first failure. `run` beside this file generates the stubs and starts it.
"""

import datetime
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))

import grpc  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402
from operations_manager.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: E402
from operations_manager.v1 import workflows_pb2, workflows_pb2_grpc  # noqa: E402

WORKFLOW_FILE = HERE.parent / "workflows" / "create-network.json"
# Every call gives up after this many seconds instead of hanging on a stuck service.
TIMEOUT = 10


class Failed(Exception):
    """A check that did not hold."""


def to_struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(value, s)
    return s


def whole_numbers(value):
    """JSON from a Struct: numbers travel as doubles, so whole ones become ints again."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def from_struct(s: struct_pb2.Struct) -> dict:
    return whole_numbers(json_format.MessageToDict(s))


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Failed(what)


class Client:
    def __init__(self, addr: str, http_url: str, token: str):
        self.http_url = http_url.rstrip("/")
        self.token = token
        self.channel = grpc.insecure_channel(addr)
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.workflows = workflows_pb2_grpc.WorkflowServiceStub(self.channel)
        # Every call carries the bearer token in its metadata.
        self.metadata = [("authorization", f"Bearer {token}")]

    def call(self, method, request):
        return method(request, metadata=self.metadata, timeout=TIMEOUT)

    def import_workflow(self, document: dict) -> str:
        """Stores `document`. Run again, it keeps the stored copy when it is the same document
        and replaces it when the file has changed (there is no update call: delete, create)."""
        name = document["name"]
        request = workflows_pb2.CreateWorkflowRequest(workflow=to_struct(document))
        try:
            self.call(self.workflows.CreateWorkflow, request)
            return f"created workflow {name!r}"
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        stored = self.call(
            self.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(name=name)
        ).workflow
        if from_struct(stored.document) == document:
            return f"workflow {name!r} already stored, unchanged"
        self.call(self.workflows.DeleteWorkflow, workflows_pb2.DeleteWorkflowRequest(name=name))
        self.call(self.workflows.CreateWorkflow, request)
        return f"replaced workflow {name!r} with the file's version"

    def gateway_job(self, job_id: str) -> dict:
        """The job as the JSON gateway returns it (REST field names)."""
        request = urllib.request.Request(
            f"{self.http_url}/operations-manager/jobs/{job_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.load(response)["data"]


def main() -> int:
    addr = os.environ.get("JOB_SERVICE_GRPC_ADDR", "127.0.0.1:50051")
    http_url = os.environ.get("JOB_SERVICE_HTTP_URL", "http://127.0.0.1:8080")
    token = os.environ.get("JOB_SERVICE_TOKEN", "")
    if not token:
        print(
            "JOB_SERVICE_TOKEN is not set: export a token, e.g. from `job-service token`",
            file=sys.stderr,
        )
        return 2
    client = Client(addr, http_url, token)
    print(f"job-service at {addr} (gRPC) and {http_url} (HTTP)")

    document = json.loads(WORKFLOW_FILE.read_text())
    workflow = document["name"]
    print(f"1. import {WORKFLOW_FILE.name}: {client.import_workflow(document)}")

    description = f"Python example, {datetime.datetime.now(datetime.timezone.utc).isoformat()}"
    variables = {
        "adapterId": "Infoblox",
        "network": "10.20.30.0/24",
        "comment": "created by examples/python",
        "vlan": 120,
    }
    started = client.call(
        client.jobs.StartJob,
        jobs_pb2.StartJobRequest(
            workflow=workflow,
            options=jobs_pb2.JobOptions(description=description, variables=to_struct(variables)),
        ),
    )
    job = started.job
    check(started.created, "StartJob created a new job")
    check(len(job.id) == 24, f"the job id is 24 hex characters: {job.id!r}")
    check(job.name == workflow, f"the job's name is the workflow's: {job.name!r}")
    check(job.description == description, f"the job's description is ours: {job.description!r}")
    check(job.status == jobs_pb2.JOB_STATUS_RUNNING, f"a new job is running: {job.status}")
    job_variables = from_struct(job.variables)
    check(
        job_variables == {**variables, "_id": job.id, "initiator": job_variables.get("initiator")},
        f"the job's variables are ours plus _id and initiator: {job_variables}",
    )
    print(
        f"2. started job {job.id}: workflow {job.name!r}, status "
        f"{jobs_pb2.JobStatus.Name(job.status)}, {len(job.tasks)} tasks, "
        f"initiator {job_variables['initiator']!r}, variables {json.dumps(variables)}"
    )

    # The job runs on after the start (its tasks change status), so what is compared is what
    # a start fixes: id, name, creation time and the tasks it holds.
    def started_as(other):
        return (other.id, other.name, other.created, sorted(other.tasks)) == (
            job.id, job.name, job.created, sorted(job.tasks))

    got = client.call(client.jobs.GetJob, jobs_pb2.GetJobRequest(id=job.id)).job
    check(started_as(got), "GetJob returns the job StartJob started")
    print(f"3. got job {got.id}: the one started (created {got.created.ToJsonString()}), now "
          f"{jobs_pb2.JobStatus.Name(got.status)}")

    found, pages, page_token = None, 0, ""
    while found is None and pages < 20:
        page = client.call(
            client.jobs.ListJobs,
            jobs_pb2.ListJobsRequest(workflow=workflow, page_size=100, page_token=page_token),
        )
        pages += 1
        found = next((j for j in page.jobs if j.id == job.id), None)
        page_token = page.next_page_token
        if not page_token:
            break
    check(found is not None, f"ListJobs lists job {job.id}")
    check(started_as(found), "the listed job is the job started")
    print(f"4. listed jobs of {workflow!r}: job {job.id} is there (page {pages})")

    rest = client.gateway_job(job.id)
    check(rest["_id"] == job.id, f"the gateway returns the job: {rest.get('_id')!r}")
    check(rest["variables"] == job_variables, f"the gateway has the same variables: {rest['variables']}")
    print(f"5. read job {job.id} through the JSON gateway: _id and variables match")

    print(f"ok: job {job.id}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as err:
        print(f"failed: gRPC {err.code().name}: {err.details()}", file=sys.stderr)
    except urllib.error.HTTPError as err:
        print(f"failed: HTTP {err.code}: {err.read().decode(errors='replace')}", file=sys.stderr)
    except (Failed, OSError, KeyError, ValueError) as err:
        print(f"failed: {err}", file=sys.stderr)
    sys.exit(1)
