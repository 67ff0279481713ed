//! The identity commands against moto, and their one-line errors.

use std::process::Command;

use dispatcher::identities::{self, IdentityCommand};
use mailroom::testkit::{moto_url, ses_client};

async fn run(cmd: IdentityCommand) -> Result<String, String> {
    let mut out = Vec::new();
    identities::run(&ses_client(&moto_url()), cmd, &mut out)
        .await
        .map(|_| String::from_utf8(out).unwrap())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn verify_list_show_and_delete_identities() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let address = format!("ops-{id}@example.com");
    let domain = format!("d{id}.example.org");

    let out = run(IdentityCommand::VerifyEmail {
        address: address.clone(),
    })
    .await
    .unwrap();
    assert!(out.contains(&address), "{out}");
    let out = run(IdentityCommand::VerifyDomain {
        domain: domain.clone(),
    })
    .await
    .unwrap();
    assert!(out.contains(&domain), "{out}");
    // moto returns no DKIM tokens: the command says what to do instead.
    assert!(out.contains("no DKIM tokens"), "{out}");

    let list = run(IdentityCommand::List { json: false }).await.unwrap();
    assert!(list.contains(&address) && list.contains(&domain), "{list}");
    assert!(
        list.contains("EMAIL_ADDRESS") && list.contains("DOMAIN"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(IdentityCommand::List { json: true }).await.unwrap()).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == address)
    );

    let show = run(IdentityCommand::Show {
        name: domain.clone(),
    })
    .await
    .unwrap();
    assert!(show.contains("DOMAIN"), "{show}");

    run(IdentityCommand::Delete {
        name: address.clone(),
    })
    .await
    .unwrap();
    run(IdentityCommand::Delete {
        name: domain.clone(),
    })
    .await
    .unwrap();
    let list = run(IdentityCommand::List { json: false }).await.unwrap();
    assert!(
        !list.contains(&address) && !list.contains(&domain),
        "{list}"
    );

    let err = run(IdentityCommand::Show { name: domain })
        .await
        .unwrap_err();
    assert!(err.contains("NotFound"), "{err}");
    let err = run(IdentityCommand::VerifyEmail {
        address: "not an address".into(),
    })
    .await
    .unwrap_err();
    assert!(err.contains("not an address"), "{err}");
    let err = run(IdentityCommand::VerifyDomain {
        domain: "localhost".into(),
    })
    .await
    .unwrap_err();
    assert!(err.contains("not a domain"), "{err}");
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher"));
    cmd.args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", std::env::temp_dir())
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_says_in_one_line_when_ses_is_unreachable_or_credentials_are_missing() {
    let creds = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let (ok, _, err) = cli(
        &["identities", "list"],
        &[
            creds[0],
            creds[1],
            ("SES_ENDPOINT_URL", "http://127.0.0.1:1"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("could not reach SES"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let moto = moto_url();
    let (ok, _, err) = cli(
        &["identities", "list"],
        &[("SES_ENDPOINT_URL", moto.as_str())],
    );
    assert!(!ok);
    assert!(err.contains("no AWS credentials"), "{err}");

    let (ok, out, _) = cli(
        &["identities", "list"],
        &[creds[0], creds[1], ("SES_ENDPOINT_URL", moto.as_str())],
    );
    assert!(ok);
    assert!(
        out.contains("IDENTITY") || out.contains("No identities"),
        "{out}"
    );

    let (ok, out, _) = cli(
        &["account"],
        &[creds[0], creds[1], ("SES_ENDPOINT_URL", moto.as_str())],
    );
    assert!(ok);
    assert!(out.contains("does not report the account"), "{out}");

    let (ok, out, _) = cli(&["--help"], &[]);
    assert!(ok);
    assert!(out.contains("identities") && out.contains("run"), "{out}");
}
