-- What the warnings projection shows of the instance's own definition
-- (issue 11, one source of truth): the due time of its pending deadline
-- timer (`deadline: true` in workflows/warning.yaml; NULL when none is
-- pending) and the label its definition version gives the current state.
-- Both are written by the projection the runtime keeps after every step.
ALTER TABLE warnings ADD COLUMN due_at BIGINT;
ALTER TABLE warnings ADD COLUMN state_label TEXT;
