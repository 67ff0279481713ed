//! One step of the dispatcher: what to do with one job. [`Worker::process`] claims the job and
//! hands it to the step of its kind — an email (`email`: suppression, link, render, SES) or a
//! webhook delivery (`webhook`) — which records the outcome and returns an [`Outcome`]; it
//! never acknowledges or publishes anything (that is the consumer's), so tests can drive single
//! steps.
//!
//! Dependencies run one way: this module dispatches to `email` and `webhook`; `email`
//! uses `links` and `rate_wait`; every step uses `db_retry`. None of them knows the
//! consumer.

mod db_retry;
mod email;
mod links;
mod rate_wait;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use mailroom::clock::Clock;
use mailroom::job::{Job, JobKind, MalformedJob};
use mailroom::store;
use mailroom::templates::Templates;
use mailroom::webhook::Webhooks;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batches, ClaimReq};
use crate::metrics::Metrics;
use crate::rate::SharedRate;
use crate::service_time::ServiceTime;

pub(crate) use db_retry::DbResult;
pub use webhook::{PARKED, webhook_client};
pub(crate) use webhook::{error_chain, signed_request};

/// Kept here for the callers that name them through the worker.
pub use crate::format::{human_duration, timestamp};
pub use crate::outcome::Outcome;

/// Everything one step needs. Shared by all in-flight steps.
pub struct Worker {
    pub pool: PgPool,
    pub ses: aws_sdk_sesv2::Client,
    pub templates: Arc<Templates>,
    pub clock: Clock,
    pub mail_from: String,
    /// Sends carry it so that SES publishes their events (see `SES_CONFIGURATION_SET`).
    pub configuration_set: Option<String>,
    pub public_url: String,
    pub reset_url: String,
    pub verification_ttl: Duration,
    pub reset_ttl: Duration,
    /// The app's sign-in page (`SIGN_IN_URL`); None: sign-in links cannot be minted.
    pub sign_in_url: Option<String>,
    pub sign_in_ttl: Duration,
    pub invite_ttl: Duration,
    /// One-time codes: the key (None: off), digits, life and attempts of each code minted.
    pub codes: mailroom::config::Codes,
    /// How long a claim on a job protects it from a second copy being sent concurrently:
    /// about twice the SES timeout, so that a live consumer always finishes within it and a
    /// dead consumer's claim is taken over soon after.
    pub claim_lease: Duration,
    /// This dispatcher's share of the account's sending rate (see [`crate::rate`]).
    pub rate: Arc<SharedRate>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    /// Webhook endpoints (for `email.dead`), the signer and the per-attempt timeout.
    pub webhooks: Arc<Webhooks>,
    /// Delivers webhooks; follows no redirects (a receiver answers itself or the attempt fails).
    pub http: reqwest::Client,
    /// The claim, token and record statements, batched across the steps in flight.
    pub batches: Arc<Batches>,
    /// How long a step holds its slot, not counting the rate limiter: what the consumer sizes
    /// its concurrency from.
    pub service_time: ServiceTime,
    /// The records of sends SES accepted that could not be written at once: each retried in a
    /// task of its own, past shutdown, so that a session's end (which aborts its steps) cannot
    /// stop them. The dispatcher waits for them before it exits (see [`RECORD_DEADLINE`]).
    pub records: tokio_util::task::TaskTracker,
}

/// How long, once shutdown has begun, the record of a send SES accepted is still retried. Its
/// job's claim is never released: until the record lands, a redelivered copy finds the claim
/// and waits; a copy can only be sent again if the database stays away past this *and* the
/// claim's lease.
pub const RECORD_DEADLINE: Duration = Duration::from_secs(60);

impl Worker {
    /// Handles one message: a parsed job, or why it could not be parsed (with the message id,
    /// if any, to record it under).
    pub async fn process(
        &self,
        job: Result<Job, MalformedJob>,
        message_id: Option<&str>,
    ) -> Outcome {
        let job = match job {
            Ok(j) => j,
            Err(e) => {
                let id = message_id
                    .and_then(|m| uuid::Uuid::parse_str(m).ok())
                    .unwrap_or_else(uuid::Uuid::new_v4);
                let now = self.clock.now();
                let text = e.to_string();
                let _ = self
                    .retry_db(|| store::record_malformed(&self.pool, id, &text, now))
                    .await;
                return Outcome::Dead {
                    error_class: "malformed".into(),
                    error: e.to_string(),
                };
            }
        };
        match self.process_job(&job).await {
            Ok(o) => o,
            Err(_) => Outcome::Abandoned,
        }
    }

    async fn process_job(&self, job: &Job) -> DbResult<Outcome> {
        let started = std::time::Instant::now();
        let mut waited = Duration::ZERO;
        let outcome = self.step(job, &mut waited).await;
        self.service_time
            .observe(started.elapsed().saturating_sub(waited));
        outcome
    }

    /// The step itself: claim the job, then the step of its kind. `waited` collects the time
    /// spent waiting for the rate limiter.
    async fn step(&self, job: &Job, waited: &mut Duration) -> DbResult<Outcome> {
        let now = self.clock.now();
        // Claim before send: the send log learns of the attempt first, so a redelivery of a
        // job that was already sent is recognised here and not sent again. The same statement
        // (batched with the other steps in flight) loads the user and any suppression entry.
        let claimed_at = std::time::Instant::now();
        let claimed = self
            .retry_db(|| {
                self.batches.claims.call(ClaimReq {
                    job: job.clone(),
                    now,
                })
            })
            .await?;
        let attempt = match claimed.claim {
            store::Claim::Claimed { attempt, .. } => attempt,
            store::Claim::Finished(_) => {
                tracing::info!(job_id = %job.job_id, "job already handled; not sending again");
                return Ok(Outcome::Duplicate);
            }
            store::Claim::Busy => {
                tracing::info!(job_id = %job.job_id, "another consumer is sending this job; waiting");
                return Ok(Outcome::Busy);
            }
        };
        // Not an email: no user to load, no suppression, no SES rate.
        if job.kind == JobKind::Webhook {
            return self.deliver_webhook(job).await;
        }
        let claim = email::Claim {
            attempt,
            at: claimed_at,
            now,
            user: claimed.user,
            suppression: claimed.suppression,
        };
        self.send_email(job, claim, waited).await
    }

    /// How long a claim protects a job: twice the longest call its step makes (SES's timeout
    /// for an email, the receiver's for a webhook), so a live consumer always finishes within
    /// it and a dead one's claim is taken over soon after.
    fn lease_for(&self, kind: JobKind) -> Duration {
        match kind {
            JobKind::Webhook => self.webhooks.timeout * 2,
            _ => self.claim_lease,
        }
    }

    /// Records that there is nothing to send, and why.
    async fn skip(&self, job: &Job, reason: &str) -> DbResult<Outcome> {
        let now = self.clock.now();
        self.retry_db(|| store::record_skipped(&self.pool, job.job_id, reason, now))
            .await?;
        tracing::info!(job_id = %job.job_id, reason, "skipped");
        Ok(Outcome::Skipped {
            reason: reason.into(),
        })
    }
}
