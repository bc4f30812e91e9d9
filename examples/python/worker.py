"""A task worker in Python: runs the tasks of one app that job-service offers to workers.

job-service runs a few WorkFlowEngine tasks itself (stub, newVariable, delay, ...); every other
task of a job (an adapter call such as Infoblox's createNetwork, a transformation, a child job)
waits until a worker serving its `app` takes it. This worker:

- opens `WorkerService.PollTasks` for one app (`--app`), holding at most `--max-tasks` tasks
  from the stream at once;
- runs each task in a thread of its own: Infoblox's `createNetwork` records the network in a
  fake Infoblox kept in memory and returns it as outgoing `result`; every other method echoes
  its incoming values as outgoing ones, with `status: done`;
- while a task runs, extends its lease with `HeartbeatTask` every third of what is left of it,
  and calls the task off, without completing it, when its job was canceled
  (`cancel_requested`) or the lease was lost (FAILED_PRECONDITION);
- reports the result with `CompleteTask`: `success` with the handler's outgoing values, or
  `error` with the exception's text as `error_message` when the handler raises;
- polls again, waiting 0.5 s doubling up to 30 s (with jitter), when the stream breaks
  (UNAVAILABLE while the service restarts) or the service ends it (a service that shuts down
  does); exits 1 when the service refuses the token or the request;
- on SIGINT or SIGTERM, or once it has taken `--max-tasks-total` tasks, starts no more tasks,
  finishes those under way, then closes the stream and exits 0. A second signal exits at once.

Run it against a running service, from the repository root, with a token of role `worker`:

    export JOB_SERVICE_TOKEN=$(cargo run --release -q -- token --username worker-1 --roles worker)
    examples/python/run-worker --app Infoblox

`run-worker` beside this file installs the dependencies and generates the stubs as `run` does,
then starts this file with its arguments (`--help` lists them). It reads JOB_SERVICE_GRPC_ADDR
(default 127.0.0.1:50051) and JOB_SERVICE_TOKEN.

A task may run more than once: a lease that expired (a worker that died or stalled) is offered
again with `attempt` + 1. Handlers should be safe to repeat: createNetwork returns the network it
made before when asked for the same one again.

A stream that closes does not give its tasks back: each stays the worker's until its lease ends,
and can be heartbeaten and completed meanwhile. The worker still keeps its stream open until the
tasks under way are completed, and does not start the ones that arrive meanwhile; those are
offered again when their leases expire.
"""

import argparse
import datetime
import ipaddress
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))

import grpc  # noqa: E402
from client import from_struct, to_struct  # noqa: E402
from operations_manager.v1 import workers_pb2, workers_pb2_grpc  # noqa: E402

# The service refused who we are or what we asked: polling again would not help.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
}
# Waits before polling again: the first, and the longest.
BACKOFF_FIRST, BACKOFF_MOST = 0.5, 30.0
# HeartbeatTask and CompleteTask give up after this many seconds instead of hanging.
TIMEOUT = 10
# grpcio waits up to two minutes between its own attempts to reconnect a channel; the worker
# keeps its own backoff, so the channel may try again soon after a restart of the service.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]

_print_lock = threading.Lock()


def log(text: str) -> None:
    """One line on stdout; task threads write at the same time."""
    with _print_lock:
        print(text, flush=True)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Canceled(Exception):
    """The task was called off while it ran: its job was canceled, or its lease was lost."""


class Task:
    """A task being run: what its handler sees."""

    def __init__(self, offer: workers_pb2.WorkerTask, work_seconds: float):
        self.offer = offer
        self.incoming = from_struct(offer.incoming)
        self.work_seconds = work_seconds
        self.done = threading.Event()
        self.called_off = threading.Event()
        self.why = ""

    def call_off(self, why: str) -> None:
        self.why = why
        self.called_off.set()

    def work(self) -> None:
        """Takes --work-seconds, as a call to a slow device would; raises Canceled when the
        task is called off meanwhile."""
        if self.called_off.wait(self.work_seconds):
            raise Canceled()


class FakeInfoblox:
    """Infoblox's networks, kept in memory: enough to show a task's result in a job."""

    def __init__(self):
        self.lock = threading.Lock()
        self.networks = {}

    def create_network(self, task: Task) -> dict:
        # ValueError for what is not a network ("10.0.0.1/24" has host bits set): the task
        # ends in error with that text.
        network = str(ipaddress.ip_network(task.incoming.get("network")))
        task.work()
        with self.lock:
            # The same network again (a task offered a second time) is the one made before.
            record = self.networks.get(network)
            if record is None:
                record = {
                    "_ref": f"network/{len(self.networks) + 1}:{network}/default",
                    "network": network,
                    "network_view": "default",
                    "comment": task.incoming.get("comment", ""),
                }
                self.networks[network] = record
        return {"result": record}


