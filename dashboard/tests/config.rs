//! docs/configuration.md against the dashboard's options: every variable clap declares is in
//! the table, and every row that says the dashboard reads it is declared.

use clap::CommandFactory;

#[test]
fn the_configuration_table_lists_exactly_the_dashboards_variables() {
    mailroom_testkit::docs::assert_table_matches("dashboard", &dashboard::Config::command());
}
