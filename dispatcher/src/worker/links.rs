//! The link an email carries: a verification or password-reset token minted at send time
//! and its hash stored, or the plain link of a notice. Tokens are stored through the batched
//! statements of [`crate::batch`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom::batch::Batcher;
use mailroom::domain::Token;
use mailroom::job::{Job, JobKind};
use mailroom::store::{NewLinkToken, User};

use super::Worker;
use super::db_retry::DbResult;
use crate::batch::TokenReq;

/// The link of one email, or why there is nothing to send.
pub(super) enum Link {
    /// The link and how long it works (zero for a notice, whose link does not expire).
    Ready { link: String, ttl: Duration },
    /// Nothing to send: recorded as skipped with this reason.
    Skip(&'static str),
}

impl Worker {
    /// The link for an email job of any kind but a webhook.
    pub(super) async fn link_for(
        &self,
        job: &Job,
        user: &User,
        now: DateTime<Utc>,
    ) -> DbResult<Link> {
        // Mint at send time: the queue never held a secret, and a replayed job gets a fresh
        // link. The hash is stored before the send so the link works when the email arrives.
        match job.kind {
            JobKind::Verification => self.verification_link(job, user, now).await,
            JobKind::PasswordReset => self.reset_link(job, now).await,
            // A notice: no token. Its link leads to the service, where a person who did not
            // change their password can ask for a reset.
            JobKind::PasswordChanged => Ok(Link::Ready {
                link: self.public_url.clone(),
                ttl: Duration::ZERO,
            }),
            JobKind::Webhook => unreachable!("webhook jobs are delivered, not emailed"),
        }
    }

    async fn verification_link(
        &self,
        job: &Job,
        user: &User,
        now: DateTime<Utc>,
    ) -> DbResult<Link> {
        if user.email_verified {
            return Ok(Link::Skip("the address is already verified"));
        }
        let batcher = &self.batches.verification_tokens;
        let ttl = self.verification_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the user changed meanwhile (verified, deleted, or a newer request)",
            ));
        };
        let link = format!(
            "{}/verify-email?token={}",
            self.public_url.trim_end_matches('/'),
            token.expose()
        );
        Ok(Link::Ready { link, ttl })
    }

    async fn reset_link(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let batcher = &self.batches.reset_tokens;
        let ttl = self.reset_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the user is gone, or a newer reset request replaced this one",
            ));
        };
        let sep = if self.reset_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let link = format!("{}{sep}token={}", self.reset_url, token.expose());
        Ok(Link::Ready { link, ttl })
    }

    /// Mints a token that expires `ttl` after `now` and stores its hash. None when the store
    /// refused it: the user changed meanwhile, and this job's link is no longer wanted.
    async fn store_token(
        &self,
        batcher: &Batcher<TokenReq, bool>,
        job: &Job,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> DbResult<Option<Token>> {
        let token = Token::generate();
        let hash = token.hash();
        // `Settings` refuses a TTL that chrono cannot hold; the fallback serves only a worker
        // built by hand.
        let expires_at =
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(24));
        let stored = self
            .retry_db(|| {
                batcher.call(TokenReq {
                    token: NewLinkToken {
                        job: job.clone(),
                        hash: hash.clone(),
                        expires_at,
                    },
                    now,
                })
            })
            .await?;
        Ok(stored.then_some(token))
    }
}
