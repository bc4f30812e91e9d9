-- Who works a manual task: the person who claimed it or was assigned it (an account id, and
-- the username when they claimed it themselves: an assignment names an account only), who
-- made them the owner, and when. Ownership belongs to one waiting run of the task: it is
-- cleared when the run ends or the task is run again (its status, iteration or start time
-- changes: finished, canceled, reset by a revert, scheduled anew), so that a retried or
-- reverted task waits unowned. The trigger below clears it wherever the run state is written,
-- so the engine's writes need not know of owners; its condition is checked without calling
-- the function, and rows without an owner (nearly all) never call it.
alter table job_tasks
    add column owner text,
    add column owner_username text,
    add column owner_assigned_by text,
    add column owner_assigned_at timestamptz;

create function job_service_forget_task_owner() returns trigger language plpgsql as $$
begin
    new.owner := null;
    new.owner_username := null;
    new.owner_assigned_by := null;
    new.owner_assigned_at := null;
    return new;
end
$$;

create trigger job_tasks_forget_owner before update on job_tasks
    for each row
    when (old.owner is not null
          and (new.status is distinct from old.status
               or new.iteration is distinct from old.iteration
               or new.start_time is distinct from old.start_time))
    execute function job_service_forget_task_owner();

-- An operator's list: the manual tasks waiting for a person, by owner (null: unclaimed).
create index job_tasks_waiting_manual_idx on job_tasks (owner, start_time)
    where runner = 'manual' and status = 'scheduled';
