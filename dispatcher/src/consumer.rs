//! The consume loop: connection, topology, prefetch, concurrency, settling each outcome with
//! the broker, pausing on account stops, reconnecting, and graceful shutdown. Owns the
//! broker side of the dispatcher; what happens to a job is [`crate::worker`]'s.
//!
//! Ordering rules, each for a reason:
//! - confirm before ack: a job moved to a retry or the dead queue is acknowledged only after
//!   the broker confirmed the copy, so a crash in between duplicates it rather than loses it;
//! - record before ack: the send log says `sent` before the ack, so a redelivery after a crash
//!   is recognised and not sent twice;
//! - on shutdown, stop consuming first, then let in-flight steps finish and settle, then close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use mailroom::broker::{self, BrokerError, Topology};
use mailroom::job::Job;
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
    pub concurrency: usize,
    /// How long an account stop pauses consumption before SES is asked again.
    pub pause_probe: Duration,
    pub shutdown_timeout: Duration,
    pub paused: Arc<AtomicBool>,
}

enum SessionEnd {
    Shutdown,
    Paused(String),
    Lost(String),
}

impl Consumer {
    /// Consumes until `cancel`; survives broker restarts and account stops.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.session(&cancel).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Paused(why) => {
                    self.paused.store(true, Ordering::Relaxed);
                    self.worker.metrics.pauses.inc();
                    tracing::warn!(reason = %why, probe_in = ?self.pause_probe, "SES account cannot send: consumption paused");
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(self.pause_probe) => {}
                            _ = cancel.cancelled() => return,
                        }
                        match mailroom::ses::get_account(&self.worker.ses).await {
                            Ok(Some(acct)) if !acct.sending_enabled => {
                                tracing::warn!(
                                    "SES still reports sending disabled; staying paused"
                                );
                            }
                            // Enabled, or the endpoint cannot say: try sending again.
                            _ => break,
                        }
                    }
                    self.paused.store(false, Ordering::Relaxed);
                    tracing::info!("resuming consumption");
                }
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
    }

    async fn connect(&self) -> Result<(Connection, Channel, Channel), BrokerError> {
        let conn = broker::connect(&self.amqp_url, "mailroom-dispatcher").await?;
        let publish = broker::confirm_channel(&conn).await?;
        self.topology
            .declare_all(&publish, &self.retry_delays)
            .await?;
        let consume = conn.create_channel().await?;
        // Prefetch matches the concurrency: enough deliveries in hand to keep every send slot
        // busy, no more (the rest stay in the queue for other dispatchers).
        consume
            .basic_qos(
                self.concurrency.min(u16::MAX as usize) as u16,
                BasicQosOptions::default(),
            )
            .await?;
        Ok((conn, publish, consume))
    }

    async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        let (conn, publish, consume) = match self.connect().await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        let tag = format!("dispatcher-{}", uuid::Uuid::new_v4());
        let mut deliveries = match consume
            .basic_consume(
                self.topology.work_queue().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        tracing::info!(queue = %self.topology.work_queue(), concurrency = self.concurrency, "consuming");
        let publish = Arc::new(publish);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let pause = CancellationToken::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let end = loop {
            // Take a slot first: at most `concurrency` steps run at once.
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = cancel.cancelled() => break SessionEnd::Shutdown,
                _ = pause.cancelled() => break SessionEnd::Paused("account stop".into()),
            };
            let next = tokio::select! {
                d = deliveries.next() => d,
                _ = cancel.cancelled() => break SessionEnd::Shutdown,
                _ = pause.cancelled() => break SessionEnd::Paused("account stop".into()),
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                None => break SessionEnd::Lost("the broker cancelled the consumer".into()),
            };
            while tasks.try_join_next().is_some() {}
            let ctx = Settler {
                worker: self.worker.clone(),
                publish: publish.clone(),
                topology: self.topology.clone(),
                retries: self.retry_delays.len(),
                pause: pause.clone(),
            };
            tasks.spawn(async move {
                ctx.handle(delivery).await;
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

/// Turns one step's outcome into broker actions.
struct Settler {
    worker: Arc<Worker>,
    publish: Arc<Channel>,
    topology: Topology,
    retries: usize,
    pause: CancellationToken,
}

impl Settler {
    async fn handle(&self, d: Delivery) {
        let message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let attempt = broker::header_int(&d.properties, broker::ATTEMPT_HEADER).unwrap_or(0);
        let job = Job::from_slice(&d.data);
        let job_id = job.as_ref().ok().map(|j| j.job_id);
        let outcome = self.worker.process(job, message_id.as_deref()).await;
        let m = &self.worker.metrics;
        let result = match &outcome {
            Outcome::Sent { .. } => {
                m.sends.inc(&["sent"]);
                ack(&d).await
            }
            Outcome::Skipped { .. } => {
                m.sends.inc(&["skipped"]);
                ack(&d).await
            }
            Outcome::Duplicate => {
                m.sends.inc(&["duplicate"]);
                ack(&d).await
            }
            Outcome::Retry { error } if (attempt as usize) < self.retries => {
                m.sends.inc(&["retry"]);
                m.retries.inc();
                if let Some(id) = job_id {
                    let now = self.worker.clock.now();
                    let _ = store::record_failure(
                        &self.worker.pool,
                        id,
                        SendStatus::Retrying,
                        None,
                        "retryable",
                        error,
                        now,
                    )
                    .await;
                }
                let mut headers = headers_of(&d.properties);
                headers.insert(
                    broker::ATTEMPT_HEADER.into(),
                    AMQPValue::LongLongInt(attempt + 1),
                );
                let queue = self.topology.retry_queue(attempt as usize);
                self.move_to(&d, &queue, headers).await
            }
            Outcome::Retry { error } => {
                let error = format!("gave up after {} attempts: {error}", attempt + 1);
                self.dead(&d, job_id, "retryable", &error, attempt).await
            }
            Outcome::Dead { error_class, error } => {
                self.dead(&d, job_id, error_class, error, attempt).await
            }
            Outcome::AccountStop { error } => {
                m.sends.inc(&["account_stop"]);
                // Give the job back uncounted (same attempt header) and pause. Republishing
                // rather than requeueing keeps the broker's delivery count from creeping up.
                self.pause.cancel();
                let headers = headers_of(&d.properties);
                tracing::warn!(error = %error, "account stop: returning the job to the queue");
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
                // Shutting down or the database stayed away: give it back for later.
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(BrokerError::from)
            }
        };
        if let Err(e) = result {
            // Not acknowledged: the broker redelivers the job; the send log stops a resend.
            tracing::warn!(error = %e, ?job_id, "could not settle the delivery; it will be redelivered");
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
        m.sends.inc(&["dead"]);
        m.dead.inc(&[class]);
        let now = self.worker.clock.now();
        let mut recipient = None;
        if let Some(id) = job_id {
            let _ = store::record_failure(
                &self.worker.pool,
                id,
                SendStatus::Dead,
                None,
                class,
                error,
                now,
            )
            .await;
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
    d.ack(BasicAckOptions::default()).await?;
    Ok(())
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
