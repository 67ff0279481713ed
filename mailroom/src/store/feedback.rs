//! SES feedback (`ses_events`): storing each event once and carrying out what
//! [`crate::policy::feedback`] decides it does to the send log and the suppression list.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::suppressions::suppressed_event;
use crate::domain::SuppressionReason;
use crate::events::{EmailFeedback, Endpoints};
use crate::policy::feedback::{self as policy, FeedbackRules};
use uuid::Uuid;

/// One SES event about one recipient, as the feedback endpoint read it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSesEvent {
    pub sns_message_id: String,
    /// Lower case: bounce, complaint, delivery, send, reject, delivery_delay, …
    pub kind: String,
    pub subtype: Option<String>,
    pub recipient: Option<String>,
    pub ses_message_id: Option<String>,
    pub diagnostic: Option<String>,
    pub feedback_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What recording one notification did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackOutcome {
    /// Events stored now (0 for a notification SNS delivered before).
    pub recorded: usize,
    /// Addresses that joined the suppression list, with the reason.
    pub suppressed: Vec<(String, SuppressionReason)>,
}

/// Records the events of one SNS notification and acts on them, in one transaction, so that
/// SNS gets its 2xx only for what is durably stored (it retries otherwise), and a redelivery
/// changes nothing:
/// - each event is stored once (SNS message id and recipient are unique together) with the job
///   whose send SES accepted under that message id;
/// - the send log's `delivery` and the suppression list change as [`policy`] decides.
pub async fn record_feedback(
    pool: &PgPool,
    events: &[NewSesEvent],
    rules: FeedbackRules,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<FeedbackOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut out = FeedbackOutcome::default();
    for e in events {
        let Some(id) = store_event(&mut tx, e, now).await? else {
            continue; // delivered before: already acted on
        };
        out.recorded += 1;
        let facts = policy::EventFacts {
            kind: &e.kind,
            subtype: e.subtype.as_deref(),
        };
        if let (Some(new), Some(m)) = (policy::delivery(facts), &e.ses_message_id) {
            apply_delivery(&mut tx, m, new).await?;
        }
        announce(&mut tx, e, hooks, now).await?;
        let Some(recipient) = &e.recipient else {
            continue;
        };
        let reason = match policy::suppression(facts) {
            policy::Suppression::No => None,
            policy::Suppression::Now(reason) => Some(reason),
            policy::Suppression::IfSoftBouncesReachLimit => {
                let recent = recent_soft_bounces(&mut tx, recipient, e, rules).await?;
                policy::soft_bounces_suppress(recent, rules)
                    .then_some(SuppressionReason::SoftBounce)
            }
        };
        if let Some(reason) = reason
            && suppress_for_event(&mut tx, e, recipient, reason, id, hooks, now).await?
        {
            out.suppressed.push((recipient.clone(), reason));
        }
    }
    tx.commit().await?;
    Ok(out)
}

type Tx<'a> = Transaction<'a, Postgres>;

/// Announces the event to the endpoints that subscribe to it (`email.delivered`, `…bounced`,
/// `…complained`, `…delayed`), with the job SES sent it for: its kind, user and reference.
/// Nothing for an event of no job of ours.
async fn announce(
    tx: &mut Tx<'_>,
    e: &NewSesEvent,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (Some(kind), Some(message_id)) = (EmailFeedback::type_of(&e.kind), &e.ses_message_id)
    else {
        return Ok(());
    };
    if hooks.urls_for(kind).next().is_none() {
        return Ok(());
    }
    let job: Option<(Uuid, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT s.job_id, s.kind, s.user_id, j.reference
           FROM sends s LEFT JOIN jobs j USING (job_id)
          WHERE s.ses_message_id = $1 AND s.kind <> 'webhook' LIMIT 1",
    )
    .bind(message_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((job_id, email_kind, user_id, reference)) = job else {
        return Ok(());
    };
    let event = EmailFeedback {
        kind,
        job_id,
        user_id,
        email_kind,
        reference,
        email: e.recipient.clone(),
        ses_message_id: message_id.clone(),
        feedback_type: e.subtype.clone(),
        diagnostic: e.diagnostic.clone(),
    };
    super::webhooks::enqueue(tx, hooks, &event, now).await?;
    Ok(())
}

/// Stores one event with the job SES accepted under its message id. None when SNS delivered
/// it before (the SNS message id and recipient are unique together).
async fn store_event(
    tx: &mut Tx<'_>,
    e: &NewSesEvent,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO ses_events (sns_message_id, type, subtype, recipient, ses_message_id,
                                 job_id, diagnostic, feedback_id, occurred_at, received_at)
         VALUES ($1, $2, $3, $4, $5,
                 (SELECT job_id FROM sends WHERE ses_message_id = $5 LIMIT 1),
                 $6, $7, $8, $9)
         ON CONFLICT (sns_message_id, COALESCE(recipient, '')) DO NOTHING
         RETURNING id",
    )
    .bind(&e.sns_message_id)
    .bind(&e.kind)
    .bind(&e.subtype)
    .bind(&e.recipient)
    .bind(&e.ses_message_id)
    .bind(&e.diagnostic)
    .bind(&e.feedback_id)
    .bind(e.occurred_at)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await
}

/// Sets the send's `delivery` to `new` where [`policy::delivery_replaces`] says so.
async fn apply_delivery(
    tx: &mut Tx<'_>,
    ses_message_id: &str,
    new: policy::Delivery,
) -> Result<(), sqlx::Error> {
    // Read under a row lock, so that two notifications about one message (SNS delivers them
    // concurrently) are applied one after the other.
    let current: Option<Option<String>> = sqlx::query_scalar(
        "SELECT delivery FROM sends WHERE ses_message_id = $1 LIMIT 1 FOR UPDATE",
    )
    .bind(ses_message_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(current) = current
        && policy::delivery_replaces(current.as_deref().and_then(policy::Delivery::parse), new)
    {
        sqlx::query("UPDATE sends SET delivery = $2 WHERE ses_message_id = $1")
            .bind(ses_message_id)
            .bind(new.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Transient bounces of `recipient` within the rules' window before this event (it included).
async fn recent_soft_bounces(
    tx: &mut Tx<'_>,
    recipient: &str,
    e: &NewSesEvent,
    rules: FeedbackRules,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM ses_events
          WHERE lower(recipient) = lower($1) AND type = 'bounce'
            AND subtype LIKE 'Transient%' AND occurred_at > $2",
    )
    .bind(recipient)
    .bind(e.occurred_at - rules.soft_bounce_window)
    .fetch_one(&mut **tx)
    .await
}

/// Puts `recipient` on the list because of event `id`, with `email.suppressed`. False when it
/// was listed already (the first reason is kept).
async fn suppress_for_event(
    tx: &mut Tx<'_>,
    e: &NewSesEvent,
    recipient: &str,
    reason: SuppressionReason,
    id: i64,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let detail = e
        .diagnostic
        .clone()
        .or_else(|| e.subtype.clone())
        .unwrap_or_default();
    let added = sqlx::query(
        "INSERT INTO suppressions (email, reason, detail, event_id, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (lower(email)) DO NOTHING",
    )
    .bind(recipient)
    .bind(reason.as_str())
    .bind(detail)
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if added.rows_affected() == 1 {
        suppressed_event(tx, hooks, recipient, reason, now).await?;
        return Ok(true);
    }
    Ok(false)
}
