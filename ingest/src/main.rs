//! The `ingest` binary: parse configuration, set up logging, run until SIGTERM or Ctrl-C.

use mailroom::clock::Clock;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads: bounded memory under a flood of password hashes.
    ingest::hashing::return_large_blocks_to_the_os();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let command = ingest::Config::command();
    let matches = command.clone().get_matches();
    let config = ingest::Config::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if config.print_config {
        for line in ingest::print_config::lines(&command, &matches) {
            println!("{line}");
        }
        return Ok(());
    }
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
