//! The one place ingest runs argon2. Each hash or verify takes ~19 MiB and tens of
//! milliseconds of CPU, so an unbounded number of them (tokio's blocking pool takes up to 512)
//! lets a few hundred anonymous requests take gigabytes. [`HashPool`] runs at most
//! `concurrency` at once, lets at most `queue` more wait, and refuses the rest at once with
//! [`Busy`], which the API answers with 503 and `Retry-After`. Never queues without bound.
//!
//! A request that gives up while waiting (its client went away, or it timed out) drops its
//! future, and with it its place in the queue: a hash that never started never runs.
//!
//! The hashes run on `concurrency` threads of the pool's own, not on tokio's blocking pool
//! (which grows to 512 threads).
//!
//! Memory is only bounded if freed argon2 blocks go back to the OS: glibc raises its mmap
//! threshold to the size of the first large block freed, and from then on serves 19 MiB blocks
//! from its heaps and keeps them. Measured on the release binary under a flood of 300
//! requests: 366 MB peak and 340 MB held afterwards, growing with each flood; with the
//! threshold pinned by [`return_large_blocks_to_the_os`], 67 MB peak and 28 MB afterwards.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Semaphore, oneshot};

type Work = Box<dyn FnOnce() + Send>;

/// Pins glibc's mmap threshold at 4 MiB, so that every argon2 block (19 MiB) is mapped for the
/// hash and unmapped when it is dropped, instead of being kept in a malloc heap after the
/// first one (see the module documentation). The binary calls it once at start; elsewhere
/// than glibc it does nothing.
pub fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread that
    // could allocate concurrently exists (at the top of main).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    }
}

/// The pool is full: the caller should come back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password hashes in progress")]
pub struct Busy;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("password hashing failed: {0}")]
    Failed(String),
}

pub struct HashPool {
    /// Permits to run: one per hash running on one of the pool's threads.
    running: Arc<Semaphore>,
    /// Hands work to the pool's threads; a permit is held for each item, so a thread is free.
    work: Mutex<mpsc::Sender<Work>>,
    /// Requests admitted (running or waiting for a permit); bounded by `capacity`.
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in the pool, given back when dropped (also when the waiting future is dropped).
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashPool {
    /// `concurrency` hashes at once, `queue` more waiting.
    pub fn new(concurrency: NonZeroUsize, queue: usize) -> Self {
        let concurrency = concurrency.get();
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..concurrency {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next item.
                        let next = rx.lock().expect("hash queue lock").recv();
                        match next {
                            Ok(work) => work(),
                            // The pool was dropped: no more work will come.
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn a hashing thread");
        }
        Self {
            running: Arc::new(Semaphore::new(concurrency)),
            work: Mutex::new(tx),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency + queue,
        }
    }

    /// Hashes and verifies in progress or waiting, for metrics.
    pub fn in_use(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Runs `work` (an argon2 hash or verify) on a blocking thread once a permit is free, or
    /// answers [`Busy`] at once when the pool and its queue are full.
    pub async fn run<T, E>(
        &self,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, HashError>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        // Admit first, atomically: a burst can never push the count past the capacity.
        let admitted = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Busy.into());
        }
        let admission = Admission(self.admitted.clone());
        // Waiting here is cancellable: dropping this future gives the place back unused.
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Once started, the hash runs to the end on its thread (argon2 cannot be interrupted);
        // the permit and the admission travel with it, so the bound holds even if the caller
        // gives up now.
        let (done, result) = oneshot::channel();
        let job: Work = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            drop(permit);
            drop(admission);
            let _ = done.send(out);
        });
        self.work
            .lock()
            .expect("hash queue lock")
            .send(job)
            .map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
        match result.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(HashError::Failed(e.to_string())),
            Ok(Err(_)) => Err(HashError::Failed("the hash panicked".into())),
            Err(_) => Err(HashError::Failed("the hashing thread went away".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn beyond_the_queue_callers_are_refused_at_once() {
        let pool = Arc::new(HashPool::new(NonZeroUsize::MIN, 1));
        let slow = || {
            std::thread::sleep(Duration::from_millis(300));
            Ok::<_, String>(())
        };
        let (p1, p2) = (pool.clone(), pool.clone());
        let a = tokio::spawn(async move { p1.run(slow).await });
        let b = tokio::spawn(async move { p2.run(slow).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(pool.run(slow).await, Err(HashError::Busy(_))));
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
        assert_eq!(pool.in_use(), 0);
        assert!(pool.run(slow).await.is_ok());
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_while_waiting_frees_its_place() {
        let pool = Arc::new(HashPool::new(NonZeroUsize::MIN, 1));
        let ran = Arc::new(AtomicUsize::new(0));
        let p1 = pool.clone();
        let first = tokio::spawn(async move {
            p1.run(|| {
                std::thread::sleep(Duration::from_millis(300));
                Ok::<_, String>(())
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = ran.clone();
        let waiting = pool.run(move || {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(())
        });
        // Give up before the permit comes free.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting)
                .await
                .is_err()
        );
        assert_eq!(pool.in_use(), 1, "only the running hash holds a place");
        first.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "the abandoned hash never ran"
        );
    }
}
