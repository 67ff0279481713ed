//! The `dispatcher` command line: the clap [`Cli`] and its [`Command`]s, and [`main_with`],
//! which runs one. `run` consumes and sends; the other subcommands are operator tools, one
//! module each, which own their arguments, their subcommands and what they print:
//!
//! - [`run`]: `dispatcher run` (its options are [`crate::RunConfig`]).
//! - [`config`]: `dispatcher config` (what `run` would run with, and whether it passes).
//! - [`identities`]: `dispatcher identities …` (SES identities and their policies).
//! - [`account`]: `dispatcher account` (the SES account and configuration set).
//! - [`dead`]: `dispatcher dead list` and `dispatcher replay`.
//! - [`suppressions`]: `dispatcher suppressions …`.
//! - [`status`]: `dispatcher status` (the dispatchers sharing the sending rate).
//! - [`templates`]: `dispatcher templates check|render`.
//! - [`webhooks`]: `dispatcher webhooks test`.
//! - [`table`] and [`connect`]: what several of them share — fixed-width tables, and
//!   connections that fail with one clear line.
//!
//! Options of a command that has subcommands are global: `dispatcher dead list --queue-prefix
//! foo` works as well as `dispatcher dead --queue-prefix foo list`; `--log-format` is accepted
//! anywhere. `--help` never prints the value of an environment variable that may hold a
//! secret (see [`SECRET_ENV`]).

pub mod account;
pub mod config;
pub mod connect;
pub mod dead;
pub mod iam_policy;
pub mod identities;
pub mod run;
pub mod status;
pub mod suppressions;
pub mod table;
pub mod templates;
pub mod webhooks;

use clap::{Arg, Parser, Subcommand};
use mailroom::config::LogArgs;

/// The `dispatcher` binary's arguments. `dispatcher::cli::Cli::command()` (clap's
/// `CommandFactory`) lists every option and environment variable.
#[derive(Parser, Debug)]
#[command(
    name = "dispatcher",
    version,
    about = "Mailroom's dispatcher: sends queued emails through SES, and manages SES identities",
    long_about = "Mailroom's dispatcher. `run` consumes jobs from RabbitMQ, mints each link's token, \
                  renders the templates and sends through Amazon SES v2, recording every outcome in \
                  PostgreSQL; transient failures are retried through delay queues, permanent ones \
                  dead-lettered. The other subcommands are operator tools.",
    mut_args(shared)
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Consume jobs and send emails until SIGTERM or Ctrl-C.
    #[command(mut_args(hide_secret))]
    Run(Box<crate::RunConfig>),
    /// Print what `run` would run with: every variable, its value (secrets redacted) and where
    /// it came from; then check it as `run` does (exit 1 when `run` would refuse it). Takes
    /// the same options as `run`.
    #[command(mut_args(hide_secret))]
    Config(Box<crate::RunConfig>),
    /// Manage SES identities: list, verify-email, verify-domain, show, delete.
    #[command(mut_args(shared))]
    Identities(identities::IdentitiesArgs),
    /// Show the SES account: sandbox or production, quota, sending rate.
    #[command(mut_args(hide_secret))]
    Account(account::AccountArgs),
    /// Print the least-privilege IAM policy for this configuration (docs/iam/ with the region,
    /// account, sender identity and configuration set filled in); --operator for the
    /// operators' policy.
    #[command(name = "iam-policy", mut_args(hide_secret))]
    IamPolicy(iam_policy::IamPolicyArgs),
    /// Inspect the dead-letter queue without consuming or reordering it.
    #[command(mut_args(shared))]
    Dead(dead::DeadArgs),
    /// Check or preview the email templates.
    #[command(mut_args(shared))]
    Templates(templates::TemplatesArgs),
    /// Move dead letters back to the work queue: one or more jobs, an error class, or all.
    /// Each replayed job mints a fresh token when it is sent.
    #[command(mut_args(hide_secret))]
    Replay(dead::ReplayArgs),
    /// The suppression list: addresses Mailroom does not mail (hard bounces, complaints,
    /// addresses an operator added). Every send checks it.
    #[command(mut_args(shared))]
    Suppressions(suppressions::SuppressionsArgs),
    /// The dispatchers sharing the SES sending rate on this database and queue prefix: each
    /// one's host, pid, last heartbeat and share.
    #[command(mut_args(hide_secret))]
    Status(status::StatusArgs),
    /// Webhooks: check the endpoints (WEBHOOK_URL) and their signature check.
    #[command(mut_args(shared))]
    Webhooks(webhooks::WebhooksCliArgs),
}

