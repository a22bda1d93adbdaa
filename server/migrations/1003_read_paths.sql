-- Indexes for the pages (issue 5): a list of warnings newest first per
-- scope is an index range, and the counts per state are read from an index
-- alone, whatever the number of rows (server/src/warnings.rs).
DROP INDEX warnings_enterprise;
DROP INDEX warnings_district;
CREATE INDEX warnings_enterprise_opened ON warnings (enterprise_id, opened_at, id);
CREATE INDEX warnings_district_opened ON warnings (district, opened_at, id);
CREATE INDEX warnings_opened ON warnings (opened_at, id);
CREATE INDEX warnings_enterprise_counts ON warnings (enterprise_id, state, closed_at, disposal_overdue, review_overdue);
CREATE INDEX warnings_district_counts ON warnings (district, state, closed_at, disposal_overdue, review_overdue);
-- Unread notices of an inbox.
CREATE INDEX notices_unread ON notices (recipient_kind, recipient_id) WHERE read_at IS NULL;
