-- jobs.graph_id without its foreign key. Its check ran for every job inserted: a lookup in
-- job_graphs and a `for key share` lock on the graph's row, the same row for every job of a
-- workflow, which concurrent batches of starts turned into a MultiXact. A graph is inserted
-- before or with the first job that refers to it, in the same transaction, and graphs are
-- never changed or deleted (20261128000005_job_graphs.sql), so the key cannot dangle.
alter table jobs drop constraint jobs_graph_id_fkey;