def echo(task: Task) -> dict:
    """Any method the worker has no handler for: its incoming values, and `status: done`."""
    task.work()
    return {**task.incoming, "status": "done"}


def handlers(app: str) -> dict:
    """The handlers of `app`'s methods, by task name; other methods go to `echo`."""
    if app == "Infoblox":
        return {"createNetwork": FakeInfoblox().create_network}
    return {}


class Lease:
    """Until when the worker holds a task, as the service last said."""

    def __init__(self, deadline):
        self.deadline = deadline.ToDatetime(tzinfo=datetime.timezone.utc)

    def extend(self, deadline) -> None:
        self.deadline = deadline.ToDatetime(tzinfo=datetime.timezone.utc)

    def next_heartbeat(self) -> float:
        """Seconds to the next heartbeat: a third of what is left of the lease."""
        return max((self.deadline - utc_now()).total_seconds() / 3, 0.05)

    def expired(self) -> bool:
        return utc_now() >= self.deadline


class Stream:
    """One PollTasks call."""

    def __init__(self, call):
        self.call = call
        self.closed = False


class Worker:
    def __init__(self, args, token: str):
        self.args = args
        self.metadata = [("authorization", f"Bearer {token}")]
        channel = grpc.insecure_channel(args.addr, options=CHANNEL_OPTIONS)
        self.stub = workers_pb2_grpc.WorkerServiceStub(channel)
        self.handlers = handlers(args.app)
        # Set on a signal or once --max-tasks-total tasks were taken: no task starts any more.
        self.draining = threading.Event()
        # Guards what follows.
        self.state = threading.RLock()
        self.stream = None
        self.in_flight = 0
        self.taken = 0
        self.completed = 0
        self.threads = []

    def stop(self) -> None:
        """Starts no more tasks; those under way are finished first."""
        with self.state:
            self.draining.set()
            self.close_when_idle()

    def close_when_idle(self) -> None:
        """Closes the stream once a draining worker has no task under way, so that the service
        sends no more. Tasks it sent meanwhile, which the worker did not start, are offered
        again when their leases expire."""
        with self.state:
            if self.draining.is_set() and self.in_flight == 0 and self.stream is not None:
                self.stream.closed = True
                self.stream.call.cancel()

    def poll(self) -> int:
        """Takes tasks until drained; the exit code."""
        backoff = BACKOFF_FIRST
        while True:
            with self.state:
                if self.draining.is_set():
                    break
                total = self.args.max_tasks_total
                max_tasks = self.args.max_tasks if total is None else min(self.args.max_tasks, total)
                request = workers_pb2.PollTasksRequest(
                    worker_id=self.args.worker_id, apps=[self.args.app], max_tasks=max_tasks
                )
                stream = Stream(self.stub.PollTasks(request, metadata=self.metadata))
                self.stream = stream
            try:
                # Returns once the service has taken the call (or the call failed).
                stream.call.initial_metadata()
                if not stream.call.done():
                    backoff = BACKOFF_FIRST
                    log(f"polling for {self.args.app} tasks, {max_tasks} at a time")
                for offer in stream.call:
                    self.take(offer)
                ended = "the service ended the stream"
            except grpc.RpcError as err:
                if stream.closed:
                    break
                if err.code() in FATAL:
                    log(f"stopping: the service refused the poll: {err.code().name}: {err.details()}")
                    self.stop()
                    self.wait_for_tasks()
                    return 1
                ended = f"the stream broke ({err.code().name}: {err.details()})"
            with self.state:
                self.stream = None
            if self.draining.is_set():
                break
            delay = backoff * random.uniform(0.8, 1.2)
            log(f"{ended}; polling again in {delay:.1f} s")
            if self.draining.wait(delay):
                break
            backoff = min(backoff * 2, BACKOFF_MOST)
        self.wait_for_tasks()
        log(f"stopped: took {self.taken} tasks, completed {self.completed}")
        return 0

    def wait_for_tasks(self) -> None:
        for thread in self.threads:
            thread.join()

    def take(self, offer: workers_pb2.WorkerTask) -> None:
        with self.state:
            if self.draining.is_set():
                log(f"task {offer.task_id} of job {offer.job_id}: not started, the worker is "
                    "stopping; the service offers it again when its lease expires")
                return
            self.taken += 1
            self.in_flight += 1
            if self.taken == self.args.max_tasks_total:
                self.draining.set()
        thread = threading.Thread(target=self.run_task, args=(offer,), daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def run_task(self, offer: workers_pb2.WorkerTask) -> None:
        try:
            self.run(offer)
        finally:
            with self.state:
                self.in_flight -= 1
                self.close_when_idle()

    def run(self, offer: workers_pb2.WorkerTask) -> None:
        task = Task(offer, self.args.work_seconds)
        name = f"task {offer.task_id} of job {offer.job_id}"
        log(f"{name}: {offer.app}.{offer.name}, attempt {offer.attempt}, "
            f"incoming {json.dumps(task.incoming, sort_keys=True)}")
        lease = Lease(offer.lease_deadline)
        heartbeats = threading.Thread(target=self.heartbeat, args=(task, name, lease), daemon=True)
        heartbeats.start()
        request, outcome = None, ""
        try:
            outgoing = self.handlers.get(offer.name, echo)(task)
            request = workers_pb2.CompleteTaskRequest(
                task_token=offer.task_token, finish_state="success", outgoing=to_struct(outgoing)
            )
            outcome = f"success, outgoing {json.dumps(outgoing, sort_keys=True)}"
        except Canceled:
            pass
        except Exception as err:  # noqa: BLE001 -- whatever the handler raises is the task's error
            message = str(err) or type(err).__name__
            request = workers_pb2.CompleteTaskRequest(
                task_token=offer.task_token, finish_state="error", error_message=message
            )
            outcome = f"error: {message}"
        finally:
            task.done.set()
        heartbeats.join()
        if task.called_off.is_set():
            log(f"{name}: called off, {task.why}; not completed")
        elif request is not None:
            self.complete(request, name, outcome, lease)

    def heartbeat(self, task: Task, name: str, lease: Lease) -> None:
        """Extends the lease while the task runs; calls the task off when its job was canceled
        or the lease was lost."""
        while not task.done.wait(lease.next_heartbeat()):
            try:
                answer = self.stub.HeartbeatTask(
                    workers_pb2.HeartbeatTaskRequest(task_token=task.offer.task_token),
                    metadata=self.metadata,
                    timeout=TIMEOUT,
                )
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    task.call_off("its lease was lost: the service offers it again")
                    return
                # Tried again at a third of what is left of the lease.
                log(f"{name}: heartbeat failed ({err.code().name}: {err.details()})")
                continue
            if answer.cancel_requested:
                task.call_off("its job was canceled")
                return
            lease.extend(answer.lease_deadline)
            log(f"{name}: heartbeat, lease until {answer.lease_deadline.ToJsonString()}")

    def complete(self, request, name: str, outcome: str, lease: Lease) -> None:
        """CompleteTask, tried again while the service cannot be reached and the lease lasts."""
        delay = BACKOFF_FIRST
        while True:
            try:
                self.stub.CompleteTask(request, metadata=self.metadata, timeout=TIMEOUT)
                with self.state:
                    self.completed += 1
                log(f"{name}: {outcome}")
                return
            except grpc.RpcError as err:
                code = err.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    log(f"{name}: not completed, the task is no longer this worker's: {err.details()}")
                    return
                if code in FATAL or lease.expired():
                    log(f"{name}: not completed: {code.name}: {err.details()}")
                    return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def arguments():
    parser = argparse.ArgumentParser(
        description="Runs the tasks of one app that job-service offers to workers.",
        epilog="Reads JOB_SERVICE_GRPC_ADDR (default 127.0.0.1:50051) and JOB_SERVICE_TOKEN "
        "(a token of role worker).",
    )
    parser.add_argument("--app", default="Infoblox",
                        help="the app whose tasks to run (a task's `app`; default Infoblox)")
    parser.add_argument("--max-tasks", type=int, default=4,
                        help="most tasks held from the stream at once, 1 to 1000 (default 4)")
    parser.add_argument("--max-tasks-total", type=int, default=None, metavar="N",
                        help="exit once N tasks were taken and finished (default: run until a signal)")
    parser.add_argument("--work-seconds", type=float, default=0.0, metavar="S",
                        help="how long each task takes, as a slow device would (default 0)")
    parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}",
                        help="the worker's name in the service's records (default host-pid)")
    args = parser.parse_args()
    if args.max_tasks_total is not None and args.max_tasks_total < 1:
        parser.error("--max-tasks-total must be at least 1")
    args.addr = os.environ.get("JOB_SERVICE_GRPC_ADDR", "127.0.0.1:50051")
    return args


def main() -> int:
    args = arguments()
    token = os.environ.get("JOB_SERVICE_TOKEN", "")
    if not token:
        print("JOB_SERVICE_TOKEN is not set: export a token of role worker, e.g. from "
              "`job-service token --roles worker`", file=sys.stderr)
        return 2
    worker = Worker(args, token)

    signaled = threading.Event()

    def on_signal(signum, _frame):
        if signaled.is_set():
            log(f"{signal.Signals(signum).name} again: exiting at once")
            os._exit(1)
        signaled.set()
        log(f"{signal.Signals(signum).name}: finishing the tasks under way, then exiting")
        worker.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log(f"worker {args.worker_id} serving {args.app} at {args.addr}")
    # The main thread only waits, so that it is free to run the signal handlers.
    exit_code = []
    poller = threading.Thread(target=lambda: exit_code.append(worker.poll()), daemon=True)
    poller.start()
    poller.join()
    return exit_code[0] if exit_code else 1


if __name__ == "__main__":
    sys.exit(main())
