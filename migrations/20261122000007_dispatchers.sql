-- The dispatchers sharing one SES sending rate (see dispatcher/src/rate.rs): each renews its
-- row every second; rows renewed within the last few seconds divide the account's rate.
CREATE TABLE dispatchers (
    id           UUID PRIMARY KEY,
    queue_prefix TEXT             NOT NULL,
    host         TEXT             NOT NULL,
    pid          INTEGER          NOT NULL,
    started_at   TIMESTAMPTZ      NOT NULL,
    heartbeat_at TIMESTAMPTZ      NOT NULL,
    -- Sends per second this dispatcher allowed itself at its last renewal.
    share        DOUBLE PRECISION NOT NULL
);
CREATE INDEX dispatchers_prefix_idx ON dispatchers (queue_prefix, heartbeat_at);
