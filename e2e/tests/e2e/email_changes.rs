//! Email changes end to end: the request, the confirmation at the new address and the notice
//! at the old one in moto, the pages (a button; only its POST acts), the "changed" email, a
//! cancel from the old address, a new address taken meanwhile, and both addresses confirming.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{Settings, TestApp, token_of};

/// The POST a page's button makes.
async fn press(app: &TestApp, page: &str, link: &str) -> (u16, String) {
    let token = token_of(link).split('&').next().unwrap().to_owned();
    let r = app
        .http
        .post(format!("{}/{page}", app.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn request_change(app: &TestApp, user: uuid::Uuid, body: Value) -> (u16, Value) {
    let r = app
        .post(&format!("/v1/users/{user}/email-changes"), &body)
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A verified user: signed up, link followed.
async fn verified_user(app: &TestApp) -> (uuid::Uuid, String) {
    let email = app.unique_email();
    let id = app.sign_up_ok(&app.unique_name(), &email).await;
    let link = app
        .wait_for_email(&email)
        .await
        .link("/verify-email")
        .unwrap();
    assert_eq!(app.follow(&link).await.status(), 200);
    (id, email)
}

const SECRET: &str = "whsec_bWFpbHJvb20tdGVzdC1zZWNyZXQtb25lLTMyYnl0ZXM=";

#[tokio::test]
async fn a_change_confirmed_through_the_new_address_tells_the_old_one_twice() {
    let receiver = mailroom_testkit::WebhookReceiver::start().await;
    let app = TestApp::start(Settings {
        webhooks: mailroom::webhook::WebhookArgs {
            webhook_urls: vec![format!("{}#events=user.email_changed", receiver.url())],
            webhook_events: Vec::new(),
            webhook_secret: Some(mailroom::config::Secret::new(SECRET)),
            webhook_timeout: Duration::from_secs(5),
        },
        ..Settings::default()
    })
    .await;
    let (user, old) = verified_user(&app).await;
    // A reset link mailed to the old address before the change: it must die with the change.
    let r = app
        .post("/v1/password-resets", &json!({"email": old}))
        .await;
    assert_eq!(r.status(), 202);
    let reset = app
        .moto
        .wait_for(&old, 2, Duration::from_secs(30))
        .await
        .iter()
        .find_map(|m| m.link("/reset-password"))
        .expect("the reset email");
    let new = app.unique_email();
    let (status, v) = request_change(&app, user, json!({"new_email": new})).await;
    assert_eq!(status, 202, "{v}");
    assert!(v["change_id"].is_string());

    // The new address: confirm. The old one: a notice naming the new one, masked, to cancel.
    let confirm = app.wait_for_email(&new).await;
    let link = confirm
        .link("/confirm-email-change")
        .expect("a confirm link");
    let old_msgs = app.moto.wait_for(&old, 3, Duration::from_secs(30)).await;
    let notice = old_msgs
        .iter()
        .find(|m| m.link("/cancel-email-change").is_some())
        .expect("the notice");
    let masked = format!("{}***@{}", &new[..1], new.split('@').nth(1).unwrap());
    assert!(notice.body.contains(&masked), "{}", notice.body);
    assert!(
        !notice.body.contains(&new),
        "the notice never shows the whole new address"
    );
    assert_eq!(
        notice.link("/confirm-email-change"),
        None,
        "only the new address confirms"
    );

    // Opening the link (GET, HEAD) changes nothing: a scanner cannot confirm.
    let head = app.http.head(&link).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let page = app.follow(&link).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("action=\"/confirm-email-change\"")
    );
    assert_eq!(
        app.user(&old).await["email"],
        old,
        "the old address keeps working"
    );

    let (status, html) = press(&app, "confirm-email-change", &link).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Your email address was changed"), "{html}");
    let now = app.user(&new).await;
    assert_eq!(
        (now["id"].as_str(), now["email_verified"].as_bool()),
        (Some(&*user.to_string()), Some(true))
    );
    let r = app
        .http
        .get(format!("{}/v1/users", app.base))
        .query(&[("email", &old)])
        .bearer_auth(mailroom_testkit::app::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the old address is no longer the account's"
    );
    // "Your address was changed", to the old address.
    let old_msgs = app.moto.wait_for(&old, 4, Duration::from_secs(30)).await;
    assert!(
        old_msgs.iter().any(|m| m.subject.contains("was changed")),
        "{old_msgs:?}"
    );
    // The links are spent: confirming again, or cancelling now, does nothing.
    let (status, _) = press(&app, "confirm-email-change", &link).await;
    assert_eq!(status, 410);
    let cancel = notice.link("/cancel-email-change").unwrap();
    let (status, _) = press(&app, "cancel-email-change", &cancel).await;
    assert_eq!(status, 410);
    assert_eq!(app.user(&new).await["email"], new);
    // Every link the old address held died with the change.
    assert_eq!(app.follow(&reset).await.status(), 410);
    let event =
        mailroom_testkit::eventually("user.email_changed", Duration::from_secs(20), || async {
            receiver
                .received()
                .into_iter()
                .map(|r| r.json())
                .find(|b| b["type"] == "user.email_changed")
        })
        .await;
    assert_eq!(
        (
            &event["data"]["user_id"],
            &event["data"]["old_email"],
            &event["data"]["new_email"]
        ),
        (&json!(user.to_string()), &json!(old), &json!(new))
    );
}

#[tokio::test]
async fn a_change_cancelled_from_the_old_address_never_happens() {
    let app = TestApp::spawn().await;
    let (user, old) = verified_user(&app).await;
    let new = app.unique_email();
    let (status, _) = request_change(&app, user, json!({"new_email": new})).await;
    assert_eq!(status, 202);
    let link = app
        .wait_for_email(&new)
        .await
        .link("/confirm-email-change")
        .unwrap();
    let msgs = app.moto.wait_for(&old, 2, Duration::from_secs(30)).await;
    let cancel = msgs
        .iter()
        .find_map(|m| m.link("/cancel-email-change"))
        .unwrap();
    assert_eq!(
        app.follow(&cancel).await.status(),
        200,
        "the page is a button"
    );
    let (status, html) = press(&app, "cancel-email-change", &cancel).await;
    assert_eq!(status, 200);
    assert!(html.contains("cancelled"), "{html}");
    let (status, _) = press(&app, "confirm-email-change", &link).await;
    assert_eq!(status, 410, "a cancelled change cannot be confirmed");
    assert_eq!(app.user(&old).await["email"], old);
    // The new address was mailed a minute ago: its per-address limit says wait.
    let r = app
        .post(
            &format!("/v1/users/{user}/email-changes"),
            &json!({"new_email": new}),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "address_limited");
}

#[tokio::test]
async fn a_new_address_taken_meanwhile_is_409_at_confirm_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let (user, old) = verified_user(&app).await;
    let new = app.unique_email();
    let (status, _) = request_change(&app, user, json!({"new_email": new})).await;
    assert_eq!(status, 202);
    let confirm = app
        .wait_for_email(&new)
        .await
        .link("/confirm-email-change")
        .unwrap();
    // Meanwhile someone signs up with the new address and verifies it.
    let other = app.sign_up_ok(&app.unique_name(), &new).await;
    let msgs = app.moto.wait_for(&new, 2, Duration::from_secs(30)).await;
    let verify = msgs.iter().find_map(|m| m.link("/verify-email")).unwrap();
    assert_eq!(app.follow(&verify).await.status(), 200);

    let (status, html) = press(&app, "confirm-email-change", &confirm).await;
    assert_eq!(status, 409, "{html}");
    assert_eq!(app.user(&old).await["id"], user.to_string());
    assert_eq!(app.user(&new).await["id"], other.to_string());
    // And asking for it now is refused at once.
    let (status, v) = request_change(&app, user, json!({"new_email": new})).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["fields"]["new_email"].is_string(), "{v}");
    // Bad requests: the user's own address, and no such user.
    let (status, _) = request_change(&app, user, json!({"new_email": old.to_uppercase()})).await;
    assert_eq!(status, 422);
    let (status, _) = request_change(
        &app,
        uuid::Uuid::new_v4(),
        json!({"new_email": app.unique_email()}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn with_both_the_old_address_confirms_too_and_a_code_can_confirm_the_new() {
    let app = TestApp::start(Settings {
        ingest_config: Some(|c| c.email_change_confirm = ingest::config::EmailChangeConfirm::Both),
        ..Settings::default()
    })
    .await;
    let (user, old) = verified_user(&app).await;
    let new = app.unique_email();
    let (status, v) = request_change(&app, user, json!({"new_email": new, "method": "code"})).await;
    assert_eq!(status, 202, "{v}");
    let change_id = v["change_id"].as_str().unwrap().to_owned();
    let code = app
        .wait_for_email(&new)
        .await
        .code()
        .expect("a code for the new address");
    let msgs = app.moto.wait_for(&old, 2, Duration::from_secs(30)).await;
    let old_confirm = msgs
        .iter()
        .find_map(|m| m.link("/confirm-email-change"))
        .expect("the old address confirms too");

    let r = app
        .post(
            &format!("/v1/email-changes/{change_id}/confirm"),
            &json!({"code": "000000"}),
        )
        .await;
    // One in a million the code is 000000; otherwise it is wrong and costs an attempt.
    if code != "000000" {
        assert_eq!(r.status(), 422);
    }
    let r = app
        .post(
            &format!("/v1/email-changes/{change_id}/confirm"),
            &json!({"code": code}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "waiting_for_old_address", "{v}");
    assert_eq!(app.user(&old).await["email"], old, "not yet");

    let (status, html) = press(&app, "confirm-email-change", &old_confirm).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(app.user(&new).await["id"], user.to_string());
}

#[tokio::test]
async fn a_suppressed_new_address_is_refused_at_request() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let user = app.sign_up_ok(&app.unique_name(), &email).await;
    let bounced = app.unique_email();
    sqlx::query("INSERT INTO suppressions (email, reason, detail, created_at) VALUES ($1, 'bounce', 'test', now())")
        .bind(&bounced)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, v) = request_change(&app, user, json!({"new_email": bounced})).await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]["fields"]["new_email"]
            .as_str()
            .unwrap()
            .contains("suppression"),
        "{v}"
    );
}
