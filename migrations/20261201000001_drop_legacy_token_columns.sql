-- `link_tokens` has held every link token since 20261122000001; the users' own token columns
-- were still written beside it, so "the current token" had two sources of truth. The current
-- token of a kind is now only the `link_tokens` row of the user's `verification_job_id` /
-- `reset_job_id`. The `*_token_expiry` columns stay: they say that a link exists and until
-- when, and are cleared on use, which is how the consuming UPDATE refuses a second use.
DROP INDEX IF EXISTS users_verification_token_key;
DROP INDEX IF EXISTS users_reset_token_key;
ALTER TABLE users DROP COLUMN IF EXISTS verification_token;
ALTER TABLE users DROP COLUMN IF EXISTS reset_token;
