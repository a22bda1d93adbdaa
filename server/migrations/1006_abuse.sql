-- Abuse resistance (issue 10). Same conventions as 1001: times in unix
-- milliseconds, one file for SQLite and PostgreSQL.

-- A session started by a proven SMS code records when (its start): for a
-- while after, its holder may set a new password without the old one
-- (DOMAIN.md R1.7). NULL for sessions started by password.
ALTER TABLE sessions ADD COLUMN sms_proven_at BIGINT;

-- Throttle events are taken before a password or code is checked; each
-- carries the attempt it belongs to, so a successful login takes back what
-- it counted. NULL for events that are never taken back.
ALTER TABLE throttle_events ADD COLUMN attempt TEXT;
