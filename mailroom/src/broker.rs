//! The RabbitMQ side: names and arguments of the exchange and queues under a `QUEUE_PREFIX`,
//! their idempotent declaration, and publishing that always waits for the broker's confirm.
//! Owns the topology; never decides what to do with a job (that is the dispatcher's).
//!
//! ```text
//!  ingest ──publish(kind)──▶ <prefix> (direct) ──verification / password_reset / retry──▶ <prefix>.emails (quorum)
//!                               ▲                                                        │
//!                               └──── TTL expires ◀── <prefix>.retry.<delay> ◀── retryable ───┤
//!                                                      <prefix>.dead         ◀── permanent ───┘
//! ```
//!
//! Every queue is a quorum queue. Classic queues dead-letter *at most once*: a message whose
//! TTL expires while the work queue has no leader (a node restart) is dropped. Quorum queues
//! with `x-dead-letter-strategy: at-least-once` (which needs `x-overflow: reject-publish`)
//! keep such a message until the target confirms it, so the retry ladder and the delivery
//! limit lose nothing. A delay queue is named by its delay: a new `RETRY_DELAYS` declares new
//! queues instead of colliding with the old ones, which drain into the exchange by themselves.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
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
/// On a dead letter that a listing or a replay gave back: the id of that run, so that the run
/// knows when it has gone round the dead queue (see [`crate::dead`]).
pub const PASS_HEADER: &str = "x-mailroom-pass";
/// The header a quorum queue sets on a message it delivers again: the broker's count, not
/// ours. A copy of a message is a new message, so [`crate::dead`] drops it from its copies.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// Routing key under which expired retries come back to the emails' work queue.
pub const RETRY_ROUTING_KEY: &str = "retry";
/// Routing key under which expired retries come back to the webhooks' queue.
pub const WEBHOOK_RETRY_ROUTING_KEY: &str = "webhooks.retry";
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
    #[error(
        "RabbitMQ did not take the {0} of a delivery (its channel is closed or it was settled already)"
    )]
    NotSettled(String),
    /// A queue exists with other arguments than this version declares. Retrying cannot help:
    /// an operator has to drain and delete it (see docs/operations.md, "Upgrading the queues").
    #[error(
        "queue '{queue}' already exists with different settings ({detail}); this version declares \
         it as a quorum queue with at-least-once dead-lettering. Drain it and delete it \
         (docs/operations.md: \"Upgrading the queues\"), or use another QUEUE_PREFIX"
    )]
    Conflict { queue: String, detail: String },
}

impl BrokerError {
    /// True when retrying cannot help: the process should stop and say so.
    pub fn is_fatal(&self) -> bool {
        matches!(self, BrokerError::Conflict { .. })
    }
}

/// Which of the two lanes of work a [`Topology`] names: emails, or webhook deliveries. Each has
/// its own work queue, delay queues and retry routing key, so that a receiver that never answers
/// holds webhook slots only, and new verification emails never queue behind thousands of
/// webhook events; they share the exchange and the dead queue (a replay routes each letter by
/// its kind, back into its own lane).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lane {
    #[default]
    Emails,
    Webhooks,
}

/// The names of everything under one prefix, for one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    pub lane: Lane,
}

