//! End-to-end tests against real PostgreSQL, RabbitMQ and moto or the SES stand-in (see
//! docs/testing.md), grouped by behaviour. One binary, so the AWS SDK is linked once. The API
//! tests of ingest itself are in ingest/tests/api.
//!
//! - [`signup`]: a signup to the email in moto and the link back.
//! - [`codes`]: one-time codes instead of (or beside) links, with their attempts.
//! - [`return_to`]: where a link sends people back to, and its allow-list.
//! - [`sign_in`]: sign-in by email, by link and by code.
//! - [`invites`]: invites, their accept page, resending and revoking.
//! - [`email_changes`]: changing an address, confirmed by the new one, cancelled by the old.
//! - [`delivery`]: retries, dead letters, replay, pauses.
//! - [`faults`]: the failures of production, each held without losing mail.
//! - [`security`]: abuse, link scanners, made-up and superseded tokens.
//! - [`scale`] and [`shared_rate`]: many jobs in flight, one SES rate across dispatchers.
//! - [`suppressions`]: the suppression list on every path and its CLI.
//! - [`webhooks`]: signed events, their retries and the `webhooks test` command.
//! - [`identities`]: the SES identity and account commands.
//! - [`startup`]: either binary may start first.
//! - [`switchover`]: PostgreSQL failing over to its promoted replica.
//! - [`clock`]: every process on the database's clock, whatever its machine's says.

mod clock;
mod codes;
mod config;
mod delivery;
mod email_changes;
mod faults;
mod identities;
mod invites;
mod lifecycle;
mod return_to;
mod scale;
mod security;
mod shared_rate;
mod sign_in;
mod signup;
mod startup;
mod suppressions;
mod switchover;
mod webhooks;
