-- Personal data kept only as long as needed (issue 15). Same conventions
-- as 1001: times in unix milliseconds, one file for SQLite and PostgreSQL.

-- Who looked at whom: every view of a person's health data or a warning by
-- a district, city or operator account (pages and the JSON API), every
-- export, every administrative action. `client` is the address the request
-- came from (web::session's client address), `target` what was seen or
-- changed (a warning id, an instance id, a masked ID number and a day).
-- Kept by the retention policy (workflows/retention.yaml, `access_audit`);
-- read only by administrators (/admin/audit).
CREATE TABLE access_audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX access_audit_at ON access_audit (at, id);
CREATE INDEX access_audit_username ON access_audit (username, at, id);

-- One batch of the retention purge, keyed by its activity call's
-- idempotency key: written in the batch's own transaction, so a batch the
-- runtime repeats after a crash returns what it did instead of purging (and
-- counting) again. `planned`: the ids of a two-step batch (engine instances
-- first, then the application's rows), fixed before the first step.
CREATE TABLE retention_batches (
    key TEXT PRIMARY KEY,
    planned TEXT,
    result TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX retention_batches_at ON retention_batches (at);

-- What the purge looks for, oldest first, without scanning a table.
CREATE INDEX comparison_runs_as_of ON comparison_runs (as_of);
CREATE INDEX warnings_closed_at ON warnings (closed_at, id) WHERE closed_at IS NOT NULL;
CREATE INDEX notices_created ON notices (created_at);
CREATE INDEX sms_log_created ON sms_log (created_at);
CREATE INDEX throttle_events_at ON throttle_events (at);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sms_codes_expires ON sms_codes (expires_at);
CREATE INDEX login_addresses_last ON login_addresses (last_success);
