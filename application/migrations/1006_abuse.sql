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

-- Where each account logged in successfully lately (by password or SMS
-- code). From such an address the account-wide back-off of failed logins
-- does not apply, so guesses from elsewhere, however many addresses they
-- come from, do not keep the real user out of their usual place. Rows older
-- than 30 days are removed at the account's next login.
CREATE TABLE login_addresses (
    username TEXT NOT NULL,
    client TEXT NOT NULL,
    last_success BIGINT NOT NULL,
    PRIMARY KEY (username, client)
);
