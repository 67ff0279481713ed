//! ingest's HTTP API against real PostgreSQL, RabbitMQ and moto (see docs/testing.md): bad
//! inputs, lookups, health, resets and resends, logins, SES feedback. `cargo test -p ingest`
//! runs them. [`mailroom_testkit::app::TestApp`] also runs a dispatcher, so that the emails a
//! request causes can be checked in moto.

mod accounts;
mod api;
mod config;
mod contract;
mod documents;
mod feedback;
mod logins;
