//! How many steps run at once and how many deliveries are prefetched for them: fixed by
//! `SEND_CONCURRENCY`, or sized from the sending rate and the measured time of a step
//! (Little's law, [`auto_concurrency`]) and resized as either changes.

use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicCancelOptions;
use tokio::sync::Semaphore;

use super::Consumer;

/// How many steps run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// `SEND_CONCURRENCY`: this many, with a prefetch of as many.
    Fixed(usize),
    /// Sized from the sending rate and the measured time of a step (Little's law), with a
    /// prefetch of twice that; resized as either changes.
    Auto,
}

/// What an automatic concurrency assumes a step takes before one was measured: SES answers
/// in tens of milliseconds, and erring high only holds a few more deliveries.
pub const ASSUMED_STEP_TIME: Duration = Duration::from_millis(100);
/// Bounds of the automatic concurrency. The upper one keeps a dispatcher without a real rate
/// limit (a very high `MAX_SEND_RATE`) from taking the whole queue in prefetch.
pub const AUTO_MIN: usize = 4;
pub const AUTO_MAX: usize = 256;
/// How often an automatic concurrency is checked against the rate and the step time.
pub(super) const RESIZE_EVERY: Duration = Duration::from_secs(1);

/// Little's law: to keep `rate` sends a second going when each holds its slot for `step`, about
/// `rate × step` must be in flight. A quarter more absorbs variation in SES's answer times (a
/// slot free when the limiter lets the next send go is what keeps the rate, not latency), and
/// two more keep a slow rate from waiting on a single straggler.
pub fn auto_concurrency(rate: f64, step: Option<Duration>) -> usize {
    let step = step.unwrap_or(ASSUMED_STEP_TIME).as_secs_f64();
    let n = (rate.max(0.0) * step * 1.25).ceil();
    let n = if n.is_finite() { n as usize } else { AUTO_MAX };
    (n + 2).clamp(AUTO_MIN, AUTO_MAX)
}

impl Consumer {
    /// The number of steps to run at once now.
    pub(super) fn target(&self) -> usize {
        match self.concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => {
                let rate = &self.worker.rate;
                // While joining, the share is 0: size for the whole rate until it is known.
                let share = match rate.share() {
                    s if s > 0.0 => s,
                    _ => rate.account_rate(),
                };
                auto_concurrency(share, self.worker.service_time.get())
            }
        }
    }

    /// Deliveries held at once for `concurrency` steps: as many for a fixed concurrency; twice
    /// as many for an automatic one, so the next job is already here when a slot frees.
    pub(super) fn prefetch(&self, concurrency: usize) -> u16 {
        let n = match self.concurrency {
            Concurrency::Fixed(_) => concurrency,
            Concurrency::Auto => concurrency * 2,
        };
        // AMQP's prefetch count has 16 bits. `Settings` refuses a SEND_CONCURRENCY above that
        // and an automatic one stays within 2 × AUTO_MAX: the bound only serves a consumer
        // built by hand.
        n.min(u16::MAX as usize) as u16
    }

    /// Resizes an automatic concurrency when the target moved far from it (half or one and a
    /// half times): the slots at once, the prefetch by cancelling the consumer (the caller
    /// consumes again when its stream ends). Small moves are ignored, because each resize
    /// briefly lets the prefetched deliveries run out. True when the consumer was cancelled.
    pub(super) async fn resize(
        &self,
        channel: &Channel,
        tag: &str,
        slots: &Arc<Semaphore>,
        concurrency: &mut usize,
    ) -> bool {
        let target = self.target();
        let now = *concurrency;
        let far = target * 2 > now * 3 || target * 2 < now;
        if !far {
            return false;
        }
        tracing::info!(
            from = now,
            to = target,
            step_ms = self
                .worker
                .service_time
                .get()
                .map(|d| d.as_secs_f64() * 1000.0),
            share = self.worker.rate.share(),
            "resizing the send concurrency"
        );
        if target > now {
            slots.add_permits(target - now);
        } else {
            // Permits in use come back later: take them as they return, and forget them.
            let slots = slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned((now - target) as u32).await {
                    p.forget();
                }
            });
        }
        *concurrency = target;
        self.worker.metrics.concurrency.set(target as i64);
        channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_automatic_concurrency_follows_littles_law_within_its_bounds() {
        // 1,000 a second at 100 ms: 100 in flight, a quarter more, two more.
        assert_eq!(
            auto_concurrency(1000.0, Some(Duration::from_millis(100))),
            127
        );
        // 200 a second at 100 ms, before anything was measured (100 ms assumed).
        assert_eq!(auto_concurrency(200.0, None), 27);
        // SES's default 14 a second needs few.
        assert_eq!(
            auto_concurrency(14.0, Some(Duration::from_millis(60))),
            AUTO_MIN
        );
        // No real limit: bounded, not the whole queue.
        assert_eq!(
            auto_concurrency(1e9, Some(Duration::from_millis(5))),
            AUTO_MAX
        );
        assert_eq!(auto_concurrency(f64::INFINITY, None), AUTO_MAX);
    }
}
