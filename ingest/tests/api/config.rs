//! docs/configuration.md against ingest's own options: every variable clap declares is in the
//! table, and every row that says ingest reads it is declared.

use clap::CommandFactory;

#[test]
fn the_configuration_table_lists_exactly_ingests_variables() {
    mailroom_testkit::docs::assert_table_matches("ingest", &ingest::Config::command());
}
