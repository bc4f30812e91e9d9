-- Jobs run. Each job keeps the run state of every task it reached beside its shared graph;
-- a task without a row is `incomplete` (not reached). Every change of a job's run state is
-- made while its `jobs` row is locked (`for update`), so instances never advance one job at
-- once; workers' claims and heartbeats touch only their task's row.
create table job_tasks (
    job_id text not null references jobs (id) on delete cascade,
    task_id text not null,
    -- incomplete (reset by a revert), scheduled, running, complete, error, canceled.
    status text not null,
    -- engine (a WorkFlowEngine task the service runs), worker (a task worker serving `app`),
    -- manual (a person finishes it).
    runner text not null,
    app text not null default '',
    -- The task's method, handed to workers with it.
    name text not null default '',
    finish_state text,
    start_time timestamptz,
    end_time timestamptz,
    iteration integer not null default 0,
    attempt integer not null default 0,
    retries integer not null default 0,
    incoming jsonb not null default '{}',
    outgoing jsonb not null default '{}',
    error jsonb,
    -- A timer (a delay task, a retry's delay): the engine looks at the job again then.
    due_at timestamptz,
    -- The lease of the worker holding the task: its token, deadline and the stream it went to.
    lease_token uuid,
    lease_deadline timestamptz,
    worker_id text,
    stream_id uuid,
    -- Offers go out oldest first.
    ready_at timestamptz not null default now(),
    primary key (job_id, task_id)
);

-- What a worker's poll claims: scheduled worker tasks of an app, oldest first.
create index job_tasks_offer_idx on job_tasks (app, ready_at)
    where status = 'scheduled' and runner = 'worker';
-- Leases to expire, and the tasks a stream holds.
create index job_tasks_lease_idx on job_tasks (lease_deadline)
    where status = 'running' and runner = 'worker';
create index job_tasks_stream_idx on job_tasks (stream_id) where status = 'running';
create unique index job_tasks_token_idx on job_tasks (lease_token) where lease_token is not null;

-- Finished work leaves dead rows behind in the claim table: vacuum it early.
alter table job_tasks set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Jobs the engine must look at, when: a new job, a finished task, a due timer, an expired
-- lease, a resumed job. One row a job; the engine takes due rows with `skip locked`.
create table job_wakeups (
    job_id text primary key references jobs (id) on delete cascade,
    due_at timestamptz not null default now()
);
create index job_wakeups_due_idx on job_wakeups (due_at);
alter table job_wakeups set (autovacuum_vacuum_scale_factor = 0.02);

-- What happened to a job, in order (WatchJob). `sequence` counts from 1 for each job; the
-- last one given out is kept on the job's row.
create table job_events (
    job_id text not null references jobs (id) on delete cascade,
    sequence bigint not null,
    task_id text not null default '',
    kind text not null,
    status text not null,
    finish_state text not null default '',
    at timestamptz not null default now(),
    primary key (job_id, sequence)
);
alter table jobs add column event_sequence bigint not null default 0;

-- Jobs started before the engine existed start running now.
insert into job_wakeups (job_id) select id from jobs where status = 'running';
