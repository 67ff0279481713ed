//! docs/configuration.md against ingest's own options: every variable clap declares is in the
//! table, and every row that says ingest reads it is declared. And a configuration that cannot
//! work is refused at start with every problem in it, before anything connects.

use clap::{CommandFactory, Parser};

#[test]
fn the_configuration_table_lists_exactly_ingests_variables() {
    mailroom_testkit::docs::assert_table_matches("ingest", &ingest::Config::command());
}

#[tokio::test]
async fn ingest_refuses_to_start_with_every_problem_of_its_configuration() {
    let config = ingest::Config::try_parse_from([
        "ingest",
        "--login-failure-limit",
        "0",
        "--soft-bounce-limit",
        "0",
        // Nothing listens there: the problems are found before any connection.
        "--database-url",
        "postgres://postgres@127.0.0.1:1/nowhere",
    ])
    .unwrap();
    let config = ingest::Config {
        api_keys: Vec::new(),
        ..config
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ingest::run(
        listener,
        config,
        mailroom::clock::Clock::system(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    for needle in [
        "INGEST_API_KEYS",
        "LOGIN_FAILURE_LIMIT is 0",
        "SOFT_BOUNCE_LIMIT is 0",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(!text.contains("cannot connect"), "{text}");
}
