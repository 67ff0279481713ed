//! The consume loop: connection, topology, prefetch, concurrency, settling each outcome with
//! the broker, pausing on account stops, reconnecting, and graceful shutdown. Owns the
//! broker side of the dispatcher; what happens to a job is [`crate::worker`]'s.
//!
//! Ordering rules, each for a reason:
//! - confirm before ack: a job moved to a retry or the dead queue is acknowledged only after
//!   the broker confirmed the copy, so a crash in between duplicates it rather than loses it;
//! - record before ack: the send log says `sent` before the ack, so a redelivery after a crash
//!   is recognised and not sent twice;
//! - on shutdown, stop consuming first, then let in-flight steps finish and settle, then close;
//! - a delivery that cannot be settled (ack refused, channel gone) ends the session: its
//!   channel is suspect, and only a new one gives back a clean prefetch window.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use mailroom::broker::{self, BrokerError, Topology};
use mailroom::job::Job;
use mailroom::metrics::ClassLabel;
use mailroom::ses::{ErrorClass, PauseReason};
use mailroom::store::{self, SendStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::worker::{Outcome, Worker, timestamp};

pub struct Consumer {
    pub worker: Arc<Worker>,
    pub amqp_url: String,
    pub topology: Topology,
    pub retry_delays: Vec<Duration>,
    /// How many steps run at once: fixed by `SEND_CONCURRENCY`, or sized from the rate.
    pub concurrency: Concurrency,
    /// How long an account stop pauses consumption before SES is asked again.
    pub pause_probe: Duration,
    pub shutdown_timeout: Duration,
    /// Why consumption is paused, if it is; read by the metrics endpoint.
    pub paused: Arc<Mutex<Option<PauseReason>>>,
}

/// How many steps run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// `SEND_CONCURRENCY`: this many, with a prefetch of as many.
    Fixed(usize),
    /// Sized from the sending rate and the measured time of a step (Little's law), with a
    /// prefetch of twice that; resized as either changes.
    Auto,
}

/// What an automatic concurrency assumes a step takes before one was measured: SES answers
/// in tens of milliseconds, and erring high only holds a few more deliveries.
pub const ASSUMED_STEP_TIME: Duration = Duration::from_millis(100);
/// Bounds of the automatic concurrency. The upper one keeps a dispatcher without a real rate
/// limit (a very high `MAX_SEND_RATE`) from taking the whole queue in prefetch.
pub const AUTO_MIN: usize = 4;
pub const AUTO_MAX: usize = 256;
/// How often an automatic concurrency is checked against the rate and the step time.
const RESIZE_EVERY: Duration = Duration::from_secs(1);

/// Little's law: to keep `rate` sends a second going when each holds its slot for `step`, about
/// `rate × step` must be in flight. A quarter more absorbs variation in SES's answer times (a
/// slot free when the limiter lets the next send go is what keeps the rate, not latency), and
/// two more keep a slow rate from waiting on a single straggler.
pub fn auto_concurrency(rate: f64, step: Option<Duration>) -> usize {
    let step = step.unwrap_or(ASSUMED_STEP_TIME).as_secs_f64();
    let n = (rate.max(0.0) * step * 1.25).ceil();
    let n = if n.is_finite() { n as usize } else { AUTO_MAX };
    (n + 2).clamp(AUTO_MIN, AUTO_MAX)
}

/// Every how many probes a paused dispatcher resumes even though `GetAccount` still says no:
/// a send is the last word (an IAM policy may allow SendEmail but not GetAccount), and a job
/// that fails with an account stop is returned uncounted, so the test costs nothing.
const SEND_PROBE_EVERY: u32 = 10;

/// The first account stop seen in a session: why, and SES's words.
type PauseCause = Arc<Mutex<Option<(PauseReason, String)>>>;

enum SessionEnd {
    Shutdown,
    Paused(PauseReason, String),
    Lost(String),
    /// Retrying cannot help (a queue declared with other settings): stop and say why.
    Fatal(BrokerError),
}

