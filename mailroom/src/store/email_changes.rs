//! Email changes (`email_changes`, `email_change_tokens`): a user's address changes only when
//! the new address confirms (and, with `confirm_old`, the old one too); the old address is told,
//! with a link that cancels. Until the change commits the old address keeps working. One pending
//! change per user: a newer request cancels the older one. At the commit the new address is
//! checked again — a verified user may have taken it meanwhile — and every pending link and code
//! of the user dies.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::idempotency::{IdempotencyRecord, complete_key};
use super::outbox::enqueue;
use super::requests::{recent_queued, record_request};
use super::webhooks;
use crate::domain::{EmailAddress, Locale, TokenHash};
use crate::events::{Endpoints, UserEmailChanged};
use crate::job::{Job, JobKind, Method};
use crate::policy::requests::{self as policy, AddressLimits, RequestOutcome};

/// A request to change a user's address.
#[derive(Debug, Clone)]
pub struct ChangeRequest<'a> {
    pub user_id: Uuid,
    pub new_email: &'a EmailAddress,
    /// `EMAIL_CHANGE_CONFIRM=both`: the old address confirms too.
    pub confirm_old: bool,
    pub method: Method,
    pub return_to: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
    pub api_key: &'a str,
    pub idempotency: Option<&'a IdempotencyRecord>,
    /// The new address's limits: it is mailed by each request.
    pub limits: AddressLimits,
}

/// What became of a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRequested {
    Queued {
        change_id: Uuid,
    },
    NoSuchUser,
    /// The new address is the user's own already.
    Same,
    /// A verified user holds the new address.
    Taken,
    /// The new address is on the suppression list: it could never confirm.
    Suppressed,
    /// The new address got as many change emails as its limits allow lately.
    Limited,
}

/// The body of a change request's 202 (stored with its idempotency key too).
pub fn change_answer(change_id: Uuid) -> String {
    serde_json::json!({ "change_id": change_id }).to_string()
}

