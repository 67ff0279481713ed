//! The `dispatcher` binary: `run` consumes and sends; the other subcommands are operator tools.
//! Everything but loading `.env` and starting the logs is in [`dispatcher::cli`].

use clap::{CommandFactory, FromArgMatches};
use dispatcher::cli::Cli;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads exist: it sets environment variables. Not for `run`: a
    // production dispatcher started from a checkout where scripts/up once ran must not pick up
    // the local stand-in's endpoint and credentials for what its environment left unset.
    // Nor for `config`, which shows what `run` would use.
    if !matches!(std::env::args().nth(1).as_deref(), Some("run" | "config"))
        && let Some(warning) = mailroom::config::load_dotenv()
    {
        eprintln!("{warning}");
    }
    run_main()
}

#[tokio::main]
async fn run_main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    mailroom::telemetry::init_with_default(cli.log.log_format, cli.default_log_level());
    match dispatcher::cli::main_with(cli, &matches).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
