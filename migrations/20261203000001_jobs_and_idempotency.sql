-- The calling service's contract (issue 19): what each job was, for whom, from which API key
-- and with which caller reference, so that `GET /v1/jobs/{id}` can answer for a job the
-- dispatcher has not seen yet; and the idempotency keys of retried requests.
--
-- `jobs` is written in the statement or transaction that writes the job's outbox row (the
-- outbox row is deleted once published; this one stays until retention). Only email jobs have
-- one: webhook deliveries are not the caller's jobs.
CREATE TABLE jobs (
    job_id     UUID PRIMARY KEY,
    kind       TEXT        NOT NULL,
    user_id    UUID        NOT NULL,
    -- The name of the API key the request came with; NULL for jobs Mailroom raised itself
    -- (the "password changed" notice, reminders).
    api_key    TEXT,
    reference  TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
-- `GET /v1/users/{id}/emails`: newest first (job ids are UUIDv7, so time-ordered).
CREATE INDEX jobs_user_idx ON jobs (user_id, job_id DESC);

-- One row per (API key name, Idempotency-Key). Reserved (status NULL) before the work runs,
-- completed with the answer in the same transaction as the work it guards.
CREATE TABLE idempotency_keys (
    api_key     TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    -- The method and route the key was first used on, and a digest of the request body
    -- (passwords left out: see docs/security.md).
    route       TEXT        NOT NULL,
    fingerprint BYTEA       NOT NULL,
    status      INTEGER,
    body        TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (api_key, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

ALTER TABLE email_requests ADD COLUMN api_key TEXT;

ALTER TABLE sends DROP CONSTRAINT IF EXISTS sends_delivery_check;
ALTER TABLE sends ADD CONSTRAINT sends_delivery_check
    CHECK (delivery IN ('delivered', 'bounced', 'complained', 'delayed'));
