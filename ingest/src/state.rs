//! [`AppState`]: what every request handler shares, built once from the [`Settings`] at start
//! — the database pool (migrated), the compiled templates, the metrics, the bounded hashing
//! pool, the signup batcher, the SNS verifier and the relay's wake-up and broker state. The
//! handlers take it as `&AppState`; nothing in it is copied per request.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use mailroom::batch::Batcher;
use mailroom::clock::Clock;
use mailroom::config::redact_url;
use mailroom::domain::Password;
use mailroom::store::{self, Signup, SignupOutcome};
use mailroom::templates::Templates;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::hashing::{HashError, HashPool};
use crate::metrics::Metrics;
use crate::relay::BrokerState;
use crate::settings::Settings;
use crate::sns::Sns;

/// Signup statements in flight at once. One: each statement carries the signups that queued
/// while the previous one ran. More in flight only made the batches smaller and the commits
/// more (16 connections, `scripts/bench`'s load: one 13.1k signups/s, two 11.2k, four 8.5k).
const SIGNUP_STATEMENTS: usize = 1;

/// The shared state of the request handlers (see the module documentation).
pub struct AppState {
    /// The checked configuration the handlers read their limits and rules from.
    pub settings: Settings,
    pub pool: PgPool,
    pub templates: Templates,
    pub clock: Clock,
    /// Wakes the relay after a commit so the job leaves at once.
    pub relay_wake: Arc<Notify>,
    /// What the relay last knew of RabbitMQ, for /readyz and /metrics.
    pub broker_state: Arc<RwLock<BrokerState>>,
    pub metrics: Arc<Metrics>,
    /// Every argon2 hash and verify goes through it: bounded memory and CPU.
    pub hashes: HashPool,
    /// SES feedback over SNS; None when `SNS_TOPIC_ARNS` is unset.
    pub sns: Option<Sns>,
    /// Signups, written together with the signups that arrive at the same time: one statement
    /// and one commit for a batch instead of one per signup.
    pub signups: Batcher<Signup, SignupOutcome>,
    /// The reset tokens whose confirmation is being hashed: one at a time per token.
    pub resets_in_flight: crate::in_flight::InFlight,
}

impl AppState {
    /// Connects to PostgreSQL and applies pending migrations, compiles the templates and
    /// prepares the login dummy hash; fails on the first of them that cannot be done.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let db_url = settings.db.database_url.expose();
        let pool = store::connect_sized(db_url, settings.db.pool_size)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(db_url)))?;
        store::migrate(&pool)
            .await
            .context("cannot apply database migrations")?;
        // Every time ingest writes or compares (lockout windows, request limits, link expiry)
        // is the database's, whatever this machine's clock says (see mailroom::clock).
        clock.follow_database(&pool).await;
        let templates =
            Templates::load(&settings.templates_dir).context("cannot load templates")?;
        // The dummy hash logins of unknown addresses are checked against: made now, not by the
        // first such login (whose timing would then stand out).
        tokio::task::spawn_blocking(Password::prepare_dummy)
            .await
            .context("preparing the login dummy hash")?;
        let sns = settings
            .sns
            .as_ref()
            .map(|s| Sns::new(s.topics.clone(), s.cert_url_prefixes.clone()));
        Ok(Self {
            hashes: HashPool::new(settings.hashing.concurrency, settings.hashing.queue),
            signups: signup_batcher(pool.clone()),
            resets_in_flight: Default::default(),
            sns,
            pool,
            templates,
            clock,
            relay_wake: Arc::new(Notify::new()),
            broker_state: Arc::new(RwLock::new(BrokerState::Connecting)),
            metrics: Arc::new(Metrics::default()),
            settings,
        })
    }

    /// Hashes a new password through the bounded pool (see [`crate::hashing`]), counting what
    /// became of it; a full pool is [`ApiError::Busy`].
    pub async fn hash_password(&self, password: Password) -> Result<String, ApiError> {
        match self.hashes.run(move || password.hash()).await {
            Ok(h) => {
                mailroom::metrics::count(&self.metrics.password_hashes, "done");
                Ok(h)
            }
            Err(HashError::Busy(_)) => {
                mailroom::metrics::count(&self.metrics.password_hashes, "refused");
                Err(ApiError::Busy)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The batcher that writes concurrent signups in one statement (`mailroom::batch`).
fn signup_batcher(pool: PgPool) -> Batcher<Signup, SignupOutcome> {
    Batcher::spawn(
        |s: &Signup| s.job.job_id,
        SIGNUP_STATEMENTS,
        move |batch: Vec<Signup>| {
            let pool = pool.clone();
            async move { store::create_users_with_jobs(&pool, &batch).await }
        },
    )
}
