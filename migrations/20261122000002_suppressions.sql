-- The suppression list: addresses Mailroom must not mail, because SES reported a hard bounce
-- or a complaint (mailing them again gets the account reviewed, then paused), or because an
-- operator said so. Addresses are normalised like users' emails; one entry per address.
CREATE TABLE suppressions (
    email      VARCHAR(255) NOT NULL,
    reason     TEXT         NOT NULL
        CHECK (reason IN ('bounce', 'complaint', 'soft_bounce', 'manual', 'ses')),
    detail     TEXT         NOT NULL DEFAULT '',
    -- The SES event that caused it, once the feedback endpoint records events.
    event_id   BIGINT,
    created_at TIMESTAMPTZ  NOT NULL
);
CREATE UNIQUE INDEX suppressions_email_key ON suppressions (lower(email));

-- `suppressed`: the dispatcher did not call SES because the recipient is on the list.
ALTER TABLE sends DROP CONSTRAINT sends_status_check;
ALTER TABLE sends ADD CONSTRAINT sends_status_check
    CHECK (status IN ('sending', 'sent', 'skipped', 'retrying', 'dead', 'waiting', 'suppressed'));

-- `address_suppressed`: a resend or reset for an address on the list (the caller still gets
-- the same 202). The older `suppressed` outcome means the per-address rate limit.
ALTER TABLE email_requests DROP CONSTRAINT email_requests_outcome_check;
ALTER TABLE email_requests ADD CONSTRAINT email_requests_outcome_check
    CHECK (outcome IN ('queued', 'suppressed', 'unknown_address', 'already_verified',
                       'address_suppressed'));
