-- Each stored workflow gets a revision from a sequence. A workflow deleted and created again
-- under the same name has a new revision, so a cache of parsed workflows keyed by
-- (name, revision) never serves a stale document, whichever instance changed the table.
alter table workflows add column revision bigint generated always as identity;
