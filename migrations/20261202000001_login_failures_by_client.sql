-- Lockout counted per address *and* client (issue: a lockout must not be a denial of service
-- on the victim). client_ip is what the calling service says its user connected from; NULL
-- when it did not say, and all of those share one count, as before.
ALTER TABLE login_failures ADD COLUMN client_ip INET;
-- The per-client count and the clearing of a client's failures on its successful login.
CREATE INDEX login_failures_client_idx ON login_failures (lower(email), client_ip, failed_at);
