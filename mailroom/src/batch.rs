//! Micro-batching of database statements by back-pressure: callers ask as if alone
//! ([`Batcher::call`]); a task collects whatever requests are waiting and runs them as one
//! statement. While statements run, the requests that arrive meanwhile queue up and become the
//! next batch, so a lone request waits for nothing and a busy service pays one round trip and
//! one commit for many. Owns the batching only, never what a statement does.
//!
//! Two requests for the same key never share a statement (PostgreSQL changes a row once per
//! statement): the later one waits for the next batch, which keeps their order. With more than
//! one statement in flight ([`Batcher::spawn`]'s `parallel`), batches may finish out of order:
//! only callers whose requests are independent (distinct keys by construction) should use it.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most requests one statement takes.
pub const MAX_BATCH: usize = 256;
/// The most requests that may wait for a statement. Beyond it a call fails at once as busy
/// (ingest answers 503), instead of queueing work that would run long after its caller, which
/// a database outage would otherwise pile up without bound.
pub const MAX_WAITING: usize = MAX_BATCH * 4;

type Reply<Resp> = oneshot::Sender<Result<Resp, sqlx::Error>>;

/// Hands requests to the task that batches them.
pub struct Batcher<Req, Resp> {
    tx: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the batching task: `run` executes one batch and answers one response per request,
    /// in order; `key` names the row a request changes; at most `parallel` batches run at once.
    /// The task ends when the batcher is dropped.
    pub fn spawn<K, F, Fut>(key: fn(&Req) -> K, parallel: usize, run: F) -> Self
    where
        K: Eq + Hash + Send + 'static,
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Req, Reply<Resp>)>(MAX_WAITING);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        let run = Arc::new(run);
        tokio::spawn(async move {
            // Requests held back because their key was already in a batch; first in line.
            let mut held: VecDeque<(Req, Reply<Resp>)> = VecDeque::new();
            loop {
                // A slot first, then the batch: what queued while every slot was busy joins it.
                let slot = slots.clone().acquire_owned().await.expect("never closed");
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
                    // Its caller gave up (a request timeout, shutdown): it must not be
                    // written after the caller was told it failed.
                    if reply.is_closed() {
                        continue;
                    }
                    if reqs.len() < MAX_BATCH && keys.insert(key(&req)) {
                        reqs.push(req);
                        replies.push(reply);
                    } else {
                        later.push_back((req, reply));
                    }
                }
                held = later;
                let run = run.clone();
                tokio::spawn(async move {
                    // Kept to run one by one if the batch fails (below).
                    let copies = (reqs.len() > 1).then(|| reqs.clone());
                    match (run(reqs).await, copies) {
                        // A statement fails as a whole, and one request may be all that the
                        // database refuses (a constraint, a trigger): run each alone, so that
                        // only that one is held and the others go on. Not when the database
                        // is unreachable: then each would fail the same way.
                        (Err(e), Some(copies)) if !crate::store::is_unavailable(&e) => {
                            tracing::warn!(error = %e, batch = copies.len(), "a batched statement failed; running its requests one by one");
                            for (req, reply) in copies.into_iter().zip(replies) {
                                // A caller that gave up meanwhile (a request timeout) must not
                                // have its statement run behind its back.
                                if reply.is_closed() {
                                    continue;
                                }
                                answer(run(vec![req]).await, vec![reply]);
                            }
                        }
                        (result, _) => answer(result, replies),
                    }
                    drop(slot);
                });
            }
        });
        Self { tx }
    }

    /// Runs one request as part of the next batch. With [`MAX_WAITING`] requests already
    /// waiting, fails at once with `PoolTimedOut` (the database is not keeping up). A request
    /// whose caller stops waiting before its batch starts is not run.
    pub async fn call(&self, req: Req) -> Result<Resp, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send((req, reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(sqlx::Error::PoolTimedOut),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(sqlx::Error::PoolClosed),
        }
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Hands each caller its answer, or the batch's error. A caller that gave up (shutdown) is
/// left out.
fn answer<Resp>(result: Result<Vec<Resp>, sqlx::Error>, replies: Vec<Reply<Resp>>) {
    match result {
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
            let unavailable = crate::store::is_unavailable(&e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Requests for the same key never share a batch, every request is answered with its own
    /// answer, and requests of one key are run in the order they came.
    #[tokio::test]
    async fn a_key_is_never_twice_in_one_batch_and_every_request_gets_its_answer() {
        type Seen = Arc<Mutex<Vec<Vec<(u32, u32)>>>>;
        let batches: Seen = Arc::default();
        let seen = batches.clone();
        let batcher = Arc::new(Batcher::spawn(
            |r: &(u32, u32)| r.0,
            1,
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

    /// A statement that fails for one request fails only that request: the batch is run again
    /// one by one, and the others get their answers.
    #[tokio::test]
    async fn one_refused_request_fails_alone_and_the_others_of_its_batch_go_on() {
        let batcher = Arc::new(Batcher::spawn(
            |r: &u32| *r,
            1,
            move |reqs: Vec<u32>| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if reqs.contains(&13) {
                    Err(sqlx::Error::Protocol(
                        "new row violates check constraint".into(),
                    ))
                } else {
                    Ok(reqs)
                }
            },
        ));
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..40u32 {
            let b = batcher.clone();
            calls.spawn(async move { (n, b.call(n).await) });
        }
        while let Some(r) = calls.join_next().await {
            match r.unwrap() {
                (13, answer) => assert!(answer.is_err(), "13 must fail"),
                (n, answer) => assert_eq!(answer.unwrap(), n),
            }
        }
    }

    /// A caller that gives up before its batch starts is not run; and beyond MAX_WAITING the
    /// batcher refuses at once instead of queueing without bound.
    #[tokio::test]
    async fn abandoned_requests_are_not_run_and_the_queue_is_bounded() {
        let ran: Arc<Mutex<Vec<u32>>> = Arc::default();
        let seen = ran.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let batcher = Arc::new(Batcher::spawn(
            |r: &u32| *r,
            1,
            move |reqs: Vec<u32>| {
                seen.lock().unwrap().extend(&reqs);
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok(reqs)
                }
            },
        ));
        // The first request holds the only statement slot until the gate opens.
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.call(0).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // This caller gives up while waiting behind it.
        let gave_up = tokio::time::timeout(Duration::from_millis(20), batcher.call(1)).await;
        assert!(gave_up.is_err());
        // Fill the queue: the next one is refused at once.
        let mut waiting = Vec::new();
        for n in 0..MAX_WAITING as u32 {
            let b = batcher.clone();
            waiting.push(tokio::spawn(async move { b.call(100 + n).await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = batcher.call(99_999).await.unwrap_err();
        assert!(matches!(refused, sqlx::Error::PoolTimedOut), "{refused}");
        for _ in 0..10 {
            gate.notify_waiters();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(first.await.unwrap().unwrap(), 0);
        let ran = ran.lock().unwrap().clone();
        assert!(!ran.contains(&1), "an abandoned request was run");
        assert!(!ran.contains(&99_999));
        drop(waiting);
    }

    /// A failed statement fails every request in it (each caller holds its job and asks
    /// again); the batcher goes on with the next batch.
    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests_and_the_next_batch_runs() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = fail.clone();
        let batcher = Batcher::spawn(
            |r: &u32| *r,
            1,
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
