//! Starting and stopping a dispatcher, in two steps (like zero2prod's `Application`):
//! [`Dispatcher::build`] does everything that can fail at start — the database pool, the
//! templates, the SES client and rate, the metrics port — and [`Dispatcher::run_until_stopped`]
//! consumes until shutdown, then stops consuming, lets in-flight sends finish and record, and
//! leaves the shared rate.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mailroom::broker::Topology;
use mailroom::clock::Clock;
use mailroom::config::{format_duration, redact_url};
use mailroom::ses::PauseReason;
use mailroom::store;
use mailroom::templates::Templates;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::batch::Batches;
use crate::consumer::{Concurrency, Consumer};
use crate::metrics::Metrics;
use crate::rate::SharedRate;
use crate::service_time::ServiceTime;
use crate::settings::Settings;
use crate::worker::{Worker, webhook_client};

/// The rate when neither `MAX_SEND_RATE` nor SES says: SES's default for a new account.
const DEFAULT_SEND_RATE: f64 = 14.0;

/// A dispatcher ready to run: connected (lazily, for the database), checked, not consuming.
pub struct Dispatcher {
    /// The queue prefix, for the start-up line.
    prefix: String,
    pool: PgPool,
    consumer: Consumer,
    /// The webhooks' lane: their own queue and slots (`WEBHOOK_CONCURRENCY`), never paused by
    /// SES, so that a receiver that never answers cannot hold up an email, nor SES a webhook.
    webhook_consumer: Consumer,
    rate: Arc<SharedRate>,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    paused: Arc<Mutex<Option<PauseReason>>>,
    cancel: CancellationToken,
    /// The worker's [`crate::worker::Worker::records`]: waited for before the pool closes.
    records: tokio_util::task::TaskTracker,
    /// The worker's clock: corrected to the database's once the database answers.
    clock: Clock,
    /// Retention, reminders and expiry, every `RETENTION_SWEEP_INTERVAL` (see [`crate::sweep`]).
    sweep: crate::sweep::Sweep,
}

impl Dispatcher {
    /// Opens the pool, loads and checks the templates, builds the SES client, settles the
    /// sending rate (asking SES when `MAX_SEND_RATE` is unset), checks the configuration set
    /// and binds the metrics port.
    pub async fn build(
        settings: Settings,
        clock: Clock,
        sdk: aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        let db_url = settings.db.database_url.expose();
        // Lazy: the dispatcher starts (and waits) even while PostgreSQL is still coming up.
        let pool = store::connect_lazy_sized(db_url, settings.db.pool_size)
            .with_context(|| format!("invalid DATABASE_URL {}", redact_url(db_url)))?;
        let templates =
            Arc::new(Templates::load(&settings.templates_dir).context("cannot load templates")?);
        templates.check().context("a template does not render")?;
        let ses = mailroom::ses::client_from(&sdk, &settings.ses, 1);
        let rate = match settings.max_send_rate {
            Some(r) => r,
            None => account_rate(&ses).await,
        };
        if let Some(set) = &settings.configuration_set {
            check_configuration_set(&ses, set).await;
        }
        check_sender(&ses, &settings.mail_from).await;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(bind_metrics(addr).await?),
            None => None,
        };
        let cancel = CancellationToken::new();
        // The rate is the account's: shared with every dispatcher of this database and prefix.
        let rate = Arc::new(SharedRate::shared(
            pool.clone(),
            &settings.broker.queue_prefix,
            rate,
        ));
        let metrics = Arc::new(Metrics::default());
        let paused = Arc::new(Mutex::new(None));
        let records = tokio_util::task::TaskTracker::new();
        let worker = new_worker(
            &settings,
            Shared {
                pool: pool.clone(),
                ses,
                templates,
                clock: clock.clone(),
                rate: rate.clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
                records: records.clone(),
            },
        )?;
        let worker = Arc::new(worker);
        let sweep = crate::sweep::Sweep {
            pool: pool.clone(),
            args: settings.sweep.clone(),
            hooks: settings.webhooks.endpoints.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        Ok(Self {
            sweep,
            webhook_consumer: webhook_consumer(&settings, worker.clone()),
            consumer: new_consumer(&settings, worker, paused.clone()),
            prefix: settings.broker.queue_prefix,
            pool,
            rate,
            metrics,
            metrics_listener,
            paused,
            cancel,
            records,
            clock,
        })
    }