impl Cli {
    /// The log level when RUST_LOG is unset: `info` for `run`; for the operator tools only
    /// warnings, so that their output is theirs (and not the AWS SDK's).
    pub fn default_log_level(&self) -> &'static str {
        if matches!(self.command, Command::Run(_)) {
            "info"
        } else {
            "warn,aws_runtime=error"
        }
    }
}

/// Runs the command `cli` names. Logging is the caller's (see [`Cli::default_log_level`]).
/// `matches` are what `cli` was parsed from (`dispatcher config` reports where each value came
/// from).
pub async fn main_with(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(config) => run::main(*config).await,
        Command::Config(config) => {
            use clap::CommandFactory;
            let command = Cli::command();
            let sub = command
                .find_subcommand("config")
                .expect("the config subcommand exists");
            let sub_matches = matches
                .subcommand_matches("config")
                .expect("parsed as config");
            config::main(*config, sub, sub_matches)
        }
        Command::Identities(args) => identities::main(args).await,
        Command::Account(args) => account::main(args).await,
        Command::IamPolicy(args) => iam_policy::main(args).await,
        Command::Dead(args) => dead::main(args).await,
        Command::Replay(args) => dead::replay(args).await,
        Command::Suppressions(args) => suppressions::main(args).await,
        Command::Status(args) => status::main(args).await,
        Command::Webhooks(args) => webhooks::main(args).await,
        Command::Templates(args) => templates::main(args),
    }
}

/// Environment variables whose values `--help` must not show: URLs that may carry a password
/// or a token, and signing secrets.
pub const SECRET_ENV: &[&str] = &[
    "DATABASE_URL",
    "AMQP_URL",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "CODE_SECRET",
];

/// For every option of a command: `--help` shows `[env: NAME]` without the value when the
/// variable is one of [`SECRET_ENV`]. The shared groups of `mailroom::config` do not hide them
/// themselves.
fn hide_secret(arg: Arg) -> Arg {
    let secret = arg
        .get_env()
        .is_some_and(|env| SECRET_ENV.iter().any(|s| env == *s));
    if secret {
        arg.hide_env_values(true)
    } else {
        arg
    }
}

/// For every option of a command that has subcommands (and of the top level): [`hide_secret`],
/// and global, so that it is accepted after the subcommand too. Positional and required
/// arguments cannot be global (clap refuses); none of ours are at these levels.
fn shared(arg: Arg) -> Arg {
    let arg = hide_secret(arg);
    if arg.is_positional() || arg.is_required_set() {
        arg
    } else {
        arg.global(true)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn shared_options_are_accepted_after_the_subcommand() {
        for args in [
            &[
                "dispatcher",
                "dead",
                "list",
                "--queue-prefix",
                "foo",
                "--limit",
                "3",
            ][..],
            &[
                "dispatcher",
                "dead",
                "--queue-prefix",
                "foo",
                "list",
                "--limit",
                "3",
            ],
        ] {
            let Command::Dead(d) = parse(args).command else {
                panic!("{args:?}")
            };
            assert_eq!(d.broker.queue_prefix, "foo");
            assert!(matches!(
                d.command,
                dead::DeadCommand::List {
                    limit: 3,
                    json: false
                }
            ));
        }
        let cli = parse(&["dispatcher", "dead", "list", "--log-format", "json"]);
        assert_eq!(cli.log.log_format, mailroom::config::LogFormat::Json);
        let cli = parse(&[
            "dispatcher",
            "suppressions",
            "add",
            "a@example.com",
            "--database-url",
            "postgres://elsewhere/db",
            "--detail",
            "asked",
        ]);
        let Command::Suppressions(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.db.database_url.expose(), "postgres://elsewhere/db");
        assert!(matches!(
            s.command,
            suppressions::SuppressionCommand::Add { ref detail, .. } if detail == "asked"
        ));
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for a in cmd.get_arguments() {
                assert!(a.get_help().is_some(), "{path} {} has no help", a.get_id());
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no about");
                walk(sub, &path);
            }
        }
        walk(&Cli::command(), "dispatcher");
    }

    #[test]
    fn help_hides_secret_env_values() {
        fn walk(cmd: &clap::Command) {
            for a in cmd.get_arguments() {
                if let Some(env) = a.get_env()
                    && SECRET_ENV.iter().any(|s| env == *s)
                {
                    assert!(a.is_hide_env_values_set(), "{} shows {env:?}", a.get_id());
                }
            }
            cmd.get_subcommands().for_each(walk);
        }
        walk(&Cli::command());
    }
}