/// Records a change request and queues its two emails (the confirmation to the new address,
/// the notice to the old), in one transaction; any pending change of the user is cancelled.
pub async fn request_email_change(
    pool: &PgPool,
    req: &ChangeRequest<'_>,
    now: DateTime<Utc>,
) -> Result<ChangeRequested, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user: Option<(String, String)> =
        sqlx::query_as("SELECT email, locale FROM users WHERE id = $1 FOR UPDATE")
            .bind(req.user_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((old_email, locale)) = user else {
        return Ok(ChangeRequested::NoSuchUser);
    };
    let new = req.new_email.as_str();
    if old_email.eq_ignore_ascii_case(new) {
        return Ok(ChangeRequested::Same);
    }
    let (taken, suppressed): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND email_verified
                         AND id <> $2),
                EXISTS (SELECT 1 FROM suppressions
                         WHERE lower(email) IN (lower($1), suppression_key($1)))",
    )
    .bind(new)
    .bind(req.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if taken {
        return Ok(ChangeRequested::Taken);
    }
    if suppressed {
        return Ok(ChangeRequested::Suppressed);
    }
    // Each request mails the new address: its per-address limits hold, under the address's
    // lock, as for resends and resets (one email a minute, five an hour by default).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mailroom-request:' || lower($1)))")
        .bind(new)
        .execute(&mut *tx)
        .await?;
    let kind = JobKind::EmailChangeConfirm;
    let (minute, hour) = recent_queued(&mut tx, req.new_email, kind, now).await?;
    let outcome = policy::within_limits(minute, hour, req.limits);
    if outcome != RequestOutcome::Queued {
        record_request(
            &mut tx,
            req.new_email,
            kind,
            outcome,
            None,
            Some(req.api_key),
            now,
        )
        .await?;
        tx.commit().await?;
        return Ok(ChangeRequested::Limited);
    }
    sqlx::query(
        "UPDATE email_changes SET cancelled_at = $2
          WHERE user_id = $1 AND cancelled_at IS NULL AND committed_at IS NULL",
    )
    .bind(req.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let change_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO email_changes (change_id, user_id, old_email, new_email, confirm_old,
                                    created_at, expires_at, return_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(change_id)
    .bind(req.user_id)
    .bind(&old_email)
    .bind(new)
    .bind(req.confirm_old)
    .bind(now)
    .bind(req.expires_at)
    .bind(req.return_to)
    .execute(&mut *tx)
    .await?;
    let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
    let mut confirm_job = None;
    for kind in [JobKind::EmailChangeConfirm, JobKind::EmailChangeNotice] {
        let mut job = Job::new(kind, req.user_id, locale.clone(), now)
            .from_caller(req.api_key, None)
            .with_return_to(req.return_to.map(str::to_owned));
        job.change_id = Some(change_id);
        if kind == JobKind::EmailChangeConfirm {
            job.method = req.method;
            confirm_job = Some(job.job_id);
        }
        enqueue(&mut tx, &job).await?;
    }
    let api_key = Some(req.api_key);
    record_request(
        &mut tx,
        req.new_email,
        kind,
        outcome,
        confirm_job,
        api_key,
        now,
    )
    .await?;
    if let Some(record) = req.idempotency {
        complete_key(&mut tx, record, 202, &change_answer(change_id)).await?;
    }
    tx.commit().await?;
    Ok(ChangeRequested::Queued { change_id })
}

/// A change as its emails need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailChange {
    pub change_id: Uuid,
    pub user_id: Uuid,
    pub old_email: String,
    pub new_email: String,
    pub confirm_old: bool,
    pub expires_at: DateTime<Utc>,
    pub return_to: Option<String>,
    /// Neither cancelled nor committed, and not expired.
    pub pending: bool,
}

/// The change `change_id`, pending or not.
pub async fn find_email_change(
    pool: &PgPool,
    change_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<EmailChange>, sqlx::Error> {
    sqlx::query_as(
        "SELECT change_id, user_id, old_email, new_email, confirm_old, expires_at, return_to,
                cancelled_at IS NULL AND committed_at IS NULL AND expires_at > $2 AS pending
           FROM email_changes WHERE change_id = $1",
    )
    .bind(change_id)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// The role of a change's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRole {
    ConfirmNew,
    ConfirmOld,
    Cancel,
}

impl ChangeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeRole::ConfirmNew => "confirm_new",
            ChangeRole::ConfirmOld => "confirm_old",
            ChangeRole::Cancel => "cancel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            ChangeRole::ConfirmNew,
            ChangeRole::ConfirmOld,
            ChangeRole::Cancel,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Stores the hash of one of a pending change's links; false when the change is no longer
/// pending (nothing to send).
pub async fn add_change_token(
    pool: &PgPool,
    change_id: Uuid,
    role: ChangeRole,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO email_change_tokens (token_hash, change_id, role, expires_at, created_at)
         SELECT $1, change_id, $3, expires_at, $4 FROM email_changes
          WHERE change_id = $2 AND cancelled_at IS NULL AND committed_at IS NULL
            AND expires_at > $4
         ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(hash.as_str())
    .bind(change_id)
    .bind(role.as_str())
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A change link as a page sees it before it is used: its role and whether it still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeLink {
    Valid(ChangeRole),
    /// Used, or its change was cancelled or made.
    Spent,
    Expired,
    Unknown,
}

pub async fn change_link(
    pool: &PgPool,
    hash: &TokenHash,
    now: DateTime<Utc>,
) -> Result<ChangeLink, sqlx::Error> {
    let row: Option<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT t.role, t.used_at IS NOT NULL OR c.cancelled_at IS NOT NULL
                        OR c.committed_at IS NOT NULL,
                t.expires_at <= $2, true
           FROM email_change_tokens t JOIN email_changes c USING (change_id)
          WHERE t.token_hash = $1",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => ChangeLink::Unknown,
        Some((_, true, _, _)) => ChangeLink::Spent,
        Some((_, _, true, _)) => ChangeLink::Expired,
        Some((role, ..)) => ChangeLink::parse_valid(&role),
    })
}

impl ChangeLink {
    fn parse_valid(role: &str) -> Self {
        ChangeRole::parse(role).map_or(ChangeLink::Unknown, ChangeLink::Valid)
    }
}

/// What using a change's link (or its code) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeUse {
    /// The change is made: the user's address is `new_email`, verified.
    Committed {
        user_id: Uuid,
        new_email: String,
    },
    /// This side confirmed; the other address must confirm too.
    Waiting,
    Cancelled,
    /// A verified user took the new address meanwhile: nothing changed (409 `email_taken`).
    Taken,
    Spent,
    Expired,
    Unknown,
}

