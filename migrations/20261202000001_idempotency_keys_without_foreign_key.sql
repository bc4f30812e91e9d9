-- idempotency_keys.job_id without its foreign key. Its check ran for every key stored: a lookup
-- in `jobs` and a `for key share` lock on the new job's row, a write of that row's page, which
-- made a start with a key cost PostgreSQL about twice a start without. A key is stored by the
-- statement that inserts its job (`store::starts`), and the service never deletes jobs, so the
-- key cannot dangle. A job deleted or truncated by hand still takes its keys with it, as
-- `on delete cascade` did, through the triggers that take its run state.
alter table idempotency_keys drop constraint idempotency_keys_job_id_fkey;

create or replace function job_service_forget_run_state() returns trigger language plpgsql as $$
begin
    delete from job_tasks where job_id in (select id from gone);
    delete from job_event_batches where job_id in (select id from gone);
    delete from job_wakeups where job_id in (select id from gone);
    delete from idempotency_keys where job_id in (select id from gone);
    return null;
end
$$;

create or replace function job_service_truncate_run_state() returns trigger language plpgsql as $$
begin
    truncate job_tasks, job_event_batches, job_wakeups, idempotency_keys;
    return null;
end
$$;
