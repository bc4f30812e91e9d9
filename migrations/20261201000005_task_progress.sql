-- Tasks that run in parts keep how far they got beside their run: a childJob task its child
-- jobs (started, and the variables of those still to start), a forEach task its position in
-- its array.
alter table job_tasks add column progress jsonb;
