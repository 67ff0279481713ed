//! What an email carries to prove its inbox: a verification or password-reset token minted at
//! send time and its hash stored, a one-time code and its keyed hash, both (the job's
//! `method`), or the plain link of a notice. Tokens are stored through the batched statements
//! of [`crate::batch`]; codes one at a time (they are rarer, and each replaces a row).

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom::batch::Batcher;
use mailroom::domain::{Code, CodePurpose, Token, mask};
use mailroom::job::{Job, JobKind, link_with_token};
use mailroom::store::{self, ChangeRole, EmailChange, NewCode, NewLinkToken, User};

use super::Worker;
use super::db_retry::DbResult;
use crate::batch::TokenReq;

/// What one email carries, or why there is nothing to send.
pub(super) enum Link {
    Ready(Carried),
    /// Nothing to send: recorded as skipped with this reason.
    Skip(&'static str),
    /// This job cannot be sent by this configuration (a code without `CODE_SECRET`): dead,
    /// with this error, to be replayed once the configuration is fixed.
    Dead(String),
}

/// The link and the code of one email.
pub(super) struct Carried {
    /// The link, None when the job asked for a code only.
    pub link: Option<String>,
    /// How long the link works (zero for a notice, whose link does not expire); the code's
    /// life when there is no link.
    pub ttl: Duration,
    /// The code and how long it works, when the job asked for one.
    pub code: Option<(String, Duration)>,
    /// An email change's new address, masked, in the notices to the old one.
    pub new_email: Option<String>,
    /// The link that cancels an email change, in the notice to the old address.
    pub cancel_link: Option<String>,
}

impl Link {
    fn of_link(link: String, ttl: Duration) -> Self {
        Link::Ready(Carried {
            link: Some(link),
            ttl,
            code: None,
            new_email: None,
            cancel_link: None,
        })
    }
}

/// Who an email goes to.
pub(super) enum Recipient {
    /// The user's address.
    User,
    /// Another address: an email change's new one, or its old one once the user's changed.
    Other(String),
    /// Nothing to send: recorded as skipped with this reason.
    Skip(&'static str),
}

impl Worker {
    /// What an email job of any kind but a webhook carries.
    pub(super) async fn link_for(
        &self,
        job: &Job,
        user: &User,
        now: DateTime<Utc>,
    ) -> DbResult<Link> {
        // Mint at send time: the queue never held a secret, and a replayed job gets a fresh
        // link and code. The hashes are stored before the send so that both work when the
        // email arrives.
        let (purpose, link) = match job.kind {
            JobKind::Verification => {
                if user.email_verified {
                    return Ok(Link::Skip("the address is already verified"));
                }
                let link = match job.method.sends_link() {
                    true => Some(self.verification_link(job, now).await?),
                    false => None,
                };
                (CodePurpose::Verification, link)
            }
            JobKind::PasswordReset => {
                let link = match job.method.sends_link() {
                    true => Some(self.reset_link(job, now).await?),
                    false => None,
                };
                (CodePurpose::Reset, link)
            }
            JobKind::SignIn => {
                let link = match job.method.sends_link() {
                    true => Some(self.sign_in_link(job, now).await?),
                    false => None,
                };
                (CodePurpose::SignIn, link)
            }
            // A link only (an invite's code would have nowhere to be typed: there is no account
            // to sign in to yet).
            JobKind::Invite => {
                if user.email_verified {
                    return Ok(Link::Skip("the invite was accepted already"));
                }
                return self.invite_link(job, now).await;
            }
            JobKind::EmailChangeConfirm => {
                let Some(change) = self.pending_change(job, now).await? else {
                    return Ok(Link::Skip(
                        "the email change was cancelled, made or expired",
                    ));
                };
                let link = match job.method.sends_link() {
                    true => {
                        let l = self.change_link(&change, ChangeRole::ConfirmNew, job, now);
                        Some(l.await?)
                    }
                    false => None,
                };
                (CodePurpose::EmailChange, link)
            }
            JobKind::EmailChangeNotice => return self.change_notice(job, now).await,
            JobKind::EmailChanged => {
                let change = job
                    .change_id
                    .map(|id| store::find_email_change(&self.pool, id, now));
                let new_email = match change {
                    Some(c) => c.await?.map(|c| mask(&c.new_email)),
                    None => None,
                };
                return Ok(Link::Ready(Carried {
                    link: Some(self.public_url.clone()),
                    ttl: Duration::ZERO,
                    code: None,
                    new_email,
                    cancel_link: None,
                }));
            }
            // A notice: no token. Its link leads to the service, where a person who did not
            // change their password can ask for a reset.
            JobKind::PasswordChanged => {
                return Ok(Link::of_link(self.public_url.clone(), Duration::ZERO));
            }
            JobKind::Webhook => unreachable!("webhook jobs are delivered, not emailed"),
        };
        let link = match link {
            Some(Link::Ready(carried)) => Some(carried),
            Some(other) => return Ok(other),
            None => None,
        };
        if !job.method.sends_code() {
            return Ok(Link::Ready(link.expect("a link job has its link")));
        }
        let code = match self.store_code(job, purpose, now).await? {
            Ok(Some(code)) => code,
            Ok(None) => {
                return Ok(Link::Skip(
                    "the user changed meanwhile (verified, deleted, or a newer request)",
                ));
            }
            Err(dead) => return Ok(dead),
        };
        let ttl = self.codes.ttl;
        Ok(Link::Ready(match link {
            Some(mut carried) => {
                carried.code = Some((code.expose().to_owned(), ttl));
                carried
            }
            None => Carried {
                link: None,
                ttl,
                code: Some((code.expose().to_owned(), ttl)),
                new_email: None,
                cancel_link: None,
            },
        }))
    }