    /// Where the metrics are served, if they are (the port chosen, for an address with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Runs the dispatcher until `shutdown` resolves; then stops consuming, lets in-flight
    /// sends finish and record (up to `SHUTDOWN_TIMEOUT`), and returns. Returns earlier, with
    /// the reason, only if consuming cannot go on (what retrying cannot fix).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            prefix,
            pool,
            consumer,
            webhook_consumer,
            rate,
            metrics,
            metrics_listener,
            paused,
            cancel,
            records,
            clock,
            sweep,
        } = self;
        // Stops the consumer, the shared rate and the metrics server if this future is dropped
        // before its graceful stop (its task aborted): left running, the consumer would go on
        // reconnecting and declaring queues that their owner has removed.
        let _stop_all = cancel.clone().drop_guard();
        // Either binary may start first (scripts/up starts both at once): the dispatcher
        // applies the migrations too, under the advisory lock sqlx takes for them, so that it
        // never runs against tables ingest has not created yet.
        // The operations listener first: while the schema is waited for, `/healthz` answers and
        // `/readyz` says why this instance is not ready yet.
        if let Some(listener) = metrics_listener {
            let health = crate::health::Health {
                metrics,
                paused,
                consuming: consumer.consuming.clone(),
                rate: rate.clone(),
            };
            tokio::spawn(mailroom::metrics::serve_pages(
                listener,
                move |path: &str| health.page(path),
                cancel.clone(),
            ));
        }
        tokio::pin!(shutdown);
        tokio::select! {
            ready = wait_for_schema(&pool) => ready?,
            _ = &mut shutdown => return Ok(()),
        }
        // Claims, leases and link expiry in the database's time, not this machine's: a
        // dispatcher whose clock is ahead would otherwise take over live claims and send twice
        // (see mailroom::clock).
        clock.follow_database(&pool).await;
        let rate_task = tokio::spawn(rate.clone().run(cancel.clone()));
        // Its own task: a long sweep never delays a send, and shutdown stops it between
        // batches.
        let sweep_task = tokio::spawn(sweep.run(cancel.clone()));
        tracing::info!(
            prefix = %prefix,
            rate = rate.account_rate(),
            concurrency = match consumer.concurrency {
                Concurrency::Fixed(n) => n.to_string(),
                Concurrency::Auto => "auto".to_owned(),
            },
            retry_delays = %consumer.retry_delays.iter().map(|d| format_duration(*d)).collect::<Vec<_>>().join(","),
            "dispatcher starting"
        );
        // Both lanes at once. One that ends with an error (a queue declared with other
        // settings) ends both; one that ends without error did so because of shutdown.
        let (c1, c2) = (cancel.clone(), cancel.clone());
        let mut task = tokio::spawn(async move {
            tokio::try_join!(consumer.run(c1), webhook_consumer.run(c2)).map(|_| ())
        });
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: finishing in-flight sends");
                cancel.cancel();
                let _ = task.await;
                wait_for_records(&records).await;
                // Leave the shared rate (deletes this dispatcher's row) before the pool closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), rate_task).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), sweep_task).await;
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
}

/// Waits for the records of sends SES accepted that are still being retried (see
/// [`crate::worker::RECORD_DEADLINE`]): exiting before they land would leave those jobs'
/// claims to expire, and their emails to be sent again.
async fn wait_for_records(records: &tokio_util::task::TaskTracker) {
    records.close();
    if records.is_empty() {
        return;
    }
    tracing::warn!(
        count = records.len(),
        "waiting for the send log to record emails SES accepted"
    );
    let waited = tokio::time::timeout(
        crate::worker::RECORD_DEADLINE + Duration::from_secs(5),
        records.wait(),
    )
    .await;
    if waited.is_err() {
        tracing::error!("sends SES accepted are still unrecorded; their status stays `sending`");
    }
}

/// SES's `MaxSendRate`, or [`DEFAULT_SEND_RATE`] when the endpoint does not say.
async fn account_rate(ses: &aws_sdk_sesv2::Client) -> f64 {
    match mailroom::ses::get_account(ses).await {
        Ok(Some(a)) if a.max_send_rate > 0.0 => {
            tracing::info!(rate = a.max_send_rate, "using SES's MaxSendRate");
            a.max_send_rate
        }
        Ok(_) => {
            tracing::warn!(
                "the SES endpoint does not report MaxSendRate; sending at most 14 per second (set MAX_SEND_RATE to choose)"
            );
            DEFAULT_SEND_RATE
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read MaxSendRate from SES; sending at most 14 per second");
            DEFAULT_SEND_RATE
        }
    }
}

