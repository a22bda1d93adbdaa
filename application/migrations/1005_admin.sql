-- Accounts administration and the city window (DOMAIN.md R1.5-R1.7). Same
-- conventions as 1001: times in unix milliseconds, one file for SQLite and
-- PostgreSQL.

-- A disabled account cannot log in and its sessions end (set and cleared by
-- administrators). Login methods of the credit system an account was
-- imported with or switched to: a comma list of password, sms, usb_key, ca
-- (NULL for accounts made here: password, plus SMS when a mobile is bound).
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
ALTER TABLE accounts ADD COLUMN login_methods TEXT;

-- What administrators did to accounts: created, disabled, enabled, reset,
-- imported. Never a password.
CREATE TABLE account_audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    username TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX account_audit_username ON account_audit (username, at);
CREATE INDEX account_audit_at ON account_audit (at);

-- 市住建局窗口: an enterprise switched to SMS login, with who did it, when,
-- which documents were checked (JSON array of codes: licence, id_card,
-- statement) and the mobile bound.
CREATE TABLE login_method_switches (
    id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    username TEXT NOT NULL REFERENCES accounts (username),
    mobile TEXT NOT NULL,
    documents TEXT NOT NULL,
    agent_name TEXT,
    previous_methods TEXT,
    handled_by TEXT NOT NULL,
    handled_at BIGINT NOT NULL
);
CREATE INDEX login_method_switches_enterprise ON login_method_switches (enterprise_id, handled_at);
CREATE INDEX login_method_switches_at ON login_method_switches (handled_at);
