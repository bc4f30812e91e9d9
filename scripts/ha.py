#!/usr/bin/env python3
"""The client side of scripts/ha: starts jobs through several service instances while their
database fails over, and says afterwards what the clients saw. Standard library only.

  ha.py drive OUT_DIR URL[,URL...]   StartJob over HTTP until SIGTERM, then finish the keys begun
  ha.py recovery OUT_DIR SINCE       seconds from SINCE (Unix time) to the first StartJob sent
                                     after it that succeeded, per instance; nothing when none yet
  ha.py check OUT_DIR URL            reads every acknowledged job back through the API

`drive` reads the token from OUT_DIR/token and runs HA_CLIENTS clients (8) starting HA_RATE jobs
a second in all (20). Each start has an idempotency key of its own and goes to the instances in
turn; a start that fails (connection refused or reset, a timeout, 5xx, 429) is sent again with
the same key to the next instance after 0.2 s, until it succeeds. Every attempt is a line of
OUT_DIR/attempts.jsonl; every acknowledged start a line `key,job_id` of OUT_DIR/acked.csv
(each answer, so a key answered with two jobs shows twice).
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

WORKFLOW = "HA rehearsal"


def post_start(url, token, key):
    body = json.dumps({"workflow": WORKFLOW, "options": {"variables": {"haKey": key}}}).encode()
    request = urllib.request.Request(
        url + "/operations-manager/jobs/start",
        data=body,
        method="POST",
        headers={
            "Authorization": "Bearer " + token,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            data = json.load(answer)
            return answer.status, data["data"]["_id"], answer.headers.get("Idempotent-Replayed") == "true"
    except urllib.error.HTTPError as error:
        return error.code, None, False
    except (OSError, ValueError) as error:  # refused, reset, timed out, a body cut short
        return 0, type(error).__name__, False


def drive(out, urls):
    token = open(os.path.join(out, "token")).read().strip()
    clients = int(os.environ.get("HA_CLIENTS", "8"))
    rate = float(os.environ.get("HA_RATE", "20"))
    interval = clients / rate
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    lock = threading.Lock()
    attempts = open(os.path.join(out, "attempts.jsonl"), "a", buffering=1)
    acked = open(os.path.join(out, "acked.csv"), "a", buffering=1)
    refused = []
    run = "%x" % int(time.time())

    def client(number):
        n = 0
        while not stopping.is_set():
            began = time.time()
            key = "ha-%s-%d-%d" % (run, number, n)
            tries = 0
            while True:
                url = urls[(number + n + tries) % len(urls)]
                sent = time.time()
                status, job, replayed = post_start(url, token, key)
                done = time.time()
                ok = 200 <= status < 300
                line = {"key": key, "url": url, "sent": sent, "done": done, "status": status,
                        "job": job, "replayed": replayed, "ok": ok}
                with lock:
                    attempts.write(json.dumps(line) + "\n")
                    if ok:
                        acked.write("%s,%s\n" % (key, job))
                if ok:
                    break
                if status != 0 and status < 500 and status != 429:
                    with lock:
                        refused.append(line)
                    break
                tries += 1
                # A key begun is finished even while stopping: its start may be committed.
                time.sleep(0.2)
            n += 1
            stopping.wait(max(0.0, interval - (time.time() - began)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for line in refused:
        print("refused: %s" % json.dumps(line), file=sys.stderr)
    sys.exit(1 if refused else 0)


def read_attempts(out):
    with open(os.path.join(out, "attempts.jsonl")) as lines:
        return [json.loads(line) for line in lines if line.endswith("\n")]


def recovery(out, since):
    firsts = {}
    for line in read_attempts(out):
        if line["ok"] and line["sent"] >= since:
            url = line["url"]
            firsts[url] = min(firsts.get(url, line["done"]), line["done"])
    if not firsts:
        return
    urls = sorted(firsts)
    print("%.1f" % (max(firsts.values()) - since),
          " ".join("%s=%.1f" % (url.rsplit(":", 1)[1], firsts[url] - since) for url in urls))


def check(out, url):
    token = open(os.path.join(out, "token")).read().strip()
    answers = {}
    with open(os.path.join(out, "acked.csv")) as lines:
        for line in lines:
            key, job = line.strip().split(",")
            answers.setdefault(key, set()).add(job)
    two_jobs = sum(1 for jobs in answers.values() if len(jobs) > 1)
    statuses = {}
    for jobs in answers.values():
        for job in jobs:
            request = urllib.request.Request(
                url + "/operations-manager/jobs/" + job,
                headers={"Authorization": "Bearer " + token})
            try:
                with urllib.request.urlopen(request, timeout=15) as answer:
                    status = json.load(answer)["data"]["status"]
            except urllib.error.HTTPError as error:
                status = "http %d" % error.code
            statuses[status] = statuses.get(status, 0) + 1
    failed = sum(1 for line in read_attempts(out) if not line["ok"])
    replayed = sum(1 for line in read_attempts(out) if line["ok"] and line["replayed"])
    print(json.dumps({"keys": len(answers), "keys_with_two_jobs": two_jobs,
                      "failed_attempts": failed, "replayed": replayed,
                      "api_statuses": statuses}))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, out = sys.argv[1], sys.argv[2]
    if command == "drive":
        drive(out, sys.argv[3].split(","))
    elif command == "recovery":
        recovery(out, float(sys.argv[3]))
    elif command == "check":
        check(out, sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
