-- Email changes with double confirmation. The user's address changes only when the new
-- address is confirmed (and, with EMAIL_CHANGE_CONFIRM=both, the old one too); until then the
-- old address keeps working, and its owner can cancel. One pending change per user: a newer
-- request cancels the older one.
CREATE TABLE email_changes (
    change_id        UUID        PRIMARY KEY,
    user_id          UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    old_email        TEXT        NOT NULL,
    new_email        TEXT        NOT NULL,
    -- EMAIL_CHANGE_CONFIRM=both when the change was asked for: the old address confirms too.
    confirm_old      BOOLEAN     NOT NULL,
    new_confirmed_at TIMESTAMPTZ,
    old_confirmed_at TIMESTAMPTZ,
    cancelled_at     TIMESTAMPTZ,
    committed_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    return_to        TEXT
);
CREATE INDEX email_changes_user_idx ON email_changes (user_id);
CREATE INDEX email_changes_created_idx ON email_changes (created_at);

-- The links of a change: each a role. Only the SHA-256 of a token is stored, as for every
-- link; a token works while its change is pending and it is unused.
CREATE TABLE email_change_tokens (
    token_hash VARCHAR(64) PRIMARY KEY,
    change_id  UUID        NOT NULL REFERENCES email_changes (change_id) ON DELETE CASCADE,
    role       TEXT        NOT NULL CHECK (role IN ('confirm_new', 'confirm_old', 'cancel')),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX email_change_tokens_change_idx ON email_change_tokens (change_id);

-- A code for the new address lives in one_time_codes (purpose 'email_change'), current while
-- its job is the user's newest confirm job.
ALTER TABLE users
    ADD COLUMN email_change_job_id UUID,
    ADD COLUMN email_change_job_at TIMESTAMPTZ;
ALTER TABLE one_time_codes DROP CONSTRAINT one_time_codes_purpose_check;
ALTER TABLE one_time_codes ADD CONSTRAINT one_time_codes_purpose_check
    CHECK (purpose IN ('verification', 'reset', 'sign_in', 'email_change'));
