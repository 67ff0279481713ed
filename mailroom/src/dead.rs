//! The dead letters: listing them without consuming or reordering anything, and replaying them
//! back to the work queue. Used by `dispatcher dead list`, `dispatcher replay` and the
//! dashboard. Owns the rules of replay: publish with confirm, then ack; bounded by the count
//! at the start; a replay counter in our own header; a job replayed too often is parked.
//!
//! How "without reordering" works: messages are fetched with `basic.get` and *not*
//! acknowledged, so the broker keeps them; when the channel closes, every unacknowledged
//! message returns to its original position in the (classic) dead queue.

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

/// Lists up to `limit` dead letters, oldest first, leaving the queue exactly as it was.
pub async fn list(
    conn: &Connection,
    topo: &Topology,
    limit: usize,
) -> Result<Vec<DeadLetter>, BrokerError> {
    let ch = conn.create_channel().await?;
    let (count, _) = broker::queue_counts(&ch, &topo.dead_queue()).await?;
    let mut out = Vec::new();
    for _ in 0..(count as usize).min(limit) {
        match ch
            .basic_get(topo.dead_queue().into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(m) => out.push(DeadLetter::from_message(
                &m.delivery.properties,
                &m.delivery.data,
            )),
            None => break,
        }
    }
    // Closing the channel returns every message we hold, in its original place.
    ch.close(200, "listing done".into()).await?;
    Ok(out)
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
    /// Dead letters looked at: the queue's count when the replay started.
    pub examined: usize,
    pub matched: usize,
    pub replayed: usize,
    /// Matched, but replayed `MAX_REPLAYS` times already, or not a job: left in place.
    pub parked: usize,
    pub dry_run: bool,
}

pub struct ReplayOptions {
    pub filter: Filter,
    pub dry_run: bool,
    /// Replays per second at most (None: as fast as confirms come back).
    pub rate: Option<f64>,
}

/// Replays matching dead letters to the exchange under their kind's routing key, with a fresh
/// attempt count and the replay counter incremented. Bounded by the queue's count at the start,
/// so messages that die again during the replay are not picked up again in a loop. `progress`
/// is called after each examined message with the report so far.
pub async fn replay(
    conn: &Connection,
    topo: &Topology,
    opts: &ReplayOptions,
    mut progress: impl FnMut(&ReplayReport),
) -> Result<ReplayReport, BrokerError> {
    let get = conn.create_channel().await?;
    let publish = broker::confirm_channel(conn).await?;
    let (count, _) = broker::queue_counts(&get, &topo.dead_queue()).await?;
    let mut report = ReplayReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let pace = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    for _ in 0..count {
        let Some(m) = get
            .basic_get(topo.dead_queue().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = m.delivery;
        report.examined += 1;
        let letter = DeadLetter::from_message(&d.properties, &d.data);
        if !opts.filter.matches(&letter) {
            // Held unacknowledged: it goes back in place when the channel closes.
            progress(&report);
            continue;
        }
        report.matched += 1;
        let kind = Job::from_slice(&d.data).ok().map(|j| j.kind);
        let Some(kind) = kind.filter(|_| letter.replays < MAX_REPLAYS) else {
            report.parked += 1;
            progress(&report);
            continue;
        };
        if opts.dry_run {
            report.replayed += 1;
            progress(&report);
            continue;
        }
        let mut headers = FieldTable::default();
        headers.insert(
            broker::REPLAY_HEADER.into(),
            AMQPValue::LongLongInt(letter.replays + 1),
        );
        let props = broker::job_properties(letter.job_id.as_deref().unwrap_or_default(), headers);
        // Publish with confirm, then ack: a crash in between leaves the job both replayed and
        // dead (a duplicate the send log absorbs), never neither.
        broker::publish_confirmed(
            &publish,
            &topo.exchange(),
            kind.routing_key(),
            &d.data,
            props,
        )
        .await?;
        d.ack(BasicAckOptions::default()).await?;
        report.replayed += 1;
        progress(&report);
        if let Some(p) = pace {
            tokio::time::sleep(p).await;
        }
    }
    get.close(200, "replay done".into()).await?;
    publish.close(200, "replay done".into()).await?;
    Ok(report)
}
