//! One step of the dispatcher: what to do with one job. [`Worker::process`] loads the user,
//! mints the token, renders, sends through SES and records the outcome, and returns an
//! [`Outcome`]; it never acknowledges or publishes anything (that is [`crate::consumer`]'s), so
//! tests can drive single steps.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom::clock::Clock;
use mailroom::domain::{Locale, Token};
use mailroom::job::{Job, JobKind, MalformedJob};
use mailroom::metrics::ClassLabel;
use mailroom::ses::{self, ErrorClass, OutgoingEmail, PauseReason};
use mailroom::store::{self, SendStatus};
use mailroom::store::{NewLinkToken, SentRecord};

use mailroom::templates::{EmailContext, Templates};
use mailroom::webhook::Webhooks;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Metrics;

/// What became of one job. The consumer turns it into ack / retry queue / dead queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// SES accepted the email.
    Sent { message_id: String },
    /// Nothing to send (user gone, already verified); recorded with the reason.
    Skipped { reason: String },
    /// The recipient is on the suppression list: no SES call, no attempt spent.
    Suppressed { reason: String },
    /// The send log says this job was already finished: a redelivery, not sent again.
    Duplicate,
    /// Another consumer is sending this job right now (a second copy within the claim lease):
    /// wait in a delay queue, no attempt spent, and see again.
    Busy,
    /// May succeed later: goes to the next delay queue, or dead after the last.
    Retry { error: String },
    /// Cannot succeed: goes to the dead letters at once.
    Dead { error_class: String, error: String },
    /// SES will not send for this account right now (paused, quota, credentials, sending
    /// configuration): return the job uncounted and pause.
    AccountStop { reason: PauseReason, error: String },
    /// The dispatcher is shutting down before the job could be handled: give it back.
    Abandoned,
}

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
    /// How long a claim on a job protects it from a second copy being sent concurrently:
    /// about twice the SES timeout, so that a live consumer always finishes within it and a
    /// dead consumer's claim is taken over soon after.
    pub claim_lease: Duration,
    /// This dispatcher's share of the account's sending rate (see [`crate::rate`]).
    pub rate: Arc<crate::rate::SharedRate>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    /// Webhook endpoints (for `email.dead`), the signer and the per-attempt timeout.
    pub webhooks: Arc<Webhooks>,
    /// Delivers webhooks; follows no redirects (a receiver answers itself or the attempt fails).
    pub http: reqwest::Client,
    /// The claim, token and record statements, batched across the steps in flight.
    pub batches: Arc<crate::batch::Batches>,
    /// How long a step holds its slot, not counting the rate limiter: what the consumer sizes
    /// its concurrency from.
    pub service_time: crate::service_time::ServiceTime,
}

/// The client webhook deliveries go through.
pub fn webhook_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Mailroom-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))
}

