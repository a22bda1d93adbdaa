-- Tamper-evident history: each row carries the hash of the row before it in
-- its instance (`prev_hash`, '' for the first) and its own hash over
-- (instance_id, seq, at, kind, payload, prev_hash); the instance keeps the
-- last one (`history_hash`) so a step chains without reading history. Rows
-- written before this migration keep NULL hashes: verification counts them
-- as not chained and checks from the first chained row on
-- (engine/src/store/mod.rs, `verify_chain`).
ALTER TABLE history ADD COLUMN prev_hash TEXT;
ALTER TABLE history ADD COLUMN hash TEXT;
ALTER TABLE instances ADD COLUMN history_hash TEXT;
