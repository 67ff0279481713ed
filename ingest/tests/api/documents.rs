//! The documents ingest and the dispatcher serve or check: the OpenAPI document (its paths
//! are exactly [`ingest::ROUTES`], and each answers on its method) and the templates CLI.

use std::process::Command;

use serde_json::Value;

use mailroom_testkit::app::{API_KEY, TestApp};

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::ingest_only().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    documented.sort();
    let mut served: Vec<(String, String)> = ingest::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    // Every documented operation answers (not 404/405) on its method.
    for (method, path) in &served {
        let req = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth(API_KEY);
        let status = req.send().await.unwrap().status().as_u16();
        assert!(
            status != 404
                || path.contains("users")
                || path.contains("email")
                || path.contains("reset")
                // Off unless SNS_TOPIC_ARNS is set, and then 404 by design.
                || path.contains("ses/notifications"),
            "{method} {path} → {status}"
        );
        assert_ne!(status, 405, "{method} {path}");
    }
}

#[test]
fn the_templates_cli_checks_and_renders() {
    let bin = mailroom_testkit::bin_path("dispatcher");
    let out = Command::new(&bin)
        .args(["templates", "check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok  de/verification") && text.contains("ok  en/password_changed"),
        "{text}"
    );

    let out = Command::new(&bin)
        .args(["templates", "render", "verification", "--locale", "de-AT"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fallback for de-AT") && text.contains("Bitte bestätige"),
        "{text}"
    );
    assert!(
        text.contains("Ada &lt;b&gt;Lovelace"),
        "HTML part escaped: {text}"
    );

    let out = Command::new(&bin)
        .args(["templates", "render", "sms"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
    // A webhook is a kind of job, not an email; every email kind is named in the refusal.
    let out = Command::new(&bin)
        .args(["templates", "render", "webhook"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sign_in") && err.contains("email_change_notice"),
        "{err}"
    );
    let out = Command::new(&bin)
        .args([
            "templates",
            "render",
            "email_change_notice",
            "--locale",
            "de",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("n***@example.com") && text.contains("cancel-email-change"),
        "{text}"
    );

    // A template using a name it is not given fails the check.
    let dir = std::env::temp_dir().join(format!("mailroom-tpl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("email/en")).unwrap();
    for part in ["subject", "txt", "html"] {
        std::fs::write(
            dir.join(format!("email/en/verification.{part}.hbs")),
            "{{link}} {{user_nmae}}",
        )
        .unwrap();
    }
    let out = Command::new(&bin)
        .args(["templates", "check", "--templates-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user_nmae"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
