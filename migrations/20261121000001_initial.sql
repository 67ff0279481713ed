-- The seed's `users` table, ported to PostgreSQL. The token columns hold the SHA-256 (hex) of a
-- token, never the token itself; the newest token of each kind is the valid one.
CREATE TABLE users (
    id                        UUID PRIMARY KEY,
    name                      VARCHAR(31)  NOT NULL,
    email                     VARCHAR(255) NOT NULL,
    hashed_password           TEXT,
    email_verified            BOOLEAN      NOT NULL DEFAULT FALSE,
    verification_token        VARCHAR(64),
    verification_token_expiry TIMESTAMPTZ,
    reset_token               VARCHAR(64),
    reset_token_expiry        TIMESTAMPTZ,
    locale                    VARCHAR(35)  NOT NULL DEFAULT 'en',
    created_at                TIMESTAMPTZ  NOT NULL DEFAULT now(),
    verified_at               TIMESTAMPTZ
);

CREATE UNIQUE INDEX users_name_key ON users (name);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_verification_token_key ON users (verification_token)
    WHERE verification_token IS NOT NULL;
CREATE UNIQUE INDEX users_reset_token_key ON users (reset_token)
    WHERE reset_token IS NOT NULL;
-- The dashboard lists unverified users oldest first.
CREATE INDEX users_unverified_idx ON users (created_at) WHERE NOT email_verified;

-- The transactional outbox: a row is written in the same transaction as the user, and the relay
-- publishes it (with a broker confirm) and then stamps published_at.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    job_id       UUID        NOT NULL UNIQUE,
    routing_key  TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    attempts     INTEGER     NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;

-- The send log, one row per job: what the dispatcher did with it. Keyed by job_id so that a
-- redelivered job that was already sent is recognised and not sent again.
CREATE TABLE sends (
    job_id           UUID PRIMARY KEY,
    kind             TEXT        NOT NULL,
    user_id          UUID,
    recipient        TEXT,
    status           TEXT        NOT NULL
        CHECK (status IN ('sending', 'sent', 'skipped', 'retrying', 'dead')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    ses_message_id   TEXT,
    error_class      TEXT,
    last_error       TEXT,
    detail           TEXT,
    requested_at     TIMESTAMPTZ,
    first_attempt_at TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    sent_at          TIMESTAMPTZ,
    latency_ms       INTEGER
);
CREATE INDEX sends_updated_idx ON sends (updated_at DESC);
CREATE INDEX sends_sent_at_idx ON sends (sent_at) WHERE sent_at IS NOT NULL;
