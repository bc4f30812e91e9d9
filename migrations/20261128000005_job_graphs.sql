-- Task graphs stored once. A job's tasks and transitions depend only on the workflow revision it
-- was started from, and every job of that revision has the same ones, so they are stored once
-- per distinct graph in job_graphs, keyed by a SHA-256 of the graph, and each job refers to its
-- graph. A start writes the job's own fields (about 1 KB) instead of the whole graph again
-- (7.8 KB for a 10-task workflow). Graphs are never changed or deleted: a job's snapshot stays
-- as it was, whatever happens to its workflow.
--
-- jobs.document holds the job document without `tasks` and `transitions`; the view
-- job_documents gives the whole document, as the API returns it.

create table job_graphs (
    id text primary key,
    tasks jsonb not null,
    transitions jsonb not null,
    created_at timestamptz not null default now()
);

alter table jobs add column graph_id text references job_graphs (id);

-- Jobs stored before: their graphs move to job_graphs, one row per distinct graph.
create function pg_temp.graph_id(document jsonb) returns text language sql immutable as $$
    select encode(sha256(convert_to(jsonb_build_array(coalesce(document->'tasks', '{}'),
                                                      coalesce(document->'transitions', '{}'))::text,
                                    'UTF8')), 'hex')
$$;
insert into job_graphs (id, tasks, transitions)
select distinct on (pg_temp.graph_id(document)) pg_temp.graph_id(document),
       coalesce(document->'tasks', '{}'), coalesce(document->'transitions', '{}')
from jobs;
update jobs set graph_id = pg_temp.graph_id(document), document = document - 'tasks' - 'transitions';
alter table jobs alter column graph_id set not null;

create view job_documents as
select j.id, j.workflow_name, j.status, j.groups, j.created_at, j.updated_at, j.created_by,
       j.document || jsonb_build_object('tasks', g.tasks, 'transitions', g.transitions) as document
from jobs j
join job_graphs g on g.id = j.graph_id;
