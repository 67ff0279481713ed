-- Retention (issue 19): every table that grows is swept by the dispatcher (one instance at a
-- time, in batches), by the time column below. The indexes make each batch a short index
-- range scan instead of a scan of the table; tables already indexed by their time column
-- (sends, ses_events, idempotency_keys, dispatchers) need none, and `jobs` is swept by its
-- time-ordered primary key (UUIDv7).
CREATE INDEX email_requests_requested_idx ON email_requests (requested_at);
CREATE INDEX login_failures_failed_idx ON login_failures (failed_at);
CREATE INDEX webhook_events_created_idx ON webhook_events (created_at);
CREATE INDEX link_tokens_expires_idx ON link_tokens (expires_at);
CREATE INDEX audit_log_created_idx ON audit_log (created_at);

-- A swept SES event must not be held by the suppression it caused (the suppression stays).
ALTER TABLE suppressions DROP CONSTRAINT suppressions_event_fk;
ALTER TABLE suppressions
    ADD CONSTRAINT suppressions_event_fk FOREIGN KEY (event_id) REFERENCES ses_events (id)
    ON DELETE SET NULL;

-- The life of an unverified account: when its one reminder went out.
ALTER TABLE users ADD COLUMN reminded_at TIMESTAMPTZ;
