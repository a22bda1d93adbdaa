-- Durable workflow state (engine/src/store). Times are unix milliseconds,
-- JSON is text: the same columns on SQLite and PostgreSQL.
CREATE TABLE definitions (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    version BIGINT NOT NULL,
    source TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE INDEX definitions_kind ON definitions (kind, version);

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    definition_hash TEXT NOT NULL REFERENCES definitions (hash),
    definition_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    status_label TEXT,
    enterprise_id TEXT,
    district TEXT,
    person TEXT,
    parent_id TEXT,
    snapshot TEXT NOT NULL,
    revision BIGINT NOT NULL,
    history_len BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT
);
CREATE INDEX instances_kind_state ON instances (kind, state, created_at);
CREATE INDEX instances_status ON instances (status, created_at);
CREATE INDEX instances_enterprise ON instances (enterprise_id, created_at);
CREATE INDEX instances_district ON instances (district, created_at);
CREATE INDEX instances_person ON instances (person);
CREATE INDEX instances_parent ON instances (parent_id);

CREATE TABLE history (
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE timers (
    instance_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, timer_id)
);
CREATE INDEX timers_due ON timers (due_at);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    retry TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    status TEXT NOT NULL,
    next_run_at BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT,
    result TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tasks_runnable ON tasks (status, next_run_at);
CREATE INDEX tasks_instance ON tasks (instance_id);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX outbox_pending ON outbox (delivered_at, created_at);

CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    actor TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX signals_instance ON signals (instance_id, id);

CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    last_fired_at BIGINT NOT NULL
);
