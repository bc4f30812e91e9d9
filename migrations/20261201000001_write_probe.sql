-- One row that readiness rewrites to learn whether the database takes writes. After a write
-- failed for want of resources (disk full), reads still answer, so a `select 1` would call the
-- service ready while every StartJob fails; an upsert of this row fails the same way until the
-- database can write again. The check keeps the table at one row.
create table write_probe (
    id boolean primary key default true check (id),
    probed_at timestamptz not null default now()
);
