//! The RabbitMQ side: names and arguments of the exchange and queues under a `QUEUE_PREFIX`,
//! their idempotent declaration, and publishing that always waits for the broker's confirm.
//! Owns the topology; never decides what to do with a job (that is the dispatcher's).
//!
//! ```text
//!  ingest ──publish(kind)──▶ <prefix> (direct) ──verification / password_reset / retry──▶ <prefix>.emails (quorum)
//!                               ▲                                                        │
//!                               └──── TTL expires ◀── <prefix>.retry.<n> ◀── retryable ───┤
//!                                                      <prefix>.dead     ◀── permanent ───┘
//! ```

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::job::{Job, JobKind};

/// Header holding how many times a job has been retried (our own, not RabbitMQ's x-death).
pub const ATTEMPT_HEADER: &str = "x-mailroom-attempt";
/// Header holding how many times a job has been replayed from the dead letters.
pub const REPLAY_HEADER: &str = "x-mailroom-replays";
/// Headers a dead letter carries, for `dispatcher dead list` and the dashboard.
pub const ERROR_CLASS_HEADER: &str = "x-mailroom-error-class";
pub const LAST_ERROR_HEADER: &str = "x-mailroom-last-error";
pub const DIED_AT_HEADER: &str = "x-mailroom-died-at";
pub const RECIPIENT_HEADER: &str = "x-mailroom-recipient";
/// Routing key under which expired retries come back to the work queue.
pub const RETRY_ROUTING_KEY: &str = "retry";
/// Longest to wait for the broker to confirm a publish. Past it the connection is treated as
/// broken (a half-open TCP connection would otherwise hang the publisher forever).
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Deliveries after which the broker itself dead-letters a message that keeps coming back
/// unacknowledged (e.g. one that crashes every consumer). A safety net under our own ladder.
pub const DELIVERY_LIMIT: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused the message (nack) for {0}")]
    Nacked(String),
    #[error("RabbitMQ could not route the message to any queue for {0}: is the topology declared?")]
    Unroutable(String),
    #[error("RabbitMQ did not confirm {0} within {CONFIRM_TIMEOUT:?}")]
    ConfirmTimeout(String),
}

/// The names of everything under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    pub fn work_queue(&self) -> String {
        format!("{}.emails", self.prefix)
    }

    /// The n-th delay queue (0-based).
    pub fn retry_queue(&self, n: usize) -> String {
        format!("{}.retry.{}", self.prefix, n + 1)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Declares the exchange, the work queue and its bindings: what a publisher needs for its
    /// messages to land somewhere. Idempotent; ingest and the dispatcher both call it.
    pub async fn declare_work(&self, ch: &Channel) -> Result<(), BrokerError> {
        ch.exchange_declare(
            self.exchange().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        // The dead queue comes first: the work queue's own dead-lettering points at it.
        ch.queue_declare(self.dead_queue().into(), durable(), FieldTable::default())
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.dead_queue()),
        );
        ch.queue_declare(self.work_queue().into(), durable(), args)
            .await?;
        for key in JobKind::ALL
            .iter()
            .map(|k| k.routing_key())
            .chain([RETRY_ROUTING_KEY])
        {
            ch.queue_bind(
                self.work_queue().into(),
                self.exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Declares everything: the work topology plus one delay queue per retry delay. A delay
    /// queue holds messages for its TTL and then dead-letters them back to the exchange under
    /// [`RETRY_ROUTING_KEY`], which the work queue is bound to.
    pub async fn declare_all(&self, ch: &Channel, delays: &[Duration]) -> Result<(), BrokerError> {
        self.declare_work(ch).await?;
        for (n, delay) in delays.iter().enumerate() {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay.as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                long_string(&self.exchange()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                long_string(RETRY_ROUTING_KEY),
            );
            ch.queue_declare(self.retry_queue(n).into(), durable(), args)
                .await?;
        }
        Ok(())
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

pub fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Reads a header as text, whichever string type the broker or publisher used.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads an integer header, whichever integer type it arrived as.
pub fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok(),
        _ => None,
    }
}

/// Connects with a name that shows up in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(name.as_bytes().to_vec()));
    Ok(Connection::connect(url, props).await?)
}

/// Opens a channel in confirm mode: every publish on it is confirmed by the broker.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, BrokerError> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Properties of a job message: persistent, JSON, `message_id = job_id`.
pub fn job_properties(job_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job_id.into())
        .with_headers(headers)
}

/// Publishes one message and waits for the broker's confirm. `mandatory` makes an unroutable
/// message an error instead of a silent drop. Only after this returns Ok may the caller
/// forget the message (mark the outbox row, ack the delivery it came from).
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
    let what = props
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let pending = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            props,
        )
        .await?;
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
        .await
        .map_err(|_| BrokerError::ConfirmTimeout(what.clone()))??;
    check_confirmation(confirm, &what)
}

pub fn check_confirmation(confirm: Confirmation, what: &str) -> Result<(), BrokerError> {
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(what.to_owned())),
        Confirmation::Nack(_) => Err(BrokerError::Nacked(what.to_owned())),
    }
}

/// Publishes a job to the exchange under its kind's routing key, with confirm.
pub async fn publish_job(
    ch: &Channel,
    topo: &Topology,
    job: &Job,
    headers: FieldTable,
) -> Result<(), BrokerError> {
    publish_confirmed(
        ch,
        &topo.exchange(),
        job.kind.routing_key(),
        &job.to_vec(),
        job_properties(&job.job_id.to_string(), headers),
    )
    .await
}

/// Passive declare: the queue's ready-message and consumer counts, without creating it.
pub async fn queue_counts(ch: &Channel, queue: &str) -> Result<(u32, u32), BrokerError> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}