/// SES refuses every send that names a missing set (the dispatcher would pause): say so at
/// start, where the operator is looking.
async fn check_configuration_set(ses: &aws_sdk_sesv2::Client, set: &str) {
    match mailroom::ses::configuration_set_exists(ses, set).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            configuration_set = set,
            "SES_CONFIGURATION_SET names a configuration set that does not exist; sends will pause until it does"
        ),
        Err(e) => tracing::warn!(error = %e, "could not check SES_CONFIGURATION_SET"),
    }
}

/// Says at start, in one line, when MAIL_FROM is not a verified identity: sends would pause
/// (reason `sender_not_verified`) until it is.
async fn check_sender(ses: &aws_sdk_sesv2::Client, mail_from: &str) {
    match mailroom::ses::sender_verified(ses, mail_from).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            mail_from,
            "MAIL_FROM is not a verified SES identity (nor is its domain): sends will pause until it is; see `dispatcher identities verify-email` or `verify-domain`"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not check that MAIL_FROM is a verified identity")
        }
    }
}

async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(listener)
}

/// What a worker shares with the rest of the dispatcher.
struct Shared {
    pool: PgPool,
    ses: aws_sdk_sesv2::Client,
    templates: Arc<Templates>,
    clock: Clock,
    rate: Arc<SharedRate>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    records: tokio_util::task::TaskTracker,
}

/// The worker every step runs on. Starts the batching tasks on the pool.
fn new_worker(settings: &Settings, shared: Shared) -> anyhow::Result<Worker> {
    let claim_lease = settings.ses.ses_timeout * 2;
    Ok(Worker {
        http: webhook_client()?,
        batches: Batches::new(
            shared.pool.clone(),
            claim_lease,
            settings.webhooks.timeout * 2,
            settings.webhooks.endpoints.clone(),
        ),
        pool: shared.pool,
        ses: shared.ses,
        templates: shared.templates,
        clock: shared.clock,
        mail_from: settings.mail_from.clone(),
        configuration_set: settings.configuration_set.clone(),
        public_url: settings.public_url.clone(),
        reset_url: settings.reset_url.clone(),
        verification_ttl: settings.verification_ttl,
        reset_ttl: settings.reset_ttl,
        sign_in_url: settings.sign_in_url.clone(),
        sign_in_ttl: settings.sign_in_ttl,
        invite_ttl: settings.invite_ttl,
        codes: settings.codes.clone(),
        claim_lease,
        service_time: ServiceTime::default(),
        records: shared.records,
        webhooks: settings.webhooks.clone(),
        rate: shared.rate,
        metrics: shared.metrics,
        cancel: shared.cancel,
    })
}

/// The consumer of the webhooks' lane (see [`Dispatcher`]): a fixed concurrency, a pause state
/// of its own that nothing sets (a webhook outcome is never an account stop).
fn webhook_consumer(settings: &Settings, worker: Arc<Worker>) -> Consumer {
    let mut c = new_consumer(settings, worker, Arc::default());
    c.topology = c.topology.webhooks();
    c.concurrency = Concurrency::Fixed(settings.webhook_concurrency.get());
    c
}

fn new_consumer(
    settings: &Settings,
    worker: Arc<Worker>,
    paused: Arc<Mutex<Option<PauseReason>>>,
) -> Consumer {
    Consumer {
        worker,
        amqp_url: settings.broker.amqp_url.expose().to_owned(),
        heartbeat: settings.broker.amqp_heartbeat,
        topology: Topology::new(&settings.broker.queue_prefix),
        retry_delays: settings.retry_delays.clone(),
        concurrency: match settings.send_concurrency {
            Some(n) => Concurrency::Fixed(n.get()),
            None => Concurrency::Auto,
        },
        pause_probe: settings.pause_probe_interval,
        shutdown_timeout: settings.shutdown_timeout,
        paused,
        consuming: Default::default(),
    }
}

/// Applies the migrations, waiting (said once) while the database cannot be reached; an error
/// for a migration that fails for what it is (a changed or unknown migration), which waiting
/// cannot fix.
async fn wait_for_schema(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut said = false;
    loop {
        match store::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e)) if store::is_unavailable(&e) => {
                if !said {
                    tracing::warn!(error = %e, "waiting for PostgreSQL to apply the migrations");
                    said = true;
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot apply the migrations")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
