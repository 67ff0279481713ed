//! `dispatcher run`: the dispatcher itself — loads the AWS SDK configuration and runs
//! [`crate::run`] on the system clock until SIGTERM or Ctrl-C. Its options are
//! [`crate::RunConfig`].

use mailroom::clock::Clock;

use crate::RunConfig;

/// Runs `dispatcher run` until a shutdown signal.
pub async fn main(config: RunConfig) -> anyhow::Result<()> {
    let sdk = mailroom::ses::load_sdk_config(&config.ses).await;
    crate::run(config, Clock::system(), sdk, mailroom::shutdown_signal()).await
}
