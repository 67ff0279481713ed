-- SES feedback as SNS delivered it: one row per event and recipient. A notification SNS
-- delivers again (it retries until it gets a 2xx) is recorded once: the SNS MessageId and the
-- recipient are unique together.
CREATE TABLE ses_events (
    id             BIGSERIAL PRIMARY KEY,
    sns_message_id TEXT        NOT NULL,
    -- bounce, complaint, delivery, send, reject, delivery_delay, rendering_failure, or
    -- whatever else SES sends, in lower case.
    type           TEXT        NOT NULL,
    -- Permanent/General, abuse, MailboxFull, …
    subtype        TEXT,
    recipient      TEXT,
    ses_message_id TEXT,
    -- The job whose send SES accepted under ses_message_id, when Mailroom sent it.
    job_id         UUID,
    diagnostic     TEXT,
    feedback_id    TEXT,
    occurred_at    TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX ses_events_once ON ses_events (sns_message_id, COALESCE(recipient, ''));
-- Transient bounces of one address in the last days, for SOFT_BOUNCE_LIMIT; rates for the
-- dashboard.
CREATE INDEX ses_events_recipient_idx ON ses_events (lower(recipient), type, occurred_at);
CREATE INDEX ses_events_occurred_idx ON ses_events (occurred_at);
-- Feedback finds its job through SES's message id.
CREATE INDEX sends_ses_message_idx ON sends (ses_message_id) WHERE ses_message_id IS NOT NULL;
-- What happened after SES accepted the email.
ALTER TABLE sends ADD COLUMN delivery TEXT
    CHECK (delivery IN ('delivered', 'bounced', 'complained'));
ALTER TABLE suppressions
    ADD CONSTRAINT suppressions_event_fk FOREIGN KEY (event_id) REFERENCES ses_events (id);
