// A job-service client in Node.js: @grpc/proto-loader reads the repository's .proto files at
// run time, @grpc/grpc-js makes the calls.
//
// Imports the workflow in examples/workflows/create-network.json, starts a job from it, reads
// the job back over gRPC and over the JSON gateway, and finds it in the job list. Prints each
// step; exits non-zero on the first failure. `run` beside this file installs the packages and
// starts it.
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const WORKFLOW_FILE = path.join(ROOT, 'examples', 'workflows', 'create-network.json');
// Every call gives up after this long instead of hanging on a stuck service.
const TIMEOUT_MS = 10_000;

// google/protobuf/struct.proto and timestamp.proto, which our protos import, come with
// protobufjs (proto-loader's parser); includeDirs finds ours.
//
// package.json overrides proto-loader's protobufjs 7 with 8: protobufjs 7 decodes a map entry
// whose message value is left out (as the encoding allows for an empty message, and as the
// service sends `transitions.workflow_end`, `{}`) as null and then fails to read the response.
const definition = protoLoader.loadSync(
  ['operations_manager/v1/jobs.proto', 'operations_manager/v1/workflows.proto'],
  {
    includeDirs: [path.join(ROOT, 'proto')],
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).operations_manager.v1;

class Failed extends Error {}

function check(condition, what) {
  if (!condition) throw new Failed(what);
}

// JSON <-> google.protobuf.Struct. Numbers travel as doubles; JavaScript has one number type,
// so a whole number sent as 1 reads back as 1.
function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  switch (typeof value) {
    case 'number':
      return { numberValue: value };
    case 'string':
      return { stringValue: value };
    case 'boolean':
      return { boolValue: value };
    case 'object':
      return { structValue: toStruct(value) };
    default:
      throw new TypeError(`not JSON: ${typeof value}`);
  }
}

function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

function fromValue(value) {
  switch (value.kind) {
    case 'nullValue':
      return null;
    case 'numberValue':
    case 'stringValue':
    case 'boolValue':
      return value[value.kind];
    case 'structValue':
      return fromStruct(value.structValue);
    case 'listValue':
      return (value.listValue.values || []).map(fromValue);
    default:
      throw new Failed(`a google.protobuf.Value without a kind: ${JSON.stringify(value)}`);
  }
}

function fromStruct(struct) {
  const object = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) {
    object[key] = fromValue(value);
  }
  return object;
}

function timestamp(ts) {
  return new Date(ts.seconds * 1000 + Math.floor(ts.nanos / 1e6)).toISOString();
}

class Client {
  constructor(addr, httpUrl, token) {
    this.httpUrl = httpUrl.replace(/\/+$/, '');
    this.token = token;
    const credentials = grpc.credentials.createInsecure();
    this.jobs = new v1.JobService(addr, credentials);
    this.workflows = new v1.WorkflowService(addr, credentials);
    // Every call carries the bearer token in its metadata.
    this.metadata = new grpc.Metadata();
    this.metadata.set('authorization', `Bearer ${token}`);
  }

  call(service, method, request) {
    return new Promise((resolve, reject) => {
      service[method](
        request,
        this.metadata,
        { deadline: new Date(Date.now() + TIMEOUT_MS) },
        (err, response) => (err ? reject(err) : resolve(response)),
      );
    });
  }

  // Stores `document`. Run again, it keeps the stored copy when it is the same document and
  // replaces it when the file has changed (there is no update call: delete, create).
  async importWorkflow(document) {
    const name = document.name;
    const request = { workflow: toStruct(document) };
    try {
      await this.call(this.workflows, 'CreateWorkflow', request);
      return `created workflow '${name}'`;
    } catch (err) {
      if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
    }
    const { workflow: stored } = await this.call(this.workflows, 'GetWorkflow', { name });
    if (isDeepStrictEqual(fromStruct(stored.document), document)) {
      return `workflow '${name}' already stored, unchanged`;
    }
    await this.call(this.workflows, 'DeleteWorkflow', { name });
    await this.call(this.workflows, 'CreateWorkflow', request);
    return `replaced workflow '${name}' with the file's version`;
  }

  // The job as the JSON gateway returns it (REST field names).
  gatewayJob(jobId) {
    const url = new URL(`${this.httpUrl}/operations-manager/jobs/${jobId}`);
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const request = transport.get(
        url,
        { headers: { authorization: `Bearer ${this.token}` }, timeout: TIMEOUT_MS },
        (response) => {
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (chunk) => (body += chunk));
          response.on('end', () => {
            if (response.statusCode !== 200) {
              reject(new Failed(`HTTP ${response.statusCode}: ${body}`));
              return;
            }
            try {
              resolve(JSON.parse(body).data);
            } catch (err) {
              reject(err);
            }
          });
        },
      );
      request.on('timeout', () => request.destroy(new Failed(`no answer from ${url}`)));
      request.on('error', reject);
    });
  }

  close() {
    this.jobs.close();
    this.workflows.close();
  }
}

