//! `Idempotency-Key` on the API-key `POST`s (the IETF draft "The Idempotency-Key HTTP Header
//! Field", with Stripe's semantics): a handler calls [`begin`] once it has read its body; a
//! repeat gets the stored answer (`Idempotent-Replayed: true`) and the handler returns it
//! without doing anything; a first request gets a [`Reservation`], whose record the handler's
//! store call completes with the answer in the same transaction as the work.
//!
//! The key is per API key *name*, so the two keys of a rotation share their idempotency keys.
//! The fingerprint that tells "the same request" is a SHA-256 of the method, the route and the
//! body's fields in key order, with the value of `password` left out: storing a fast hash of a
//! password would make it crackable offline (a repeat that differs only in its password
//! replays the first answer).
//!
//! A reservation dropped without being completed (an error answer, a timeout, a panic) is
//! released in the background, so the request can be retried at once; one left behind by a
//! crash is taken over once it is older than twice `REQUEST_TIMEOUT`.

use std::time::Duration;

use http::StatusCode;
use http::request::Parts;
use mailroom::policy::idempotency::{self as policy, KeyFacts, Repeat};
use mailroom::store::{self, IdempotencyRecord};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::request::Body;
use crate::response::Resp;
use crate::routes::caller_of;
use crate::state::AppState;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header of a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// What [`begin`] found.
pub enum Begin {
    /// Run the request; complete the reservation (if any) with its answer.
    Run(Option<Reservation>),
    /// Answer this (a replay) and do nothing.
    Answer(Resp),
}

/// A reserved key: complete [`Reservation::record`] in the work's transaction, then call
/// [`Reservation::completed`]. Dropped otherwise, it is released.
pub struct Reservation {
    record: IdempotencyRecord,
    pool: PgPool,
    done: bool,
}

impl Reservation {
    pub fn record(&self) -> &IdempotencyRecord {
        &self.record
    }

    /// The answer was stored by the work: keep the key.
    pub fn completed(mut self) {
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (pool, api_key, key) = (
            self.pool.clone(),
            self.record.api_key.clone(),
            self.record.key.clone(),
        );
        // Only an unanswered reservation is deleted, so a release that runs after the work
        // committed anyway changes nothing. Outside a runtime (never in ingest) it is left to
        // go stale.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store::release_key(&pool, &api_key, &key).await {
                    tracing::warn!(error = %e, "could not release an idempotency key; it frees itself once stale");
                }
            });
        }
    }
}

/// The `Idempotency-Key` of a request: None without one; 400 when it is not 1 to 255 printable
/// ASCII characters. The draft's quoted form (`"…"`, a structured-field string) is taken too.
fn key_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(v) = parts.headers.get(HEADER) else {
        return Ok(None);
    };
    let raw = v.to_str().map_err(|_| bad_key())?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if policy::valid_key(key) {
        Ok(Some(key.to_owned()))
    } else {
        Err(bad_key())
    }
}

/// Checks the header where requests are never replayed (logins): 400 when malformed.
pub fn check_header(parts: &Parts) -> Result<(), ApiError> {
    key_of(parts).map(|_| ())
}

fn bad_key() -> ApiError {
    ApiError::BadRequest(
        "the Idempotency-Key header must be 1 to 255 printable ASCII characters".into(),
    )
}

/// The fingerprint of a request (see the module documentation).
pub fn fingerprint(route: &str, body: &Body) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    let mut fields: Vec<(&String, &Value)> = body.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in fields {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        if k == "password" {
            h.update(b"(left out)");
        } else {
            h.update(v.to_string().as_bytes());
        }
    }
    h.finalize().to_vec()
}

/// Reserves the request's key, or answers a repeat (see the module documentation). `route` is
/// `METHOD path`.
pub async fn begin(
    state: &AppState,
    parts: &Parts,
    route: &str,
    body: &Body,
) -> Result<Begin, ApiError> {
    let Some(key) = key_of(parts)? else {
        return Ok(Begin::Run(None));
    };
    let now = state.clock.now();
    let ttl = chrono::Duration::from_std(state.settings.idempotency_ttl).expect("checked");
    let record = IdempotencyRecord {
        api_key: caller_of(parts).name().to_owned(),
        key,
        route: route.to_owned(),
        fingerprint: fingerprint(route, body),
        created_at: now,
        expires_at: now + ttl,
    };
    let stale = chrono::Duration::from_std(stale_after(state.settings.http.request_timeout))
        .unwrap_or(chrono::Duration::seconds(20));
    match store::reserve_key(&state.pool, &record, now - stale).await? {
        Ok(()) => Ok(Begin::Run(Some(Reservation {
            record,
            pool: state.pool.clone(),
            done: false,
        }))),
        Err(stored) => {
            let facts = KeyFacts {
                same_route: stored.route == record.route,
                same_fingerprint: stored.fingerprint == record.fingerprint,
                answer: stored
                    .status
                    .and_then(|s| u16::try_from(s).ok())
                    .zip(stored.body.as_deref()),
            };
            match policy::repeat(facts) {
                Repeat::Replay { status, body } => Ok(Begin::Answer(replay(status, body))),
                Repeat::Reused => Err(ApiError::IdempotencyKeyReused),
                Repeat::InProgress => Err(ApiError::IdempotencyKeyInProgress),
            }
        }
    }
}

/// A stored answer, again.
fn replay(status: u16, body: &str) -> Resp {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = crate::response::raw_json(status, body.to_owned());
    resp.headers_mut()
        .insert(REPLAYED, http::HeaderValue::from_static("true"));
    resp
}

/// How long a reservation may stay unanswered before another request takes it over.
pub fn stale_after(request_timeout: Duration) -> Duration {
    request_timeout * 2
}
