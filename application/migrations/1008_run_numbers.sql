-- Comparison runs are numbered in the order they are written; a run's
-- warnings are `{number}-{k}`, so warning ids never collide (they were a
-- 32-bit hash of the run id before).
ALTER TABLE comparison_runs ADD COLUMN number BIGINT;
CREATE UNIQUE INDEX comparison_runs_number ON comparison_runs (number);
-- `warnings_to_open` reads a run's new warnings a page at a time in id order.
CREATE INDEX warnings_run ON warnings (run_id, id);
-- R5.1: what a warning was opened on (rules/dedupe.rhai `evidence`), and
-- whether a later run found the person without that anomaly. A warning
-- closed by review keeps later runs from opening it again on the same
-- evidence until then.
ALTER TABLE warnings ADD COLUMN evidence TEXT;
ALTER TABLE warnings ADD COLUMN evidence_gone BIGINT NOT NULL DEFAULT 0;
CREATE INDEX warnings_closed_evidence ON warnings (dedupe_key) WHERE closed_at IS NOT NULL AND evidence_gone = 0;
