//! The outbox relay: moves accepted jobs from the `outbox` table to RabbitMQ. Owns the
//! broker connection of ingest. It must never remove a row from the outbox before the broker has
//! confirmed it, and never lose a row: a row stays pending (and is retried) until confirmed.
//! Several ingest instances can relay at once; `FOR UPDATE SKIP LOCKED` keeps them apart.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use mailroom::broker::{self, BrokerError, Topology};
use mailroom::clock::Clock;
use mailroom::store;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Rows per transaction: their publishes are pipelined and their confirms awaited together.
const BATCH: i64 = 200;
/// How long the relay lets rows gather after a batch that found some (see `run`).
const GATHER: Duration = Duration::from_millis(5);
/// The pause after a first failure; it doubles with each failure in a row, up to
/// [`LONGEST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const LONGEST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest to wait for the broker to answer a close: one that went silent never does.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sleeps `d` unless cancelled first; false when cancelled.
async fn sleep_unless_cancelled(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Waits out `backoff`, then doubles it (up to [`LONGEST_BACKOFF`]); false when cancelled
/// meanwhile.
async fn back_off(backoff: &mut Duration, cancel: &CancellationToken) -> bool {
    if !sleep_unless_cancelled(*backoff, cancel).await {
        return false;
    }
    *backoff = (*backoff * 2).min(LONGEST_BACKOFF);
    true
}

/// What /readyz reports about the broker.
#[derive(Debug, Clone)]
pub enum BrokerState {
    Connecting,
    Connected,
    /// Connected, but RabbitMQ reads nothing the relay publishes (`connection.blocked`: a
    /// memory or disk alarm), for the reason it gives (e.g. "low on memory").
    Blocked(String),
    Down(String),
}

pub struct Relay {
    pub pool: PgPool,
    pub amqp_url: String,
    /// `AMQP_HEARTBEAT`: how soon a broker that went silent is noticed (twice this).
    pub heartbeat: Duration,
    pub topology: Topology,
    /// Woken after every accepted event so that the job goes out at once, not at the next poll.
    pub wake: Arc<Notify>,
    /// Polling catches rows written by other instances or left over from before a restart.
    pub interval: Duration,
    pub state: Arc<RwLock<BrokerState>>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A publish handed to lapin and its confirm, awaited as one: it may not even be written yet
/// (lapin writes nothing on a blocked connection).
type Settling = Pin<Box<dyn Future<Output = Result<Confirmation, lapin::Error>> + Send>>;

/// An outbox row whose publish waits for the broker's confirm.
struct Pending {
    id: i64,
    job_id: uuid::Uuid,
    confirm: Settling,
}

/// One connection to the broker: its confirm channel, and its events (an error that ended it,
/// RabbitMQ blocking and unblocking it).
struct Link {
    conn: Connection,
    ch: Channel,
    events: Pin<Box<dyn Stream<Item = lapin::Event> + Send>>,
    /// The error lapin reported for the connection, if it did.
    error: Option<String>,
    /// The reason RabbitMQ gave when it last blocked the connection.
    blocked_because: Option<String>,
    /// Publishes that were waiting when RabbitMQ blocked the connection. RabbitMQ takes them
    /// once the block ends; their rows are removed from the outbox when it has confirmed them,
    /// so that they are not published a second time. The rows are not locked meanwhile: a
    /// block can last for hours, too long for a transaction.
    unsettled: Vec<Pending>,
}

impl Link {
    /// Why the connection is no longer usable, if it is not: lapin ends it when it missed the
    /// heartbeats (a silent partition) or the broker closed it.
    fn lost(&self) -> Option<String> {
        (!self.conn.status().connected()).then(|| {
            let why = self.error.as_deref().unwrap_or("the connection was closed");
            format!("RabbitMQ: {why}")
        })
    }

    /// Why RabbitMQ blocks the connection, while it does. lapin writes nothing then (not even
    /// a publish, so `basic_publish` itself would wait), until RabbitMQ unblocks it.
    fn blocked(&self) -> Option<String> {
        self.conn.status().blocked().then(|| {
            self.blocked_because
                .clone()
                .unwrap_or_else(|| "blocked by RabbitMQ".into())
        })
    }

    /// Returns once RabbitMQ has blocked the connection; never, if it does not.
    async fn until_blocked(&mut self) {
        while !self.conn.status().blocked() {
            match self.events.next().await {
                Some(event) => self.note(event),
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Takes in what the broker or lapin said about the connection; the relay looks at the
    /// connection's state at the top of its loop.
    fn note(&mut self, event: lapin::Event) {
        match event {
            lapin::Event::Error(e) => self.error = Some(e.to_string()),
            lapin::Event::ConnectionBlocked(reason) => self.blocked_because = Some(reason),
            _ => {}
        }
    }

    /// Closes the connection, without waiting long for a broker that may not answer (a
    /// silent one, or one that blocks the connection: lapin cannot even write the close).
    async fn close(self, why: &str) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.conn.close(200, why.into())).await;
    }

    /// Waits for the confirms of `pending`, under one deadline. Gives back the rows confirmed
    /// and the first failure. If RabbitMQ blocks the connection meanwhile, what is still
    /// waiting goes to [`Link::unsettled`]: no confirm comes before the block ends.
    async fn confirms(&mut self, pending: Vec<Pending>) -> (Vec<i64>, Option<BrokerError>) {
        let mut confirmed = Vec::with_capacity(pending.len());
        let mut failure = None;
        // One deadline for the whole batch, not one per message: the rows stay locked while we
        // wait, so a broker that never confirms holds them for CONFIRM_TIMEOUT at most.
        let deadline = tokio::time::Instant::now() + broker::CONFIRM_TIMEOUT;
        let mut pending = pending.into_iter();
        while let Some(mut p) = pending.next() {
            let waited = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, &mut p.confirm) => Some(r),
                _ = self.until_blocked() => None,
            };
            match waited {
                None => {
                    self.unsettled.push(p);
                    self.unsettled.extend(pending);
                    break;
                }
                Some(Ok(Ok(c))) => match broker::check_confirmation(c, &p.job_id.to_string()) {
                    Ok(()) => confirmed.push(p.id),
                    Err(e) => failure = Some(e),
                },
                Some(Ok(Err(e))) => failure = Some(e.into()),
                Some(Err(_)) => {
                    failure = Some(BrokerError::ConfirmTimeout(p.job_id.to_string()));
                    // Past the deadline every remaining confirm is late too.
                    break;
                }
            }
        }
        (confirmed, failure)
    }
}

impl Relay {
    pub async fn run(self, cancel: CancellationToken) {
        let mut link: Option<Link> = None;
        let mut backoff = FIRST_BACKOFF;
        while !cancel.is_cancelled() {
            if link.is_none() {
                match self.connect().await {
                    Ok(l) => {
                        tracing::info!("relay connected to RabbitMQ");
                        self.set_state(BrokerState::Connected);
                        // The backoff is not reset here: a broker that accepts connections but
                        // refuses publishes (no quorum, a full disk) would otherwise make a tight
                        // connect/publish/fail loop. Only a batch that went through resets it.
                        link = Some(l);
                    }
                    Err(e) => {
                        self.cannot_connect(&e, backoff);
                        if !back_off(&mut backoff, &cancel).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let l = link.as_mut().expect("connected above");
            // An idle relay publishes nothing, and would learn only at its next publish that
            // its connection is gone (while /readyz said "connected"): check between batches.
            if let Some(why) = l.lost() {
                tracing::warn!(error = %why, retry_in = ?backoff, "relay lost RabbitMQ; reconnecting after a pause");
                self.set_state(BrokerState::Down(why));
                link = None;
                if !back_off(&mut backoff, &cancel).await {
                    break;
                }
                continue;
            }
            if let Some(reason) = l.blocked() {
                if !self.is_blocked() {
                    tracing::warn!(%reason, "RabbitMQ blocks the relay's connection (a memory or disk alarm); jobs stay in the outbox");
                }
                self.set_state(BrokerState::Blocked(reason));
                // Nothing is published until RabbitMQ unblocks the connection (an event), or
                // the connection ends; lapin's own state is read again every interval.
                tokio::select! {
                    Some(event) = l.events.next() => l.note(event),
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
            if self.is_blocked() {
                tracing::info!("RabbitMQ unblocked the relay's connection");
                self.set_state(BrokerState::Connected);
            }
            // What was waiting when the block began goes first, before any row is claimed.
            let step = if l.unsettled.is_empty() {
                self.relay_batch(l).await
            } else {
                self.settle(l).await.map(|()| BATCH as usize)
            };
            match step {
                // A full batch means more may be waiting: go again without sleeping.
                Ok(n) if n as i64 == BATCH => {
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                Ok(n) => {
                    backoff = FIRST_BACKOFF;
                    // Under load every signup wakes the relay, and a relay that ran at once
                    // would move a few rows per transaction: a commit, a claim and a delete
                    // for each handful. Waiting a moment after a batch that found rows lets
                    // the next one gather what arrives meanwhile. An idle relay (no rows)
                    // does not wait, so a lone signup is published at once.
                    if n > 0 && !sleep_unless_cancelled(GATHER, &cancel).await {
                        break;
                    }
                }
                Err(RelayError::Broker(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "publishing failed; reconnecting after a pause");
                    self.set_state(BrokerState::Down(e.to_string()));
                    if let Some(l) = link.take() {
                        l.close("publishing failed").await;
                    }
                    if !back_off(&mut backoff, &cancel).await {
                        break;
                    }
                    continue;
                }
                Err(RelayError::Db(e)) => {
                    tracing::warn!(error = %e, "relay cannot read the outbox");
                    if !back_off(&mut backoff, &cancel).await {
                        break;
                    }
                    continue;
                }
            }
            let l = link.as_mut().expect("connected above");
            if l.blocked().is_some() {
                // Blocked during the batch: say so now, not after the next interval.
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
                // Whatever happened to the connection, the top of the loop looks at it now.
                Some(event) = l.events.next() => l.note(event),
                _ = cancel.cancelled() => break,
            }
        }
        if let Some(l) = link {
            l.close("ingest shutting down").await;
        }
    }

    /// Says why the broker cannot be reached, and records it for /readyz.
    fn cannot_connect(&self, e: &BrokerError, retry_in: Duration) {
        if e.is_fatal() {
            // A queue declared with other settings: retrying cannot fix it, but accepted
            // events are safe in the outbox; say so loudly.
            tracing::error!(error = %e, ?retry_in, "relay cannot declare the queues; jobs stay in the outbox");
        } else {
            tracing::warn!(error = %e, ?retry_in, "relay cannot reach RabbitMQ; jobs stay in the outbox");
        }
        self.set_state(BrokerState::Down(e.to_string()));
    }

    async fn connect(&self) -> Result<Link, BrokerError> {
        let conn =
            broker::connect_with_heartbeat(&self.amqp_url, "mailroom-ingest-relay", self.heartbeat)
                .await?;
        // Listening from the start: lapin hands events only to listeners that exist.
        let events = Box::pin(conn.events_listener());
        self.topology.declare_work(&conn).await?;
        let ch = broker::confirm_channel(&conn).await?;
        Ok(Link {
            conn,
            ch,
            events,
            error: None,
            blocked_because: None,
            unsettled: Vec::new(),
        })
    }

    fn set_state(&self, s: BrokerState) {
        *self.state.write().expect("state lock") = s;
    }

    fn is_blocked(&self) -> bool {
        matches!(
            *self.state.read().expect("state lock"),
            BrokerState::Blocked(_)
        )
    }

    /// After a block: waits for the publishes that were waiting when it began, and removes the
    /// rows RabbitMQ confirmed from the outbox. The others stay pending, to be published again.
    async fn settle(&self, l: &mut Link) -> Result<(), RelayError> {
        let pending = std::mem::take(&mut l.unsettled);
        let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
        let (confirmed, failure) = l.confirms(pending).await;
        if !confirmed.is_empty() {
            let mut tx = self.pool.begin().await?;
            store::remove_published(&mut tx, &confirmed).await?;
            tx.commit().await?;
            self.metrics.published.inc_by(confirmed.len() as u64);
        }
        match failure {
            Some(e) => {
                let left =
                    |id: &i64| !confirmed.contains(id) && !l.unsettled.iter().any(|p| p.id == *id);
                let failed: Vec<i64> = ids.into_iter().filter(left).collect();
                let _ = store::note_publish_failure(&self.pool, &failed, &e.to_string()).await;
                Err(e.into())
            }
            None => Ok(()),
        }
    }

    /// Publishes one batch of pending rows. Order matters: the rows are locked, published, and
    /// only the confirmed ones are removed, all in one transaction. A crash before the commit
    /// leaves every row pending, so it is published again: at least once, never lost. If
    /// RabbitMQ blocks the connection meanwhile, the rows not yet handed to lapin stay pending,
    /// and those handed to it wait in [`Link::unsettled`] for the end of the block.
    async fn relay_batch(&self, l: &mut Link) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = store::claim_outbox(&mut tx, BATCH).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(rows.len());
        let mut failure: Option<BrokerError> = None;
        for row in &rows {
            let mut publish = self.publish(&l.ch, row);
            tokio::select! {
                biased;
                published = &mut publish => match published {
                    Ok(confirm) => pending.push(Pending {
                        id: row.id,
                        job_id: row.job_id,
                        confirm: Box::pin(confirm),
                    }),
                    Err(e) => {
                        failure = Some(e.into());
                        break;
                    }
                },
                // Handed to lapin, which writes it once the block ends: it is waited for then.
                _ = l.until_blocked() => {
                    pending.push(Pending {
                        id: row.id,
                        job_id: row.job_id,
                        confirm: Box::pin(async move { publish.await?.await }),
                    });
                    break;
                }
            }
        }
        let (confirmed, failed_confirm) = l.confirms(pending).await;
        failure = failure.or(failed_confirm);
        store::remove_published(&mut tx, &confirmed).await?;
        tx.commit().await?;
        self.metrics.published.inc_by(confirmed.len() as u64);
        if !confirmed.is_empty() {
            tracing::debug!(count = confirmed.len(), "relayed jobs to RabbitMQ");
        }
        match failure {
            Some(e) => {
                let failed: Vec<i64> = rows
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| !confirmed.contains(id))
                    .collect();
                let _ = store::note_publish_failure(&self.pool, &failed, &e.to_string()).await;
                Err(e.into())
            }
            None => Ok(confirmed.len()),
        }
    }

    /// The publish of one row, as a future of its own (it owns a handle on the channel and
    /// the payload), so that it can be kept waiting past the batch.
    fn publish(
        &self,
        ch: &Channel,
        row: &store::OutboxRow,
    ) -> Pin<Box<dyn Future<Output = Result<lapin::PublisherConfirm, lapin::Error>> + Send>> {
        let ch = ch.clone();
        let exchange = self.topology.exchange();
        let routing_key = row.routing_key.clone();
        let payload = serde_json::to_vec(&row.payload.0).expect("json value serialises");
        let props = broker::job_properties(&row.job_id.to_string(), FieldTable::default());
        Box::pin(async move {
            ch.basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                props,
            )
            .await
        })
    }
}