impl Consumer {
    /// Consumes until `cancel`; survives broker restarts and account stops. Returns an error
    /// only for what an operator must fix (a conflicting queue declaration).
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BrokerError> {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.session(&cancel).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Paused(reason, why) => {
                    *self.paused.lock().expect("pause lock") = Some(reason);
                    self.worker.metrics.pauses.inc();
                    // Logged once per pause; the probes below log only at debug level.
                    tracing::warn!(
                        reason = reason.as_str(),
                        error = %why,
                        probe_every = ?self.pause_probe,
                        "SES cannot send for this account: consumption paused until it can"
                    );
                    let mut probes = 0u32;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(self.pause_probe) => {}
                            _ = cancel.cancelled() => return Ok(()),
                        }
                        probes += 1;
                        if probes.is_multiple_of(SEND_PROBE_EVERY) {
                            tracing::info!(
                                "still paused; trying a send to see whether SES takes it"
                            );
                            break;
                        }
                        match self.probe(reason).await {
                            Ok(()) => break,
                            Err(still) => {
                                tracing::debug!(reason = reason.as_str(), why = %still, "still paused")
                            }
                        }
                    }
                    *self.paused.lock().expect("pause lock") = None;
                    tracing::info!(reason = reason.as_str(), "resuming consumption");
                }
                SessionEnd::Fatal(e) => return Err(e),
                SessionEnd::Lost(why) => {
                    tracing::warn!(error = %why, retry_in = ?backoff, "lost RabbitMQ; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                    continue;
                }
            }
            backoff = Duration::from_millis(250);
        }
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// Asks SES whether the cause of a pause is gone. `Err` says why it is not; an endpoint
    /// that cannot tell (moto has no `GetAccount`) or a network error lets a send decide.
    async fn probe(&self, reason: PauseReason) -> Result<(), String> {
        match mailroom::ses::get_account(&self.worker.ses).await {
            Ok(Some(acct)) if !acct.sending_enabled => {
                Err("SES reports sending disabled for the account".into())
            }
            Ok(Some(acct))
                if reason == PauseReason::Quota
                    && acct.max_24_hour_send > 0.0
                    && acct.sent_last_24_hours >= acct.max_24_hour_send =>
            {
                Err(format!(
                    "the daily quota is used up ({} of {})",
                    acct.sent_last_24_hours, acct.max_24_hour_send
                ))
            }
            Err(e) if matches!(e.class, ErrorClass::AccountStop(_)) => Err(e.message),
            _ => Ok(()),
        }
    }

    /// The number of steps to run at once now.
    fn target(&self) -> usize {
        match self.concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => {
                let rate = &self.worker.rate;
                // While joining, the share is 0: size for the whole rate until it is known.
                let share = match rate.share() {
                    s if s > 0.0 => s,
                    _ => rate.account_rate(),
                };
                auto_concurrency(share, self.worker.service_time.get())
            }
        }
    }

    /// Deliveries held at once for `concurrency` steps: as many for a fixed concurrency; twice
    /// as many for an automatic one, so the next job is already here when a slot frees.
    fn prefetch(&self, concurrency: usize) -> u16 {
        let n = match self.concurrency {
            Concurrency::Fixed(_) => concurrency,
            Concurrency::Auto => concurrency * 2,
        };
        n.min(u16::MAX as usize) as u16
    }

    async fn connect(&self) -> Result<(Connection, Channel, Channel), BrokerError> {
        let conn = broker::connect(&self.amqp_url, "mailroom-dispatcher").await?;
        self.topology.declare_all(&conn, &self.retry_delays).await?;
        let publish = broker::confirm_channel(&conn).await?;
        let consume = conn.create_channel().await?;
        Ok((conn, publish, consume))
    }

    /// Starts a consumer on `channel` with the prefetch for `concurrency`. The prefetch is set
    /// first: RabbitMQ applies a channel's prefetch to the consumers started after it.
    async fn consume(
        &self,
        channel: &Channel,
        concurrency: usize,
    ) -> Result<(String, lapin::Consumer), BrokerError> {
        channel
            .basic_qos(self.prefetch(concurrency), BasicQosOptions::default())
            .await?;
        let tag = format!("dispatcher-{}", uuid::Uuid::new_v4());
        let deliveries = channel
            .basic_consume(
                self.topology.work_queue().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((tag, deliveries))
    }

    async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        let (conn, publish, consume) = match self.connect().await {
            Ok(c) => c,
            Err(e) if e.is_fatal() => return SessionEnd::Fatal(e),
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        let mut concurrency = self.target();
        let (mut tag, mut deliveries) = match self.consume(&consume, concurrency).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        self.worker.metrics.concurrency.set(concurrency as i64);
        tracing::info!(queue = %self.topology.work_queue(), concurrency, auto = self.concurrency == Concurrency::Auto, "consuming");
        let publish = Arc::new(publish);
        let slots = Arc::new(Semaphore::new(concurrency));
        // An automatic concurrency is checked every RESIZE_EVERY. A new prefetch applies only
        // to a new consumer, so a resize cancels the consumer, keeps handling what it already
        // delivered until its stream ends (nothing goes back to the queue), then consumes again.
        let mut resize = tokio::time::interval(RESIZE_EVERY);
        resize.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resizing = false;
        let pause = CancellationToken::new();
        let cause: PauseCause = Arc::new(Mutex::new(None));
        // Cancelled by a step whose delivery could not be settled: the channel is suspect.
        let broken = CancellationToken::new();
        let paused = || {
            let (reason, why) = cause
                .lock()
                .expect("pause lock")
                .clone()
                .unwrap_or((PauseReason::Account, "account stop".into()));
            SessionEnd::Paused(reason, why)
        };
        let mut tasks: JoinSet<()> = JoinSet::new();
        let end = loop {
            // Take a slot first: at most `concurrency` steps run at once.
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = cancel.cancelled() => break SessionEnd::Shutdown,
                _ = pause.cancelled() => break paused(),
                _ = broken.cancelled() => break SessionEnd::Lost("a delivery could not be settled".into()),
                _ = resize.tick(), if self.concurrency == Concurrency::Auto && !resizing => {
                    resizing = self.resize(&consume, &tag, &slots, &mut concurrency).await;
                    continue;
                }
            };
            let next = tokio::select! {
                d = deliveries.next() => d,
                _ = cancel.cancelled() => break SessionEnd::Shutdown,
                _ = pause.cancelled() => break paused(),
                _ = broken.cancelled() => break SessionEnd::Lost("a delivery could not be settled".into()),
                _ = resize.tick(), if self.concurrency == Concurrency::Auto && !resizing => {
                    drop(permit);
                    resizing = self.resize(&consume, &tag, &slots, &mut concurrency).await;
                    continue;
                }
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                // Our own cancel for a resize: everything it delivered has been taken.
                None if resizing => {
                    drop(permit);
                    match self.consume(&consume, concurrency).await {
                        Ok((t, d)) => (tag, deliveries) = (t, d),
                        Err(e) => break SessionEnd::Lost(e.to_string()),
                    }
                    resizing = false;
                    continue;
                }
                None => break SessionEnd::Lost("the broker cancelled the consumer".into()),
            };
            while tasks.try_join_next().is_some() {}
            let ctx = Settler {
                worker: self.worker.clone(),
                publish: publish.clone(),
                topology: self.topology.clone(),
                retry_delays: self.retry_delays.clone(),
                pause: pause.clone(),
                cause: cause.clone(),
            };
            let broken = broken.clone();
            tasks.spawn(async move {
                if let Err(e) = ctx.handle(delivery).await {
                    // Not acknowledged: the broker redelivers the job when the channel closes,
                    // and the send log stops a resend.
                    tracing::warn!(error = %e, "could not settle a delivery; reconnecting");
                    broken.cancel();
                }
                drop(permit);
            });
        };
        // Stop the flow first so no new deliveries arrive while in-flight steps finish.
        let _ = consume
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "in-flight sends did not finish in time; their jobs will be redelivered"
            );
            tasks.abort_all();
        }
        // Closing the channel returns every delivery we still hold (prefetched, unstarted) to
        // the queue.
        let _ = consume.close(200, "dispatcher session over".into()).await;
        let _ = publish.close(200, "dispatcher session over".into()).await;
        let _ = conn.close(200, "dispatcher session over".into()).await;
        end
    }
}

