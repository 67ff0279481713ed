//! The `ingest` binary: parse configuration, set up logging, run until SIGTERM or Ctrl-C.

use clap::Parser;
use mailroom::clock::Clock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ingest::Config::parse();
    mailroom::telemetry::init(config.log.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    ingest::run(
        listener,
        config,
        Clock::system(),
        mailroom::shutdown_signal(),
    )
    .await
}
