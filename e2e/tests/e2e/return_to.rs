//! `return_to`: checked against `RETURN_TO_ALLOWED` when the request comes in, carried by the
//! link in the email, checked again when the page is opened, and offered there as "Continue".

use std::time::Duration;

use serde_json::json;

use mailroom_testkit::app::{Settings, TestApp, token_of};

const ALLOWED: &str = "https://app.example.com/welcome";

async fn app(verify_link_mode: ingest::VerifyLinkMode) -> TestApp {
    TestApp::start(Settings {
        verify_link_mode,
        ingest_config: Some(|c| c.return_to_allowed = vec![ALLOWED.into()]),
        ..Settings::default()
    })
    .await
}

/// The href of the page's "Continue" link, if it has one.
fn continue_link(html: &str) -> Option<String> {
    html.split("class=\"continue\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"))
}

#[tokio::test]
async fn a_return_to_outside_the_allow_list_is_422_and_an_allowed_one_comes_back_on_the_page() {
    let app = app(ingest::VerifyLinkMode::Open).await;
    let email = app.unique_email();
    let signup = |return_to: &'static str| json!({"name": app.unique_name(), "email": email, "return_to": return_to});
    for refused in [
        "https://evil.test/welcome",
        "https://app.example.com/welcomeback",
        "https://app.example.com@evil.test/welcome",
        "http://app.example.com/welcome",
        "not a url",
    ] {
        let r = app.post("/v1/signups", &signup(refused)).await;
        assert_eq!(r.status(), 422, "{refused}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(
            v["error"]["fields"]["return_to"].is_string(),
            "{refused}: {v}"
        );
    }
    let r = app
        .post(
            "/v1/password-resets",
            &json!({"email": email, "return_to": "https://evil.test/"}),
        )
        .await;
    assert_eq!(r.status(), 422);

    let back = "https://app.example.com/welcome/done?from=mail&x=1";
    let r = app.post("/v1/signups", &signup(back)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    assert!(
        link.contains("&return_to=https%3A%2F%2Fapp.example.com"),
        "{link}"
    );
    // An edited link verifies all the same, but offers no way to a place not allowed.
    let tampered = format!(
        "{}/verify-email?token={}&return_to=https%3A%2F%2Fevil.test%2F",
        app.base,
        token_of(&link).split('&').next().unwrap()
    );
    let page = app.follow(&tampered).await;
    assert_eq!(page.status(), 200);
    assert_eq!(continue_link(&page.text().await.unwrap()), None);
    // The link as mailed: already used now (410), and "Continue" leads to the app.
    let page = app.follow(&link).await;
    assert_eq!(page.status(), 410);
    assert_eq!(
        continue_link(&page.text().await.unwrap()).as_deref(),
        Some(back)
    );
}

#[tokio::test]
async fn the_reset_form_carries_return_to_through_its_post() {
    let app = app(ingest::VerifyLinkMode::Open).await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let r = app
        .post(
            "/v1/password-resets",
            &json!({"email": email, "return_to": ALLOWED}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let link = msgs.iter().find_map(|m| m.link("/reset-password")).unwrap();
    let form = app.follow(&link).await.text().await.unwrap();
    assert!(
        form.contains(&format!("name=\"return_to\" value=\"{ALLOWED}\"")),
        "{form}"
    );
    let token = token_of(&link).split('&').next().unwrap().to_owned();
    let r = app
        .http
        .post(format!("{}/v1/password-resets/confirm", app.base))
        .form(&[
            ("token", token.as_str()),
            ("password", "a new password 1"),
            ("return_to", ALLOWED),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        continue_link(&r.text().await.unwrap()).as_deref(),
        Some(ALLOWED)
    );
}

#[tokio::test]
async fn click_mode_keeps_return_to_through_the_confirm_button() {
    let app = app(ingest::VerifyLinkMode::Click).await;
    let email = app.unique_email();
    let r = app
        .post(
            "/v1/signups",
            &json!({"name": app.unique_name(), "email": email, "return_to": ALLOWED}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    let form = app.follow(&link).await.text().await.unwrap();
    assert!(
        form.contains(&format!("name=\"return_to\" value=\"{ALLOWED}\"")),
        "{form}"
    );
    let token = token_of(&link).split('&').next().unwrap().to_owned();
    let r = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token.as_str()), ("return_to", ALLOWED)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        continue_link(&r.text().await.unwrap()).as_deref(),
        Some(ALLOWED)
    );
}

#[tokio::test]
async fn the_apps_own_pages_get_return_to_in_their_links() {
    let app = app(ingest::VerifyLinkMode::Open).await;
    let email = app.unique_email();
    app.sign_up_ok(&app.unique_name(), &email).await;
    app.wait_for_email(&email).await;
    let r = app
        .post(
            "/v1/sign-in-emails",
            &json!({"email": email, "return_to": ALLOWED}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let link = msgs.iter().find_map(|m| m.link("/app/sign-in")).unwrap();
    assert!(
        link.ends_with("&return_to=https%3A%2F%2Fapp.example.com%2Fwelcome"),
        "{link}"
    );
}
