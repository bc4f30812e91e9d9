-- The size of each stored document as text, kept by the database. A page of a list stops at a
-- byte budget (--max-page-bytes): the service reads the sizes of a page's rows first, then only
-- the documents within the budget, so a page of large jobs or workflows never sends more than
-- about the budget, whatever its page size.
alter table jobs
    add column document_bytes integer not null
        generated always as (octet_length(document::text)) stored;

alter table workflows
    add column document_bytes integer not null
        generated always as (octet_length(document::text)) stored;
