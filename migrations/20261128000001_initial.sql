-- Workflows and jobs.
--
-- Both keep their whole document as jsonb: the workflow as the client sent it (fields the
-- service does not model included), the job in the REST document's shape. Columns beside the
-- document hold what queries filter and sort on.

create table workflows (
    -- Workflows are addressed by name, which is unique.
    name text primary key,
    -- Group ids that may see the workflow (copied from document->'groups').
    groups text[] not null default '{}',
    document jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table jobs (
    -- 24 lowercase hex characters, as Itential clients expect.
    id text primary key check (id ~ '^[0-9a-f]{24}$'),
    -- No foreign key: deleting a workflow keeps the jobs started from it, each with its own
    -- snapshot of the task graph in document->'tasks'.
    workflow_name text not null,
    status text not null,
    groups text[] not null default '{}',
    -- Set by the service to the document's `created` (millisecond precision), so the column
    -- and the document never disagree.
    created_at timestamptz not null,
    updated_at timestamptz not null,
    created_by text not null,
    document jsonb not null
);

-- ListJobs pages newest first with a (created_at, id) cursor: each filter has an index in that
-- order, so a page costs the same wherever it starts.
create index jobs_created_idx on jobs (created_at desc, id desc);
create index jobs_status_created_idx on jobs (status, created_at desc, id desc);
create index jobs_workflow_created_idx on jobs (workflow_name, created_at desc, id desc);
-- Group-based access: "shares a group with the caller" is an array overlap (&&).
create index jobs_groups_idx on jobs using gin (groups);
create index workflows_groups_idx on workflows using gin (groups);
