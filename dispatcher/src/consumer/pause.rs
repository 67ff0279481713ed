//! Pausing on an account stop: consumption stops, and SES is asked every `pause_probe`
//! whether it may send again; every [`SEND_PROBE_EVERY`] probes a send decides instead.

use mailroom::ses::{ErrorClass, PauseReason};
use tokio_util::sync::CancellationToken;

use super::Consumer;

/// Every how many probes a paused dispatcher resumes even though `GetAccount` still says no:
/// a send is the last word (an IAM policy may allow SendEmail but not GetAccount), and a job
/// that fails with an account stop is returned uncounted, so the test costs nothing.
const SEND_PROBE_EVERY: u32 = 10;

/// How a pause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PauseEnd {
    /// SES may send again (or a send should find out): consume again.
    Resume,
    /// The dispatcher is shutting down.
    Shutdown,
}

impl Consumer {
    /// Holds consumption paused for `reason` until SES may send again or `cancel`.
    pub(super) async fn wait_out_pause(
        &self,
        reason: PauseReason,
        why: &str,
        cancel: &CancellationToken,
    ) -> PauseEnd {
        *self.paused.lock().expect("pause lock") = Some(reason);
        self.worker.metrics.pauses.inc();
        // Logged once per pause; the probes below log only at debug level.
        tracing::warn!(
            reason = reason.as_str(),
            error = %why,
            probe_every = ?self.pause_probe,
            "SES cannot send for this account: consumption paused until it can"
        );
        let mut probes = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.pause_probe) => {}
                _ = cancel.cancelled() => return PauseEnd::Shutdown,
            }
            probes += 1;
            if probes.is_multiple_of(SEND_PROBE_EVERY) {
                tracing::info!("still paused; trying a send to see whether SES takes it");
                break;
            }
            match self.probe(reason).await {
                Ok(()) => break,
                Err(still) => {
                    tracing::debug!(reason = reason.as_str(), why = %still, "still paused")
                }
            }
        }
        *self.paused.lock().expect("pause lock") = None;
        tracing::info!(reason = reason.as_str(), "resuming consumption");
        PauseEnd::Resume
    }

    /// Asks SES whether the cause of a pause is gone. `Err` says why it is not; an endpoint
    /// that cannot tell (moto has no `GetAccount`) or a network error lets a send decide.
    async fn probe(&self, reason: PauseReason) -> Result<(), String> {
        if reason == PauseReason::SenderNotVerified {
            let from = &self.worker.mail_from;
            return match mailroom::ses::sender_verified(&self.worker.ses, from).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("MAIL_FROM {from} is not a verified identity yet")),
                // Not known: let a send decide.
                Err(_) => Ok(()),
            };
        }
        match mailroom::ses::get_account(&self.worker.ses).await {
            Ok(Some(acct)) if !acct.sending_enabled => {
                Err("SES reports sending disabled for the account".into())
            }
            Ok(Some(acct))
                if reason == PauseReason::Quota
                    && acct.max_24_hour_send > 0.0
                    && acct.sent_last_24_hours >= acct.max_24_hour_send =>
            {
                Err(format!(
                    "the daily quota is used up ({} of {})",
                    acct.sent_last_24_hours, acct.max_24_hour_send
                ))
            }
            Err(e) if matches!(e.class, ErrorClass::AccountStop(_)) => Err(e.message),
            _ => Ok(()),
        }
    }
}
