-- Idempotency keys of StartJob: one row per caller and key, holding the fingerprint of the
-- request that first used the key and the job it created. Written in the job's transaction, so
-- a key exists exactly when its job does; racing requests with one key are serialised by a
-- transaction-scoped advisory lock on (caller, key).
create table idempotency_keys (
    caller text not null,
    key text not null,
    fingerprint text not null,
    job_id text not null references jobs (id) on delete cascade,
    created_at timestamptz not null default now(),
    primary key (caller, key)
);

-- The purge of keys past their retention scans by age.
create index idempotency_keys_created_idx on idempotency_keys (created_at);
