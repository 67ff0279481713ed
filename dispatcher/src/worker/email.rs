//! The step of an email job, after its claim: what the claim brought back (the user, any
//! suppression entry), the link of its kind (see [`super::links`]), rendering, the wait for
//! the sending rate, the claim's renewal, and the SES call with its outcome recorded.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailroom::domain::Locale;
use mailroom::job::Job;
use mailroom::metrics::ClassLabel;
use mailroom::ses::{self, ErrorClass, OutgoingEmail, SesError};
use mailroom::store::{self, SendStatus, SentRecord, Suppression, User};
use mailroom::templates::{EmailContext, RenderedEmail};

use super::db_retry::DbResult;
use super::links::{Carried, Link, Recipient};
use super::{Outcome, Worker};
use crate::format::{human_duration, timestamp};

/// What the claim of an email job brought back, and when it was made.
pub(super) struct Claim {
    /// Our attempt number: identifies the claim when it is renewed.
    pub attempt: i32,
    /// When the claim was made, to judge whether it needs renewing before the SES call.
    pub at: Instant,
    /// The step's clock reading: what the records and the link's expiry are dated from.
    pub now: DateTime<Utc>,
    pub user: Option<User>,
    pub suppression: Option<Suppression>,
}

impl Worker {
    /// Sends one email job that this step has claimed.
    pub(super) async fn send_email(
        &self,
        job: &Job,
        claim: Claim,
        waited: &mut Duration,
    ) -> DbResult<Outcome> {
        let now = claim.now;
        let Some(user) = &claim.user else {
            return self.skip(job, "the user no longer exists").await;
        };
        // An email change's emails go to the change's addresses, not (only) the user's: the
        // recipient, and its suppression entry, are the change's.
        let mut suppression = claim.suppression.clone();
        let changed;
        let user = match self.change_recipient(job, user, now).await? {
            Recipient::User => user,
            Recipient::Other(email) => {
                suppression = self
                    .retry_db(|| store::suppression(&self.pool, &email))
                    .await?;
                changed = User {
                    email,
                    ..user.clone()
                };
                &changed
            }
            Recipient::Skip(reason) => return self.skip(job, reason).await,
        };
        // Every send path (signup, resend, reset, notice, replay) comes through here: check the
        // suppression list before minting anything. Mailing an address that bounced or
        // complained again counts against the account's bounce and complaint rates.
        if let Some(entry) = &suppression {
            return self.suppressed(job, user, entry, now).await;
        }
        let carried = match self.link_for(job, user, now).await? {
            Link::Ready(carried) => carried,
            Link::Skip(reason) => return self.skip(job, reason).await,
            Link::Dead(error) => {
                return Ok(Outcome::Dead {
                    error_class: "config".into(),
                    error,
                });
            }
        };
        let email = match self.render(job, user, carried) {
            Ok(e) => e,
            Err(dead) => return Ok(dead),
        };
        if !self.wait_for_rate(waited).await {
            return Ok(Outcome::Abandoned);
        }
        if !self.renew_claim_if_old(job, &claim).await? {
            tracing::info!(job_id = %job.job_id, "another consumer took this job over; not sending");
            return Ok(Outcome::Duplicate);
        }
        self.call_ses(job, user, &email).await
    }

    /// The recipient is on the suppression list: recorded, and not sent.
    async fn suppressed(
        &self,
        job: &Job,
        user: &User,
        entry: &Suppression,
        now: DateTime<Utc>,
    ) -> DbResult<Outcome> {
        let why = format!(
            "{} is on the suppression list ({} since {})",
            user.email,
            entry.reason,
            timestamp(entry.created_at)
        );
        self.retry_db(|| store::record_suppressed(&self.pool, job.job_id, &user.email, &why, now))
            .await?;
        tracing::info!(job_id = %job.job_id, reason = %entry.reason, "recipient suppressed; not sent");
        Ok(Outcome::Suppressed {
            reason: entry.reason.clone(),
        })
    }

    /// Renders the email in the user's locale (the job's if the user's is unknown). A template
    /// that does not render cannot succeed later: the error is a dead outcome.
    fn render(&self, job: &Job, user: &User, carried: Carried) -> Result<RenderedEmail, Outcome> {
        let locale = Locale::parse(&user.locale).unwrap_or_else(|_| job.locale.clone());
        let ttl = carried.ttl;
        let (code, code_ttl) = match carried.code {
            Some((code, ttl)) => (Some(code), Some(ttl)),
            None => (None, None),
        };
        let ctx = EmailContext {
            name: user.name.clone(),
            email: user.email.clone(),
            new_email: carried.new_email,
            cancel_link: carried.cancel_link,
            link: carried.link,
            expires_in: human_duration(ttl),
            expires_hours: ttl.as_secs().div_ceil(3600),
            expires_minutes: ttl.as_secs().div_ceil(60),
            code,
            code_expires_in: code_ttl.map(human_duration),
            code_expires_minutes: code_ttl.map(|t| t.as_secs().div_ceil(60)),
        };
        self.templates
            .render_email(job.kind, &locale, &ctx)
            .map_err(|e| Outcome::Dead {
                error_class: "render".into(),
                error: e.to_string(),
            })
    }

