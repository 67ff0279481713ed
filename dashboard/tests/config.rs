//! docs/configuration.md against the dashboard's options: every variable clap declares is in
//! the table, and every row that says the dashboard reads it is declared.

use clap::CommandFactory;

#[test]
fn the_configuration_table_lists_exactly_the_dashboards_variables() {
    mailroom_testkit::docs::assert_table_matches("dashboard", &dashboard::Config::command());
}

/// `dashboard --help` with every secret-carrying variable set: none of the values is printed.
#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dashboard"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:pw-db-1234@db.internal/mailroom",
        )
        .env("AMQP_URL", "amqp://app:pw-amqp-1234@mq.internal/%2f")
        .env(
            "RABBITMQ_MANAGEMENT_URL",
            "http://admin:pw-mgmt-1234@mq.internal:15672",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for secret in ["pw-db-1234", "pw-amqp-1234", "pw-mgmt-1234"] {
        assert!(!help.contains(secret), "--help shows {secret}:\n{help}");
    }
}
