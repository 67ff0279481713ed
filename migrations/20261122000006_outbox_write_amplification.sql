-- Every signup writes an outbox row, so every index on it is paid for on the hot path. Nothing
-- looks outbox rows up by job_id (the relay reads pending rows by id; job ids are fresh
-- UUIDs, so uniqueness protects nothing), so its unique index goes.
ALTER TABLE outbox DROP CONSTRAINT outbox_job_id_key;
