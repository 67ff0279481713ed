//! Webhook events (`webhook_events`) and their deliveries (`webhook_deliveries`). An event is
//! one row whose id is the `webhook-id` header and whose body is stored as it will be sent, so
//! every attempt carries the same bytes; each endpoint gets a delivery row and a job in the
//! outbox, written in the caller's transaction, so the event exists exactly when the change it
//! reports does.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::outbox;
use crate::domain::Locale;
use crate::events::{self, Endpoints, Event};
use crate::job::{Job, JobKind};

/// Records many events as [`enqueue`] does each, in three statements whatever their number
/// (the dispatcher announces a batch of sends at once). Nothing for an event no endpoint
/// subscribes to.
pub async fn enqueue_many<E: Event>(
    tx: &mut Transaction<'_, Postgres>,
    endpoints: &Endpoints,
    events: &[E],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (mut ids, mut types, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut jobs, mut job_events, mut urls, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut job_rows = Vec::new();
    for event in events {
        let t = event.event_type();
        let to: Vec<&String> = endpoints.urls_for(t).collect();
        if to.is_empty() {
            continue;
        }
        let id = events::new_event_id();
        for url in to {
            let job = Job::new(
                JobKind::Webhook,
                event.user_id().unwrap_or(Uuid::nil()),
                Locale::default_locale(),
                now,
            );
            jobs.push(job.job_id);
            job_events.push(id.clone());
            urls.push(url.clone());
            payloads.push(sqlx::types::Json(job.clone()));
            job_rows.push(job);
        }
        ids.push(id);
        types.push(t.as_str());
        bodies.push(events::body(event, now));
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_events (id, type, body, created_at)
         SELECT id, type, body, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS i(id, type, body)",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let keys: Vec<&str> = job_rows.iter().map(|j| j.kind.routing_key()).collect();
    sqlx::query(
        "WITH d AS (
             INSERT INTO webhook_deliveries (job_id, event_id, url)
             SELECT job_id, event_id, url FROM unnest($1::uuid[], $2::text[], $3::text[])
                    AS i(job_id, event_id, url)
         )
         INSERT INTO outbox (job_id, routing_key, payload, created_at)
         SELECT job_id, routing_key, payload, $6
           FROM unnest($1::uuid[], $4::text[], $5::jsonb[]) AS i(job_id, routing_key, payload)",
    )
    .bind(&jobs)
    .bind(&job_events)
    .bind(&urls)
    .bind(&keys)
    .bind(&payloads)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records an event and, per endpoint that subscribes to it, a delivery and its job in the
/// outbox, all inside the caller's transaction. Nothing when no endpoint takes it. Returns the
/// event id.
pub async fn enqueue<E: Event>(
    tx: &mut Transaction<'_, Postgres>,
    endpoints: &Endpoints,
    event: &E,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let to: Vec<&String> = endpoints.urls_for(event.event_type()).collect();
    if to.is_empty() {
        return Ok(None);
    }
    let id = events::new_event_id();
    sqlx::query("INSERT INTO webhook_events (id, type, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(event.event_type().as_str())
        .bind(events::body(event, now))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    for url in to {
        // The job names the user (nil when the event has none, e.g. a suppressed address
        // nobody signed up with); what to send and where is in the delivery row.
        let job = Job::new(
            JobKind::Webhook,
            event.user_id().unwrap_or(Uuid::nil()),
            Locale::default_locale(),
            now,
        );
        sqlx::query("INSERT INTO webhook_deliveries (job_id, event_id, url) VALUES ($1, $2, $3)")
            .bind(job.job_id)
            .bind(&id)
            .bind(url)
            .execute(&mut **tx)
            .await?;
        outbox::enqueue(tx, &job).await?;
    }
    Ok(Some(id))
}

/// One delivery, as the dispatcher needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub body: String,
}

pub async fn delivery(pool: &PgPool, job_id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.event_id, e.type AS event_type, d.url, e.body
           FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
          WHERE d.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// A webhook delivery parked because its endpoint left `WEBHOOK_URL`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParkedDelivery {
    pub job_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub parked_at: DateTime<Utc>,
}

/// The newest `limit` deliveries parked with `detail` (the dispatcher's words for parking),
/// newest first.
pub async fn parked(
    pool: &PgPool,
    detail: &str,
    limit: i64,
) -> Result<Vec<ParkedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.job_id, d.event_id, e.type AS event_type, d.url, s.updated_at AS parked_at
           FROM sends s
           JOIN webhook_deliveries d USING (job_id)
           JOIN webhook_events e ON e.id = d.event_id
          WHERE s.kind = 'webhook' AND s.status = 'skipped' AND s.detail = $1
          ORDER BY s.updated_at DESC LIMIT $2",
    )
    .bind(detail)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records a delivered webhook in the send log (the receiver's status in the detail) and on
/// the delivery.
pub async fn record_delivered(
    pool: &PgPool,
    job_id: Uuid,
    url: &str,
    status: u16,
    now: DateTime<Utc>,
    latency_ms: i32,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE sends SET status = 'sent', recipient = $2, detail = $3, updated_at = $4,
                          latency_ms = $5, error_class = NULL, last_error = NULL
          WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(url)
    .bind(format!("HTTP {status}"))
    .bind(now)
    .bind(latency_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE webhook_deliveries SET status = $2, delivered_at = $3 WHERE job_id = $1")
        .bind(job_id)
        .bind(i32::from(status))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
