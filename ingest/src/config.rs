//! `Config`: ingest's command line and environment, exactly as clap declares them (flags,
//! variables, defaults). docs/configuration.md lists the same variables (a test compares
//! them). Nothing here is checked beyond what clap parses: [`crate::Settings`] does that.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mailroom::config::{BrokerArgs, DatabaseArgs, LogArgs, Secret, parse_duration};

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

    /// Address of the operations listener: `/metrics`, and `/readyz` with the reasons of an
    /// outage. Kept off the public port, because the metrics count outcomes (an unknown
    /// address, a suppressed one) that an anonymous caller must not read. `off`: none.
    #[arg(long, env = "INGEST_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: String,

    /// Connections served at once on INGEST_LISTEN; more wait in the listen backlog until one
    /// closes. Keep it below the open-file limit (`ulimit -n`).
    #[arg(long, env = "INGEST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// API keys accepted from services, comma-separated (`Authorization: Bearer <key>`), each
    /// `name:key` or a bare key (named `default`). The name is recorded with every job and
    /// request; two keys of one name rotate a key. Required: ingest refuses to start without
    /// one.
    #[arg(
        long,
        env = "INGEST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

    /// How long the answer of a request sent with an `Idempotency-Key` is kept: a repeat
    /// within it gets the same answer and does nothing again.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

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

    /// Failed logins for one address from one client (the request's `client_ip`) within
    /// LOGIN_FAILURE_WINDOW after which that client's logins for it answer 429, the right
    /// password too, until the window has passed. Other clients are not locked out by it.
    #[arg(long, env = "LOGIN_FAILURE_LIMIT", default_value_t = 5)]
    pub login_failure_limit: i64,

    /// Failed logins for one address from every client within LOGIN_FAILURE_WINDOW after
    /// which every login for it answers 429: the ceiling for guessing spread over many
    /// clients. At least LOGIN_FAILURE_LIMIT.
    #[arg(long, env = "LOGIN_ADDRESS_FAILURE_LIMIT", default_value_t = 100)]
    pub login_address_failure_limit: i64,

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

    #[command(flatten)]
    pub codes: mailroom::config::CodeArgs,

    /// Where links may send people back to: comma-separated URL prefixes (scheme, host, port
    /// and a path prefix, e.g. https://app.example.com/welcome). A request's `return_to` must
    /// fall under one. Unset: any `return_to` is refused with 422.
    #[arg(long, env = "RETURN_TO_ALLOWED", value_delimiter = ',')]
    pub return_to_allowed: Vec<String>,

    /// Which addresses confirm an email change: `new` (the new one only) or `both` (the old one
    /// confirms too, as GoTrue's "secure email change").
    #[arg(long, env = "EMAIL_CHANGE_CONFIRM", default_value = "new", value_enum)]
    pub email_change_confirm: EmailChangeConfirm,

    /// How long an email change can be confirmed (its links and code die with it).
    #[arg(long, env = "EMAIL_CHANGE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub email_change_ttl: Duration,

    /// The app's sign-in page that sign-in emails link to (set the same on the dispatcher).
    /// Unset: sign-in by email is off (POST /v1/sign-in-emails and /v1/sign-ins answer 404).
    #[arg(long, env = "SIGN_IN_URL")]
    pub sign_in_url: Option<String>,

    /// Print the effective configuration (every variable, where its value came from, secrets
    /// redacted) and exit, without connecting to anything.
    #[arg(long)]
    pub print_config: bool,
}

/// See [`Config::email_change_confirm`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailChangeConfirm {
    /// The new address confirms; the old one is told and can cancel.
    New,
    /// Both addresses confirm.
    Both,
}

/// See [`Config::verify_link_mode`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyLinkMode {
    /// Opening the link verifies the address (one click for the person).
    Open,
    /// Opening the link shows a confirm button; only its POST verifies.
    Click,
}
