-- Search attributes declared by the definitions (`search:` in a workflow),
-- stored generically: one row per instance and attribute, written in the
-- transaction of the instance's first step. Replaces the columns
-- enterprise_id, district and person, which named one application's fields.
CREATE TABLE instance_search (
    instance_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (instance_id, name)
);
CREATE INDEX instance_search_value ON instance_search (name, value, instance_id);

INSERT INTO instance_search (instance_id, name, value)
    SELECT id, 'enterprise_id', enterprise_id FROM instances WHERE enterprise_id IS NOT NULL;
INSERT INTO instance_search (instance_id, name, value)
    SELECT id, 'district', district FROM instances WHERE district IS NOT NULL;
INSERT INTO instance_search (instance_id, name, value)
    SELECT id, 'person', person FROM instances WHERE person IS NOT NULL;

DROP INDEX instances_enterprise;
DROP INDEX instances_district;
DROP INDEX instances_person;
ALTER TABLE instances DROP COLUMN enterprise_id;
ALTER TABLE instances DROP COLUMN district;
ALTER TABLE instances DROP COLUMN person;

-- A child's parent in two columns (parent_id held `{parent}#{call}`), so
-- "the children of i" is an equality on the parent_id index.
ALTER TABLE instances ADD COLUMN parent_call TEXT;
UPDATE instances
   SET parent_call = substr(parent_id, strpos(parent_id, '#') + 1),
       parent_id = substr(parent_id, 1, strpos(parent_id, '#') - 1)
 WHERE strpos(parent_id, '#') > 0;
