//! The dispatcher: takes jobs from RabbitMQ, mints tokens, renders, sends through SES and
//! records every outcome; and the operator CLI around it.
//!
//! # Layout
//!
//! - [`settings`]: [`RunConfig`] (the options of `dispatcher run`) checked into [`Settings`].
//! - [`startup`]: [`Dispatcher::build`] (connections and checks) and
//!   [`Dispatcher::run_until_stopped`].
//! - [`consumer`]: the loop — prefetch, concurrency, settling outcomes (ack, retry queue, dead
//!   queue), pausing, reconnecting, shutdown.
//! - [`worker`]: one step — one job in, one [`Outcome`] out. No broker calls.
//! - [`outcome`]: the [`Outcome`] of a step, shared by the worker and the consumer.
//! - [`batch`]: the batched claim, token and record statements of the steps in flight.
//! - [`pacing`]: the rate limiters that space sends; [`service_time`]: how long a step takes.
//! - [`rate`]: the account's SES rate, shared through PostgreSQL by every dispatcher.
//! - [`metrics`]: the dispatcher's Prometheus metrics.
//! - [`format`](mod@format): times and durations in words and timestamps.
//! - [`dead`] (re-exported from the shared library): listing and replaying dead letters.
//! - [`cli`]: every `dispatcher` command, one module per command group.
//!
//! Dependencies run one way: `startup` → `consumer` → `worker` → (`batch`, `rate` → `pacing`,
//! `metrics`, `service_time`), and `outcome` and `format` below both the consumer and the
//! worker; `settings` needs only [`RunConfig`] and the shared library.
//!
//! [`run`] takes the configuration, a clock and a shutdown future, so tests start a dispatcher
//! in-process with their own queue prefix and database.

pub mod batch;
pub mod cli;
pub mod consumer;
pub mod format;
pub mod health;
pub mod metrics;
pub mod outcome;
pub mod pacing;
pub mod rate;
pub mod service_time;
pub mod settings;
pub mod startup;
pub mod sweep;
pub mod worker;

/// Dead letters live in the shared library: the dashboard replays through the same functions.
pub use mailroom::dead;
pub use metrics::Metrics;
pub use outcome::Outcome;
pub use settings::{InvalidConfig, Settings};
pub use startup::Dispatcher;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use mailroom::clock::Clock;
use mailroom::config::{BrokerArgs, DatabaseArgs, SesArgs, parse_duration};

/// Options of `dispatcher run`. Every option also reads the environment variable it names.
#[derive(clap::Args, Clone, Debug)]
pub struct RunConfig {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub ses: SesArgs,

    /// The verified sender address, e.g. no-reply@example.com. Required.
    #[arg(long, env = "MAIL_FROM")]
    pub mail_from: String,

    /// SES configuration set every send names, so that SES publishes its bounces, complaints
    /// and deliveries (to the SNS topic of POST /v1/ses/notifications). Unset: none.
    #[arg(long, env = "SES_CONFIGURATION_SET")]
    pub configuration_set: Option<String>,

    /// Base of the links in emails (ingest's public address).
    #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,

    /// Page the password-reset link points to; the token is appended as ?token=. Default:
    /// PUBLIC_URL/reset-password.
    #[arg(long, env = "RESET_URL")]
    pub reset_url: Option<String>,

    /// Folder of the handlebars templates.
    #[arg(long, env = "TEMPLATES_DIR", default_value = mailroom::templates::DEFAULT_DIR)]
    pub templates_dir: PathBuf,

    /// How long a verification link works.
    #[arg(long, env = "VERIFICATION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub verification_ttl: Duration,

    /// How long a password-reset link works.
    #[arg(long, env = "RESET_TTL", default_value = "1h", value_parser = parse_duration)]
    pub reset_ttl: Duration,

    /// The app's sign-in page the link of a sign-in email points to; the token is appended as
    /// ?token= (and return_to= when the request had one). Unset: sign-in emails with a link
    /// cannot be sent (dead-lettered, to replay once it is set); set it on ingest too.
    #[arg(long, env = "SIGN_IN_URL")]
    pub sign_in_url: Option<String>,

    /// How long an invite link works (the invitee sets a password with it).
    #[arg(long, env = "INVITE_TTL", default_value = "7d", value_parser = parse_duration)]
    pub invite_ttl: Duration,

    /// How long a sign-in link works (its code works CODE_TTL).
    #[arg(long, env = "SIGN_IN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub sign_in_ttl: Duration,

    /// One delay per retry, comma-separated; their count is the number of retries.
    #[arg(long, env = "RETRY_DELAYS", default_value = "10s,1m,5m,30m,2h", value_delimiter = ',', value_parser = parse_duration)]
    pub retry_delays: Vec<Duration>,

    /// Sends per second at most. Default: SES's MaxSendRate when the endpoint reports it
    /// (GetAccount), else 14.
    #[arg(long, env = "MAX_SEND_RATE")]
    pub max_send_rate: Option<f64>,

    /// Sends in flight at most (also the prefetch). Default: sized from the sending rate and
    /// the measured time of a send (Little's law: rate × time, plus a quarter), between 4 and
    /// 256, with a prefetch of twice that, and resized as either changes.
    #[arg(long, env = "SEND_CONCURRENCY")]
    pub send_concurrency: Option<usize>,

    /// Webhook deliveries in flight at most, apart from the sends: a receiver that never
    /// answers holds these slots (each up to WEBHOOK_TIMEOUT), never an email's.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 8)]
    pub webhook_concurrency: usize,

    /// Where to serve Prometheus metrics; "off" to disable.
    #[arg(
        long,
        env = "DISPATCHER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: String,

    /// How long shutdown waits for in-flight sends.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often a paused dispatcher asks SES whether it may send again (after an account
    /// stop: sending paused, daily quota, credentials or permissions, MAIL FROM domain).
    #[arg(long, env = "PAUSE_PROBE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub pause_probe_interval: Duration,

    #[command(flatten)]
    pub webhooks: mailroom::webhook::WebhookArgs,

    #[command(flatten)]
    pub sweep: crate::sweep::SweepArgs,

    #[command(flatten)]
    pub codes: mailroom::config::CodeArgs,
}

/// Runs the dispatcher until `shutdown` resolves; then stops consuming, lets in-flight sends
/// finish and record (up to `shutdown_timeout`), and returns. The same as
/// [`Settings::try_from`], [`Dispatcher::build`] and [`Dispatcher::run_until_stopped`] in turn.
pub async fn run(
    config: RunConfig,
    clock: Clock,
    sdk: aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = Settings::try_from(config)?;
    Dispatcher::build(settings, clock, sdk)
        .await?
        .run_until_stopped(shutdown)
        .await
}
