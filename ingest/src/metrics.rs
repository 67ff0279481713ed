//! Ingest's metrics, served at `/metrics`: the families registered once at start and the
//! handles the handlers count with.

use mailroom::metrics::{Counter, Family, Gauge, KindLabel, OutcomeLabel, Registry, registered};
use prometheus_client::encoding::EncodeLabelSet;

/// Ingest's metrics, served at /metrics: families registered once, handles kept here.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub accepted: Family<KindLabel, Counter>,
    /// What became of reset and resend requests (queued, suppressed, unknown address, …).
    pub requests_by_outcome: Family<KindOutcomeLabels, Counter>,
    pub published: Counter,
    /// argon2 hashes by outcome: `done`, or `refused` (pool full: 503).
    pub password_hashes: Family<OutcomeLabel, Counter>,
    /// SES feedback events recorded, by type (bounce, complaint, delivery, …).
    pub ses_events: Family<TypeLabel, Counter>,
    /// Login checks by outcome: ok, invalid, locked, busy.
    pub logins: Family<OutcomeLabel, Counter>,
    /// Set when /metrics is read (they are states, not events).
    pub outbox_backlog: Gauge,
    pub broker_connected: Gauge,
    registry: Registry,
}

/// `{route, status, api_key}` of an HTTP request: the route as listed in [`crate::ROUTES`]
/// (or `other`), and the name of the API key it came with (`none` for public routes and
/// refused keys). Names are the operator's, so the label's values are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
    pub api_key: String,
}

/// `{kind, outcome}` of a reset or resend request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcomeLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// `{type}` of an SES feedback event (unknown types are kept, so it is data).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = registered(
            &mut registry,
            "mailroom_ingest_requests",
            "HTTP requests by route, status and API key name.",
            Family::default(),
        );
        let accepted = registered(
            &mut registry,
            "mailroom_events_accepted",
            "Events accepted (written to the outbox), by kind.",
            Family::default(),
        );
        let requests_by_outcome = registered(
            &mut registry,
            "mailroom_email_requests",
            "Reset and resend requests by kind and outcome (queued, suppressed, unknown_address, already_verified).",
            Family::default(),
        );
        let logins = registered(
            &mut registry,
            "mailroom_logins",
            "Login checks by outcome: ok, invalid, locked (429), busy (503).",
            Family::default(),
        );
        let ses_events = registered(
            &mut registry,
            "mailroom_ses_events",
            "SES feedback events recorded from SNS, by type (bounce, complaint, delivery, …).",
            Family::default(),
        );
        let password_hashes = registered(
            &mut registry,
            "mailroom_password_hashes",
            "argon2 password hashes by outcome: done, or refused because every slot and the queue were taken (503).",
            Family::default(),
        );
        let published = registered(
            &mut registry,
            "mailroom_jobs_published",
            "Jobs published to RabbitMQ and confirmed.",
            Counter::default(),
        );
        let outbox_backlog = registered(
            &mut registry,
            "mailroom_outbox_backlog",
            "Outbox rows not yet confirmed by RabbitMQ (-1: database unavailable).",
            Gauge::default(),
        );
        let broker_connected = registered(
            &mut registry,
            "mailroom_broker_connected",
            "1 when the relay is connected to RabbitMQ.",
            Gauge::default(),
        );
        Self {
            requests,
            accepted,
            requests_by_outcome,
            published,
            password_hashes,
            ses_events,
            logins,
            outbox_backlog,
            broker_connected,
            registry,
        }
    }
}

impl Metrics {
    /// The registry as OpenMetrics text.
    pub fn render(&self) -> String {
        mailroom::metrics::render(&self.registry)
    }
}
