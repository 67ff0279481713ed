//! Micro-batching of the worker's hot database statements. Owns the batching only: what the
//! statements do is [`mailroom::store::batch`]'s, and what a step does with the answers is
//! [`crate::worker`]'s.
//!
//! Every in-flight step asks for its claim, its link token and its record as if alone
//! ([`Batcher::call`]); one task per statement collects whatever requests are waiting and runs
//! them as one statement. Batches form from back-pressure, not from a timer: while a statement
//! is running, the requests that arrive meanwhile queue up and become the next batch, so a lone
//! job waits for nothing and a busy dispatcher pays one round trip and one commit for up to
//! [`MAX_BATCH`] jobs.
//!
//! Two requests for the same key (the same job, or two tokens for the same user) never share a
//! statement: PostgreSQL changes a row once per statement. The later one waits for the next
//! batch, which keeps the order in which they arrived.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom::job::Job;
use mailroom::store::TokenKind;
use mailroom::store::batch::{self as sql, ClaimedJob, NewLinkToken, SentRecord};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// The most requests one statement takes.
pub const MAX_BATCH: usize = 256;

type Reply<Resp> = oneshot::Sender<Result<Resp, sqlx::Error>>;

/// Hands requests to the task that batches them.
pub struct Batcher<Req, Resp> {
    tx: mpsc::UnboundedSender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the batching task: `run` executes one batch and answers one response per request,
    /// in order; `key` names the row a request changes. The task ends when the batcher is
    /// dropped.
    pub fn spawn<K, F, Fut>(key: fn(&Req) -> K, run: F) -> Self
    where
        K: Eq + Hash + Send + 'static,
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Req, Reply<Resp>)>();
        tokio::spawn(async move {
            // Requests held back because their key was already in a batch; first in line.
            let mut held: VecDeque<(Req, Reply<Resp>)> = VecDeque::new();
            loop {
                if held.is_empty() {
                    match rx.recv().await {
                        Some(p) => held.push_back(p),
                        None => return,
                    }
                }
                while held.len() < MAX_BATCH * 2 {
                    match rx.try_recv() {
                        Ok(p) => held.push_back(p),
                        Err(_) => break,
                    }
                }
                let mut keys = HashSet::new();
                let mut reqs = Vec::new();
                let mut replies = Vec::new();
                let mut later = VecDeque::new();
                while let Some((req, reply)) = held.pop_front() {
                    if reqs.len() < MAX_BATCH && keys.insert(key(&req)) {
                        reqs.push(req);
                        replies.push(reply);
                    } else {
                        later.push_back((req, reply));
                    }
                }
                held = later;
                // A caller that gave up (shutdown) is left out.
                match run(reqs).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(e) => {
                        // sqlx errors cannot be cloned: the first caller gets the error itself,
                        // the others its text with its SQLSTATE. Each caller's retry_db holds
                        // its job and asks again.
                        let code = e
                            .as_database_error()
                            .and_then(|d| d.code())
                            .map(|c| format!(" (SQLSTATE {c})"))
                            .unwrap_or_default();
                        let text = format!("{e}{code}");
                        let unavailable = mailroom::store::is_unavailable(&e);
                        let mut replies = replies.into_iter();
                        if let Some(first) = replies.next() {
                            let _ = first.send(Err(e));
                        }
                        for reply in replies {
                            let copy = if unavailable {
                                sqlx::Error::Io(std::io::Error::other(text.clone()))
                            } else {
                                sqlx::Error::Protocol(text.clone())
                            };
                            let _ = reply.send(Err(copy));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Runs one request as part of the next batch.
    pub async fn call(&self, req: Req) -> Result<Resp, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// A claim request: the job and when.
pub struct ClaimReq {
    pub job: Job,
    pub now: DateTime<Utc>,
}

/// A link token to store, of one kind.
pub struct TokenReq {
    pub token: NewLinkToken,
    pub now: DateTime<Utc>,
}

/// The batched statements of one dispatcher.
pub struct Batches {
    pub claims: Batcher<ClaimReq, ClaimedJob>,
    pub verification_tokens: Batcher<TokenReq, bool>,
    pub reset_tokens: Batcher<TokenReq, bool>,
    pub sent: Batcher<SentRecord, ()>,
}

impl Batches {
    /// Starts the batching tasks on `pool`; claims use `email_lease` for emails and
    /// `webhook_lease` for webhook deliveries. Must be called inside a tokio runtime.
    pub fn new(pool: PgPool, email_lease: Duration, webhook_lease: Duration) -> Arc<Self> {
        let p = pool.clone();
        let claims = Batcher::spawn(
            |r: &ClaimReq| r.job.job_id,
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
        let p = pool;
        let sent = Batcher::spawn(
            |r: &SentRecord| r.job_id,
            move |reqs: Vec<SentRecord>| {
                let p = p.clone();
                async move {
                    let n = reqs.len();
                    sql::record_sent(&p, &reqs).await.map(|()| vec![(); n])
                }
            },
        );
        Arc::new(Self {
            claims,
            verification_tokens,
            reset_tokens,
            sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Requests for the same key never share a batch, every request is answered with its own
    /// answer, and requests of one key are run in the order they came.
    #[tokio::test]
    async fn a_key_is_never_twice_in_one_batch_and_every_request_gets_its_answer() {
        type Seen = Arc<Mutex<Vec<Vec<(u32, u32)>>>>;
        let batches: Seen = Arc::default();
        let seen = batches.clone();
        let batcher = Arc::new(Batcher::spawn(
            |r: &(u32, u32)| r.0,
            move |reqs: Vec<(u32, u32)>| {
                seen.lock().unwrap().push(reqs.clone());
                async move {
                    // Long enough for the other callers to queue up behind this batch.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(reqs.iter().map(|(k, n)| k * 1000 + n).collect::<Vec<_>>())
                }
            },
        ));
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..200u32 {
            let b = batcher.clone();
            calls.spawn(async move { (n, b.call((n % 7, n)).await.unwrap()) });
        }
        while let Some(r) = calls.join_next().await {
            let (n, answer) = r.unwrap();
            assert_eq!(answer, (n % 7) * 1000 + n);
        }
        let batches = batches.lock().unwrap();
        assert!(
            batches.len() < 200,
            "nothing was batched: {} batches",
            batches.len()
        );
        let mut last_of_key = std::collections::HashMap::new();
        for batch in batches.iter() {
            let mut keys = HashSet::new();
            for (k, n) in batch {
                assert!(keys.insert(*k), "key {k} twice in one batch: {batch:?}");
                if let Some(prev) = last_of_key.insert(*k, *n) {
                    assert!(prev < *n, "key {k}: {n} ran after {prev}");
                }
            }
        }
    }

    /// A failed statement fails every request in it (each caller holds its job and asks
    /// again); the batcher goes on with the next batch.
    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests_and_the_next_batch_runs() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = fail.clone();
        let batcher = Batcher::spawn(
            |r: &u32| *r,
            move |reqs: Vec<u32>| {
                let fail = f.swap(false, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if fail {
                        Err(sqlx::Error::Protocol("disk full".into()))
                    } else {
                        Ok(reqs)
                    }
                }
            },
        );
        let e = batcher.call(1).await.unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(batcher.call(2).await.unwrap(), 2);
    }
}