impl Consumer {
    /// Resizes an automatic concurrency when the target moved far from it (half or one and a
    /// half times): the slots at once, the prefetch by cancelling the consumer (the caller
    /// consumes again when its stream ends). Small moves are ignored, because each resize
    /// briefly lets the prefetched deliveries run out. True when the consumer was cancelled.
    async fn resize(
        &self,
        channel: &Channel,
        tag: &str,
        slots: &Arc<Semaphore>,
        concurrency: &mut usize,
    ) -> bool {
        let target = self.target();
        let now = *concurrency;
        if target * 2 > now * 3 || target * 2 < now {
            tracing::info!(
                from = now,
                to = target,
                step_ms = self
                    .worker
                    .service_time
                    .get()
                    .map(|d| d.as_secs_f64() * 1000.0),
                share = self.worker.rate.share(),
                "resizing the send concurrency"
            );
            if target > now {
                slots.add_permits(target - now);
            } else {
                // Permits in use come back later: take them as they return, and forget them.
                let slots = slots.clone();
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned((now - target) as u32).await {
                        p.forget();
                    }
                });
            }
            *concurrency = target;
            self.worker.metrics.concurrency.set(target as i64);
            return channel
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await
                .is_ok();
        }
        false
    }
}

/// Turns one step's outcome into broker actions.
struct Settler {
    worker: Arc<Worker>,
    publish: Arc<Channel>,
    topology: Topology,
    retry_delays: Vec<Duration>,
    pause: CancellationToken,
    cause: PauseCause,
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

impl Settler {
    async fn handle(&self, d: Delivery) -> Result<(), BrokerError> {
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let attempt = broker::header_int(&d.properties, broker::ATTEMPT_HEADER).unwrap_or(0);
        let job = Job::from_slice(&d.data);
        let job_id = job.as_ref().ok().map(|j| j.job_id);
        let outcome = guard_panics(self.worker.process(job, message_id.as_deref())).await;
        let m = &self.worker.metrics;
        match &outcome {
            Outcome::Sent { .. } => {
                m.count("sent");
                ack(&d).await
            }
            Outcome::Skipped { .. } => {
                m.count("skipped");
                ack(&d).await
            }
            Outcome::Duplicate => {
                m.count("duplicate");
                ack(&d).await
            }
            Outcome::Suppressed { .. } => {
                m.count("suppressed");
                ack(&d).await
            }
            Outcome::Busy => {
                // Same attempt header: waiting for another consumer is not an attempt.
                m.count("busy");
                let queue = self.topology.retry_queue(self.retry_delays[0]);
                self.move_to(&d, &queue, headers_of(&d.properties)).await
            }
            Outcome::Retry { error } if (attempt as usize) < self.retry_delays.len() => {
                m.count("retry");
                m.retries.inc();
                self.record(job_id, SendStatus::Retrying, "retryable", error)
                    .await;
                let mut headers = headers_of(&d.properties);
                headers.insert(
                    broker::ATTEMPT_HEADER.into(),
                    AMQPValue::LongLongInt(attempt + 1),
                );
                let queue = self
                    .topology
                    .retry_queue(self.retry_delays[attempt as usize]);
                self.move_to(&d, &queue, headers).await
            }
            Outcome::Retry { error } => {
                let error = format!("gave up after {} attempts: {error}", attempt + 1);
                self.dead(&d, job_id, "retryable", &error, attempt).await
            }
            Outcome::Dead { error_class, error } => {
                self.dead(&d, job_id, error_class, error, attempt).await
            }
            Outcome::AccountStop { reason, error } => {
                m.count("account_stop");
                // Give the job back uncounted (same attempt header) and pause. Republishing
                // rather than requeueing keeps the broker's delivery count from creeping up.
                // The first stop of the session names the pause.
                self.cause
                    .lock()
                    .expect("pause lock")
                    .get_or_insert_with(|| (*reason, error.clone()));
                self.pause.cancel();
                self.release(job_id, "returned uncounted: account stop")
                    .await;
                let headers = headers_of(&d.properties);
                tracing::debug!(error = %error, "account stop: returning the job to the queue");
                match broker::publish_confirmed(
                    &self.publish,
                    &self.topology.exchange(),
                    broker::RETRY_ROUTING_KEY,
                    &d.data,
                    d.properties.clone().with_headers(headers),
                )
                .await
                {
                    Ok(()) => ack(&d).await,
                    Err(e) => Err(e),
                }
            }
            Outcome::Abandoned => {
                // Shutting down before the job could be handled: give it back for later. The
                // release is best effort (the database may be why we gave up); a claim left
                // behind only delays the next copy by the lease.
                if let Some(id) = job_id {
                    let now = self.worker.clock.now();
                    let _ = store::release_claim(&self.worker.pool, id, "returned: shutdown", now)
                        .await;
                }
                settled(
                    "nack",
                    d.nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await,
                )
            }
        }
    }

