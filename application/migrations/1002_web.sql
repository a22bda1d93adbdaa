-- Web sessions, SMS login codes and throttling (DOMAIN.md R1.3). Same
-- conventions as 1001: times in unix milliseconds, one file for SQLite and
-- PostgreSQL.

-- A logged-in session. The cookie carries a random token; only its SHA-256
-- is stored, so a copy of the database cannot be replayed as cookies.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES accounts (username),
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_username ON sessions (username);

-- One-time login codes sent by SMS (6 digits, valid 5 minutes). Only a hash
-- of the code is kept.
CREATE TABLE sms_codes (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES accounts (username),
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX sms_codes_username ON sms_codes (username, created_at);

-- Events counted for throttling (failed logins per account and client, SMS
-- codes per mobile and client). Rows older than the longest window are
-- pruned as they are counted.
CREATE TABLE throttle_events (
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX throttle_events_key ON throttle_events (key, at);
