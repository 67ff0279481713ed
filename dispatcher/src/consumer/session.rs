//! One session: a connection with its publish (confirm) and consume channels, the steps it
//! starts, and how it ends. One `select!` waits for whatever comes next — a free slot, then a
//! delivery for it, a resize, a pause, a broken channel or shutdown — and the session drains
//! its steps and closes its channels on the way out.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use mailroom::broker::{self, BrokerError};
use mailroom::ses::PauseReason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::concurrency::{Concurrency, RESIZE_EVERY};
use super::settle::Settler;
use super::{Consumer, PauseCause, SessionEnd};

/// One connection's consuming, and everything it holds.
struct Session<'a> {
    consumer: &'a Consumer,
    conn: Connection,
    publish: Arc<Channel>,
    consume: Channel,
    /// The current consumer's tag and stream (a resize replaces both).
    tag: String,
    deliveries: lapin::Consumer,
    concurrency: usize,
    slots: Arc<Semaphore>,
    /// The slot taken for the next delivery, while waiting for it.
    permit: Option<OwnedSemaphorePermit>,
    resize: Interval,
    /// The consumer was cancelled for a resize; its stream is running out.
    resizing: bool,
    /// Cancelled by a step that met an account stop; `cause` says which.
    pause: CancellationToken,
    cause: PauseCause,
    /// Cancelled by a step whose delivery could not be settled: the channel is suspect.
    broken: CancellationToken,
    tasks: JoinSet<()>,
}

/// What the session's `select!` woke up for.
#[expect(
    clippy::large_enum_variant,
    reason = "an event lives only until it is matched, and a delivery is moved on whole"
)]
enum Event {
    /// A slot is free: the next delivery may be taken.
    Slot(OwnedSemaphorePermit),
    /// The consumer's stream gave a delivery, an error, or ended.
    Delivery(Option<Result<Delivery, lapin::Error>>),
    Resize,
    Shutdown,
    Pause,
    Broken,
}

impl Consumer {
    /// One session, from connecting to closing.
    pub(super) async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        let mut session = match self.open().await {
            Ok(s) => s,
            Err(end) => return end,
        };
        // Ready (for `/readyz`) exactly while this session consumes.
        self.consuming
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let end = session.consume_until_end(cancel).await;
        // A pause is named before consuming stops, so that `/readyz` never shows the pause as
        // "connecting" in between.
        if let SessionEnd::Paused(reason, _) = &end {
            *self.paused.lock().expect("pause lock") = Some(*reason);
        }
        self.consuming
            .store(false, std::sync::atomic::Ordering::Relaxed);
        session.close().await;
        end
    }

    async fn connect(&self) -> Result<(Connection, Channel, Channel), BrokerError> {
        let conn =
            broker::connect_with_heartbeat(&self.amqp_url, "mailroom-dispatcher", self.heartbeat)
                .await?;
        self.topology.declare_all(&conn, &self.retry_delays).await?;
        let publish = broker::confirm_channel(&conn).await?;
        let consume = conn.create_channel().await?;
        Ok((conn, publish, consume))
    }

    /// Starts a consumer on `channel` with the prefetch for `concurrency`. The prefetch is set
    /// first: RabbitMQ applies a channel's prefetch to the consumers started after it.
    pub(super) async fn consume(
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

    /// Connects and starts consuming; the end of the session if either fails.
    async fn open(&self) -> Result<Session<'_>, SessionEnd> {
        let (conn, publish, consume) = match self.connect().await {
            Ok(c) => c,
            Err(e) if e.is_fatal() => return Err(SessionEnd::Fatal(e)),
            Err(e) => return Err(SessionEnd::Lost(e.to_string())),
        };
        let concurrency = self.target();
        let (tag, deliveries) = match self.consume(&consume, concurrency).await {
            Ok(c) => c,
            Err(e) => return Err(SessionEnd::Lost(e.to_string())),
        };
        // The concurrency gauge is the sends': the webhooks' lane has a fixed one of its own.
        if self.topology.lane == mailroom::broker::Lane::Emails {
            self.worker.metrics.concurrency.set(concurrency as i64);
        }
        tracing::info!(queue = %self.topology.work_queue(), concurrency, auto = self.concurrency == Concurrency::Auto, "consuming");
        // An automatic concurrency is checked every RESIZE_EVERY. A new prefetch applies only
        // to a new consumer, so a resize cancels the consumer, keeps handling what it already
        // delivered until its stream ends (nothing goes back to the queue), then consumes again.
        let mut resize = tokio::time::interval(RESIZE_EVERY);
        resize.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Session {
            consumer: self,
            conn,
            publish: Arc::new(publish),
            consume,
            tag,
            deliveries,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            permit: None,
            resize,
            resizing: false,
            pause: CancellationToken::new(),
            cause: PauseCause::default(),
            broken: CancellationToken::new(),
            tasks: JoinSet::new(),
        })
    }
}

