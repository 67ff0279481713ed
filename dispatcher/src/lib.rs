//! The dispatcher: takes jobs from RabbitMQ, mints tokens, renders, sends through SES and
//! records every outcome; and the operator CLI around it.
//!
//! # Layout
//!
//! - [`worker`]: one step — one job in, one [`worker::Outcome`] out. No broker calls.
//! - [`consumer`]: the loop — prefetch, concurrency, settling outcomes (ack, retry queue, dead
//!   queue), pausing, reconnecting, shutdown.
//! - [`batch`]: the batched claim, token and record statements of the steps in flight.
//! - [`pacing`]: the rate limiters that space sends; [`service_time`]: how long a step takes.
//! - [`dead`] (re-exported from the shared library): listing and replaying dead letters.
//! - [`rate`]: the account's SES rate, shared through PostgreSQL by every dispatcher.
//! - [`cli`]: every `dispatcher` command, one module per command group.
//!
//! [`run`] takes the configuration, a clock and a shutdown future, so tests start a dispatcher
//! in-process with their own queue prefix and database.

pub mod batch;
pub mod cli;
pub mod consumer;
pub mod pacing;
pub mod rate;
pub mod service_time;

/// Dead letters live in the shared library: the dashboard replays through the same functions.
pub use mailroom::dead;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use mailroom::broker::Topology;
use mailroom::clock::Clock;
use mailroom::config::{
    BrokerArgs, DatabaseArgs, SesArgs, format_duration, parse_duration, redact_url,
};
use mailroom::metrics::{
    ClassLabel, Counter, Family, FloatGauge, Gauge, Histogram, OutcomeLabel, ReasonLabel, Registry,
    registered,
};
use mailroom::ses::PauseReason;
use mailroom::store;
use mailroom::templates::Templates;
use tokio_util::sync::CancellationToken;

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
}

/// The dispatcher's metrics, served at `DISPATCHER_METRICS_LISTEN`: families registered once,
/// handles kept here.
#[derive(Debug)]
pub struct Metrics {
    pub sends: Family<OutcomeLabel, Counter>,
    pub errors: Family<ClassLabel, Counter>,
    pub dead: Family<ClassLabel, Counter>,
    pub retries: Counter,
    pub limiter_waits: Counter,
    /// Sends allowed in flight now (fixed, or as last sized from the rate).
    pub concurrency: Gauge,
    pub pauses: Counter,
    pub latency: Histogram,
    pub webhooks: Family<OutcomeLabel, Counter>,
    /// Set when /metrics is read, from the shared rate and the pause state.
    rate_account: FloatGauge,
    rate_share: FloatGauge,
    dispatchers_live: Gauge,
    paused: Family<ReasonLabel, Gauge>,
    registry: Registry,
}

