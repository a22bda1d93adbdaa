-- The revision of the warning's workflow instance the projection row shows:
-- a refresh writes only a newer one, so two refreshes racing never put an
-- older state back (the row used to be refreshed by reading the engine's
-- tables inside its own transaction; it now reads through the store API).
ALTER TABLE warnings ADD COLUMN instance_revision BIGINT NOT NULL DEFAULT 0;
