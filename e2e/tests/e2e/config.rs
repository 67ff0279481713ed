//! docs/configuration.md against the dispatcher's options, every subcommand included: every
//! variable clap declares is in the table, and every row that says the dispatcher reads it is
//! declared. (ingest and the dashboard have the same test in their own crates.)

use clap::CommandFactory;

#[test]
fn the_configuration_table_lists_exactly_the_dispatchers_variables() {
    mailroom_testkit::docs::assert_table_matches("dispatcher", &dispatcher::cli::Cli::command());
}
