-- Every reset or resend request, whatever became of it: the answer to the caller is always the
-- same 202, so this table is where an operator sees what really happened (queued, suppressed by
-- the per-address limit, unknown address, already verified).
CREATE TABLE email_requests (
    id           BIGSERIAL PRIMARY KEY,
    email        VARCHAR(255) NOT NULL,
    kind         TEXT         NOT NULL,
    outcome      TEXT         NOT NULL
        CHECK (outcome IN ('queued', 'suppressed', 'unknown_address', 'already_verified')),
    job_id       UUID,
    requested_at TIMESTAMPTZ  NOT NULL
);
-- The limit check counts an address's recent queued requests.
CREATE INDEX email_requests_limit_idx ON email_requests (lower(email), kind, requested_at)
    WHERE outcome = 'queued';

-- Operator actions (replay, resend) from the dashboard and the CLI: who, what, when, how many.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    actor      TEXT        NOT NULL,
    action     TEXT        NOT NULL,
    detail     TEXT        NOT NULL DEFAULT '',
    count      INTEGER     NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The send log by kind and time, for the dashboard's counts of today.
CREATE INDEX sends_status_updated_idx ON sends (status, updated_at);
