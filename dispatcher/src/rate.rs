//! The SES sending rate, shared by every dispatcher on one database and queue prefix.
//!
//! `MAX_SEND_RATE` (or SES's `MaxSendRate`) is the rate of the *account*: three dispatchers
//! that each sent at it would send three times it, and SES would throttle. So each dispatcher
//! registers in the `dispatchers` table and renews its row every [`HEARTBEAT`]; the live rows
//! (renewed within [`LIVE_FOR`], by the database's clock) divide the rate equally. This needs
//! no component beyond the PostgreSQL every dispatcher uses already.
//!
//! The order of events is what keeps the sum at or below the rate:
//! - **joining**: a new dispatcher registers, then waits [`JOIN_WAIT`] (longer than a heartbeat)
//!   before its first send, so that every other live dispatcher has counted it and lowered its
//!   own share first;
//! - **leaving**: a dispatcher that stops deletes its row, and the others raise their shares
//!   at their next heartbeat; one that dies stops renewing, and its row stops counting after
//!   [`LIVE_FOR`];
//! - **failing closed**: a dispatcher that could not renew its row for [`STALE_AFTER`] sends
//!   nothing until it can. [`STALE_AFTER`] is shorter than [`LIVE_FOR`], so it has stopped
//!   before the others take its share over;
//! - **coming back**: once it renews again, the others may have counted it gone and raised their
//!   shares, so it waits [`JOIN_WAIT`] like a joiner before sending, until they have counted it
//!   again (a PostgreSQL restart made all three of a chaos run's dispatchers do this at once).
//!
//! Each share keeps 3 % headroom: a changed share starts a new limiter, and the seam between the
//! old and the new one may let one extra send through. Of that headroom, 2 % of the share may
//! be saved up as a burst (see [`crate::pacing::paced`]), so that sends delayed by a timer catch
//! up instead of leaving the rate unused: any second sees at most 99 % of the share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use mailroom::store::dispatchers;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a dispatcher renews its row and recomputes its share.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// A row renewed within this long counts as a live dispatcher.
pub const LIVE_FOR: Duration = Duration::from_secs(5);
/// A dispatcher whose own renewal is older than this sends nothing.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// How long a new dispatcher waits between registering and its first send.
pub const JOIN_WAIT: Duration = Duration::from_millis(1500);
/// The part of its share a dispatcher uses.
const HEADROOM: f64 = 0.97;
/// The part of its share a dispatcher may save up as a burst (within the headroom).
const BURST: f64 = 0.02;

/// One dispatcher's part of the account's rate.
pub struct SharedRate {
    account_rate: f64,
    state: Mutex<State>,
    /// None: a fixed rate, not shared (a dispatcher step driven by a test).
    registry: Option<Registry>,
}

struct State {
    share: f64,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// When the row was last renewed; None before the first renewal after joining.
    renewed: Option<Instant>,
    /// No send before this: [`JOIN_WAIT`] after a renewal that ended a stale spell.
    quiet_until: Option<Instant>,
    live: usize,
}

impl State {
    /// Notes a renewal that was sent at `started` and answered at `ended`. True when it ended
    /// a stale spell: then nothing is sent for [`JOIN_WAIT`] from `ended`.
    ///
    /// Two clocks on purpose. The renewal counts from `started`: a slow answer must not
    /// stretch the stale limit. The quiet time counts from `ended`: the others can only count
    /// this dispatcher again at their first heartbeat after its row was renewed, so after a
    /// slow renewal a wait measured from `started` would be partly over before it began.
    fn note_renewal(&mut self, started: Instant, ended: Instant) -> bool {
        let stale = self
            .renewed
            .is_some_and(|t| ended.saturating_duration_since(t) >= STALE_AFTER);
        if stale {
            self.quiet_until = Some(ended + JOIN_WAIT);
        }
        self.renewed = Some(started);
        stale
    }
}

struct Registry {
    pool: PgPool,
    id: Uuid,
    prefix: String,
}

/// What `dispatcher status` shows of one dispatcher.
pub use mailroom::store::dispatchers::Member;

impl SharedRate {
    /// A rate of this process alone.
    pub fn fixed(rate: f64) -> Self {
        Self {
            account_rate: rate,
            state: Mutex::new(State {
                share: rate,
                limiter: Some(Arc::new(crate::pacing::limiter(rate))),
                renewed: None,
                quiet_until: None,
                live: 1,
            }),
            registry: None,
        }
    }

    /// A share of `account_rate` among the dispatchers of `prefix`. Nothing may be sent until
    /// [`Self::run`] has registered and waited [`JOIN_WAIT`].
    pub fn shared(pool: PgPool, prefix: &str, account_rate: f64) -> Self {
        Self {
            account_rate,
            state: Mutex::new(State {
                share: 0.0,
                limiter: None,
                renewed: None,
                quiet_until: None,
                live: 0,
            }),
            registry: Some(Registry {
                pool,
                id: Uuid::new_v4(),
                prefix: prefix.to_owned(),
            }),
        }
    }

    pub fn account_rate(&self) -> f64 {
        self.account_rate
    }

