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

/// `ingest --help` with every secret-carrying variable set: none of the values is printed.
#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let out = std::process::Command::new(mailroom_testkit::bin_path("ingest"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://app:pw-db-1234@db.internal/mailroom",
        )
        .env("AMQP_URL", "amqp://app:pw-amqp-1234@mq.internal/%2f")
        .env("INGEST_API_KEYS", "key-1234-secret")
        .env(
            "WEBHOOK_URL",
            "https://hooks:pw-hook-1234@example.com/in?token=tok-1234",
        )
        .env(
            "WEBHOOK_SECRET",
            "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
        )
        .env("CODE_SECRET", "code-secret-1234-0123456789abcdef0123")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "pw-db-1234",
        "pw-amqp-1234",
        "key-1234",
        "pw-hook-1234",
        "tok-1234",
        "whsec_c2Vj",
        "code-secret-1234",
    ] {
        assert!(!help.contains(secret), "--help shows {secret}:\n{help}");
    }
    assert!(help.contains("DATABASE_URL"), "{help}");
}

#[test]
fn print_config_shows_every_variable_with_its_source_and_no_secret() {
    let out = std::process::Command::new(mailroom_testkit::bin_path("ingest"))
        .args(["--print-config", "--listen", "127.0.0.1:1"])
        .env(
            "DATABASE_URL",
            "postgres://app:db-pass-123@db.internal/mailroom",
        )
        .env("INGEST_API_KEYS", "key-one-secret,key-two-secret")
        .env(
            "WEBHOOK_SECRET",
            "whsec_c2VjcmV0LXNpZ25pbmcta2V5LW9mLXRoaXJ0eS10d28=",
        )
        .env(
            "WEBHOOK_URL",
            "https://user:hook-pass@hooks.example.com/in?token=tok-9",
        )
        .env_remove("AMQP_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        "db-pass-123",
        "key-one-secret",
        "key-two-secret",
        "c2VjcmV0",
        "hook-pass",
        "tok-9",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("DATABASE_URL=postgres://app:***@db.internal/mailroom  # environment"),
        "{text}"
    );
    assert!(
        text.contains("INGEST_LISTEN=127.0.0.1:1  # command line"),
        "{text}"
    );
    assert!(text.contains("MAX_BODY_BYTES=16384  # default"), "{text}");
    // Every variable clap declares is there.
    let command = ingest::Config::command();
    for env in command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
    {
        assert!(text.contains(&format!("{env}=")), "{env} missing:\n{text}");
    }
}