async function main() {
  const addr = process.env.JOB_SERVICE_GRPC_ADDR || '127.0.0.1:50051';
  const httpUrl = process.env.JOB_SERVICE_HTTP_URL || 'http://127.0.0.1:8080';
  const token = process.env.JOB_SERVICE_TOKEN || '';
  if (!token) {
    console.error('JOB_SERVICE_TOKEN is not set: export a token, e.g. from `job-service token`');
    return 2;
  }
  const client = new Client(addr, httpUrl, token);
  try {
    console.log(`job-service at ${addr} (gRPC) and ${httpUrl} (HTTP)`);

    const document = JSON.parse(fs.readFileSync(WORKFLOW_FILE, 'utf8'));
    const workflow = document.name;
    const imported = await client.importWorkflow(document);
    console.log(`1. import ${path.basename(WORKFLOW_FILE)}: ${imported}`);

    const description = `Node.js example, ${new Date().toISOString()}`;
    const variables = {
      adapterId: 'Infoblox',
      network: '10.20.40.0/24',
      comment: 'created by examples/node',
      vlan: 140,
    };
    const started = await client.call(client.jobs, 'StartJob', {
      workflow,
      options: { description, variables: toStruct(variables) },
    });
    const job = started.job;
    check(started.created, 'StartJob created a new job');
    check(/^[0-9a-f]{24}$/.test(job.id), `the job id is 24 hex characters: '${job.id}'`);
    check(job.name === workflow, `the job's name is the workflow's: '${job.name}'`);
    check(job.description === description, `the job's description is ours: '${job.description}'`);
    check(job.status === 'JOB_STATUS_RUNNING', `a new job is running: ${job.status}`);
    const jobVariables = fromStruct(job.variables);
    check(
      isDeepStrictEqual(jobVariables, {
        ...variables,
        _id: job.id,
        initiator: jobVariables.initiator,
      }),
      `the job's variables are ours plus _id and initiator: ${JSON.stringify(jobVariables)}`,
    );
    console.log(
      `2. started job ${job.id}: workflow '${job.name}', status ${job.status}, ` +
        `${Object.keys(job.tasks).length} tasks, initiator '${jobVariables.initiator}', ` +
        `variables ${JSON.stringify(variables)}`,
    );

    // The job runs on after the start (its tasks change status), so what is compared is what
    // a start fixes: id, name, creation time and the tasks it holds.
    const startedAs = (other) =>
      isDeepStrictEqual(
        [other.id, other.name, other.created, Object.keys(other.tasks).sort()],
        [job.id, job.name, job.created, Object.keys(job.tasks).sort()],
      );
    const { job: got } = await client.call(client.jobs, 'GetJob', { id: job.id });
    check(startedAs(got), 'GetJob returns the job StartJob started');
    console.log(`3. got job ${got.id}: the one started (created ${timestamp(got.created)}), now ${got.status}`);

    let found;
    let pages = 0;
    let pageToken = '';
    while (found === undefined && pages < 20) {
      const page = await client.call(client.jobs, 'ListJobs', {
        workflow,
        pageSize: 100,
        pageToken,
      });
      pages += 1;
      found = page.jobs.find((j) => j.id === job.id);
      pageToken = page.nextPageToken;
      if (!pageToken) break;
    }
    check(found !== undefined, `ListJobs lists job ${job.id}`);
    check(startedAs(found), 'the listed job is the job started');
    console.log(`4. listed jobs of '${workflow}': job ${job.id} is there (page ${pages})`);

    const rest = await client.gatewayJob(job.id);
    check(rest._id === job.id, `the gateway returns the job: '${rest._id}'`);
    check(
      isDeepStrictEqual(rest.variables, jobVariables),
      `the gateway has the same variables: ${JSON.stringify(rest.variables)}`,
    );
    console.log(`5. read job ${job.id} through the JSON gateway: _id and variables match`);

    console.log(`ok: job ${job.id}`);
    return 0;
  } finally {
    client.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    const what = err.code !== undefined && err.details !== undefined
      ? `gRPC ${Object.keys(grpc.status).find((k) => grpc.status[k] === err.code)}: ${err.details}`
      : err.message;
    console.error(`failed: ${what}`);
    process.exitCode = 1;
  },
);
