//! Ingest: the HTTP service that takes events from other services and from people's browsers.
//! It owns users and tokens on the way in: it validates, stores the user and the outbox row in
//! one transaction, answers 202 without waiting for RabbitMQ or SES, and relays the outbox to
//! the broker in the background ([`relay`]). It never talks to SES and never sees a token
//! except one presented to it for consumption.
//!
//! [`run`] takes a bound listener and a shutdown future so that tests can bind port 0 and stop
//! the server when they are done.

pub mod error;
pub mod feedback;
pub mod hashing;
pub mod relay;
mod routes;
pub mod sns;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mailroom::batch::Batcher;
use mailroom::broker::Topology;
use mailroom::clock::Clock;
use mailroom::config::{BrokerArgs, DatabaseArgs, LogArgs, Secret, parse_duration, redact_url};
use mailroom::job::Job;
use mailroom::metrics::{Counter, Family, Gauge, KindLabel, OutcomeLabel, Registry, registered};
use mailroom::store::{self, NewUser, SignupOutcome};
use mailroom::templates::Templates;
use prometheus_client::encoding::EncodeLabelSet;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::relay::{BrokerState, Relay};

/// Ingest's configuration. Every option also reads the environment variable it names.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "ingest",
    version,
    about = "Mailroom's HTTP service: takes signup events, stores users, and queues their emails",
    long_about = "Mailroom's HTTP service. Services POST signup events (with an API key); people \
                  follow verification links to it. Accepted events are stored with an outbox row \
                  in one transaction and relayed to RabbitMQ in the background, so a signup \
                  accepted while RabbitMQ is down is sent when it is back. Applies pending \
                  database migrations at start."
)]
pub struct Config {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub log: LogArgs,

    /// Address to listen on.
    #[arg(long, env = "INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// API keys accepted from services, comma-separated (`Authorization: Bearer <key>`).
    /// Required: ingest refuses to start without one.
    #[arg(
        long,
        env = "INGEST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

    /// Folder of the handlebars templates (pages are read from its pages/ folder).
    #[arg(long, env = "TEMPLATES_DIR", default_value = mailroom::templates::DEFAULT_DIR)]
    pub templates_dir: PathBuf,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How often the outbox relay looks for rows it was not woken for (other instances,
    /// restarts).
    #[arg(long, env = "RELAY_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub relay_interval: Duration,

    /// Reset or resend emails one address can trigger per minute; the excess is accepted,
    /// recorded and not sent.
    #[arg(long, env = "ADDRESS_LIMIT_PER_MINUTE", default_value_t = 1)]
    pub address_limit_per_minute: i64,

    /// Reset or resend emails one address can trigger per hour.
    #[arg(long, env = "ADDRESS_LIMIT_PER_HOUR", default_value_t = 5)]
    pub address_limit_per_hour: i64,

    /// How long shutdown waits for open connections to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Password hashes (argon2id, ~19 MiB each) computed at once. Default: the number of CPU
    /// cores.
    #[arg(long, env = "HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Password hashes that may wait for a free slot; beyond it requests get 503 with
    /// Retry-After at once.
    #[arg(long, env = "HASH_QUEUE", default_value_t = 16)]
    pub hash_queue: usize,

    /// What the verification link does: "open" verifies on opening (GET), "click" opens a
    /// page whose button confirms (POST), so link scanners that open every link verify
    /// nothing.
    #[arg(long, env = "VERIFY_LINK_MODE", default_value = "open", value_enum)]
    pub verify_link_mode: VerifyLinkMode,

    /// SNS topics whose SES feedback POST /v1/ses/notifications accepts, comma-separated
    /// (arn:aws:sns:REGION:ACCOUNT:NAME). Unset: the endpoint answers 404.
    #[arg(long, env = "SNS_TOPIC_ARNS", value_delimiter = ',')]
    pub sns_topic_arns: Vec<String>,

    /// URL prefixes, besides `https://sns.<region>.amazonaws.com/`, that signing certificates
    /// and subscription URLs may be fetched from (comma-separated; for tests and stand-ins).
    #[arg(long, env = "SNS_CERT_URL_PREFIXES", value_delimiter = ',')]
    pub sns_cert_url_prefixes: Vec<String>,

    /// Failed logins for one address within LOGIN_FAILURE_WINDOW after which every login for
    /// it answers 429, the right password too, until the window has passed.
    #[arg(long, env = "LOGIN_FAILURE_LIMIT", default_value_t = 5)]
    pub login_failure_limit: i64,

    /// See LOGIN_FAILURE_LIMIT.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub login_failure_window: Duration,

    /// Transient bounces of one address within SOFT_BOUNCE_WINDOW after which it is
    /// suppressed.
    #[arg(long, env = "SOFT_BOUNCE_LIMIT", default_value_t = 3)]
    pub soft_bounce_limit: i64,

    /// How far back transient bounces count towards SOFT_BOUNCE_LIMIT.
    #[arg(long, env = "SOFT_BOUNCE_WINDOW", default_value = "7d", value_parser = parse_duration)]
    pub soft_bounce_window: Duration,

    #[command(flatten)]
    pub webhooks: mailroom::webhook::WebhookArgs,
}

/// See [`Config::verify_link_mode`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyLinkMode {
    /// Opening the link verifies the address (one click for the person).
    Open,
    /// Opening the link shows a confirm button; only its POST verifies.
    Click,
}

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

/// `{route, status}` of an HTTP request: the route as listed in [`ROUTES`] (or `other`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
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
            "HTTP requests by route and status.",
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

