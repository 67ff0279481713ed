//! The outbox relay: moves accepted jobs from the `outbox` table to RabbitMQ. Owns the
//! broker connection of ingest. It must never remove a row from the outbox before the broker has
//! confirmed it, and never lose a row: a row stays pending (and is retried) until confirmed.
//! Several ingest instances can relay at once; `FOR UPDATE SKIP LOCKED` keeps them apart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
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
    Down(String),
}

pub struct Relay {
    pub pool: PgPool,
    pub amqp_url: String,
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

impl Relay {
    pub async fn run(self, cancel: CancellationToken) {
        let mut link: Option<(Connection, Channel)> = None;
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
            let ch = &link.as_ref().expect("connected above").1;
            match self.relay_batch(ch).await {
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
                    if let Some((conn, _)) = link.take() {
                        let _ = conn.close(200, "publishing failed".into()).await;
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
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
                _ = cancel.cancelled() => break,
            }
        }
        if let Some((conn, _)) = link {
            let _ = conn.close(200, "ingest shutting down".into()).await;
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

    async fn connect(&self) -> Result<(Connection, Channel), BrokerError> {
        let conn = broker::connect(&self.amqp_url, "mailroom-ingest-relay").await?;
        self.topology.declare_work(&conn).await?;
        let ch = broker::confirm_channel(&conn).await?;
        Ok((conn, ch))
    }

    fn set_state(&self, s: BrokerState) {
        *self.state.write().expect("state lock") = s;
    }

    /// Publishes one batch of pending rows. Order matters: the rows are locked, published, and
    /// only the confirmed ones are removed, all in one transaction. A crash before the commit
    /// leaves every row pending, so it is published again: at least once, never lost.
    async fn relay_batch(&self, ch: &Channel) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let rows = store::claim_outbox(&mut tx, BATCH).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(rows.len());
        let mut failure: Option<BrokerError> = None;
        for row in &rows {
            let payload = serde_json::to_vec(&row.payload.0).expect("json value serialises");
            let props = broker::job_properties(&row.job_id.to_string(), FieldTable::default());
            match ch
                .basic_publish(
                    self.topology.exchange().into(),
                    row.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push((row.id, row.job_id, confirm)),
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        // One deadline for the whole batch, not one per message: the rows stay locked while we
        // wait, so a broker that never confirms holds them for CONFIRM_TIMEOUT at most.
        let deadline = tokio::time::Instant::now() + broker::CONFIRM_TIMEOUT;
        for (id, job_id, confirm) in pending {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(c)) => match broker::check_confirmation(c, &job_id.to_string()) {
                    Ok(()) => confirmed.push(id),
                    Err(e) => failure = Some(e),
                },
                Ok(Err(e)) => failure = Some(e.into()),
                Err(_) => {
                    failure = Some(BrokerError::ConfirmTimeout(job_id.to_string()));
                    // Past the deadline every remaining confirm is late too.
                    break;
                }
            }
        }
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
}
