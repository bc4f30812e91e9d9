-- The run state of a job (its task runs, events and wakeup) is written only while the job's
-- row is locked or in the transaction that inserts it, so the job exists; and the service never
-- deletes jobs. The foreign keys' checks (a lookup and a row lock on `jobs` for every task row,
-- event and wakeup written) cost more than writing the rows themselves, so they go. A job
-- deleted or truncated by hand still takes its run state with it (the triggers below), as
-- `on delete cascade` did; claims and steps join `jobs`, so a row left without its job is never acted on.
alter table job_tasks drop constraint job_tasks_job_id_fkey;
alter table job_events drop constraint job_events_job_id_fkey;
alter table job_wakeups drop constraint job_wakeups_job_id_fkey;

create function job_service_forget_run_state() returns trigger language plpgsql as $$
begin
    delete from job_tasks where job_id in (select id from gone);
    delete from job_events where job_id in (select id from gone);
    delete from job_wakeups where job_id in (select id from gone);
    return null;
end
$$;

create trigger jobs_forget_run_state after delete on jobs
    referencing old table as gone
    for each statement execute function job_service_forget_run_state();

create function job_service_truncate_run_state() returns trigger language plpgsql as $$
begin
    truncate job_tasks, job_events, job_wakeups;
    return null;
end
$$;

create trigger jobs_truncate_run_state after truncate on jobs
    for each statement execute function job_service_truncate_run_state();
