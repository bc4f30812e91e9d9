-- The ListJobs indexes in ascending order. A new job has the newest creation time, so in an
-- ascending index it lands at the right edge of the B-tree, where PostgreSQL inserts without
-- descending from the root and splits pages 90/10; in a descending one it lands at the left
-- edge, where every insert descends the whole tree and splits pages in half. ListJobs reads
-- newest first by scanning these indexes backwards, at the same cost per page.
drop index jobs_created_idx;
drop index jobs_status_created_idx;
drop index jobs_workflow_created_idx;
create index jobs_created_idx on jobs (created_at, id);
create index jobs_status_created_idx on jobs (status, created_at, id);
create index jobs_workflow_created_idx on jobs (workflow_name, created_at, id);
