-- A job's events are stored a batch a row: the events one statement records for a job (a step's,
-- a claim's) are one row of parallel arrays instead of one row each. A row costs PostgreSQL
-- about the same whatever it holds (its tuple, its primary key entry, their WAL records), and a
-- start that runs its first WorkFlowEngine tasks records five events. `sequence` is the
-- sequence of the row's last event; the first is `sequence - cardinality(kinds) + 1`.
create table job_event_batches (
    job_id text not null,
    sequence bigint not null,
    task_ids text[] not null,
    kinds text[] not null,
    statuses text[] not null,
    finish_states text[] not null,
    ats timestamptz[] not null,
    primary key (job_id, sequence),
    check (cardinality(kinds) between 1 and sequence
           and cardinality(task_ids) = cardinality(kinds)
           and cardinality(statuses) = cardinality(kinds)
           and cardinality(finish_states) = cardinality(kinds)
           and cardinality(ats) = cardinality(kinds))
);

insert into job_event_batches (job_id, sequence, task_ids, kinds, statuses, finish_states, ats)
select job_id, sequence, array[task_id], array[kind], array[status], array[finish_state], array[at]
from job_events;
drop table job_events;

-- The events one a row, as they were stored before: for reading by hand. The service reads
-- the batches (store::runs::events), where the primary key bounds the scan.
create view job_events as
select b.job_id, b.sequence - cardinality(b.kinds) + e.n as sequence, e.task_id, e.kind,
       e.status, e.finish_state, e.at
from job_event_batches b,
     unnest(b.task_ids, b.kinds, b.statuses, b.finish_states, b.ats)
         with ordinality as e(task_id, kind, status, finish_state, at, n);

create or replace function job_service_forget_run_state() returns trigger language plpgsql as $$
begin
    delete from job_tasks where job_id in (select id from gone);
    delete from job_event_batches where job_id in (select id from gone);
    delete from job_wakeups where job_id in (select id from gone);
    return null;
end
$$;

create or replace function job_service_truncate_run_state() returns trigger language plpgsql as $$
begin
    truncate job_tasks, job_event_batches, job_wakeups;
    return null;
end
$$;