/// A step-local error: the database, which we wait out rather than fail the job for.
type DbResult<T> = Result<T, sqlx::Error>;

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

    /// The step itself; `waited` collects the time spent waiting for the rate limiter.
    async fn step(&self, job: &Job, waited: &mut Duration) -> DbResult<Outcome> {
        let now = self.clock.now();
        // Claim before send: the send log learns of the attempt first, so a redelivery of a
        // job that was already sent is recognised here and not sent again. The same statement
        // (batched with the other steps in flight) loads the user and any suppression entry.
        let claimed_at = std::time::Instant::now();
        let claimed = self
            .retry_db(|| {
                self.batches.claims.call(crate::batch::ClaimReq {
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
        let Some(user) = claimed.user else {
            return self.skip(job, "the user no longer exists").await;
        };
        // Every send path (signup, resend, reset, notice, replay) comes through here: check the
        // suppression list before minting anything. Mailing an address that bounced or
        // complained again counts against the account's bounce and complaint rates.
        if let Some(entry) = claimed.suppression {
            let why = format!(
                "{} is on the suppression list ({} since {})",
                user.email,
                entry.reason,
                timestamp(entry.created_at)
            );
            self.retry_db(|| {
                store::record_suppressed(&self.pool, job.job_id, &user.email, &why, now)
            })
            .await?;
            tracing::info!(job_id = %job.job_id, reason = %entry.reason, "recipient suppressed; not sent");
            return Ok(Outcome::Suppressed {
                reason: entry.reason,
            });
        }
        // Mint at send time: the queue never held a secret, and a replayed job gets a fresh
        // link. The hash is stored before the send so the link works when the email arrives.
        let expiry = |ttl: Duration| {
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(24))
        };
        let (link, ttl) = match job.kind {
            JobKind::Verification => {
                if user.email_verified {
                    return self.skip(job, "the address is already verified").await;
                }
                let token = Token::generate();
                let hash = token.hash();
                let at = expiry(self.verification_ttl);
                let stored = self
                    .retry_db(|| {
                        self.batches
                            .verification_tokens
                            .call(crate::batch::TokenReq {
                                token: NewLinkToken {
                                    job: job.clone(),
                                    hash: hash.clone(),
                                    expires_at: at,
                                },
                                now,
                            })
                    })
                    .await?;
                if !stored {
                    return self
                        .skip(
                            job,
                            "the user changed meanwhile (verified, deleted, or a newer request)",
                        )
                        .await;
                }
                let link = format!(
                    "{}/verify-email?token={}",
                    self.public_url.trim_end_matches('/'),
                    token.expose()
                );
                (link, self.verification_ttl)
            }
            JobKind::PasswordReset => {
                let token = Token::generate();
                let hash = token.hash();
                let at = expiry(self.reset_ttl);
                let stored = self
                    .retry_db(|| {
                        self.batches.reset_tokens.call(crate::batch::TokenReq {
                            token: NewLinkToken {
                                job: job.clone(),
                                hash: hash.clone(),
                                expires_at: at,
                            },
                            now,
                        })
                    })
                    .await?;
                if !stored {
                    return self
                        .skip(
                            job,
                            "the user is gone, or a newer reset request replaced this one",
                        )
                        .await;
                }
                let sep = if self.reset_url.contains('?') {
                    '&'
                } else {
                    '?'
                };
                (
                    format!("{}{sep}token={}", self.reset_url, token.expose()),
                    self.reset_ttl,
                )
            }
            // A notice: no token. Its link leads to the service, where a person who did not
            // change their password can ask for a reset.
            JobKind::PasswordChanged => (self.public_url.clone(), Duration::ZERO),
            JobKind::Webhook => unreachable!("webhook jobs are delivered above"),
        };
        let locale = Locale::parse(&user.locale).unwrap_or_else(|_| job.locale.clone());
        let ctx = EmailContext {
            name: user.name.clone(),
            email: user.email.clone(),
            link,
            expires_in: human_duration(ttl),
            expires_hours: ttl.as_secs().div_ceil(3600),
        };
        let email = match self.templates.render_email(job.kind, &locale, &ctx) {
            Ok(e) => e,
            Err(e) => {
                return Ok(Outcome::Dead {
                    error_class: "render".into(),
                    error: e.to_string(),
                });
            }
        };
        // Never exceed the sending rate: wait for a cell of this dispatcher's share before every
        // call to SES. No share (joining, or the database unreachable): send nothing until
        // there is one. A cell counts only if the share is still the one it came from: a step
        // that waited on a limiter since replaced (the share changed) or lapsed would send at
        // the old share beside the steps of the new one, so it waits again.
        let wait = std::time::Instant::now();
        let mut counted = false;
        loop {
            let Some(limiter) = self.rate.limiter() else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = self.cancel.cancelled() => return Ok(Outcome::Abandoned),
                }
                continue;
            };
            if limiter.check().is_ok() {
                break;
            }
            if !counted {
                self.metrics.limiter_waits.inc();
                counted = true;
            }
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = self.cancel.cancelled() => return Ok(Outcome::Abandoned),
            }
            if self
                .rate
                .limiter()
                .is_some_and(|now| Arc::ptr_eq(&now, &limiter))
            {
                break;
            }
        }
        *waited += wait.elapsed();
        // Renew the claim after the wait, right before the call, when the wait was long: the
        // lease (2 × SES_TIMEOUT) must cover the call itself, however long the limiter held us.
        // A claim younger than a quarter of the lease still covers the call (at most half the
        // lease) with room to spare, so the usual case costs no statement. If another consumer
        // took the job over meanwhile, it sends; we do not.
        if claimed_at.elapsed() > self.lease_for(job.kind) / 4 {
            let renewed = self.clock.now();
            if !self
                .retry_db(|| store::renew_claim(&self.pool, job.job_id, attempt, renewed))
                .await?
            {
                tracing::info!(job_id = %job.job_id, "another consumer took this job over; not sending");
                return Ok(Outcome::Duplicate);
            }
        }
        let result = ses::send(
            &self.ses,
            OutgoingEmail {
                configuration_set: self.configuration_set.as_deref(),
                from: &self.mail_from,
                to: &user.email,
                subject: &email.subject,
                html: &email.html,
                text: &email.text,
            },
        )
        .await;
        match result {
            Ok(sent) => {
                self.metrics.latency.observe(sent.latency.as_secs_f64());
                let latency_ms = sent.latency.as_millis().min(i32::MAX as u128) as i32;
                let done = self.clock.now();
                // Record before ack: once this row says `sent`, a redelivery is not resent.
                self.retry_db(|| {
                    self.batches.sent.call(SentRecord {
                        job_id: job.job_id,
                        recipient: user.email.clone(),
                        ses_message_id: sent.message_id.clone(),
                        at: done,
                        latency_ms,
                    })
                })
                .await?;
                tracing::info!(job_id = %job.job_id, kind = %job.kind, ses_message_id = %sent.message_id, "sent");
                Ok(Outcome::Sent {
                    message_id: sent.message_id,
                })
            }
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, class = e.class.as_str(), error = %e, "send failed");
                self.metrics
                    .errors
                    .get_or_create(&ClassLabel {
                        class: e.class.as_str().to_owned(),
                    })
                    .inc();
                // Remember the recipient for the dead-letter listing.
                let _ = store::record_failure(
                    &self.pool,
                    job.job_id,
                    SendStatus::Sending,
                    Some(&user.email),
                    e.class.as_str(),
                    &e.message,
                    self.clock.now(),
                )
                .await;
                Ok(match e.class {
                    ErrorClass::Retryable => Outcome::Retry { error: e.message },
                    ErrorClass::Permanent => Outcome::Dead {
                        error_class: "permanent".into(),
                        error: e.message,
                    },
                    ErrorClass::AccountStop(reason) => Outcome::AccountStop {
                        reason,
                        error: e.message,
                    },
                })
            }
        }
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

    /// POSTs one webhook event to one endpoint, signed. A 2xx answer delivers it; any other
    /// answer, no answer within `WEBHOOK_TIMEOUT`, or no connection is a failed attempt that
    /// goes down the retry ladder like a failed send (the receiver may be deploying).
    async fn deliver_webhook(&self, job: &Job) -> DbResult<Outcome> {
        let Some(d) = self
            .retry_db(|| store::webhooks::delivery(&self.pool, job.job_id))
            .await?
        else {
            return self.skip(job, "the webhook event no longer exists").await;
        };
        let error = match &self.webhooks.signer {
            None => "WEBHOOK_SECRET is not set on this dispatcher, so the event cannot be signed"
                .to_owned(),
            Some(signer) => {
                let started = std::time::Instant::now();
                // The timestamp is this attempt's: receivers reject old ones (replay defence).
                let request = signed_request(
                    &self.http,
                    &d.url,
                    &self.webhooks,
                    signer,
                    &d.event_id,
                    self.clock.now().timestamp(),
                    &d.body,
                );
                let answer = tokio::select! {
                    r = request.send() => r,
                    _ = self.cancel.cancelled() => return Ok(Outcome::Abandoned),
                };
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let status = r.status().as_u16();
                        let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
                        let now = self.clock.now();
                        self.retry_db(|| {
                            store::webhooks::record_delivered(
                                &self.pool, job.job_id, &d.url, status, now, latency_ms,
                            )
                        })
                        .await?;
                        mailroom::metrics::count(&self.metrics.webhooks, "delivered");
                        tracing::info!(job_id = %job.job_id, event = %d.event_type, webhook_id = %d.event_id, url = %d.url, status, "webhook delivered");
                        return Ok(Outcome::Sent {
                            message_id: format!("HTTP {status}"),
                        });
                    }
                    Ok(mut r) => {
                        let status = r.status();
                        // A little of what the receiver said, for the send log and dead list.
                        let said = tokio::time::timeout(Duration::from_secs(1), r.chunk())
                            .await
                            .ok()
                            .and_then(|c| c.ok().flatten())
                            .map(|b| {
                                String::from_utf8_lossy(&b[..b.len().min(200)])
                                    .trim()
                                    .to_owned()
                            })
                            .unwrap_or_default();
                        format!("HTTP {status} from {}: {said}", d.url)
                            .trim_end_matches(": ")
                            .to_owned()
                    }
                    Err(e) if e.is_timeout() => format!(
                        "no answer from {} within {} (WEBHOOK_TIMEOUT)",
                        d.url,
                        mailroom::config::format_duration(self.webhooks.timeout)
                    ),
                    Err(e) => format!("cannot reach {}: {}", d.url, error_chain(&e)),
                }
            }
        };
        mailroom::metrics::count(&self.metrics.webhooks, "failed");
        tracing::warn!(job_id = %job.job_id, webhook_id = %d.event_id, url = %d.url, error = %error, "webhook delivery failed");
        let now = self.clock.now();
        self.retry_db(|| {
            store::record_failure(
                &self.pool,
                job.job_id,
                SendStatus::Sending,
                Some(&d.url),
                "webhook",
                &error,
                now,
            )
        })
        .await?;
        Ok(Outcome::Retry { error })
    }

    async fn skip(&self, job: &Job, reason: &str) -> DbResult<Outcome> {
        let now = self.clock.now();
        self.retry_db(|| store::record_skipped(&self.pool, job.job_id, reason, now))
            .await?;
        tracing::info!(job_id = %job.job_id, reason, "skipped");
        Ok(Outcome::Skipped {
            reason: reason.into(),
        })
    }

    /// Runs a database call until it succeeds or the dispatcher shuts down. No database error
    /// is the fault of the job: an outage, a full disk (`53100`), a read-only replica after a
    /// failover (`25006`), a serialization failure or a broken TLS session all pass, and
    /// failing the job for them would empty the work queue into the dead letters within a
    /// minute. So the delivery is held (unacknowledged, no attempt spent) with backoff; since
    /// every step holding one keeps its permit, consumption slows to a stop by itself.
    pub async fn retry_db<T, F, Fut>(&self, mut f: F) -> DbResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = DbResult<T>>,
    {
        let mut backoff = Duration::from_millis(200);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let code = e
                        .as_database_error()
                        .and_then(|d| d.code())
                        .map(|c| c.into_owned());
                    if store::is_unavailable(&e) {
                        tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable; holding the job");
                    } else {
                        tracing::error!(error = %e, sqlstate = code.as_deref().unwrap_or("-"), retry_in = ?backoff, "database error; holding the job until it passes");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.cancel.cancelled() => return Err(e),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One webhook POST: the JSON body, the Standard Webhooks headers, the per-attempt timeout.
/// Shared by deliveries and `dispatcher webhooks test`, so a ping is signed like an event.
pub(crate) fn signed_request(
    http: &reqwest::Client,
    url: &str,
    hooks: &Webhooks,
    signer: &mailroom::webhook::Signer,
    id: &str,
    timestamp: i64,
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = http
        .post(url)
        .timeout(hooks.timeout)
        .header("content-type", "application/json");
    for (name, value) in signer.headers(id, timestamp, body) {
        request = request.header(name, value);
    }
    request.body(body.to_owned())
}

/// An error and its causes on one line ("error sending request: … : Connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// "24 hours", "1 hour", "30 minutes".
pub fn human_duration(d: Duration) -> String {
    let mins = d.as_secs().div_ceil(60);
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if mins >= 60 && mins.is_multiple_of(60) {
        plural(mins / 60, "hour")
    } else {
        plural(mins, "minute")
    }
}

/// When a dead letter died, for its header. Milliseconds: `dead list` orders by it.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(1_800)), "30 minutes");
    }
}
