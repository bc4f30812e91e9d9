"""Reads jobs with grpcio, as a Python client generated from the protos does.

Usage: read_jobs.py ADDR TOKEN JOB_ID. Generates the stubs from proto/ into a temporary
directory, then calls GetJob for JOB_ID and ListJobs (newest first, one page of 50), and prints
one line per call: `GetJob ok depth=<deepest nesting of the job's variables>` or the error.
Exits non-zero when a call fails, so that a message the client cannot decode shows up.
"""

import os
import sys
import tempfile

from grpc_tools import protoc
import grpc


def generate(root, out):
    args = ["protoc", "-I", os.path.join(root, "proto"), f"--python_out={out}", f"--grpc_python_out={out}"]
    proto_dir = os.path.join(root, "proto", "operations_manager", "v1")
    args += [os.path.join(proto_dir, name) for name in sorted(os.listdir(proto_dir)) if name.endswith(".proto")]
    # grpc_tools ships google/protobuf/*.proto; protoc.main wants its own include for them.
    import grpc_tools

    args.insert(1, "-I" + os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def depth(value):
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return 1 + max((depth(v) for v in value.struct_value.fields.values()), default=0)
    if kind == "list_value":
        return 1 + max((depth(v) for v in value.list_value.values), default=0)
    return 0


def main():
    addr, token, job_id = sys.argv[1:4]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tempfile.mkdtemp()
    generate(root, out)
    sys.path.insert(0, out)
    from operations_manager.v1 import jobs_pb2 as jobs
    from operations_manager.v1 import jobs_pb2_grpc as jobs_grpc

    metadata = [("authorization", f"Bearer {token}")]
    stub = jobs_grpc.JobServiceStub(grpc.insecure_channel(addr))
    failed = False
    try:
        job = stub.GetJob(jobs.GetJobRequest(id=job_id), metadata=metadata).job
        deepest = max((depth(v) for v in job.variables.fields.values()), default=0)
        print(f"GetJob ok depth={deepest}")
    except grpc.RpcError as error:
        print(f"GetJob failed: {error.code()} {error.details()}")
        failed = True
    try:
        page = stub.ListJobs(jobs.ListJobsRequest(page_size=50), metadata=metadata)
        print(f"ListJobs ok jobs={len(page.jobs)}")
    except grpc.RpcError as error:
        print(f"ListJobs failed: {error.code()} {error.details()}")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
