-- Counts of the warnings projection per enterprise, district and state,
-- written in the same transaction as every write of `warnings`
-- (server/src/warnings.rs `add_to_counts`), so the pages read a few rows
-- instead of counting a history. Overdue counts are of open warnings only.
CREATE TABLE warning_counts (
    enterprise_id TEXT NOT NULL,
    district TEXT NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    disposal_overdue BIGINT NOT NULL,
    review_overdue BIGINT NOT NULL,
    PRIMARY KEY (enterprise_id, district, state)
);
CREATE INDEX warning_counts_district ON warning_counts (district, state);
INSERT INTO warning_counts (enterprise_id, district, state, n, disposal_overdue, review_overdue)
SELECT enterprise_id, district, state, COUNT(*),
       SUM(CASE WHEN closed_at IS NULL AND disposal_overdue = 1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN closed_at IS NULL AND review_overdue = 1 THEN 1 ELSE 0 END)
FROM warnings GROUP BY enterprise_id, district, state;
