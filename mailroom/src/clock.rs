//! The time source. Owns "what time is it" for claim leases, token expiry, lockout windows and
//! the send log: the database's time, not this machine's, and so that tests can move time
//! forward instead of sleeping for a day. Production code only ever reads it.
//!
//! Why the database's: every process compares times another process wrote (a claim's lease,
//! a token's expiry, a lockout's window). With each on its own wall clock, a dispatcher ten
//! minutes ahead takes over a live claim and sends twice, and one two hours behind mints reset
//! links that arrive expired. So each process measures how far its clock is from PostgreSQL's
//! ([`Clock::follow_database`], at start and every minute) and reads the wall clock corrected by
//! that: one clock, the database's, for every process, with no round trip per reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// How often a process measures its clock against the database's again.
pub const RESYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A measured skew beyond this is logged: the machine's clock wants fixing (NTP).
const SKEW_WORTH_A_WARNING: Duration = Duration::seconds(1);

/// Wall-clock time corrected to the database's, plus an offset that only tests change. Clones
/// share both, so a test that advances its clock advances it for the ingest and dispatcher it
/// started too, and a correction measured by one user of the clock serves every clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Tests' offset: time that "has passed".
    offset_ms: Arc<AtomicI64>,
    /// The database's clock minus this machine's, as last measured.
    skew_ms: Arc<AtomicI64>,
    /// A test's stand-in for a machine whose clock is wrong by this much (0 in production).
    wrong_by_ms: i64,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock on a machine whose wall clock is wrong by `by`: what `faketime` does to a
    /// process, for tests that run the dispatcher in-process.
    pub fn wrong_by(by: Duration) -> Self {
        Self {
            wrong_by_ms: by.num_milliseconds(),
            ..Self::default()
        }
    }

    /// This machine's wall clock (as wrong as it is).
    fn machine(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.wrong_by_ms)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.machine()
            + Duration::milliseconds(
                self.skew_ms.load(Ordering::Relaxed) + self.offset_ms.load(Ordering::Relaxed),
            )
    }

    /// Moves this clock (and every clone of it) forward. Meant for tests of expiry.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }

    /// How far the database's clock was from this machine's when last measured.
    pub fn skew(&self) -> Duration {
        Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Measures this machine's clock against the database's once and corrects by it: the
    /// database's `clock_timestamp()` against the middle of the round trip.
    pub async fn sync_to_database(&self, pool: &sqlx::PgPool) -> Result<Duration, sqlx::Error> {
        let before = self.machine();
        let db = crate::store::read::database_time(pool).await?;
        let after = self.machine();
        let middle = before + (after - before) / 2;
        let skew = db - middle;
        let old = self
            .skew_ms
            .swap(skew.num_milliseconds(), Ordering::Relaxed);
        if skew.abs() > SKEW_WORTH_A_WARNING && (skew.num_milliseconds() - old).abs() > 1000 {
            tracing::warn!(
                skew_ms = skew.num_milliseconds(),
                "this machine's clock is off the database's; using the database's (fix the machine's clock: NTP)"
            );
        }
        Ok(skew)
    }

    /// Syncs to the database now (a failure is logged: the machine's clock is used until it
    /// works), then every [`RESYNC_EVERY`] in the background until the pool is closed.
    pub async fn follow_database(&self, pool: &sqlx::PgPool) {
        if let Err(e) = self.sync_to_database(pool).await {
            tracing::warn!(error = %e, "cannot read the database's clock yet; using this machine's");
        }
        let (clock, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC_EVERY).await;
                if pool.is_closed() {
                    return;
                }
                let _ = clock.sync_to_database(&pool).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_machine_clock_is_corrected_by_the_measured_skew_and_tests_advance_on_top() {
        let clock = Clock::wrong_by(Duration::minutes(10));
        let ahead = clock.now() - Utc::now();
        assert!(
            ahead >= Duration::minutes(10) - Duration::seconds(1),
            "{ahead}"
        );
        // What sync_to_database measures for a machine 10 minutes ahead.
        clock.skew_ms.store(-600_000, Ordering::Relaxed);
        let off = (clock.now() - Utc::now()).abs();
        assert!(off < Duration::seconds(1), "{off}");
        clock.advance(Duration::hours(1));
        let moved = clock.now() - Utc::now();
        assert!(
            (moved - Duration::hours(1)).abs() < Duration::seconds(1),
            "{moved}"
        );
    }
}
