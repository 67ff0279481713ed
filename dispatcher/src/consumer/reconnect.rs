//! [`Consumer::run`]: sessions one after another until shutdown. A lost broker is reconnected
//! to with backoff; an account stop pauses (see [`super::pause`]) and then consumes again.

use std::time::Duration;

use mailroom::broker::BrokerError;
use tokio_util::sync::CancellationToken;

use super::pause::PauseEnd;
use super::{Consumer, SessionEnd};

impl Consumer {
    /// Consumes until `cancel`; survives broker restarts and account stops. Returns an error
    /// only for what an operator must fix (a conflicting queue declaration).
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BrokerError> {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.session(&cancel).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Paused(reason, why) => {
                    if self.wait_out_pause(reason, &why, &cancel).await == PauseEnd::Shutdown {
                        return Ok(());
                    }
                }
                SessionEnd::Fatal(e) => return Err(e),
                SessionEnd::Lost(why) => {
                    tracing::warn!(error = %why, retry_in = ?backoff, "lost RabbitMQ; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                    continue;
                }
            }
            backoff = Duration::from_millis(250);
        }
        tracing::info!("consumer stopped");
        Ok(())
    }
}
