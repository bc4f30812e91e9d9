"""A start/get/list round trip through a client generated from the service's /openapi.json.

Usage: openapi_round_trip.py CLIENT_DIR BASE_URL TOKEN WORKFLOW. CLIENT_DIR is the directory
in which openapi-python-client wrote the package `job_service_client` (`--meta none`). Starts a job from WORKFLOW with a
description and a variable, reads it back by id, then lists the newest jobs and finds it there,
every call through the generated functions and models, so a document that drifts from what the
server sends (a renamed field, a missing status, a body the models cannot parse) fails here.
Prints one line per call and exits non-zero on the first mismatch.
"""

import sys
import uuid


def main():
    client_dir, base_url, token, workflow = sys.argv[1:5]
    # The generator writes a plain package directory, not an installed distribution.
    sys.path.insert(0, client_dir)
    from job_service_client import AuthenticatedClient
    from job_service_client.api.jobs import get_job, list_jobs, start_job
    from job_service_client.models import (
        JobEnvelope,
        JobListEnvelope,
        JobOptionsBody,
        JobOptionsBodyVariables,
        ListJobsOrder,
        ListJobsSort,
        StartJobBody,
    )

    api = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    description = f"round trip {uuid.uuid4()}"
    variables = JobOptionsBodyVariables.from_dict({"adapterId": "panorama-1"})
    body = StartJobBody(workflow=workflow, options=JobOptionsBody(description=description, variables=variables))

    started = start_job.sync(client=api, body=body)
    expect(isinstance(started, JobEnvelope), f"StartJob answered {started!r}")
    job = started.data
    expect(job.name == workflow, f"StartJob: name {job.name!r}, expected {workflow!r}")
    expect(job.description == description, f"StartJob: description {job.description!r}")
    expect(job.variables.to_dict().get("adapterId") == "panorama-1", f"StartJob: variables {job.variables.to_dict()!r}")
    expect(len(job.tasks.to_dict()) > 0, "StartJob: the job has no tasks")
    print(f"StartJob ok id={job.field_id} status={job.status} tasks={len(job.tasks.to_dict())}")

    fetched = get_job.sync(job.field_id, client=api)
    expect(isinstance(fetched, JobEnvelope), f"GetJob answered {fetched!r}")
    # The job runs on after the start (its tasks change status), so what is compared is what a
    # start fixes: id, name, description, creation time and the tasks it holds.
    def started_as(other):
        return (other.field_id, other.name, other.description, other.created,
                sorted(other.tasks.to_dict())) == (job.field_id, job.name, job.description,
                                                   job.created, sorted(job.tasks.to_dict()))

    expect(started_as(fetched.data), "GetJob: the job is not the one StartJob returned")
    print(f"GetJob ok id={fetched.data.field_id}")

    # openapi-python-client sends object query parameters as plain form keys, not the
    # document's deepObject `equals[name]=...`; the newest-first page needs no filter.
    listed = list_jobs.sync(client=api, sort=ListJobsSort.CREATED, order=ListJobsOrder.DESC, limit=50)
    expect(isinstance(listed, JobListEnvelope), f"ListJobs answered {listed!r}")
    ids = [item.field_id for item in listed.data]
    expect(job.field_id in ids, f"ListJobs: {job.field_id} is not among the newest {len(ids)} jobs")
    print(f"ListJobs ok total={listed.metadata.total} found={job.field_id}")


def expect(condition, message):
    if not condition:
        raise SystemExit(f"round trip failed: {message}")


if __name__ == "__main__":
    main()
