-- Every link token, not just the newest. A job whose SES call timed out may have been sent
-- (SES does not say), so a retry of it sends a second email with a second token: whichever of
-- the two the person opens must work. A token is valid while its job is the user's current
-- job of that kind; a newer request (a newer job) makes the older job's links invalid.
CREATE TABLE link_tokens (
    token_hash VARCHAR(64) PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT        NOT NULL CHECK (kind IN ('verification', 'reset')),
    job_id     UUID        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- Set on every token of a job when one of them is used (reset links are single use).
    used_at    TIMESTAMPTZ
);
CREATE INDEX link_tokens_user_idx ON link_tokens (user_id);

-- The user's current job of each kind and when it was requested: a job older than the current
-- one is superseded and not sent.
ALTER TABLE users
    ADD COLUMN verification_job_id UUID,
    ADD COLUMN verification_job_at TIMESTAMPTZ,
    ADD COLUMN reset_job_id        UUID,
    ADD COLUMN reset_job_at        TIMESTAMPTZ;

-- Links already sent keep working: each becomes the single token of a job of its own.
UPDATE users SET verification_job_id = gen_random_uuid() WHERE verification_token IS NOT NULL;
UPDATE users SET reset_job_id = gen_random_uuid() WHERE reset_token IS NOT NULL;
INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at, used_at)
SELECT verification_token, id, 'verification', verification_job_id,
       COALESCE(verification_token_expiry, created_at), created_at,
       CASE WHEN verification_token_expiry IS NULL THEN now() END
  FROM users WHERE verification_token IS NOT NULL;
INSERT INTO link_tokens (token_hash, user_id, kind, job_id, expires_at, created_at, used_at)
SELECT reset_token, id, 'reset', reset_job_id,
       COALESCE(reset_token_expiry, created_at), created_at,
       CASE WHEN reset_token_expiry IS NULL THEN now() END
  FROM users WHERE reset_token IS NOT NULL;

-- The dead letters as the send log knows them, newest first, for the dashboard (which must not
-- hold the dead queue's messages to list them).
CREATE INDEX sends_dead_idx ON sends (updated_at DESC) WHERE status = 'dead';
-- How often a dead job was replayed (from its x-mailroom-replays header), so the send log alone
-- can show a dead letter as `dispatcher dead list` does.
ALTER TABLE sends ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;

-- `waiting`: a claim given back without an outcome (an account stop returned the job, or the
-- dispatcher shut down): no attempt was made, and the next copy may be sent at once.
ALTER TABLE sends DROP CONSTRAINT sends_status_check;
ALTER TABLE sends ADD CONSTRAINT sends_status_check
    CHECK (status IN ('sending', 'sent', 'skipped', 'retrying', 'dead', 'waiting'));
