-- Publications (issue 11): each explicit step that made a set of definition
-- versions current, numbered in order (`seq`), with who, why and when.
-- `definitions` is JSON text: {workflow: hash} of every workflow current
-- after it (a complete map, so the latest row alone says what new
-- instances run). `kind` is `publish`, `startup` (files published when
-- the server started) or `rollback` (`rollback_of`: the publication whose
-- definitions were made current again). `published_at` is wall time;
-- `clock_at` the runtime's clock (a rehearsal's simulated time).
CREATE TABLE publications (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    published_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    clock_at BIGINT NOT NULL,
    rollback_of BIGINT,
    definitions TEXT NOT NULL
);
-- Instances per definition version (the versions list) and the instances a
-- migration may move.
CREATE INDEX instances_definition ON instances (definition_hash, status);
