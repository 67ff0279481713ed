//! The dead letters: listing them without consuming anything, and replaying them back to the
//! work queue. Used by `dispatcher dead list`, `dispatcher replay` and the dashboard. Owns the
//! rules of replay: publish with confirm, then ack; each job looked at once per run; a replay
//! counter in our own header; a job replayed too often is parked.
//!
//! How a letter that stays dead is given back (every letter a listing reads, and those a replay
//! leaves: other filters, parked, a dry run): it is fetched with `basic.get`, a *copy* is
//! published to the dead queue with confirm (the same body and properties, every header but the
//! broker's `x-delivery-count`, plus `x-mailroom-pass` naming this run), and only then is the
//! original acknowledged. Not `nack(requeue)`, as before: every requeue counts as a delivery of
//! a quorum queue's message, and a message delivered more often than the queue's delivery limit
//! is dropped (the dead queue has no dead-letter target). RabbitMQ 4.x gives every quorum queue a
//! limit of 20 by default, so about 20 listings would have silently emptied the dead queue while
//! the send log still said "dead". A copy is a new message whose count starts again, and a
//! `basic.get` that is acknowledged counts nothing, so listing never counts against any delivery
//! limit, on any version, without changing the queue's arguments (3.10 does not take
//! `x-delivery-limit: -1`, and a queue declared with other arguments than an existing one is
//! refused with PRECONDITION_FAILED).
//!
//! Publish first, then ack: a crash (or a lost connection) in between leaves the letter twice in
//! the dead queue, never not at all. Replay absorbs such a second copy: once a job is replayed,
//! an older copy of it is removed as a duplicate (`duplicates` in [`ReplayReport`]), and the send
//! log stops a second send. Only a run that breaks off while it holds a letter returns that one
//! letter through the broker, which may count it once.
//!
//! When a run stops: copies go to the tail of the queue, so reading "until the queue has nothing
//! more to give" would go round forever. A run stops when a letter carrying its own pass comes
//! back (it has seen every letter once; that one is given back like the others, so it is given
//! back once in the run too), when the queue is empty, or at the listing's limit. The queue's
//! message count is not trusted: right after messages are returned to a quorum queue it can
//! briefly leave them out. Letters that die while a run goes round are looked at if they come
//! before the run's first copy.
//!
//! The order: letters go back to the tail in the order they came, so the queue keeps its cyclic
//! order, but it starts at another letter after a run (a partial one, or a listing with a
//! limit). So the *listing's* order is defined by the letters themselves, not by the queue: by
//! time of death (the `x-mailroom-died-at` header, in milliseconds), then by job id. It is the
//! same on every listing.
//!
//! Two runs at once take each other's copies as letters they have not seen yet: a listing may
//! then show a letter twice, or stop early. Nothing is lost or duplicated in the queue by that.

use std::time::Duration;

use crate::broker::{self, BrokerError, Topology};
use crate::job::Job;
use lapin::Connection;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

/// After this many replays a dead letter is parked: replay leaves it where it is and says so.
pub const MAX_REPLAYS: i64 = 5;

/// One dead letter as an operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// The job id, or the message id of a message that is not a job.
    pub job_id: Option<String>,
    pub kind: Option<String>,
    pub recipient: Option<String>,
    pub attempts: i64,
    pub error_class: String,
    pub last_error: String,
    pub died_at: Option<String>,
    pub replays: i64,
}