/// Every outcome of `mailroom_sends_total`, registered at start so each reads 0 until it
/// happens (an alert on a rate needs the series to exist).
const SEND_OUTCOMES: &[&str] = &[
    "sent",
    "skipped",
    "duplicate",
    "busy",
    "suppressed",
    "retry",
    "dead",
    "account_stop",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let rate_account = registered(
            &mut r,
            "mailroom_send_rate_account",
            "The account's sending rate (MAX_SEND_RATE or SES's MaxSendRate), per second.",
            FloatGauge::default(),
        );
        let rate_share = registered(
            &mut r,
            "mailroom_send_rate_share",
            "This dispatcher's share of it, per second (0 while joining or cut off from the database).",
            FloatGauge::default(),
        );
        let dispatchers_live = registered(
            &mut r,
            "mailroom_dispatchers_live",
            "Live dispatchers sharing the rate, as this one last counted them.",
            Gauge::default(),
        );
        let concurrency = registered(
            &mut r,
            "mailroom_send_concurrency",
            "Sends allowed in flight now (SEND_CONCURRENCY, or sized from the rate and the time of a send).",
            Gauge::default(),
        );
        let sends = Family::<OutcomeLabel, Counter>::default();
        for outcome in SEND_OUTCOMES {
            let _ = sends.get_or_create(&OutcomeLabel { outcome });
        }
        let sends = registered(
            &mut r,
            "mailroom_sends",
            "Jobs handled, by outcome (sent, skipped, duplicate, busy, suppressed, retry, dead, account_stop).",
            sends,
        );
        let errors = registered(
            &mut r,
            "mailroom_send_errors",
            "Failed SES calls by error class.",
            Family::default(),
        );
        let dead = registered(
            &mut r,
            "mailroom_dead_letters",
            "Jobs moved to the dead-letter queue, by error class.",
            Family::default(),
        );
        let retries = registered(
            &mut r,
            "mailroom_retries",
            "Jobs moved to a retry delay queue.",
            Counter::default(),
        );
        let limiter_waits = registered(
            &mut r,
            "mailroom_rate_limiter_waits",
            "Sends that had to wait for the rate limiter.",
            Counter::default(),
        );
        let pauses = registered(
            &mut r,
            "mailroom_account_pauses",
            "Times consumption paused for an account stop.",
            Counter::default(),
        );
        let webhooks = registered(
            &mut r,
            "mailroom_webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed).",
            Family::default(),
        );
        let latency = registered(
            &mut r,
            "mailroom_send_latency_seconds",
            "Duration of successful SES SendEmail calls.",
            mailroom::metrics::latency_histogram(),
        );
        let paused = registered(
            &mut r,
            "mailroom_dispatcher_paused",
            "1 while consumption is paused, by reason (account, quota, credentials, configuration).",
            Family::<ReasonLabel, Gauge>::default(),
        );
        Self {
            sends,
            errors,
            dead,
            retries,
            limiter_waits,
            concurrency,
            pauses,
            latency,
            webhooks,
            rate_account,
            rate_share,
            dispatchers_live,
            paused,
            registry: r,
        }
    }
}

impl Metrics {
    /// Counts one job of this outcome.
    pub fn count(&self, outcome: &'static str) {
        mailroom::metrics::count(&self.sends, outcome);
    }

    /// The metrics as OpenMetrics text, with the states read now.
    pub fn render(&self, paused: Option<PauseReason>, rate: &rate::SharedRate) -> String {
        self.rate_account.set(rate.account_rate());
        // Three decimals, as an operator reads it.
        self.rate_share
            .set((rate.share() * 1000.0).round() / 1000.0);
        self.dispatchers_live.set(rate.live() as i64);
        for r in PauseReason::ALL {
            self.paused
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .set(i64::from(paused == Some(r)));
        }
        mailroom::metrics::render(&self.registry)
    }
}

