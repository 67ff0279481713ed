//! The identity commands against moto, and their one-line errors.

use std::process::Command;

use dispatcher::cli::account;
use dispatcher::cli::identities::{self, IdentityCommand};
use mailroom_testkit::{moto_url, ses_client};

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
    let mut cmd = Command::new(mailroom_testkit::bin_path("dispatcher"));
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

#[tokio::test]
async fn identity_policies_can_be_put_listed_replaced_and_deleted() {
    use dispatcher::cli::identities::PolicyCommand;
    let identity = format!("p{}.example.org", uuid::Uuid::new_v4().simple());
    run(IdentityCommand::VerifyDomain {
        domain: identity.clone(),
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("mailroom-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.json");
    let policy = |sid: &str| {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": sid, "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": ["ses:SendEmail"],
                "Resource": format!("arn:aws:ses:us-east-1:123456789012:identity/{identity}")
            }]
        })
        .to_string()
    };
    std::fs::write(&file, policy("first")).unwrap();
    let put = |file: std::path::PathBuf| {
        run(IdentityCommand::Policy(PolicyCommand::Put {
            identity: identity.clone(),
            name: "billing-app".into(),
            file,
        }))
    };
    assert!(
        put(file.clone())
            .await
            .unwrap()
            .contains("Created policy billing-app")
    );
    std::fs::write(&file, policy("second")).unwrap();
    assert!(
        put(file.clone())
            .await
            .unwrap()
            .contains("Replaced policy billing-app")
    );
    let list = run(IdentityCommand::Policy(PolicyCommand::List {
        identity: identity.clone(),
    }))
    .await
    .unwrap();
    assert!(
        list.contains("billing-app") && list.contains("second"),
        "{list}"
    );

    // A file that is not JSON, or not there: one line, nothing sent.
    std::fs::write(&file, "not json").unwrap();
    let e = put(file.clone()).await.unwrap_err();
    assert!(e.contains("is not a JSON policy document"), "{e}");
    let e = put(dir.join("missing.json")).await.unwrap_err();
    assert!(e.contains("cannot read"), "{e}");

    run(IdentityCommand::Policy(PolicyCommand::Delete {
        identity: identity.clone(),
        name: "billing-app".into(),
    }))
    .await
    .unwrap();
    let list = run(IdentityCommand::Policy(PolicyCommand::List {
        identity: identity.clone(),
    }))
    .await
    .unwrap();
    assert!(list.contains("has no policies"), "{list}");
    run(IdentityCommand::Delete { name: identity })
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sends_name_the_configuration_set_and_account_says_whether_it_exists() {
    let name = format!("cs-{}", uuid::Uuid::new_v4().simple());
    let client = ses_client(&moto_url());
    client
        .create_configuration_set()
        .configuration_set_name(&name)
        .send()
        .await
        .expect("moto creates configuration sets");
    let mut out = Vec::new();
    account::account(&client, Some(&name), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("configuration set: {name} (exists)")),
        "{text}"
    );
    let mut out = Vec::new();
    account::account(&client, Some("no-such-set"), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("no-such-set is MISSING"), "{text}");

    // A real send through the pipeline names it, and SES (moto) takes it.
    let app = mailroom_testkit::app::TestApp::start(mailroom_testkit::app::Settings {
        configuration_set: Some(name.clone()),
        ..Default::default()
    })
    .await;
    let email = app.unique_email();
    let (_, job) = app.sign_up_job(&app.unique_name(), &email).await;
    app.wait_for_status(job, "sent").await;
    let _ = client
        .delete_configuration_set()
        .configuration_set_name(&name)
        .send()
        .await;
}