/// Uses a change link: confirms its side or cancels the change, and commits the change when
/// both sides it needs have confirmed. The change row is locked first, so concurrent uses of
/// its links are applied one after the other.
pub async fn use_change_link(
    pool: &PgPool,
    hash: &TokenHash,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<ChangeUse, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT c.change_id, t.role
           FROM email_change_tokens t JOIN email_changes c USING (change_id)
          WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > $2
            AND c.cancelled_at IS NULL AND c.committed_at IS NULL
          FOR UPDATE OF c, t",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((change_id, role)) = row else {
        tx.rollback().await?;
        return Ok(match change_link(pool, hash, now).await? {
            ChangeLink::Unknown => ChangeUse::Unknown,
            ChangeLink::Expired => ChangeUse::Expired,
            // Valid here: it became valid again? Not possible; spent it is.
            ChangeLink::Spent | ChangeLink::Valid(_) => ChangeUse::Spent,
        });
    };
    let role = ChangeRole::parse(&role).unwrap_or(ChangeRole::Cancel);
    let outcome = apply(&mut tx, change_id, role, hooks, now).await?;
    if outcome == ChangeUse::Taken {
        // Nothing changes, and the link still works once the address is free again.
        tx.rollback().await?;
        return Ok(outcome);
    }
    sqlx::query("UPDATE email_change_tokens SET used_at = $2 WHERE token_hash = $1")
        .bind(hash.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Confirms the new address of a change with a code that [`super::check_code`] matched for
/// the change's user (its job is the user's current confirm job).
pub async fn confirm_change_by_code(
    pool: &PgPool,
    change_id: Uuid,
    job_id: Uuid,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<ChangeUse, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let pending: Option<Uuid> = sqlx::query_scalar(
        "SELECT change_id FROM email_changes
          WHERE change_id = $1 AND cancelled_at IS NULL AND committed_at IS NULL
            AND expires_at > $2
          FOR UPDATE",
    )
    .bind(change_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if pending.is_none() {
        tx.rollback().await?;
        return Ok(ChangeUse::Spent);
    }
    let outcome = apply(&mut tx, change_id, ChangeRole::ConfirmNew, hooks, now).await?;
    if outcome == ChangeUse::Taken {
        tx.rollback().await?;
        return Ok(outcome);
    }
    sqlx::query(
        "UPDATE one_time_codes SET used_at = $2
          WHERE job_id = $1 AND purpose = 'email_change' AND used_at IS NULL",
    )
    .bind(job_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// One side's confirmation, or the cancel, on a change locked by the caller; the commit when
/// it completes the change.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    change_id: Uuid,
    role: ChangeRole,
    hooks: &Endpoints,
    now: DateTime<Utc>,
) -> Result<ChangeUse, sqlx::Error> {
    let column = match role {
        ChangeRole::Cancel => {
            sqlx::query("UPDATE email_changes SET cancelled_at = $2 WHERE change_id = $1")
                .bind(change_id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            return Ok(ChangeUse::Cancelled);
        }
        ChangeRole::ConfirmNew => "new_confirmed_at",
        ChangeRole::ConfirmOld => "old_confirmed_at",
    };
    // Safe: `column` is one of two constants above.
    let (user_id, old_email, new_email, complete): (Uuid, String, String, bool) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE email_changes SET {column} = COALESCE({column}, $2) WHERE change_id = $1
             RETURNING user_id, old_email, new_email,
                       new_confirmed_at IS NOT NULL
                       AND (NOT confirm_old OR old_confirmed_at IS NOT NULL)"
        )))
        .bind(change_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
    if !complete {
        return Ok(ChangeUse::Waiting);
    }
    // The commit. The new address again: a verified user may have taken it since the request.
    // An unverified holder gives way, as to a signup: this person just proved the inbox.
    let taken: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND email_verified
                         AND id <> $2)",
    )
    .bind(&new_email)
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    if taken {
        return Ok(ChangeUse::Taken);
    }
    sqlx::query(
        "DELETE FROM users WHERE lower(email) = lower($1) AND id <> $2 AND NOT email_verified",
    )
    .bind(&new_email)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    let locale: String = sqlx::query_scalar(
        "UPDATE users SET email = $2, email_verified = TRUE, verified_at = COALESCE(verified_at, $3),
                          verification_token_expiry = NULL, reset_token_expiry = NULL
          WHERE id = $1
         RETURNING locale",
    )
    .bind(user_id)
    .bind(&new_email)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    // Every pending link and code of the user dies: they were sent to the old address, or
    // for a state the change has replaced.
    for sql in [
        "UPDATE link_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        "UPDATE one_time_codes SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
    ] {
        sqlx::query(sql)
            .bind(user_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE email_changes SET committed_at = $2 WHERE change_id = $1")
        .bind(change_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let locale = Locale::parse(&locale).unwrap_or_else(|_| Locale::default_locale());
    let mut job = Job::new(JobKind::EmailChanged, user_id, locale, now);
    job.change_id = Some(change_id);
    enqueue(tx, &job).await?;
    let event = UserEmailChanged {
        user_id,
        old_email,
        new_email: new_email.clone(),
    };
    webhooks::enqueue(tx, hooks, &event, now).await?;
    Ok(ChangeUse::Committed { user_id, new_email })
}