impl Session<'_> {
    /// Takes deliveries and starts their steps until something ends the session.
    async fn consume_until_end(&mut self, cancel: &CancellationToken) -> SessionEnd {
        let auto = self.consumer.concurrency == Concurrency::Auto;
        loop {
            // Take a slot first: at most `concurrency` steps run at once. Only with a slot in
            // hand is the next delivery taken.
            let event = tokio::select! {
                p = self.slots.clone().acquire_owned(), if self.permit.is_none() => {
                    Event::Slot(p.expect("semaphore never closed"))
                }
                d = self.deliveries.next(), if self.permit.is_some() => Event::Delivery(d),
                _ = cancel.cancelled() => Event::Shutdown,
                _ = self.pause.cancelled() => Event::Pause,
                _ = self.broken.cancelled() => Event::Broken,
                _ = self.resize.tick(), if auto && !self.resizing => Event::Resize,
            };
            if let Some(end) = self.on(event).await {
                return end;
            }
        }
    }

    /// Acts on one event; the end of the session, if it is one.
    async fn on(&mut self, event: Event) -> Option<SessionEnd> {
        match event {
            Event::Slot(permit) => self.permit = Some(permit),
            Event::Delivery(Some(Ok(d))) => self.start(d),
            Event::Delivery(Some(Err(e))) => return Some(SessionEnd::Lost(e.to_string())),
            // Our own cancel for a resize: everything it delivered has been taken.
            Event::Delivery(None) if self.resizing => {
                self.permit = None;
                match self.consumer.consume(&self.consume, self.concurrency).await {
                    Ok((t, d)) => (self.tag, self.deliveries) = (t, d),
                    Err(e) => return Some(SessionEnd::Lost(e.to_string())),
                }
                self.resizing = false;
            }
            Event::Delivery(None) => {
                return Some(SessionEnd::Lost("the broker cancelled the consumer".into()));
            }
            Event::Resize => {
                // Give back the slot held for the next delivery: shrinking takes permits back.
                self.permit = None;
                self.resizing = self
                    .consumer
                    .resize(&self.consume, &self.tag, &self.slots, &mut self.concurrency)
                    .await;
            }
            Event::Shutdown => return Some(SessionEnd::Shutdown),
            Event::Pause => return Some(self.paused()),
            Event::Broken => {
                return Some(SessionEnd::Lost("a delivery could not be settled".into()));
            }
        }
        None
    }

    /// The pause a step asked for, named by the first account stop of the session.
    fn paused(&self) -> SessionEnd {
        let (reason, why) = self
            .cause
            .lock()
            .expect("pause lock")
            .clone()
            .unwrap_or((PauseReason::Account, "account stop".into()));
        SessionEnd::Paused(reason, why)
    }

    /// Starts the step of one delivery in the slot taken for it.
    fn start(&mut self, delivery: Delivery) {
        let permit = self.permit.take().expect("a delivery is taken with a slot");
        while self.tasks.try_join_next().is_some() {}
        let settler = Settler {
            worker: self.consumer.worker.clone(),
            publish: self.publish.clone(),
            topology: self.consumer.topology.clone(),
            retry_delays: self.consumer.retry_delays.clone(),
            pause: self.pause.clone(),
            cause: self.cause.clone(),
        };
        let broken = self.broken.clone();
        self.tasks.spawn(async move {
            if let Err(e) = settler.handle(delivery).await {
                // Not acknowledged: the broker redelivers the job when the channel closes,
                // and the send log stops a resend.
                tracing::warn!(error = %e, "could not settle a delivery; reconnecting");
                broken.cancel();
            }
            drop(permit);
        });
    }

    /// Stops consuming, lets in-flight steps finish (up to the shutdown timeout), and closes.
    async fn close(mut self) {
        self.permit = None;
        // Stop the flow first so no new deliveries arrive while in-flight steps finish.
        let _ = self
            .consume
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(self.consumer.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "in-flight sends did not finish in time; their jobs will be redelivered"
            );
            self.tasks.abort_all();
        }
        // Closing the channel returns every delivery we still hold (prefetched, unstarted) to
        // the queue.
        let _ = self
            .consume
            .close(200, "dispatcher session over".into())
            .await;
        let _ = self
            .publish
            .close(200, "dispatcher session over".into())
            .await;
        let _ = self.conn.close(200, "dispatcher session over".into()).await;
    }
}