impl From<crate::store::DeadSend> for DeadLetter {
    fn from(r: crate::store::DeadSend) -> Self {
        Self {
            job_id: Some(r.job_id.to_string()),
            kind: (r.kind != "unknown").then_some(r.kind),
            recipient: r.recipient,
            attempts: i64::from(r.attempts),
            error_class: r.error_class.unwrap_or_else(|| "unknown".into()),
            last_error: r.last_error.unwrap_or_default(),
            died_at: Some(
                r.updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            replays: i64::from(r.replays),
        }
    }
}

/// The newest `limit` dead letters as the send log knows them, oldest first (see
/// [`crate::store::dead_letters`]): what the dashboard lists without touching the queue.
pub async fn from_send_log(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    Ok(crate::store::dead_letters(pool, limit)
        .await?
        .into_iter()
        .map(DeadLetter::from)
        .collect())
}

impl DeadLetter {
    fn from_message(props: &lapin::BasicProperties, data: &[u8]) -> Self {
        let job = Job::from_slice(data).ok();
        Self {
            job_id: job
                .as_ref()
                .map(|j| j.job_id.to_string())
                .or_else(|| props.message_id().as_ref().map(|m| m.as_str().to_owned())),
            kind: job.as_ref().map(|j| j.kind.as_str().to_owned()),
            recipient: broker::header_str(props, broker::RECIPIENT_HEADER),
            attempts: broker::header_int(props, broker::ATTEMPT_HEADER).unwrap_or(0),
            // A message the broker itself dead-lettered (delivery limit) has none of our
            // headers: say so rather than leave the class blank.
            error_class: broker::header_str(props, broker::ERROR_CLASS_HEADER)
                .unwrap_or_else(|| "delivery_limit".into()),
            last_error: broker::header_str(props, broker::LAST_ERROR_HEADER).unwrap_or_else(|| {
                "redelivered too often without being acknowledged (the broker's delivery limit)"
                    .into()
            }),
            died_at: broker::header_str(props, broker::DIED_AT_HEADER),
            replays: broker::header_int(props, broker::REPLAY_HEADER).unwrap_or(0),
        }
    }
}

/// Lists up to `limit` dead letters, oldest first, leaving every one of them in the queue.
pub async fn list(
    conn: &Connection,
    topo: &Topology,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let get = conn.create_channel().await?;
    // Declared passively first: a missing queue is an error, not an empty list.
    broker::queue_counts(&get, &topo.dead_queue()).await?;
    let back = GiveBack::open(conn, topo).await?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(m) = get
            .basic_get(topo.dead_queue().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = m.delivery;
        if back.made(&d) {
            // Gone round: every letter has been read once.
            back.give_back(&d).await?;
            break;
        }
        out.push(DeadLetter::from_message(&d.properties, &d.data));
        back.give_back(&d).await?;
    }
    get.close(200, "listing done".into()).await?;
    back.close("listing done").await?;
    sort_by_death(&mut out);
    Ok(out)
}

/// Oldest death first; letters without a time (dead-lettered by the broker itself) first,
/// ties by job id. A stable sort: what compares equal keeps the queue's order.
fn sort_by_death(letters: &mut [DeadLetter]) {
    letters.sort_by(|a, b| (&a.died_at, &a.job_id).cmp(&(&b.died_at, &b.job_id)));
}

/// Gives fetched letters back to the dead queue as fresh copies marked with this run's pass
/// (see the module documentation).
struct GiveBack {
    /// In confirm mode.
    publish: lapin::Channel,
    queue: String,
    pass: String,
}

impl GiveBack {
    async fn open(conn: &Connection, topo: &Topology) -> Result<Self, BrokerError> {
        Ok(Self {
            publish: broker::confirm_channel(conn).await?,
            queue: topo.dead_queue(),
            pass: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// True for a copy this run gave back: the run has gone round.
    fn made(&self, d: &lapin::message::Delivery) -> bool {
        broker::header_str(&d.properties, broker::PASS_HEADER).as_deref() == Some(&self.pass)
    }

    /// Publishes a copy of `d` to the dead queue, waits for the confirm, then acknowledges `d`.
    /// An error before the confirm leaves `d` unacknowledged (the broker keeps it); an ack the
    /// broker did not take leaves both, a duplicate that replay removes.
    async fn give_back(&self, d: &lapin::message::Delivery) -> Result<(), BrokerError> {
        broker::publish_confirmed(&self.publish, "", &self.queue, &d.data, self.copy_of(d)).await?;
        match d.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BrokerError::NotSettled("ack".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The properties of the copy: all of the letter's (message id, content type, our
    /// `x-mailroom-*` headers, the broker's `x-death` of a letter it dead-lettered itself), but
    /// not the broker's delivery count, and with this run's pass.
    fn copy_of(&self, d: &lapin::message::Delivery) -> lapin::BasicProperties {
        let mut headers = d
            .properties
            .headers()
            .as_ref()
            .map(|h| h.inner().clone())
            .unwrap_or_default();
        headers.remove(broker::DELIVERY_COUNT_HEADER);
        headers.insert(broker::PASS_HEADER.into(), broker::long_string(&self.pass));
        d.properties
            .clone()
            .with_delivery_mode(2)
            .with_headers(FieldTable::from(headers))
    }

    async fn close(self, why: &str) -> Result<(), BrokerError> {
        self.publish.close(200, why.into()).await?;
        Ok(())
    }
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All,
    Jobs(Vec<String>),
    ErrorClass(String),
}

impl Filter {
    /// In words, for the audit table and summaries.
    pub fn describe(&self) -> String {
        match self {
            Filter::All => "all".to_owned(),
            Filter::Jobs(ids) => format!("jobs {}", ids.join(",")),
            Filter::ErrorClass(c) => format!("error class {c}"),
        }
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        match self {
            Filter::All => true,
            Filter::Jobs(ids) => d
                .job_id
                .as_ref()
                .is_some_and(|j| ids.iter().any(|i| i == j)),
            Filter::ErrorClass(c) => &d.error_class == c,
        }
    }
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters looked at.
    pub examined: usize,
    pub matched: usize,
    pub replayed: usize,
    /// Matched, but replayed `MAX_REPLAYS` times already, or not a job: left in place.
    pub parked: usize,
    /// Published, but the broker did not take the removal from the dead queue (the channel
    /// closed): not counted as replayed, it is still a dead letter. If it is replayed again the
    /// send log stops a second send.
    #[serde(default)]
    pub failed: usize,
    pub dry_run: bool,
    /// The job ids replayed, so that the caller can tell the send log (see
    /// [`crate::store::mark_replayed`]).
    /// Each with the replay count it went out with.
    #[serde(skip)]
    pub replayed_jobs: Vec<(String, i64)>,
    /// Second copies of a job already replayed in this run (one died, then its duplicate):
    /// removed, since the job is back in the work queue once.
    #[serde(default)]
    pub duplicates: usize,
}

pub struct ReplayOptions {
    pub filter: Filter,
    pub dry_run: bool,
    /// Replays per second at most (None: as fast as confirms come back).
    pub rate: Option<f64>,
}

/// Replays matching dead letters to the exchange under their kind's routing key, with a fresh
/// attempt count and the replay counter incremented. Each job is looked at once per run: when a
/// job replayed in this run comes back dead, the run stops there, so that jobs that die again
/// during a replay are not replayed in a loop; it stops too when a letter it gave back comes
/// round again. Letters it leaves are given back as copies (see the module documentation).
/// `progress` is called after each examined message with the report so far.
pub async fn replay(
    conn: &Connection,
    topo: &Topology,
    opts: &ReplayOptions,
    mut progress: impl FnMut(&ReplayReport),
) -> Result<ReplayReport, BrokerError> {
    let get = conn.create_channel().await?;
    broker::queue_counts(&get, &topo.dead_queue()).await?;
    // Its confirm channel publishes the replays too.
    let back = GiveBack::open(conn, topo).await?;
    // Jobs replayed in this run, with the replay count they went out with: a dead copy carrying
    // that count died again during the run (the run has gone round); one with a lower count is
    // an older second copy. Counts, not clocks: the dispatcher's clock is not ours.
    let mut replayed_now = std::collections::HashMap::new();
    let mut report = ReplayReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let pace = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    loop {
        let Some(m) = get
            .basic_get(topo.dead_queue().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = m.delivery;
        if back.made(&d) {
            // A letter this run left: it has seen every letter once.
            back.give_back(&d).await?;
            break;
        }
        let letter = DeadLetter::from_message(&d.properties, &d.data);
        if let Some(&sent_with) = letter.job_id.as_ref().and_then(|id| replayed_now.get(id)) {
            if letter.replays < sent_with && !opts.dry_run {
                // A second copy that was dead before this run (two copies of one job both
                // died, or a give-back cut short): the job is back in the work queue once
                // already.
                if matches!(d.ack(BasicAckOptions::default()).await, Ok(true)) {
                    report.duplicates += 1;
                    continue;
                }
                // The channel is gone: the broker returns the letter by itself.
                return Ok(report);
            }
            // Replayed in this run and dead again: leave it (and the rest) for the next run.
            back.give_back(&d).await?;
            break;
        }
        report.examined += 1;
        if !opts.filter.matches(&letter) {
            back.give_back(&d).await?;
            progress(&report);
            continue;
        }
        report.matched += 1;
        let kind = Job::from_slice(&d.data).ok().map(|j| j.kind);
        let Some(kind) = kind.filter(|_| letter.replays < MAX_REPLAYS) else {
            report.parked += 1;
            back.give_back(&d).await?;
            progress(&report);
            continue;
        };
        if opts.dry_run {
            report.replayed += 1;
            back.give_back(&d).await?;
            progress(&report);
            continue;
        }
        if republish(&back.publish, topo, &d, &letter, kind).await? {
            report.replayed += 1;
            if let Some(id) = &letter.job_id {
                report.replayed_jobs.push((id.clone(), letter.replays + 1));
                replayed_now.insert(id.clone(), letter.replays + 1);
            }
        } else {
            report.failed += 1;
            progress(&report);
            // The channel is gone: the broker returns the letter by itself.
            return Ok(report);
        }
        progress(&report);
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
    }
    get.close(200, "replay done".into()).await?;
    back.close("replay done").await?;
    Ok(report)
}

/// Publishes one dead letter back to the exchange under its kind's routing key, with its
/// replay counter raised, then removes it from the dead queue. False when the removal was not
/// taken: lapin did not send the ack (its channel is closed) or the broker refused it, so the
/// letter is still dead and the channel is gone.
async fn republish(
    publish: &lapin::Channel,
    topo: &Topology,
    d: &lapin::message::Delivery,
    letter: &DeadLetter,
    kind: crate::job::JobKind,
) -> Result<bool, BrokerError> {
    let mut headers = FieldTable::default();
    headers.insert(
        broker::REPLAY_HEADER.into(),
        AMQPValue::LongLongInt(letter.replays + 1),
    );
    let props = broker::job_properties(letter.job_id.as_deref().unwrap_or_default(), headers);
    // Publish with confirm, then ack: a crash in between leaves the job both replayed and dead
    // (a duplicate the send log absorbs), never neither.
    broker::publish_confirmed(
        publish,
        &topo.exchange(),
        kind.routing_key(),
        &d.data,
        props,
    )
    .await?;
    Ok(matches!(d.ack(BasicAckOptions::default()).await, Ok(true)))
}
