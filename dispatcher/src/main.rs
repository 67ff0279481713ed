//! The `dispatcher` binary: `run` consumes and sends; the other subcommands are operator tools.

use clap::{Parser, Subcommand};
use dispatcher::identities::{self, IdentityCommand};
use mailroom::clock::Clock;
use mailroom::config::{LogArgs, SesArgs};

#[derive(Parser, Debug)]
#[command(
    name = "dispatcher",
    version,
    about = "Mailroom's dispatcher: sends queued emails through SES, and manages SES identities",
    long_about = "Mailroom's dispatcher. `run` consumes jobs from RabbitMQ, mints each link's token, \
                  renders the templates and sends through Amazon SES v2, recording every outcome in \
                  PostgreSQL; transient failures are retried through delay queues, permanent ones \
                  dead-lettered. The other subcommands are operator tools."
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume jobs and send emails until SIGTERM or Ctrl-C.
    Run(Box<dispatcher::RunConfig>),
    /// Manage SES identities: list, verify-email, verify-domain, show, delete.
    Identities {
        #[command(flatten)]
        ses: SesArgs,
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Show the SES account: sandbox or production, quota, sending rate.
    Account {
        #[command(flatten)]
        ses: SesArgs,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn,aws_runtime=error"
    };
    mailroom::telemetry::init_with_default(cli.log.log_format, level);
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(config) => {
            let sdk = mailroom::ses::load_sdk_config(&config.ses).await;
            dispatcher::run(*config, Clock::system(), sdk, mailroom::shutdown_signal()).await
        }
        Command::Identities { ses, command } => {
            // Interactive commands may use the SDK's own retries: there is no ladder here.
            let client = mailroom::ses::client(&ses, 3).await;
            identities::run(&client, command, &mut std::io::stdout())
                .await
                .map_err(anyhow::Error::from)
        }
        Command::Account { ses } => {
            let client = mailroom::ses::client(&ses, 3).await;
            identities::account(&client, &mut std::io::stdout())
                .await
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
