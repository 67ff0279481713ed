//! Ingest: the HTTP service that takes events from other services and from people's browsers.
//! It owns users and tokens on the way in: it validates, stores the user and the outbox row in
//! one transaction, answers 202 without waiting for RabbitMQ or SES, and relays the outbox to
//! the broker in the background ([`relay`]). It never talks to SES and never sees a token
//! except one presented to it for consumption.
//!
//! From start to answer: [`Config`] (clap) is checked into [`Settings`], which builds the
//! [`AppState`] once ([`Application::build`]); each request is routed by the one table
//! [`ROUTES`] to a handler of `routes`, which answers a response or an [`error::ApiError`].
//! [`run`] takes a bound listener and a shutdown future so that tests can bind port 0 and stop
//! the server when they are done.

mod auth;
pub mod config;
pub mod error;
pub mod feedback;
mod fields;
pub mod hashing;
pub mod idempotency;
mod in_flight;
pub mod metrics;
pub mod print_config;
pub mod relay;
mod request;
mod response;
mod routes;
pub mod settings;
pub mod sns;
mod startup;
pub mod state;

pub use config::{Config, VerifyLinkMode};
pub use metrics::{KindOutcomeLabels, Metrics, RequestLabels, TypeLabel};
pub use response::json_response;
pub use routes::{Access, ROUTES, Route};
pub use settings::{InvalidConfig, Settings};
pub use startup::{Application, run};
pub use state::AppState;

/// The readers and the field checker that the handlers apply to what outsiders send, for the
/// fuzz targets in `fuzz/` (see docs/testing.md). Not an API: nothing else uses it.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::fields::Fields;
    pub use crate::request::{Body, is_form, query_param, read_form, read_json};
}

/// The OpenAPI 3 description of this API, served at /openapi.json and kept true by tests
/// (its paths are exactly [`ROUTES`]) and by schemathesis in CI.
pub const OPENAPI: &str = include_str!("../openapi.json");
