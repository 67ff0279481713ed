-- The relay deletes a row once the broker has confirmed it, so every row left is pending, and
-- the partial index of pending rows repeated the primary key at the cost of one more index
-- entry per signup. The relay reads pending rows in primary-key order. Rows that a relay of an
-- older version marked published are done: removing them keeps that scan short.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_pending_idx;
