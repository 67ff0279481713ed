-- One-time codes: the digits an email carries beside (or instead of) a link, for an app that
-- cannot open a link into itself. One live code per user and purpose: a newer request's code
-- replaces the row, so an older code stops working. Only a keyed hash is stored (HMAC-SHA256
-- with CODE_SECRET over purpose, user and code): a six-digit code's plain hash would be
-- reversed offline in a second, a keyed one cannot be without the secret.
CREATE TABLE one_time_codes (
    user_id       UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose       TEXT        NOT NULL CHECK (purpose IN ('verification', 'reset', 'sign_in')),
    -- The job that minted it: the code works while that job is the user's current one of
    -- its purpose (as a link token does), so a newer link-only request kills it too.
    job_id        UUID        NOT NULL,
    code_hash     VARCHAR(64) NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    -- Guesses left. Taken *before* the comparison, in the same statement that reads the hash,
    -- so concurrent guesses cannot share one: at most CODE_MAX_ATTEMPTS wrong ones, then dead.
    attempts_left INTEGER     NOT NULL CHECK (attempts_left >= 0),
    created_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ,
    PRIMARY KEY (user_id, purpose)
);
CREATE INDEX one_time_codes_expires_idx ON one_time_codes (expires_at);

-- Guesses at an address that has no live code (no such user, or none requested): counted
-- like a real code's, so the answers (422 with attempts_left, then 410) cannot tell an
-- unknown address from a known one. The window restarts CODE_TTL after its first miss.
CREATE TABLE code_misses (
    address   TEXT        NOT NULL,
    purpose   TEXT        NOT NULL,
    misses    INTEGER     NOT NULL,
    first_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (address, purpose)
);
CREATE INDEX code_misses_first_idx ON code_misses (first_at);

-- Sign-in by email and invites: the user's current job of each, like the verification and
-- reset ones, so that a newer email's link (and code) replace the older ones. `invited_at`
-- marks a user created by an invite: pending while it is set and the address unverified
-- (accepting verifies it), and never sent a verification reminder.
ALTER TABLE users
    ADD COLUMN sign_in_job_id UUID,
    ADD COLUMN sign_in_job_at TIMESTAMPTZ,
    ADD COLUMN invite_job_id  UUID,
    ADD COLUMN invite_job_at  TIMESTAMPTZ,
    ADD COLUMN invited_at     TIMESTAMPTZ;
ALTER TABLE link_tokens DROP CONSTRAINT link_tokens_kind_check;
ALTER TABLE link_tokens ADD CONSTRAINT link_tokens_kind_check
    CHECK (kind IN ('verification', 'reset', 'sign_in', 'invite'));
