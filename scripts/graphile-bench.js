// graphile-worker on the benchmark's PostgreSQL, for `scripts/bench engine` to compare the
// engine's task workers with: adds JOBS jobs in one bulk call (addJobs), then starts
// PROCESSES worker processes of CONCURRENCY / PROCESSES concurrency each, with a task handler
// that does nothing, and times them until every job is processed (its completion committed: the
// queue table is empty). Prints one JSON line.
//
//   NODE_PATH=<dir with graphile-worker> node scripts/graphile-bench.js URL JOBS PROCESSES CONCURRENCY [LOCAL_QUEUE]
//
// LOCAL_QUEUE, when given, turns on graphile-worker's batched fetching (`localQueue.size`);
// otherwise its defaults are kept. The clock starts when the processes, already started and
// with graphile-worker loaded, are told to run; the first job's start is reported too.
//
// With `add`, for `scripts/bench` to compare StartJob with: CONCURRENCY callers each add one
// job (`addJob`, PAYLOAD as its payload: the StartJob request), wait for it to be committed and
// add the next, for SECONDS, on a pool of one connection a caller. Prints one JSON line as
// examples/loadgen.rs does (target `graphile`).
//
//   NODE_PATH=<dir with graphile-worker> node scripts/graphile-bench.js add URL CONCURRENCY SECONDS PAYLOAD_JSON
"use strict";
const { fork } = require("node:child_process");
const { Client, Pool } = require("pg");
const { runMigrations, makeWorkerUtils, run } = require("graphile-worker");

const quiet = () => () => {};

async function child() {
  let runner;
  let handled = 0;
  let first;
  process.on("message", async (message) => {
    if (message.go) {
      const { url, concurrency, localQueue } = message.go;
      runner = await run({
        connectionString: url,
        concurrency,
        maxPoolSize: concurrency + 2,
        noHandleSignals: true,
        logger: new (require("graphile-worker").Logger)(quiet),
        taskList: {
          noop: async () => {
            first ??= Date.now();
            handled += 1;
            if (handled % 500 === 0) process.send({ handled: 500, first });
          },
        },
        preset: localQueue ? { worker: { localQueue: { size: localQueue } } } : undefined,
      });
    } else if (message.stop) {
      process.send({ handled: handled % 500, first });
      await runner?.stop();
      process.exit(0);
    }
  });
  process.send({ ready: true });
}

async function main() {
  const [url, jobsArg, processesArg, concurrencyArg, localQueueArg] = process.argv.slice(2);
  const jobs = Number(jobsArg);
  const processes = Number(processesArg);
  const concurrency = Number(concurrencyArg);
  const localQueue = localQueueArg ? Number(localQueueArg) : 0;

  await runMigrations({ connectionString: url, logger: new (require("graphile-worker").Logger)(quiet) });
  const db = new Client({ connectionString: url });
  await db.connect();
  const queued = async () =>
    Number((await db.query("select count(*) as n from graphile_worker._private_jobs")).rows[0].n);
  if ((await queued()) !== 0) throw new Error("graphile-worker's queue is not empty");

  const utils = await makeWorkerUtils({ connectionString: url });
  const added = Date.now();
  for (let n = 0; n < jobs; n += 1000) {
    const specs = [];
    for (let i = n; i < Math.min(jobs, n + 1000); i++) specs.push({ identifier: "noop", payload: { i } });
    await utils.addJobs(specs);
  }
  const addSeconds = (Date.now() - added) / 1000;
  await utils.release();

  const children = [];
  for (let i = 0; i < processes; i++) {
    const worker = fork(__filename, ["child"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    worker.handled = 0;
    worker.on("message", (m) => {
      if (m.handled) worker.handled += m.handled;
      if (m.first) worker.first = m.first;
    });
    await new Promise((resolve) => worker.once("message", resolve));
    children.push(worker);
  }
  const each = Math.floor(concurrency / processes);
  const started = Date.now();
  children.forEach((worker, i) =>
    worker.send({ go: { url, concurrency: each + (i < concurrency % processes ? 1 : 0), localQueue } }),
  );
  // Handlers report every 500 jobs: look at the table only for the last few, so the looking
  // costs the database nothing while the workers run.
  const handled = () => children.reduce((sum, w) => sum + w.handled, 0);
  while (handled() < jobs - 500 * processes) await new Promise((r) => setTimeout(r, 20));
  while ((await queued()) > 0) await new Promise((r) => setTimeout(r, 2));
  const finished = Date.now();
  await Promise.all(
    children.map((w) => new Promise((resolve) => {
      w.once("exit", resolve);
      w.send({ stop: true });
    })),
  );
  await db.end();
  const first = Math.min(...children.map((w) => w.first ?? finished));
  const seconds = (finished - started) / 1000;
  console.log(JSON.stringify({
    jobs,
    processes,
    concurrency,
    local_queue: localQueue || null,
    add_seconds: addSeconds,
    seconds,
    throughput: jobs / seconds,
    first_job_ms: first - started,
    throughput_from_first_job: jobs / ((finished - first) / 1000),
  }));
}

async function add() {
  const [url, concurrencyArg, secondsArg, payloadArg] = process.argv.slice(3);
  const concurrency = Number(concurrencyArg);
  const seconds = Number(secondsArg);
  const payload = JSON.parse(payloadArg);
  await runMigrations({ connectionString: url, logger: new (require("graphile-worker").Logger)(quiet) });
  const pgPool = new Pool({ connectionString: url, max: concurrency });
  // A connection's error would otherwise end the process (graphile-worker warns of it).
  pgPool.on("error", (error) => console.error(error));
  pgPool.on("connect", (client) => client.on("error", (error) => console.error(error)));
  const utils = await makeWorkerUtils({ pgPool, logger: new (require("graphile-worker").Logger)(quiet) });
  // Every connection opened before the clock starts, as the other clients' are.
  await Promise.all(Array.from({ length: concurrency }, () => utils.addJob("start_job", payload)));
  const latencies = [];
  let errors = 0;
  const started = process.hrtime.bigint();
  const until = started + BigInt(Math.round(seconds * 1e9));
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const sent = process.hrtime.bigint();
        if (sent >= until) return;
        try {
          await utils.addJob("start_job", payload);
          latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
        } catch {
          errors += 1;
        }
      }
    }),
  );
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  await utils.release();
  await pgPool.end();
  latencies.sort((a, b) => a - b);
  const percentile = (q) => latencies[Math.max(1, Math.ceil(latencies.length * q)) - 1] ?? 0;
  console.log(JSON.stringify({
    target: "graphile",
    concurrency,
    seconds: elapsed,
    requests: latencies.length,
    errors,
    throughput: latencies.length / elapsed,
    p50_ms: percentile(0.5),
    p99_ms: percentile(0.99),
    p999_ms: percentile(0.999),
  }));
}

if (process.argv[2] === "child") {
  child();
} else if (process.argv[2] === "add") {
  add().catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
