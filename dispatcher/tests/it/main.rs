//! Integration tests against real PostgreSQL, RabbitMQ and moto (see docs/testing.md).
//! One binary, so the AWS SDK is linked once.

mod accounts;
mod delivery;
mod feedback;
mod hardening;
mod helpers;
mod http_api;
mod identities;
mod logins;
mod performance;
mod pipeline;
mod shared_rate;
mod suppressions;
mod webhooks;
