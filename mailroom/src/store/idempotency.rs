//! Idempotency keys (`idempotency_keys`): a retried request with the same `Idempotency-Key`
//! gets the first request's answer instead of running again. A key is *reserved* (no answer
//! yet) before the work starts, so that a concurrent repeat is told it is in progress, and
//! *completed* with the answer by the work's own statement or transaction ([`complete`]), so
//! that a crash can never store an answer without its work or the work without its answer.
//! What to do with what a lookup finds is [`crate::policy::idempotency`]'s decision.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// One key's record, as the work stores it with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The name of the API key: idempotency keys are per name.
    pub api_key: String,
    pub key: String,
    /// `METHOD path` the key was first used with.
    pub route: String,
    /// A digest of the request (see the ingest's `idempotency` module).
    pub fingerprint: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a key holds when it was not free to reserve.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    pub route: String,
    pub fingerprint: Vec<u8>,
    /// None while the first request still runs.
    pub status: Option<i32>,
    pub body: Option<String>,
}

/// Reserves `record`'s key: true when it is ours to run. A key is free when it was never used,
/// when its answer expired, or when its reservation is older than `stale_before` (the request
/// that made it died without an answer: a crash, a timeout). Otherwise what it holds comes
/// back for the caller to judge.
pub async fn reserve_key(
    pool: &PgPool,
    record: &IdempotencyRecord,
    stale_before: DateTime<Utc>,
) -> Result<Result<(), StoredKey>, sqlx::Error> {
    let reserved: Option<bool> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (api_key, key, route, fingerprint, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (api_key, key) DO UPDATE
            SET route = EXCLUDED.route, fingerprint = EXCLUDED.fingerprint, status = NULL,
                body = NULL, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
          WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
             OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < $7)
         RETURNING true",
    )
    .bind(&record.api_key)
    .bind(&record.key)
    .bind(&record.route)
    .bind(&record.fingerprint)
    .bind(record.created_at)
    .bind(record.expires_at)
    .bind(stale_before)
    .fetch_optional(pool)
    .await?;
    if reserved.is_some() {
        return Ok(Ok(()));
    }
    let stored: Option<StoredKey> = sqlx::query_as(
        "SELECT route, fingerprint, status, body FROM idempotency_keys
          WHERE api_key = $1 AND key = $2",
    )
    .bind(&record.api_key)
    .bind(&record.key)
    .fetch_optional(pool)
    .await?;
    match stored {
        Some(s) => Ok(Err(s)),
        // Released between the two statements: try once more (it is free now).
        None => Box::pin(reserve_key(pool, record, stale_before)).await,
    }
}

/// Stores the answer with the key, inside the work's transaction. An upsert, not an update: if
/// the reservation was released meanwhile (the caller gave up while the work committed), the
/// answer is stored all the same.
pub async fn complete_key(
    tx: &mut Transaction<'_, Postgres>,
    record: &IdempotencyRecord,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(COMPLETE)
        .bind(&record.api_key)
        .bind(&record.key)
        .bind(&record.route)
        .bind(&record.fingerprint)
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(i32::from(status))
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const COMPLETE: &str = "INSERT INTO idempotency_keys
                            (api_key, key, route, fingerprint, created_at, expires_at, status, body)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                        ON CONFLICT (api_key, key) DO UPDATE
                           SET status = EXCLUDED.status, body = EXCLUDED.body";

/// Frees a reservation whose request ended without an answer worth keeping (an error). Only an
/// unanswered reservation is removed, so this is safe whenever it runs.
pub async fn release_key(pool: &PgPool, api_key: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE api_key = $1 AND key = $2 AND status IS NULL")
        .bind(api_key)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
