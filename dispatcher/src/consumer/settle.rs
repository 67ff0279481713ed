//! Settling one step's outcome with the broker: ack, a retry delay queue (the next one, or the
//! first for a busy job), the dead queue, or back to the work queue for an account stop or a
//! shutdown. Every move publishes with a confirm before it acks the original.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use mailroom::broker::{self, BrokerError, Topology};
use mailroom::job::Job;
use mailroom::metrics::ClassLabel;
use mailroom::ses::PauseReason;
use mailroom::store::{self, SendStatus};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::PauseCause;
use crate::format::timestamp;
use crate::outcome::Outcome;
use crate::worker::Worker;

/// Turns one step's outcome into broker actions.
pub(super) struct Settler {
    pub worker: Arc<Worker>,
    pub publish: Arc<Channel>,
    pub topology: Topology,
    pub retry_delays: Vec<Duration>,
    /// Cancelled on an account stop: the session pauses.
    pub pause: CancellationToken,
    pub cause: PauseCause,
}

/// Runs one step and turns a panic into a retryable outcome, so that the delivery is still
/// settled (moved to a delay queue, dead after the last) instead of holding a prefetch slot
/// until the channel closes, and a job that panics every time ends in the dead letters.
pub async fn guard_panics(step: impl std::future::Future<Output = Outcome>) -> Outcome {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(o) => o,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "a step panicked; the job goes to a delay queue");
            Outcome::Retry {
                error: format!("the dispatcher panicked while handling this job: {what}"),
            }
        }
    }
}

/// One delivery being settled: the message, its job's id (if it parsed) and its attempt.
struct Settling<'a> {
    d: &'a Delivery,
    job_id: Option<Uuid>,
    attempt: i64,
}

impl Settler {
    /// Runs the step of one delivery and settles it.
    pub(super) async fn handle(&self, d: Delivery) -> Result<(), BrokerError> {
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        // Clamped: whoever can publish to the exchange controls this header, and a negative or
        // huge value must neither overflow `attempt + 1` nor index past the ladder.
        let attempt = broker::header_int(&d.properties, broker::ATTEMPT_HEADER)
            .unwrap_or(0)
            .clamp(0, i64::from(u16::MAX));
        let job = Job::from_slice(&d.data);
        let job_id = job.as_ref().ok().map(|j| j.job_id);
        let outcome = guard_panics(self.worker.process(job, message_id.as_deref())).await;
        let s = Settling {
            d: &d,
            job_id,
            attempt,
        };
        self.settle(&s, &outcome).await
    }

    async fn settle(&self, s: &Settling<'_>, outcome: &Outcome) -> Result<(), BrokerError> {
        let m = &self.worker.metrics;
        match outcome {
            Outcome::Sent { .. } => self.acked(s, "sent").await,
            Outcome::Skipped { .. } => self.acked(s, "skipped").await,
            Outcome::Duplicate => self.acked(s, "duplicate").await,
            Outcome::Suppressed { .. } => self.acked(s, "suppressed").await,
            Outcome::Busy => {
                // Same attempt header: waiting for another consumer is not an attempt.
                m.count("busy");
                let queue = self.topology.retry_queue(self.retry_delays[0]);
                self.move_to(s.d, &queue, headers_of(&s.d.properties)).await
            }
            Outcome::Retry { error } if (s.attempt as usize) < self.retry_delays.len() => {
                self.retry(s, error).await
            }
            Outcome::Retry { error } => {
                let error = format!("gave up after {} attempts: {error}", s.attempt + 1);
                self.dead(s, "retryable", &error).await
            }
            Outcome::Dead { error_class, error } => self.dead(s, error_class, error).await,
            Outcome::AccountStop { reason, error } => self.account_stop(s, *reason, error).await,
            Outcome::Abandoned => self.abandoned(s).await,
        }
    }

    /// Counts the outcome and acknowledges: the job is done with.
    async fn acked(&self, s: &Settling<'_>, outcome: &'static str) -> Result<(), BrokerError> {
        self.worker.metrics.count(outcome);
        ack(s.d).await
    }

    /// Moves the job to the delay queue of its next attempt.
    async fn retry(&self, s: &Settling<'_>, error: &str) -> Result<(), BrokerError> {
        let m = &self.worker.metrics;
        m.count("retry");
        m.retries.inc();
        self.record(s.job_id, SendStatus::Retrying, "retryable", error)
            .await;
        let mut headers = headers_of(&s.d.properties);
        headers.insert(
            broker::ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(s.attempt + 1),
        );
        let queue = self
            .topology
            .retry_queue(self.retry_delays[s.attempt as usize]);
        self.move_to(s.d, &queue, headers).await
    }

    async fn account_stop(
        &self,
        s: &Settling<'_>,
        reason: PauseReason,
        error: &str,
    ) -> Result<(), BrokerError> {
        self.worker.metrics.count("account_stop");
        // Give the job back uncounted (same attempt header) and pause. Republishing
        // rather than requeueing keeps the broker's delivery count from creeping up.
        // The first stop of the session names the pause.
        self.cause
            .lock()
            .expect("pause lock")
            .get_or_insert_with(|| (reason, error.to_owned()));
        self.pause.cancel();
        self.release(s.job_id, "returned uncounted: account stop")
            .await;
        let headers = headers_of(&s.d.properties);
        tracing::debug!(error = %error, "account stop: returning the job to the queue");
        broker::publish_confirmed(
            &self.publish,
            &self.topology.exchange(),
            self.topology.retry_routing_key(),
            &s.d.data,
            s.d.properties.clone().with_headers(headers),
        )
        .await?;
        ack(s.d).await
    }

