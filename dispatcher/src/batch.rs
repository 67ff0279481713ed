//! The dispatcher's batched statements: the claim (with the user and any suppression entry),
//! the link tokens and the records of sends, for all the steps in flight (see
//! [`mailroom::batch`] for how batches form). What the statements do is
//! [`mailroom::store`]'s (its `claim_jobs`, `set_link_tokens` and `record_sent`); what a step
//! does with the answers is the worker's, which uses this module (never the other way).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom::batch::Batcher;
use mailroom::job::Job;
use mailroom::store::{self as sql, ClaimedJob, NewLinkToken, SentRecord, TokenKind};
use sqlx::PgPool;

/// A claim request: the job and when.
#[derive(Clone)]
pub struct ClaimReq {
    pub job: Job,
    pub now: DateTime<Utc>,
}

/// A link token to store, of one kind.
#[derive(Clone)]
pub struct TokenReq {
    pub token: NewLinkToken,
    pub now: DateTime<Utc>,
}

/// The batched statements of one dispatcher.
pub struct Batches {
    pub claims: Batcher<ClaimReq, ClaimedJob>,
    pub verification_tokens: Batcher<TokenReq, bool>,
    pub reset_tokens: Batcher<TokenReq, bool>,
    pub sign_in_tokens: Batcher<TokenReq, bool>,
    pub invite_tokens: Batcher<TokenReq, bool>,
    pub sent: Batcher<SentRecord, ()>,
}

impl Batches {
    /// Starts the batching tasks on `pool`; claims use `email_lease` for emails and
    /// `webhook_lease` for webhook deliveries. Must be called inside a tokio runtime.
    /// Sends are recorded with their `email.sent` events for `hooks`.
    pub fn new(
        pool: PgPool,
        email_lease: Duration,
        webhook_lease: Duration,
        hooks: mailroom::events::Endpoints,
    ) -> Arc<Self> {
        let p = pool.clone();
        let claims = Batcher::spawn(
            |r: &ClaimReq| r.job.job_id,
            1,
            move |reqs: Vec<ClaimReq>| {
                let p = p.clone();
                async move {
                    // One clock reading for the batch: the latest, so no lease is judged
                    // against a time before its own request.
                    let now = reqs.iter().map(|r| r.now).max().unwrap_or_else(Utc::now);
                    let jobs: Vec<Job> = reqs.into_iter().map(|r| r.job).collect();
                    sql::claim_jobs(&p, &jobs, now, email_lease, webhook_lease).await
                }
            },
        );
        let tokens = |kind: TokenKind, pool: PgPool| {
            Batcher::spawn(
                |r: &TokenReq| r.token.job.user_id,
                1,
                move |reqs: Vec<TokenReq>| {
                    let p = pool.clone();
                    async move {
                        let now = reqs.iter().map(|r| r.now).max().unwrap_or_else(Utc::now);
                        let tokens: Vec<NewLinkToken> = reqs.into_iter().map(|r| r.token).collect();
                        sql::set_link_tokens(&p, kind, &tokens, now).await
                    }
                },
            )
        };
        let verification_tokens = tokens(TokenKind::Verification, pool.clone());
        let reset_tokens = tokens(TokenKind::Reset, pool.clone());
        let sign_in_tokens = tokens(TokenKind::SignIn, pool.clone());
        let invite_tokens = tokens(TokenKind::Invite, pool.clone());
        let p = pool;
        let sent = Batcher::spawn(
            |r: &SentRecord| r.job_id,
            1,
            move |reqs: Vec<SentRecord>| {
                let (p, hooks) = (p.clone(), hooks.clone());
                async move {
                    let n = reqs.len();
                    sql::record_sent(&p, &reqs, &hooks)
                        .await
                        .map(|()| vec![(); n])
                }
            },
        );
        Arc::new(Self {
            claims,
            verification_tokens,
            reset_tokens,
            sign_in_tokens,
            invite_tokens,
            sent,
        })
    }
}
