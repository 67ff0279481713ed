//! `dispatcher config`: what `dispatcher run` would run with — every variable it reads, its
//! value (secrets redacted, URLs without their password) and where it came from (the command
//! line, the environment, or the default; a value only `./.env` has is marked as unused, since
//! `run` reads only the environment) — and then whether that configuration passes `run`'s
//! checks. Takes the same options as `run`; exits 1 when the configuration would be refused.

use clap::{ArgMatches, Command};

use crate::RunConfig;
use crate::settings::Settings;

/// Values never printed.
const SECRET: &[&str] = &["WEBHOOK_SECRET", "CODE_SECRET"];

/// Prints the configuration of `matches` (the `config` subcommand's own) and checks it.
pub fn main(config: RunConfig, command: &Command, matches: &ArgMatches) -> anyhow::Result<()> {
    let dotenv = mailroom::config::dotenv_only();
    for line in mailroom::config::effective_config(command, matches, SECRET, &dotenv) {
        println!("{line}");
    }
    match Settings::try_from(config) {
        Ok(_) => {
            println!("# the configuration passes `dispatcher run`'s checks");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "`dispatcher run` would refuse this configuration: {e}"
        )),
    }
}
