-- Webhook events and their deliveries. An event is what happened: its id is the Standard
-- Webhooks `webhook-id` (the same on every attempt, so receivers can drop repeats) and its body
-- is stored exactly as it is sent, so every attempt carries the same bytes. A delivery is that
-- event on its way to one endpoint; its job_id is the job that carries it through the outbox,
-- the queues and the send log (`sends`, kind 'webhook'), like an email.
CREATE TABLE webhook_events (
    id         TEXT PRIMARY KEY,
    type       TEXT        NOT NULL,
    body       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    job_id       UUID PRIMARY KEY,
    event_id     TEXT        NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    url          TEXT        NOT NULL,
    -- The receiver's answer to the attempt that succeeded.
    status       INTEGER,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
