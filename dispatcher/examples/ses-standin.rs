//! The SES v2 stand-in of `scripts/bench` (see `mailroom_testkit::SesStandIn`): answers
//! SendEmail after a fixed latency, GetAccount with a chosen MaxSendRate, and counts the sends
//! of each wall-clock second at `GET /stats`.
//!
//!     cargo run --release -p dispatcher --example ses-standin -- --latency 100ms --max-send-rate 200
//!
//! Prints `listening on http://ADDR` once it accepts connections; runs until killed.

use std::time::Duration;

use clap::Parser;
use mailroom::config::parse_duration;
use mailroom_testkit::{SesStandIn, StandInConfig};

/// An SES v2 stand-in for benchmarks: no checks, a fixed answer time, per-second counts.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// How long each SendEmail takes to answer, e.g. 0ms, 100ms.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    latency: Duration,
    /// MaxSendRate reported by GetAccount; unset answers GetAccount with 404, like moto.
    #[arg(long)]
    max_send_rate: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let standin = SesStandIn::start(
        listener,
        StandInConfig {
            latency: args.latency,
            max_send_rate: args.max_send_rate,
        },
    );
    println!("listening on {}", standin.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
