//! The wait before every SES call for a cell of this dispatcher's share of the sending rate
//! (the share is [`crate::rate`]'s; this is only how a step waits for it).

use std::sync::Arc;
use std::time::Duration;

use super::Worker;

impl Worker {
    /// Waits until this dispatcher's share lets one more send go; adds the wait to `waited`.
    /// False when the dispatcher shuts down first.
    pub(super) async fn wait_for_rate(&self, waited: &mut Duration) -> bool {
        // Never exceed the sending rate: wait for a cell of this dispatcher's share before every
        // call to SES. No share (joining, or the database unreachable): send nothing until
        // there is one. A cell counts only if the share is still the one it came from: a step
        // that waited on a limiter since replaced (the share changed) or lapsed would send at
        // the old share beside the steps of the new one, so it waits again.
        let wait = std::time::Instant::now();
        let mut counted = false;
        loop {
            let Some(limiter) = self.rate.limiter() else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = self.cancel.cancelled() => return false,
                }
                continue;
            };
            if limiter.check().is_ok() {
                break;
            }
            if !counted {
                self.metrics.limiter_waits.inc();
                counted = true;
            }
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = self.cancel.cancelled() => return false,
            }
            if self
                .rate
                .limiter()
                .is_some_and(|now| Arc::ptr_eq(&now, &limiter))
            {
                break;
            }
        }
        *waited += wait.elapsed();
        true
    }
}