    /// Records a failed attempt in the send log, held through a database outage like every
    /// other write of a step.
    async fn record(
        &self,
        job_id: Option<uuid::Uuid>,
        status: SendStatus,
        class: &str,
        error: &str,
    ) {
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
    async fn release(&self, job_id: Option<uuid::Uuid>, why: &str) {
        if let Some(id) = job_id {
            let now = self.worker.clock.now();
            let _ = self
                .worker
                .retry_db(|| store::release_claim(&self.worker.pool, id, why, now))
                .await;
        }
    }

    async fn dead(
        &self,
        d: &Delivery,
        job_id: Option<uuid::Uuid>,
        class: &str,
        error: &str,
        attempt: i64,
    ) -> Result<(), BrokerError> {
        let m = &self.worker.metrics;
        m.count("dead");
        m.dead
            .get_or_create(&ClassLabel {
                class: class.to_owned(),
            })
            .inc();
        let now = self.worker.clock.now();
        let mut recipient = None;
        // The replay count first, then the status: a replay marking jobs `waiting` must never
        // see this death with an older count (see store::mark_replayed).
        if let Some(id) = job_id {
            let replays = broker::header_int(&d.properties, broker::REPLAY_HEADER).unwrap_or(0);
            if replays > 0 {
                let _ = store::record_replays(&self.worker.pool, id, replays).await;
            }
        }
        // The send log is where operators (and the dashboard) list dead letters: record it
        // before the move.
        // With it, for an email, its `email.dead` webhook event (one transaction).
        if let Some(id) = job_id {
            let w = &self.worker;
            let _ = w
                .retry_db(|| {
                    store::record_dead(&w.pool, id, class, error, &w.webhooks.endpoints, now)
                })
                .await;
        }
        if let Some(id) = job_id {
            recipient = store::find_send(&self.worker.pool, id)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.recipient);
        }
        tracing::warn!(?job_id, class, error, "job dead-lettered");
        let mut headers = headers_of(&d.properties);
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
            AMQPValue::LongLongInt(attempt + 1),
        );
        headers.insert(
            broker::DIED_AT_HEADER.into(),
            broker::long_string(&timestamp(now)),
        );
        if let Some(r) = recipient {
            headers.insert(broker::RECIPIENT_HEADER.into(), broker::long_string(&r));
        }
        self.move_to(d, &self.topology.dead_queue(), headers).await
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

    #[test]
    fn an_automatic_concurrency_follows_littles_law_within_its_bounds() {
        // 1,000 a second at 100 ms: 100 in flight, a quarter more, two more.
        assert_eq!(
            auto_concurrency(1000.0, Some(Duration::from_millis(100))),
            127
        );
        // 200 a second at 100 ms, before anything was measured (100 ms assumed).
        assert_eq!(auto_concurrency(200.0, None), 27);
        // SES's default 14 a second needs few.
        assert_eq!(
            auto_concurrency(14.0, Some(Duration::from_millis(60))),
            AUTO_MIN
        );
        // No real limit: bounded, not the whole queue.
        assert_eq!(
            auto_concurrency(1e9, Some(Duration::from_millis(5))),
            AUTO_MAX
        );
        assert_eq!(auto_concurrency(f64::INFINITY, None), AUTO_MAX);
    }

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
