-- Failed logins, per address (whether or not a user has it), for the lockout and for
-- operators. Successful logins are not recorded here.
CREATE TABLE login_failures (
    id        BIGSERIAL PRIMARY KEY,
    email     VARCHAR(255) NOT NULL,
    -- unknown_address, no_password, wrong_password
    reason    TEXT         NOT NULL,
    failed_at TIMESTAMPTZ  NOT NULL
);
CREATE INDEX login_failures_recent_idx ON login_failures (lower(email), failed_at);
