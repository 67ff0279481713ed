//! Mailroom's shared library: everything that more than one binary needs, once.
//!
//! Mailroom sends the emails accounts depend on. Data flows one way:
//! service → `ingest` → PostgreSQL (user + outbox row, one transaction) → RabbitMQ →
//! `dispatcher` → SES, and the dispatcher records each outcome back in PostgreSQL.
//!
//! # Layout
//!
//! - [`config`]: the option groups every binary shares (`DATABASE_URL`, `AMQP_URL`, …) and
//!   [`config::Secret`], which keeps credentials out of logs.
//! - [`domain`]: newtypes parsed once at the edge — [`domain::EmailAddress`],
//!   [`domain::UserName`], [`domain::Password`], [`domain::Token`], [`domain::Locale`].
//! - [`job`]: the JSON job that travels through the broker; it never carries a secret.
//! - [`broker`]: the RabbitMQ topology (exchange, work, retry and dead queues) and confirmed
//!   publishing.
//! - [`events`]: the webhook events as types (the public contract) and their endpoints.
//! - [`policy`]: the decisions (feedback and suppression, per-address limits, login lockout)
//!   as pure functions, unit-tested without a database.
//! - [`store`]: every SQL statement of the workspace, one module per table group, and the
//!   migrations. It carries out what [`policy`] decides.
//! - [`batch`]: runs the requests of concurrent callers as one statement (signups, the
//!   dispatcher's claims and records).
//! - [`dead`]: listing and replaying dead letters (the CLI and the dashboard share it).
//! - [`ses`]: the SES v2 client, the send call, error classes and the identity commands.
//! - [`templates`]: handlebars templates for emails and for the pages ingest serves.
//! - [`metrics`]: the shared label sets and rendering of the prometheus-client registries.
//! - [`clock`]: the time source, controllable in tests so that expiry can be exercised.
//! - [`telemetry`]: tracing setup shared by the binaries.

pub mod batch;
pub mod broker;
pub mod clock;
pub mod config;
pub mod dead;
pub mod domain;
pub mod events;
pub mod job;
pub mod metrics;
pub mod policy;
pub mod ses;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod webhook;

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the shutdown future the binaries pass to their `run`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