    /// Mints a code for `job` and stores its keyed hash, replacing the user's older code of
    /// this purpose. Ok(None) when the store refused it (the user changed meanwhile); Err when
    /// this dispatcher has no `CODE_SECRET`.
    async fn store_code(
        &self,
        job: &Job,
        purpose: CodePurpose,
        now: DateTime<Utc>,
    ) -> DbResult<Result<Option<Code>, Link>> {
        let Some(key) = &self.codes.key else {
            return Ok(Err(Link::Dead(
                "this job asks for a one-time code, but CODE_SECRET is not set on this \
                 dispatcher; set it (the same as ingest's) and replay the dead letter"
                    .into(),
            )));
        };
        let code = Code::generate(self.codes.digits);
        let new = NewCode {
            job: job.clone(),
            hash: key.hash(purpose, job.user_id, &code),
            expires_at: now
                + chrono::Duration::from_std(self.codes.ttl)
                    .unwrap_or(chrono::Duration::minutes(15)),
            attempts: self.codes.max_attempts,
        };
        let stored = self
            .retry_db(|| store::set_code(&self.pool, purpose, &new, now))
            .await?;
        Ok(Ok(stored.then_some(code)))
    }

    async fn verification_link(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let batcher = &self.batches.verification_tokens;
        let ttl = self.verification_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the user changed meanwhile (verified, deleted, or a newer request)",
            ));
        };
        let base = format!("{}/verify-email", self.public_url.trim_end_matches('/'));
        let link = link_with_token(&base, token.expose(), job.return_to.as_deref());
        Ok(Link::of_link(link, ttl))
    }

    async fn reset_link(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let batcher = &self.batches.reset_tokens;
        let ttl = self.reset_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the user is gone, or a newer reset request replaced this one",
            ));
        };
        let link = link_with_token(&self.reset_url, token.expose(), job.return_to.as_deref());
        Ok(Link::of_link(link, ttl))
    }

    /// Where an email-change job goes: the confirmation to the new address, the notices to the
    /// old one. Any other job goes to the user.
    pub(super) async fn change_recipient(
        &self,
        job: &Job,
        user: &User,
        now: DateTime<Utc>,
    ) -> DbResult<Recipient> {
        let new = match job.kind {
            JobKind::EmailChangeConfirm => true,
            JobKind::EmailChangeNotice | JobKind::EmailChanged => false,
            _ => return Ok(Recipient::User),
        };
        let Some(id) = job.change_id else {
            return Ok(Recipient::Skip("an email-change job without its change"));
        };
        let Some(change) = self
            .retry_db(|| store::find_email_change(&self.pool, id, now))
            .await?
        else {
            return Ok(Recipient::Skip("the email change is gone"));
        };
        if change.user_id != user.id {
            return Ok(Recipient::Skip("the email change is another user's"));
        }
        Ok(Recipient::Other(if new {
            change.new_email
        } else {
            change.old_email
        }))
    }

    async fn pending_change(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Option<EmailChange>> {
        let Some(id) = job.change_id else {
            return Ok(None);
        };
        let change = self
            .retry_db(|| store::find_email_change(&self.pool, id, now))
            .await?;
        Ok(change.filter(|c| c.pending))
    }

    /// Mints one of a change's links and stores its hash; the link works until the change
    /// expires (`EMAIL_CHANGE_TTL` after its request).
    async fn change_link(
        &self,
        change: &EmailChange,
        role: ChangeRole,
        job: &Job,
        now: DateTime<Utc>,
    ) -> DbResult<Link> {
        let token = Token::generate();
        let hash = token.hash();
        let stored = self
            .retry_db(|| store::add_change_token(&self.pool, change.change_id, role, &hash, now))
            .await?;
        if !stored {
            return Ok(Link::Skip(
                "the email change was cancelled, made or expired",
            ));
        }
        let page = match role {
            ChangeRole::Cancel => "cancel-email-change",
            ChangeRole::ConfirmNew | ChangeRole::ConfirmOld => "confirm-email-change",
        };
        let base = format!("{}/{page}", self.public_url.trim_end_matches('/'));
        let link = link_with_token(&base, token.expose(), job.return_to.as_deref());
        let ttl = (change.expires_at - now).to_std().unwrap_or(Duration::ZERO);
        Ok(Link::of_link(link, ttl))
    }

    /// The notice to the old address: the new one, masked, a cancel link, and (when both
    /// addresses must confirm) a confirm link.
    async fn change_notice(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let Some(change) = self.pending_change(job, now).await? else {
            return Ok(Link::Skip(
                "the email change was cancelled, made or expired",
            ));
        };
        let cancel = match self
            .change_link(&change, ChangeRole::Cancel, job, now)
            .await?
        {
            Link::Ready(c) => c,
            other => return Ok(other),
        };
        let confirm = match change.confirm_old {
            true => match self
                .change_link(&change, ChangeRole::ConfirmOld, job, now)
                .await?
            {
                Link::Ready(c) => c.link,
                other => return Ok(other),
            },
            false => None,
        };
        Ok(Link::Ready(Carried {
            link: confirm,
            ttl: cancel.ttl,
            code: None,
            new_email: Some(mask(&change.new_email)),
            cancel_link: cancel.link,
        }))
    }

    async fn invite_link(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let batcher = &self.batches.invite_tokens;
        let ttl = self.invite_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the invite was accepted, revoked, or replaced by a newer one",
            ));
        };
        let base = format!("{}/accept-invite", self.public_url.trim_end_matches('/'));
        let link = link_with_token(&base, token.expose(), job.return_to.as_deref());
        Ok(Link::of_link(link, ttl))
    }

    async fn sign_in_link(&self, job: &Job, now: DateTime<Utc>) -> DbResult<Link> {
        let Some(base) = &self.sign_in_url else {
            return Ok(Link::Dead(
                "this sign-in email needs a link, but SIGN_IN_URL is not set on this \
                 dispatcher; set it (the app's sign-in page) and replay the dead letter"
                    .into(),
            ));
        };
        let batcher = &self.batches.sign_in_tokens;
        let ttl = self.sign_in_ttl;
        let Some(token) = self.store_token(batcher, job, ttl, now).await? else {
            return Ok(Link::Skip(
                "the user is gone, or a newer sign-in request replaced this one",
            ));
        };
        let link = link_with_token(base, token.expose(), job.return_to.as_deref());
        Ok(Link::of_link(link, ttl))
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