/// Runs the dispatcher until `shutdown` resolves; then stops consuming, lets in-flight sends
/// finish and record (up to `shutdown_timeout`), and returns.
pub async fn run(
    config: RunConfig,
    clock: Clock,
    sdk: aws_config::SdkConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.mail_from.trim().is_empty(),
        "MAIL_FROM is empty: set the verified sender address, e.g. MAIL_FROM=no-reply@example.com"
    );
    anyhow::ensure!(
        config.send_concurrency != Some(0),
        "SEND_CONCURRENCY must be at least 1 (or unset, to size it from the sending rate)"
    );
    anyhow::ensure!(
        !config.retry_delays.is_empty() && config.retry_delays.iter().all(|d| !d.is_zero()),
        "RETRY_DELAYS needs at least one delay above zero, e.g. RETRY_DELAYS=10s,1m,5m"
    );
    let webhooks =
        mailroom::webhook::Webhooks::from_args(&config.webhooks).map_err(anyhow::Error::msg)?;
    let db_url = config.db.database_url.expose();
    // Lazy: the dispatcher starts (and waits) even while PostgreSQL is still coming up.
    let pool = store::connect_lazy_sized(db_url, config.db.pool_size)
        .with_context(|| format!("invalid DATABASE_URL {}", redact_url(db_url)))?;
    let templates =
        Arc::new(Templates::load(&config.templates_dir).context("cannot load templates")?);
    templates.check().context("a template does not render")?;
    let ses = mailroom::ses::client_from(&sdk, &config.ses, 1);
    let rate = match config.max_send_rate {
        Some(r) if r > 0.0 => r,
        Some(_) => anyhow::bail!("MAX_SEND_RATE must be greater than 0"),
        None => match mailroom::ses::get_account(&ses).await {
            Ok(Some(a)) if a.max_send_rate > 0.0 => {
                tracing::info!(rate = a.max_send_rate, "using SES's MaxSendRate");
                a.max_send_rate
            }
            Ok(_) => {
                tracing::warn!(
                    "the SES endpoint does not report MaxSendRate; sending at most 14 per second (set MAX_SEND_RATE to choose)"
                );
                14.0
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read MaxSendRate from SES; sending at most 14 per second");
                14.0
            }
        },
    };
    if let Some(set) = config
        .configuration_set
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        // SES refuses every send that names a missing set (the dispatcher would pause): say so
        // at start, where the operator is looking.
        match mailroom::ses::configuration_set_exists(&ses, set).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                configuration_set = set,
                "SES_CONFIGURATION_SET names a configuration set that does not exist; sends will pause until it does"
            ),
            Err(e) => tracing::warn!(error = %e, "could not check SES_CONFIGURATION_SET"),
        }
    }
    let cancel = CancellationToken::new();
    // The rate is the account's: shared with every dispatcher of this database and prefix.
    let shared_rate = Arc::new(rate::SharedRate::shared(
        pool.clone(),
        &config.broker.queue_prefix,
        rate,
    ));
    let rate_task = tokio::spawn(shared_rate.clone().run(cancel.clone()));
    let metrics = Arc::new(Metrics::default());
    let paused = Arc::new(Mutex::new(None));
    if config.metrics_listen != "off" {
        let addr: SocketAddr = config.metrics_listen.parse().with_context(|| {
            format!(
                "DISPATCHER_METRICS_LISTEN '{}' is not host:port",
                config.metrics_listen
            )
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let (m, p, r) = (metrics.clone(), paused.clone(), shared_rate.clone());
        tokio::spawn(mailroom::metrics::serve(
            listener,
            move || m.render(*p.lock().expect("pause lock"), &r),
            cancel.clone(),
        ));
    }
    let public_url = config.public_url.trim_end_matches('/').to_owned();
    let reset_url = config
        .reset_url
        .clone()
        .unwrap_or_else(|| format!("{public_url}/reset-password"));
    let worker = Arc::new(worker::Worker {
        pool: pool.clone(),
        ses,
        templates,
        clock,
        mail_from: config.mail_from.trim().to_owned(),
        configuration_set: config
            .configuration_set
            .clone()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
        public_url,
        reset_url,
        verification_ttl: config.verification_ttl,
        reset_ttl: config.reset_ttl,
        claim_lease: config.ses.ses_timeout * 2,
        http: worker::webhook_client()?,
        batches: batch::Batches::new(
            pool.clone(),
            config.ses.ses_timeout * 2,
            webhooks.timeout * 2,
        ),
        service_time: service_time::ServiceTime::default(),
        webhooks: Arc::new(webhooks),
        rate: shared_rate,
        metrics,
        cancel: cancel.clone(),
    });
    tracing::info!(
        prefix = %config.broker.queue_prefix,
        rate,
        concurrency = config.send_concurrency.map_or("auto".to_owned(), |n| n.to_string()),
        retry_delays = %config.retry_delays.iter().map(|d| format_duration(*d)).collect::<Vec<_>>().join(","),
        "dispatcher starting"
    );
    let consumer = consumer::Consumer {
        worker,
        amqp_url: config.broker.amqp_url.expose().to_owned(),
        topology: Topology::new(&config.broker.queue_prefix),
        retry_delays: config.retry_delays.clone(),
        concurrency: match config.send_concurrency {
            Some(n) => consumer::Concurrency::Fixed(n),
            None => consumer::Concurrency::Auto,
        },
        pause_probe: config.pause_probe_interval,
        shutdown_timeout: config.shutdown_timeout,
        paused,
    };
    let mut task = tokio::spawn(consumer.run(cancel.clone()));
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down: finishing in-flight sends");
            cancel.cancel();
            let _ = task.await;
            // Leave the shared rate (deletes this dispatcher's row) before the pool closes.
            let _ = tokio::time::timeout(Duration::from_secs(2), rate_task).await;
        }
        // The consumer only ends by itself for what retrying cannot fix.
        ended = &mut task => {
            cancel.cancel();
            pool.close().await;
            return match ended {
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the dispatcher cannot consume")),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("the consumer task failed: {e}")),
            };
        }
    }
    pool.close().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}
