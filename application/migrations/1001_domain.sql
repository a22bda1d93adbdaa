-- Domain data of the epidemic-prevention module (DOMAIN.md R1–R7), kept in
-- the same database as the engine's tables. One migration set serves SQLite
-- and PostgreSQL: times are unix milliseconds and JSON is text, as in
-- engine/migrations. Versions start at 1001 so they never meet the engine's.

CREATE TABLE districts (
    code TEXT PRIMARY KEY,
    number BIGINT NOT NULL,
    name TEXT NOT NULL,
    liaison_name TEXT NOT NULL,
    phone TEXT NOT NULL
);

CREATE TABLE enterprises (
    id TEXT PRIMARY KEY,
    credit_code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    district TEXT NOT NULL REFERENCES districts (code),
    registered_address TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_mobile TEXT NOT NULL,
    liaison_name TEXT,
    liaison_mobile TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX enterprises_district ON enterprises (district, name);

-- Enterprise, district, policy and operator accounts (R1).
CREATE TABLE accounts (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    enterprise_id TEXT REFERENCES enterprises (id),
    district TEXT REFERENCES districts (code),
    mobile TEXT,
    password_hash TEXT NOT NULL,
    must_change_password BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX accounts_enterprise ON accounts (enterprise_id);

-- 在蓉办公地址 (R2.1).
CREATE TABLE addresses (
    id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    address TEXT NOT NULL,
    district TEXT NOT NULL REFERENCES districts (code),
    latitude DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX addresses_enterprise ON addresses (enterprise_id);

-- 企业人员 (R2.3). A person belongs to at most one enterprise at a time;
-- deleting (R2.5) keeps the row for open warnings and audits.
CREATE TABLE staff (
    id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    address_id TEXT NOT NULL REFERENCES addresses (id),
    name TEXT NOT NULL,
    id_number TEXT NOT NULL,
    mobile TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX staff_one_enterprise ON staff (id_number) WHERE deleted_at IS NULL;
CREATE INDEX staff_enterprise ON staff (enterprise_id, name);
CREATE INDEX staff_address ON staff (address_id) WHERE deleted_at IS NULL;

-- 登记疫情防控信息: one record per office address per day (R3.1).
CREATE TABLE daily_records (
    id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    address_id TEXT NOT NULL REFERENCES addresses (id),
    day TEXT NOT NULL,
    fields TEXT NOT NULL,
    computed TEXT,
    computed_at BIGINT,
    run_id TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (address_id, day)
);
CREATE INDEX daily_records_enterprise ON daily_records (enterprise_id, day);

-- 比对 runs and the per-person health data they used (R4, R8.2 dry runs).
CREATE TABLE comparison_runs (
    id TEXT PRIMARY KEY,
    slot BIGINT,
    as_of BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    status TEXT NOT NULL,
    persons BIGINT NOT NULL,
    unknown BIGINT NOT NULL,
    anomalies BIGINT NOT NULL,
    new_warnings BIGINT NOT NULL,
    error TEXT,
    -- What the run returned to its workflow: a retried run returns it again.
    result TEXT
);
-- The data every person was judged on, one row per run and office address:
-- `data` is a JSON array with one compact entry per person, by staff id,
-- `[staff_id, id_number, [health_code, doses, completed,
-- [[sampled_at_ms, result], …]] | null (unknown), [reason, …]]`
-- (server/src/comparison.rs, `write_judged`/`read_judged`). A million
-- persons are 25,000 rows, not a million.
CREATE TABLE comparison_persons (
    run_id TEXT NOT NULL REFERENCES comparison_runs (id),
    address_id TEXT NOT NULL,
    persons BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, address_id)
);

-- 预警: the queryable projection of warning workflows (R5, R6). An open
-- warning is unique per person and reason (R5.1).
CREATE TABLE warnings (
    id TEXT PRIMARY KEY,
    enterprise_id TEXT NOT NULL REFERENCES enterprises (id),
    district TEXT NOT NULL REFERENCES districts (code),
    address_id TEXT,
    staff_id TEXT NOT NULL,
    person_name TEXT NOT NULL,
    person_masked TEXT NOT NULL,
    reason TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    run_id TEXT,
    state TEXT NOT NULL,
    status_label TEXT,
    disposal_overdue BIGINT NOT NULL,
    review_overdue BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT
);
CREATE UNIQUE INDEX warnings_open_once ON warnings (dedupe_key) WHERE closed_at IS NULL;
CREATE INDEX warnings_enterprise ON warnings (enterprise_id, opened_at);
CREATE INDEX warnings_district ON warnings (district, state, opened_at);

-- System notices: an inbox per enterprise, district and the city (R5.2, R6.1, R6.3).
CREATE TABLE notices (
    id TEXT PRIMARY KEY,
    recipient_kind TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    link TEXT,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notices_inbox ON notices (recipient_kind, recipient_id, created_at);

-- SMS of the embedded default, written instead of sent (idempotent by key).
CREATE TABLE sms_log (
    idempotency_key TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    template TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