    /// This dispatcher's current share, in sends per second (0 while it may not send).
    pub fn share(&self) -> f64 {
        let s = self.state.lock().expect("rate state");
        if self.may_send(&s) { s.share } else { 0.0 }
    }

    /// Live dispatchers sharing the rate, as last counted.
    pub fn live(&self) -> usize {
        self.state.lock().expect("rate state").live
    }

    fn may_send(&self, s: &State) -> bool {
        match &self.registry {
            None => true,
            Some(_) => {
                s.renewed.is_some_and(|t| t.elapsed() < STALE_AFTER)
                    && s.quiet_until.is_none_or(|q| Instant::now() >= q)
            }
        }
    }

    /// The limiter to wait on for the next send, or None while this dispatcher may not send
    /// (joining, or its row could not be renewed lately).
    pub fn limiter(&self) -> Option<Arc<DefaultDirectRateLimiter>> {
        let s = self.state.lock().expect("rate state");
        if self.may_send(&s) {
            s.limiter.clone()
        } else {
            None
        }
    }

    /// Registers, waits to be counted, then renews every [`HEARTBEAT`] until `cancel`; on the
    /// way out, deletes the row so the others take its share at once.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let Some(reg) = &self.registry else {
            return;
        };
        // Register (retrying: the database may still be coming up), then wait to be counted.
        loop {
            match self.renew(reg).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register for the shared sending rate; sending nothing")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = cancel.cancelled() => return,
            }
        }
        // Rows of dispatchers that died long ago only clutter `dispatcher status`.
        let _ = dispatchers::forget_long_gone(&reg.pool, &reg.prefix).await;
        tokio::select! {
            _ = tokio::time::sleep(JOIN_WAIT) => {}
            _ = cancel.cancelled() => {}
        }
        while !cancel.is_cancelled() {
            match self.renew(reg).await {
                Ok(live) => self.apply(live),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this dispatcher's share of the sending rate; it stops sending after 3 s without")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = cancel.cancelled() => {}
            }
        }
        let _ = dispatchers::leave(&reg.pool, reg.id).await;
    }

    /// Renews this dispatcher's row and counts the live ones, in one statement, by the
    /// database's clock. Returns the live count (this one included).
    async fn renew(&self, reg: &Registry) -> Result<usize, sqlx::Error> {
        let share = self.state.lock().expect("rate state").share;
        let started = Instant::now();
        let host = hostname();
        let me = dispatchers::Registration {
            id: reg.id,
            prefix: &reg.prefix,
            host: &host,
            pid: std::process::id() as i32,
        };
        let live = dispatchers::renew(&reg.pool, &me, share, LIVE_FOR).await?;
        let ended = Instant::now();
        if self
            .state
            .lock()
            .expect("rate state")
            .note_renewal(started, ended)
        {
            tracing::info!(
                "renewed the share of the sending rate after a gap; waiting to be counted again before sending"
            );
        }
        Ok(live.max(1) as usize)
    }

    fn apply(&self, live: usize) {
        let share = self.account_rate * HEADROOM / live as f64;
        let mut s = self.state.lock().expect("rate state");
        s.live = live;
        if s.limiter.is_none() || (s.share - share).abs() > f64::EPSILON {
            tracing::info!(
                live,
                share = format!("{share:.2}"),
                account_rate = self.account_rate,
                "sending rate shared"
            );
            s.share = share;
            let burst = 1 + (share / HEADROOM * BURST) as u32;
            let limiter = crate::pacing::paced(share, burst);
            // A new limiter starts with its burst saved up; spent here, so that at the change
            // it adds no burst to what the old one may have saved.
            if let Some(n) = std::num::NonZeroU32::new(burst) {
                let _ = limiter.check_n(n);
            }
            s.limiter = Some(Arc::new(limiter));
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The dispatchers registered for `prefix`, live ones first.
pub async fn members(pool: &PgPool, prefix: &str) -> Result<Vec<Member>, sqlx::Error> {
    dispatchers::members(pool, prefix, LIVE_FOR).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(renewed: Option<Instant>) -> State {
        State {
            share: 1.0,
            limiter: None,
            renewed,
            quiet_until: None,
            live: 1,
        }
    }

    #[test]
    fn the_quiet_time_after_a_stale_spell_counts_from_the_end_of_a_slow_renewal() {
        let t0 = Instant::now();
        // Last renewed 10 s ago (stale); this renewal took 2 s to answer.
        let mut s = state(Some(t0));
        let (started, ended) = (t0 + Duration::from_secs(8), t0 + Duration::from_secs(10));
        assert!(s.note_renewal(started, ended));
        assert_eq!(s.quiet_until, Some(ended + JOIN_WAIT));
        // The renewal itself counts from when it was sent.
        assert_eq!(s.renewed, Some(started));
    }

    #[test]
    fn a_timely_renewal_adds_no_quiet_time() {
        let t0 = Instant::now();
        let mut s = state(Some(t0));
        let (started, ended) = (t0 + HEARTBEAT, t0 + HEARTBEAT + Duration::from_millis(20));
        assert!(!s.note_renewal(started, ended));
        assert_eq!(s.quiet_until, None);
        // The first renewal after joining is no stale spell either (the join waits already).
        let mut first = state(None);
        assert!(!first.note_renewal(t0, t0));
    }
}