/// The OpenAPI 3 description of this API, served at /openapi.json and kept true by tests
/// and by schemathesis in CI.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every (method, path) ingest serves; the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/signups"),
    ("POST", "/v1/verifications"),
    ("POST", "/v1/verifications/resend"),
    ("POST", "/v1/password-resets"),
    ("POST", "/v1/password-resets/confirm"),
    ("GET", "/verify-email"),
    ("POST", "/verify-email"),
    ("GET", "/reset-password"),
    ("GET", "/v1/users"),
    ("POST", "/v1/ses/notifications"),
    ("POST", "/v1/logins"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// Shared state of the request handlers.
pub struct App {
    pub pool: PgPool,
    pub templates: Templates,
    /// SHA-256 of each accepted key, so that comparison time does not depend on key length.
    api_keys: Vec<[u8; 32]>,
    pub clock: Clock,
    /// Wakes the relay after a commit so the job leaves at once.
    pub relay_wake: Arc<Notify>,
    pub broker_state: Arc<RwLock<BrokerState>>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub limits: store::AddressLimits,
    /// Every argon2 hash and verify goes through it: bounded memory and CPU.
    pub hashes: hashing::HashPool,
    pub verify_link_mode: VerifyLinkMode,
    /// SES feedback over SNS; None when `SNS_TOPIC_ARNS` is unset.
    pub sns: Option<sns::Sns>,
    /// When SES feedback suppresses an address.
    pub feedback_rules: mailroom::policy::feedback::FeedbackRules,
    pub login_failure_limit: i64,
    pub login_failure_window: Duration,
    /// Where webhook events go; their jobs are enqueued with the change they report.
    pub webhooks: mailroom::webhook::Endpoints,
    /// Signups, written together with the signups that arrive at the same time: one statement
    /// and one commit for a batch instead of one per signup.
    pub signups: Batcher<(NewUser, Job), SignupOutcome>,
}

/// Signup statements in flight at once. One: each statement carries the signups that queued
/// while the previous one ran. More in flight only made the batches smaller and the commits
/// more (16 connections, `scripts/bench`'s load: one 13.1k signups/s, two 11.2k, four 8.5k).
const SIGNUP_STATEMENTS: usize = 1;

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json value serialises"),
        )))
        .expect("valid response")
}

/// Runs ingest until `shutdown` resolves: migrates the database, starts the relay, serves HTTP,
/// then drains open connections (up to `shutdown_timeout`) and stops the relay.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.api_keys.iter().all(|k| k.expose().trim().is_empty()),
        "INGEST_API_KEYS is empty: set at least one key (e.g. INGEST_API_KEYS=dev-key)"
    );
    // Checked before anything starts: a bad endpoint or a missing secret is a configuration
    // error to fix now, not a failure on the first event.
    let webhooks =
        mailroom::webhook::Webhooks::from_args(&config.webhooks).map_err(anyhow::Error::msg)?;
    let db_url = config.db.database_url.expose();
    let pool = store::connect_sized(db_url, config.db.pool_size)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(db_url)))?;
    store::migrate(&pool)
        .await
        .context("cannot apply database migrations")?;
    let templates = Templates::load(&config.templates_dir).context("cannot load templates")?;
    // The dummy hash logins of unknown addresses are checked against: made now, not by the
    // first such login (whose timing would then stand out).
    tokio::task::spawn_blocking(mailroom::domain::Password::prepare_dummy)
        .await
        .context("preparing the login dummy hash")?;

    let cancel = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let broker_state = Arc::new(RwLock::new(BrokerState::Connecting));
    let metrics = Arc::new(Metrics::default());
    let relay = Relay {
        pool: pool.clone(),
        amqp_url: config.broker.amqp_url.expose().to_owned(),
        topology: Topology::new(&config.broker.queue_prefix),
        wake: wake.clone(),
        interval: config.relay_interval,
        state: broker_state.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    let relay_task = tokio::spawn(relay.run(cancel.clone()));

    let signups = {
        let pool = pool.clone();
        Batcher::spawn(
            |s: &(NewUser, Job)| s.1.job_id,
            SIGNUP_STATEMENTS,
            move |batch: Vec<(NewUser, Job)>| {
                let pool = pool.clone();
                async move { store::create_users_with_jobs(&pool, &batch).await }
            },
        )
    };
    let app = Arc::new(App {
        signups,
        pool: pool.clone(),
        templates,
        api_keys: config
            .api_keys
            .iter()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
            .map(routes::key_digest)
            .collect(),
        clock,
        relay_wake: wake,
        broker_state,
        metrics,
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        limits: store::AddressLimits {
            per_minute: config.address_limit_per_minute,
            per_hour: config.address_limit_per_hour,
        },
        hashes: hashing::HashPool::new(
            config
                .hash_concurrency
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            config.hash_queue,
        ),
        verify_link_mode: config.verify_link_mode,
        webhooks: webhooks.endpoints,
        sns: {
            let topics: Vec<String> = config
                .sns_topic_arns
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            (!topics.is_empty()).then(|| {
                sns::Sns::new(
                    topics,
                    config
                        .sns_cert_url_prefixes
                        .iter()
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect(),
                )
            })
        },
        feedback_rules: mailroom::policy::feedback::FeedbackRules {
            soft_bounce_limit: config.soft_bounce_limit.max(1),
            soft_bounce_window: chrono::Duration::from_std(config.soft_bounce_window)
                .unwrap_or(mailroom::policy::feedback::FeedbackRules::DEFAULT_WINDOW),
        },
        login_failure_limit: config.login_failure_limit.max(1),
        login_failure_window: config.login_failure_window,
    });

    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Usually "too many open files": back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("connections still open after the shutdown timeout; closing them");
        }
    }
    // The relay stops last: anything accepted before shutdown is already in the outbox, and
    // whatever it does not publish now the next start (or another instance) will.
    cancel.cancel();
    let _ = relay_task.await;
    pool.close().await;
    tracing::info!("ingest stopped");
    Ok(())
}
