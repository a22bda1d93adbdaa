-- Indexes for the pages (issue 5, server/src/warnings.rs): a list of
-- warnings newest first per scope is an index range, and the number of
-- warnings of a filtered list is a count of index entries.
DROP INDEX warnings_enterprise;
DROP INDEX warnings_district;
CREATE INDEX warnings_enterprise_opened ON warnings (enterprise_id, opened_at, id);
CREATE INDEX warnings_district_opened ON warnings (district, opened_at, id);
CREATE INDEX warnings_opened ON warnings (opened_at, id);
CREATE INDEX warnings_enterprise_state ON warnings (enterprise_id, state);
CREATE INDEX warnings_district_state ON warnings (district, state);
CREATE INDEX warnings_state ON warnings (state);
-- Unread notices of an inbox.
CREATE INDEX notices_unread ON notices (recipient_kind, recipient_id) WHERE read_at IS NULL;
