-- Who holds a running task's lease (the runtime's `Options::worker`): a
-- restarted worker takes back at once the tasks its previous process had
-- claimed, instead of waiting for their leases to run out.
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
