//! How long a step takes, apart from waiting for the rate limiter: what the automatic
//! concurrency is sized from (Little's law, see the consumer's `auto_concurrency`). The worker
//! measures it and the consumer reads it; this module knows neither.

use std::time::Duration;

/// A moving average of how long a step takes, apart from waiting for the rate limiter (an
/// exponentially weighted mean, so it follows SES's latency as it changes). Lock-free: steps
/// update it concurrently, and a lost update only drops one sample.
#[derive(Debug, Default)]
pub struct ServiceTime {
    micros: std::sync::atomic::AtomicU64,
}

impl ServiceTime {
    /// Weight of a new sample: about the last hundred steps count.
    const ALPHA: f64 = 0.02;

    pub fn observe(&self, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = d.as_micros().min(u64::MAX as u128) as f64;
        let old = self.micros.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old as f64 + Self::ALPHA * (sample - old as f64)
        };
        self.micros.store(new.max(1.0) as u64, Relaxed);
    }

    /// None until a step has been measured.
    pub fn get(&self) -> Option<Duration> {
        match self.micros.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}
