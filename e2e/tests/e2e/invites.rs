//! Invites end to end: the invite, its email in moto, the accept page's form and its post, and
//! a login with the password the invitee chose; resending, revoking, and a taken address.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{TestApp, token_of};

async fn invite(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app.post("/v1/invites", &body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_invite_accepted_through_its_form_page_then_logs_in() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (status, v) = invite(
        &app,
        json!({"email": email, "locale": "de", "reference": "team-7"}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let user_id = v["user_id"].as_str().unwrap().to_owned();
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("mailroom_events_accepted_total{kind=\"invite\"} 1"),
        "{metrics}"
    );
    // Unverified, without a password: no login yet.
    assert_eq!(app.user(&email).await["email_verified"], false);
    let r = app
        .post(
            "/v1/logins",
            &json!({"email": email, "password": "whatever it is"}),
        )
        .await;
    assert_eq!(r.status(), 401);

    let msg = app.wait_for_email(&email).await;
    assert!(
        msg.subject.contains("eingeladen"),
        "the invitee's locale: {}",
        msg.subject
    );
    let link = msg.link("/accept-invite").expect("the invite's link");
    assert!(
        link.starts_with(&format!("{}/accept-invite?token=", app.base)),
        "{link}"
    );

    // The page is a form; looking at it (twice) uses nothing up.
    for _ in 0..2 {
        let page = app.follow(&link).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("action=\"/v1/invites/accept\""), "{html}");
    }
    // A weak password gets the form again, with what is wrong.
    let post = |password: &'static str| {
        app.http
            .post(format!("{}/v1/invites/accept", app.base))
            .form(&[
                ("token", token_of(&link)),
                ("password", password.to_owned()),
            ])
            .send()
    };
    let r = post("short").await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("password"));
    let r = post("my own password 1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Your account is ready"));

    let r = app
        .post(
            "/v1/logins",
            &json!({"email": email, "password": "my own password 1"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["user_id"].as_str(), v["email_verified"].as_bool()),
        (Some(&*user_id), Some(true))
    );
    // The link is spent: the page says so, and the JSON endpoint 410.
    assert_eq!(app.follow(&link).await.status(), 410);
    let r = app
        .http
        .post(format!("{}/v1/invites/accept", app.base))
        .json(&json!({"token": token_of(&link), "password": "another password 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    // Resending an accepted invite is a conflict; a verified address cannot be invited.
    let r = app
        .post(&format!("/v1/invites/{user_id}/resend"), &json!({}))
        .await;
    assert_eq!(r.status(), 409);
    let (status, v) = invite(&app, json!({"email": email})).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"]["fields"]["email"].is_string(), "{v}");
}

#[tokio::test]
async fn a_resent_invite_kills_the_older_link_and_a_revoked_one_is_gone() {
    let app = TestApp::spawn().await;
    let email = app.unique_email();
    let (status, v) = invite(&app, json!({"email": email, "name": app.unique_name()})).await;
    assert_eq!(status, 202, "{v}");
    let user_id = v["user_id"].as_str().unwrap().to_owned();
    let first = app
        .wait_for_email(&email)
        .await
        .link("/accept-invite")
        .unwrap();

    // A resend: a new link, within the address's limits (one a minute).
    let r = app
        .post(&format!("/v1/invites/{user_id}/resend"), &json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert!(v["job_id"].is_string(), "{v}");
    let msgs = app.moto.wait_for(&email, 2, Duration::from_secs(30)).await;
    let second = msgs
        .iter()
        .filter_map(|m| m.link("/accept-invite"))
        .find(|l| *l != first)
        .expect("a second link");
    assert_eq!(
        app.follow(&first).await.status(),
        404,
        "the older link is dead"
    );
    assert_eq!(app.follow(&second).await.status(), 200);
    let r = app
        .post(&format!("/v1/invites/{user_id}/resend"), &json!({}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["job_id"],
        Value::Null,
        "over the per-minute limit: not sent"
    );

    // Revoked: the user is gone, and so is the link.
    let r = app
        .http
        .delete(format!("{}/v1/invites/{user_id}", app.base))
        .bearer_auth(mailroom_testkit::app::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.follow(&second).await.status(), 404);
    let r = app
        .http
        .get(format!("{}/v1/users", app.base))
        .query(&[("email", &email)])
        .bearer_auth(mailroom_testkit::app::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .delete(format!("{}/v1/invites/{user_id}", app.base))
        .bearer_auth(mailroom_testkit::app::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a second revoke");
}