/// `dispatcher iam-policy`: the account id from STS (moto's GetCallerIdentity answers its
/// fixed account), the region, the sender's identity and the configuration set filled in; with
/// `--account-id`, no call at all (nothing listens on the endpoint then).
#[test]
fn iam_policy_fills_the_policy_for_this_configuration() {
    let moto = moto_url();
    let envs = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "eu-west-1"),
        ("SES_ENDPOINT_URL", moto.as_str()),
        ("MAIL_FROM", "no-reply@mail.example.org"),
        ("SES_CONFIGURATION_SET", "mailroom-events"),
    ];
    let (ok, out, err) = cli(&["iam-policy"], &envs);
    assert!(ok, "{err}");
    let policy: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let text = policy.to_string();
    for want in [
        "arn:aws:ses:eu-west-1:123456789012:identity/mail.example.org",
        "arn:aws:ses:eu-west-1:123456789012:identity/no-reply@mail.example.org",
        "arn:aws:ses:eu-west-1:123456789012:configuration-set/mailroom-events",
        "ses:SendEmail",
        "ses:GetAccount",
    ] {
        assert!(text.contains(want), "{want}: {out}");
    }
    assert!(!text.contains("ACCOUNT_ID") && !text.contains("REGION") && !text.contains("ses:*"));

    let mut offline = envs;
    offline[3] = ("SES_ENDPOINT_URL", "http://127.0.0.1:9");
    let (ok, out, err) = cli(
        &["iam-policy", "--operator", "--account-id", "111122223333"],
        &offline,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("arn:aws:ses:eu-west-1:111122223333:identity/*"),
        "{out}"
    );
    assert!(out.contains("ses:CreateEmailIdentity"), "{out}");
    // Without --account-id and without a reachable STS: one line saying what to do.
    let (ok, _, err) = cli(&["iam-policy"], &offline);
    assert!(!ok);
    assert!(err.contains("--account-id"), "{err}");
    let (ok, _, err) = cli(&["iam-policy", "--account-id", "12ab"], &offline);
    assert!(!ok && err.contains("12-digit"), "{err}");
}

/// "Request production access" as a command: the real SES client sends PutAccountDetails with
/// what the flags say (the project's stand-in records it; moto has no such call), and
/// `dispatcher account` then shows the sandbox and the pending review.
// Multi-threaded: the CLI runs blocking on this thread while the stand-in answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_production_sends_the_form_and_account_shows_the_review() {
    use mailroom_testkit::{SesStandIn, StandInConfig};
    let standin = SesStandIn::bind(StandInConfig {
        max_send_rate: Some(1.0),
        ..Default::default()
    })
    .await;
    let url = standin.url();
    let envs = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("SES_ENDPOINT_URL", url.as_str()),
    ];
    let use_case = "Account emails only: address verification and password resets for people \
                    who signed up; bounces and complaints suppress the address at once.";
    let (ok, out, err) = cli(
        &[
            "account",
            "request-production",
            "--website-url",
            "https://app.example.com",
            "--use-case",
            use_case,
            "--additional-contact",
            "ops@example.com",
        ],
        &envs,
    );
    assert!(ok, "{err}");
    assert!(out.contains("Asked SES for production access"), "{out}");
    let sent: serde_json::Value = reqwest::get(format!("{url}/account-details"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["ProductionAccessEnabled"], true, "{sent}");
    assert_eq!(sent["MailType"], "TRANSACTIONAL", "{sent}");
    assert_eq!(sent["ContactLanguage"], "EN", "{sent}");
    assert_eq!(sent["WebsiteURL"], "https://app.example.com/", "{sent}");
    assert_eq!(
        sent["AdditionalContactEmailAddresses"],
        serde_json::json!(["ops@example.com"])
    );
    assert!(
        sent["UseCaseDescription"]
            .as_str()
            .unwrap()
            .starts_with("Account emails only")
    );

    let (ok, out, err) = cli(&["account"], &envs);
    assert!(ok, "{err}");
    assert!(
        out.contains("production review: PENDING (case standin-case-1)"),
        "{out}"
    );
    assert!(out.contains("sandbox limits:"), "{out}");

    // Bad input is refused before any call.
    let (ok, _, err) = cli(
        &[
            "account",
            "request-production",
            "--website-url",
            "app",
            "--use-case",
            "x",
        ],
        &[("SES_ENDPOINT_URL", url.as_str())],
    );
    assert!(!ok && err.contains("--website-url"), "{err}");
}
