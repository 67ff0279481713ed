//! docs/configuration.md against the dispatcher's options, every subcommand included: every
//! variable clap declares is in the table, and every row that says the dispatcher reads it is
//! declared. (ingest and the dashboard have the same test in their own crates.)

use clap::CommandFactory;

#[test]
fn the_configuration_table_lists_exactly_the_dispatchers_variables() {
    mailroom_testkit::docs::assert_table_matches("dispatcher", &dispatcher::cli::Cli::command());
}

/// `dispatcher config` prints what `run` would use and where each value came from, with
/// secrets redacted; a value only `./.env` holds is marked as unused; a configuration `run`
/// would refuse exits 1 with the reason.
#[test]
fn dispatcher_config_shows_each_value_its_source_and_whether_run_would_accept_it() {
    let dir = std::env::temp_dir().join(format!("mailroom-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "RETENTION_SENDS=7d\n").unwrap();
    let run = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(mailroom_testkit::bin_path("dispatcher"));
        cmd.arg("config")
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MAIL_FROM", "no-reply@example.com")
            .env(
                "DATABASE_URL",
                "postgres://app:db-pw-4711@db.internal/mailroom",
            )
            .env(
                "WEBHOOK_URL",
                "https://user:hook-pw@hooks.example/in?token=t0k3n",
            )
            .env(
                "WEBHOOK_SECRET",
                "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtb25lLTMyYnl0ZXM=",
            )
            .env("CODE_SECRET", "code-pw-0815-0123456789abcdef0123456789");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "db-pw-4711",
        "hook-pw",
        "t0k3n",
        "bWFpbHJvb20",
        "code-pw-0815",
    ] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"))
            .to_owned()
    };
    assert!(line("MAIL_FROM").ends_with("# environment"), "{text}");
    assert!(line("RETRY_DELAYS").ends_with("# default"), "{text}");
    assert!(line("WEBHOOK_SECRET").contains("[redacted"), "{text}");
    assert!(line("CODE_SECRET").contains("[redacted"), "{text}");
    assert!(
        line("RETENTION_SENDS").contains("./.env sets it too"),
        "{}",
        line("RETENTION_SENDS")
    );
    assert!(text.contains("passes `dispatcher run`'s checks"), "{text}");

    let bad = run(&[("RETRY_DELAYS", "0s"), ("RETENTION_SWEEP_INTERVAL", "0s")]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("RETRY_DELAYS") && err.contains("RETENTION_SWEEP_INTERVAL"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