    async fn abandoned(&self, s: &Settling<'_>) -> Result<(), BrokerError> {
        // Shutting down before the job could be handled: give it back for later. The
        // release is best effort (the database may be why we gave up); a claim left
        // behind only delays the next copy by the lease.
        if let Some(id) = s.job_id {
            let now = self.worker.clock.now();
            let _ = store::release_claim(&self.worker.pool, id, "returned: shutdown", now).await;
        }
        settled(
            "nack",
            s.d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await,
        )
    }

    /// Records a failed attempt in the send log, held through a database outage like every
    /// other write of a step.
    async fn record(&self, job_id: Option<Uuid>, status: SendStatus, class: &str, error: &str) {
        if let Some(id) = job_id {
            let now = self.worker.clock.now();
            let _ = self
                .worker
                .retry_db(|| {
                    store::record_failure(&self.worker.pool, id, status, None, class, error, now)
                })
                .await;
        }
    }

    /// Lets the next copy of the job be sent at once (see [`store::release_claim`]).
    async fn release(&self, job_id: Option<Uuid>, why: &str) {
        if let Some(id) = job_id {
            let now = self.worker.clock.now();
            let _ = self
                .worker
                .retry_db(|| store::release_claim(&self.worker.pool, id, why, now))
                .await;
        }
    }

    /// Moves the job to the dead queue, recorded first in the send log.
    async fn dead(&self, s: &Settling<'_>, class: &str, error: &str) -> Result<(), BrokerError> {
        let m = &self.worker.metrics;
        m.count("dead");
        m.dead
            .get_or_create(&ClassLabel {
                class: class.to_owned(),
            })
            .inc();
        let now = self.worker.clock.now();
        let recipient = match s.job_id {
            Some(id) => self.record_dead(s.d, id, class, error, now).await,
            None => None,
        };
        tracing::warn!(job_id = ?s.job_id, class, error, "job dead-lettered");
        let mut headers = headers_of(&s.d.properties);
        headers.insert(
            broker::ERROR_CLASS_HEADER.into(),
            broker::long_string(class),
        );
        headers.insert(
            broker::LAST_ERROR_HEADER.into(),
            broker::long_string(&truncate(error, 1000)),
        );
        headers.insert(
            broker::ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(s.attempt + 1),
        );
        headers.insert(
            broker::DIED_AT_HEADER.into(),
            broker::long_string(&timestamp(now)),
        );
        if let Some(r) = recipient {
            headers.insert(broker::RECIPIENT_HEADER.into(), broker::long_string(&r));
        }
        self.move_to(s.d, &self.topology.dead_queue(), headers)
            .await
    }

    /// Writes the death to the send log; returns the recipient it knows of, for the header.
    async fn record_dead(
        &self,
        d: &Delivery,
        id: Uuid,
        class: &str,
        error: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<String> {
        let w = &self.worker;
        // The replay count first, then the status: a replay marking jobs `waiting` must never
        // see this death with an older count (see store::mark_replayed).
        let replays = broker::header_int(&d.properties, broker::REPLAY_HEADER).unwrap_or(0);
        if replays > 0 {
            let _ = store::record_replays(&w.pool, id, replays).await;
        }
        // The send log is where operators (and the dashboard) list dead letters: record it
        // before the move.
        // With it, for an email, its `email.dead` webhook event (one transaction).
        let _ = w
            .retry_db(|| store::record_dead(&w.pool, id, class, error, &w.webhooks.endpoints, now))
            .await;
        store::find_send(&w.pool, id)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.recipient)
    }

    /// Copies the message to `queue` (through the default exchange), waits for the confirm,
    /// and only then acknowledges the original.
    async fn move_to(
        &self,
        d: &Delivery,
        queue: &str,
        headers: FieldTable,
    ) -> Result<(), BrokerError> {
        let props = d
            .properties
            .clone()
            .with_delivery_mode(2)
            .with_headers(headers);
        broker::publish_confirmed(&self.publish, "", queue, &d.data, props).await?;
        ack(d).await
    }
}

async fn ack(d: &Delivery) -> Result<(), BrokerError> {
    settled("ack", d.ack(BasicAckOptions::default()).await)
}

/// lapin answers `Ok(false)` when the delivery's channel is already closed or the delivery was
/// settled before: the broker did not get this ack, so it is as much a failure as an error.
fn settled(what: &str, r: Result<bool, lapin::Error>) -> Result<(), BrokerError> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(BrokerError::NotSettled(what.to_owned())),
        Err(e) => Err(e.into()),
    }
}

fn headers_of(p: &BasicProperties) -> FieldTable {
    p.headers().clone().unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_panics_becomes_a_retry_instead_of_holding_its_delivery() {
        let outcome = guard_panics(async { panic!("template engine blew up") }).await;
        match outcome {
            Outcome::Retry { error } => assert!(error.contains("template engine blew up")),
            other => panic!("expected a retry, got {other:?}"),
        }
        let fine = guard_panics(async { Outcome::Duplicate }).await;
        assert_eq!(fine, Outcome::Duplicate);
    }
}