impl Topology {
    /// The emails' lane.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            lane: Lane::Emails,
        }
    }

    /// The same prefix, the webhooks' lane.
    pub fn webhooks(&self) -> Self {
        Self {
            prefix: self.prefix.clone(),
            lane: Lane::Webhooks,
        }
    }

    /// The routing key expired retries of this lane come back under.
    pub fn retry_routing_key(&self) -> &'static str {
        match self.lane {
            Lane::Emails => RETRY_ROUTING_KEY,
            Lane::Webhooks => WEBHOOK_RETRY_ROUTING_KEY,
        }
    }

    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// This lane's work queue: `<prefix>.emails` or `<prefix>.webhooks`.
    pub fn work_queue(&self) -> String {
        match self.lane {
            Lane::Emails => format!("{}.emails", self.prefix),
            Lane::Webhooks => format!("{}.webhooks", self.prefix),
        }
    }

    /// This lane's delay queue for `delay`, named by it (`<prefix>.retry.10s`,
    /// `<prefix>.webhooks.retry.10s`), so that ladders with other delays never collide with it.
    pub fn retry_queue(&self, delay: Duration) -> String {
        let delay = crate::config::format_duration(delay);
        match self.lane {
            Lane::Emails => format!("{}.retry.{delay}", self.prefix),
            Lane::Webhooks => format!("{}.webhooks.retry.{delay}", self.prefix),
        }
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Declares the exchange, both lanes' work queues and their bindings: what a publisher
    /// needs for its messages to land somewhere, whatever their kind. Idempotent; ingest and the
    /// dispatcher both call it.
    pub async fn declare_work(&self, conn: &Connection) -> Result<(), BrokerError> {
        let ch = conn.create_channel().await?;
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
        // The dead queue comes first: the work queues' own dead-lettering points at it. It has
        // no dead-lettering of its own: nothing leaves it but an operator's replay. Nor a
        // delivery limit of its own (RabbitMQ 4.x gives it the default, 20): listing and replay
        // never deliver a letter twice, they give back copies (see `crate::dead`).
        self.declare_queue(conn, &self.dead_queue(), quorum())
            .await?;
        let emails = Topology::new(self.prefix.clone());
        let webhooks = emails.webhooks();
        for lane in [&emails, &webhooks] {
            let mut args = quorum();
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            dead_letter_to(&mut args, "", &self.dead_queue());
            self.declare_queue(conn, &lane.work_queue(), args).await?;
        }
        let bindings = JobKind::ALL
            .iter()
            .map(|k| {
                let lane = if *k == JobKind::Webhook {
                    &webhooks
                } else {
                    &emails
                };
                (lane.work_queue(), k.routing_key())
            })
            .chain([
                (emails.work_queue(), RETRY_ROUTING_KEY),
                (webhooks.work_queue(), WEBHOOK_RETRY_ROUTING_KEY),
            ]);
        for (queue, key) in bindings {
            ch.queue_bind(
                queue.as_str().into(),
                self.exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Before webhooks had a lane of their own, the emails' queue was bound to their key:
        // a binding left from then would put every webhook in both queues. Unbinding what is
        // not bound is no error.
        ch.queue_unbind(
            emails.work_queue().as_str().into(),
            self.exchange().into(),
            JobKind::Webhook.routing_key().into(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    /// Declares everything: the work topology plus, for both lanes, one delay queue per retry
    /// delay. A delay queue holds messages for its TTL and then dead-letters them back to the
    /// exchange under its lane's retry key, which that lane's work queue is bound to.
    pub async fn declare_all(
        &self,
        conn: &Connection,
        delays: &[Duration],
    ) -> Result<(), BrokerError> {
        self.declare_work(conn).await?;
        let emails = Topology::new(self.prefix.clone());
        for lane in [emails.clone(), emails.webhooks()] {
            for delay in delays {
                let mut args = quorum();
                args.insert(
                    "x-message-ttl".into(),
                    AMQPValue::LongLongInt(delay.as_millis() as i64),
                );
                dead_letter_to(&mut args, &self.exchange(), lane.retry_routing_key());
                self.declare_queue(conn, &lane.retry_queue(*delay), args)
                    .await?;
            }
        }
        Ok(())
    }

    /// Declares one durable queue on a channel of its own: a refused declare closes the
    /// channel, and a conflict with an existing queue becomes [`BrokerError::Conflict`].
    async fn declare_queue(
        &self,
        conn: &Connection,
        name: &str,
        args: FieldTable,
    ) -> Result<(), BrokerError> {
        let ch = conn.create_channel().await?;
        match ch.queue_declare(name.into(), durable(), args).await {
            Ok(_) => {
                let _ = ch.close(200, "declared".into()).await;
                Ok(())
            }
            Err(e) => Err(match precondition_failed(&e) {
                Some(detail) => BrokerError::Conflict {
                    queue: name.to_owned(),
                    detail,
                },
                None => e.into(),
            }),
        }
    }
}

/// The broker's words when it refused a declare with PRECONDITION_FAILED (406).
fn precondition_failed(e: &lapin::Error) -> Option<String> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(a) if a.get_id() == 406 => {
            Some(a.get_message().to_string())
        }
        _ => None,
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

/// Dead-letters at least once: the source keeps a message until the target confirmed it.
/// RabbitMQ applies that strategy only together with `x-overflow: reject-publish`.
fn dead_letter_to(args: &mut FieldTable, exchange: &str, routing_key: &str) {
    args.insert("x-dead-letter-exchange".into(), long_string(exchange));
    args.insert("x-dead-letter-routing-key".into(), long_string(routing_key));
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
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

/// The heartbeat [`connect`] asks for: `AMQP_HEARTBEAT`'s default. RabbitMQ's own default
/// (60 s) would leave a silent partition unnoticed for two minutes.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Connects with a name that shows up in the management UI, with [`DEFAULT_HEARTBEAT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    connect_with_heartbeat(url, name, DEFAULT_HEARTBEAT).await
}

/// Connects with a name that shows up in the management UI, asking for `heartbeat`.
///
/// `url` may list several nodes of a cluster, comma-separated. Each call starts at the node
/// after the one the previous call started at and tries them all in turn: a client whose node
/// went away reconnects to another, and several clients spread over the nodes.
///
/// The heartbeat is what notices a peer that went silent without closing anything (a network
/// partition, a frozen host): lapin gives the connection up with an error when nothing at all
/// has arrived for twice the negotiated heartbeat, which fails its consumers and pending
/// confirms. Unless a node's URL names a `heartbeat` of its own, `heartbeat` is proposed, and
/// RabbitMQ takes the lower of it and its own setting.
pub async fn connect_with_heartbeat(
    url: &str,
    name: &str,
    heartbeat: Duration,
) -> Result<Connection, BrokerError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seconds = u16::try_from(heartbeat.as_secs().max(1)).unwrap_or(u16::MAX);
    let mut last = None;
    for i in 0..urls.len().max(1) {
        let u = urls
            .get((start + i) % urls.len().max(1))
            .copied()
            .unwrap_or(url);
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(name.as_bytes().to_vec()));
        let attempt = match u.parse::<AMQPUri>() {
            Ok(mut uri) => {
                uri.query.heartbeat.get_or_insert(seconds);
                Connection::connect_uri(uri, props).await
            }
            // Not a URL lapin can read: let lapin itself say why.
            Err(_) => Connection::connect(u, props).await,
        };
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt").into())
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