    /// False when another consumer took the job over while we waited: it sends; we do not.
    async fn renew_claim_if_old(&self, job: &Job, claim: &Claim) -> DbResult<bool> {
        // Renew the claim after the wait, right before the call, when the wait was long: the
        // lease (2 × SES_TIMEOUT) must cover the call itself, however long the limiter held us.
        // A claim younger than a quarter of the lease still covers the call (at most half the
        // lease) with room to spare, so the usual case costs no statement. If another consumer
        // took the job over meanwhile, it sends; we do not.
        if claim.at.elapsed() <= self.lease_for(job.kind) / 4 {
            return Ok(true);
        }
        let renewed = self.clock.now();
        self.retry_db(|| store::renew_claim(&self.pool, job.job_id, claim.attempt, renewed))
            .await
    }

    /// The SES call, and what its answer makes of the job.
    async fn call_ses(&self, job: &Job, user: &User, email: &RenderedEmail) -> DbResult<Outcome> {
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
            Ok(sent) => self.sent(job, user, sent).await,
            Err(e) => Ok(self.send_failed(job, user, e).await),
        }
    }

    async fn sent(&self, job: &Job, user: &User, sent: ses::Sent) -> DbResult<Outcome> {
        self.metrics.latency.observe(sent.latency.as_secs_f64());
        let latency_ms = sent.latency.as_millis().min(i32::MAX as u128) as i32;
        let record = SentRecord {
            job_id: job.job_id,
            kind: job.kind,
            user_id: job.user_id,
            reference: job.reference.clone(),
            recipient: user.email.clone(),
            ses_message_id: sent.message_id.clone(),
            at: self.clock.now(),
            latency_ms,
        };
        // Record before ack: once this row says `sent`, a redelivery is not resent. SES has
        // the email now, so from here no error may end the step early (that would give the
        // job back, and release its claim, for a second send): the record is retried until
        // it lands, past shutdown too (see `record_sent_past_shutdown`).
        if !self.record_sent_past_shutdown(record).await {
            // Acknowledged all the same: the email went out, and a job given back would be
            // sent again once its claim's lease ran out.
            tracing::error!(job_id = %job.job_id, ses_message_id = %sent.message_id, "sent, but the send log could not record it; its status stays `sending`");
        }
        tracing::info!(job_id = %job.job_id, kind = %job.kind, ses_message_id = %sent.message_id, "sent");
        Ok(Outcome::Sent {
            message_id: sent.message_id,
        })
    }

    /// Writes the record of a send SES accepted in a task of [`Worker::records`], which a
    /// session's end does not abort (the step awaiting it may be: a statement can wait for a
    /// connection longer than the shutdown timeout). Batched with the other steps' first; then
    /// retried alone until it lands while the dispatcher runs, and for
    /// [`super::RECORD_DEADLINE`] once shutdown has begun. False when that ran out.
    async fn record_sent_past_shutdown(&self, record: SentRecord) -> bool {
        let (pool, cancel) = (self.pool.clone(), self.cancel.clone());
        let hooks = self.webhooks.endpoints.clone();
        let batches = self.batches.clone();
        let task = self.records.spawn(async move {
            if batches.sent.call(record.clone()).await.is_ok() {
                return true;
            }
            let mut backoff = Duration::from_millis(200);
            let mut deadline = None;
            loop {
                let e = match store::record_sent(&pool, std::slice::from_ref(&record), &hooks).await {
                    Ok(()) => return true,
                    Err(e) => e,
                };
                if cancel.is_cancelled() {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + super::RECORD_DEADLINE);
                    if Instant::now() + backoff > d {
                        return false;
                    }
                }
                tracing::warn!(job_id = %record.job_id, error = %e, retry_in = ?backoff, "cannot record a send SES accepted; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        task.await.unwrap_or(false)
    }

    async fn send_failed(&self, job: &Job, user: &User, e: SesError) -> Outcome {
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
        match e.class {
            ErrorClass::Retryable => Outcome::Retry { error: e.message },
            ErrorClass::Permanent => Outcome::Dead {
                error_class: "permanent".into(),
                error: e.message,
            },
            ErrorClass::AccountStop(reason) => Outcome::AccountStop {
                reason,
                error: e.message,
            },
        }
    }
}
