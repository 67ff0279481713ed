//! `ingest --print-config`: the effective configuration, one variable a line, with where each
//! value came from (the command line, the environment, or clap's default) and secrets redacted
//! — what an operator checks before asking why ingest does what it does. The printing is
//! `mailroom::config::effective_config`, shared with `dispatcher config`.

use clap::{ArgMatches, Command};

/// Values never printed: API keys and signing secrets.
const SECRET: &[&str] = &["INGEST_API_KEYS", "WEBHOOK_SECRET", "CODE_SECRET"];

/// The lines `--print-config` prints for `matches` of `command`, sorted by variable.
pub fn lines(command: &Command, matches: &ArgMatches) -> Vec<String> {
    mailroom::config::effective_config(command, matches, SECRET, &mailroom::config::dotenv_only())
}
