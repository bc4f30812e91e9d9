-- jobs.groups without its GIN index. No statement of the service can use it: a caller who is not
-- an admin sees the jobs without groups or sharing one of theirs,
-- `cardinality(groups) = 0 or groups && $1`, and an OR one of whose arms no index serves is not
-- answered from indexes (PostgreSQL filters the rows an index on `created_at` gives, in page
-- order, instead). Every job inserted still paid for it: an entry in the index's pending list
-- (4% of a start's WAL), and now and then an insert that found the list full merged it into the
-- index itself before its transaction could commit.
drop index jobs_groups_idx;
