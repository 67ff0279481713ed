//! Every bad input to ingest gets its status and a JSON error, and nothing is written for a
//! rejected request.

use std::time::Duration;

use serde_json::{Value, json};

use mailroom_testkit::app::{API_KEY, TestApp};

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "errors are JSON (status {status})"
    );
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    (status, v)
}

#[tokio::test]
async fn bad_inputs_get_precise_errors_and_write_nothing() {
    let app = TestApp::ingest_only().await;
    let taken_email = app.unique_email();
    let taken_name = app.unique_name();
    app.sign_up_ok(&taken_name, &taken_email).await;
    let url = format!("{}/v1/signups", app.base);
    let good = json!({"name": app.unique_name(), "email": app.unique_email()});

    // 401: no key, a wrong key, a malformed header.
    let r = app.http.post(&url).json(&good).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(r).await.0, 401);
    let r = app
        .http
        .post(&url)
        .bearer_auth("nope")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 401);
    let r = app
        .http
        .post(&url)
        .header("authorization", API_KEY)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 401);
    // The second configured key works too.
    let second = json!({"name": app.unique_name(), "email": app.unique_email()});
    let r = app
        .http
        .post(&url)
        .bearer_auth("second-key")
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // 400: malformed JSON.
    let r = app
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (s, v) = error_of(r).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "bad_request");

    // 415: wrong content type.
    let r = app
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 415);

    // 413: a body over the limit, declared or streamed.
    let big = json!({"name": "x".repeat(20_000), "email": app.unique_email()});
    let r = app.post("/v1/signups", &big).await;
    assert_eq!(error_of(r).await.0, 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 1024])).collect();
    let r = app
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 413);

    // 422: each field rule, every bad field named at once.
    let cases = [
        (json!({"email": app.unique_email()}), vec!["name"]),
        (json!({"name": app.unique_name()}), vec!["email"]),
        (
            json!({"name": "", "email": "not-an-address"}),
            vec!["name", "email"],
        ),
        (
            json!({"name": "n".repeat(32), "email": app.unique_email()}),
            vec!["name"],
        ),
        (
            json!({"name": app.unique_name(), "email": format!("{}@example.com", "a".repeat(250))}),
            vec!["email"],
        ),
        (
            json!({"name": app.unique_name(), "email": app.unique_email(), "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"name": app.unique_name(), "email": app.unique_email(), "password": "p".repeat(129)}),
            vec!["password"],
        ),
        (
            json!({"name": app.unique_name(), "email": app.unique_email(), "locale": "x"}),
            vec!["locale"],
        ),
        (json!({"name": 5, "email": ["a"]}), vec!["name", "email"]),
        (
            json!({"name": app.unique_name(), "email": app.unique_email(), "emial": "typo"}),
            vec!["emial"],
        ),
        (json!(["not", "an", "object"]), vec!["body"]),
    ];
    for (body, fields) in cases {
        let r = app.post("/v1/signups", &body).await;
        let (s, v) = error_of(r).await;
        assert_eq!(s, 422, "{body}");
        let got: Vec<&String> = v["error"]["fields"].as_object().unwrap().keys().collect();
        assert_eq!(got.len(), fields.len(), "{body} → {v}");
        for f in fields {
            assert!(
                v["error"]["fields"][f].is_string(),
                "{body} should name {f}: {v}"
            );
        }
    }

    // 409: a name or an email held by a *verified* user (an unverified holder is taken over:
    // tests/api/contract.rs), a taken email in another case, both; each names what is taken.
    sqlx::query("UPDATE users SET email_verified = TRUE WHERE name = $1")
        .bind(&taken_name)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let fields_of = |v: &Value| -> Vec<String> {
        let mut fields: Vec<String> = v["error"]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        fields.sort();
        fields
    };
    let r = app.sign_up(&taken_name, &app.unique_email()).await;
    let (s, v) = error_of(r).await;
    assert_eq!(s, 409);
    assert!(v["error"]["fields"]["name"].is_string());
    assert_eq!(fields_of(&v), ["name"], "{v}");
    let r = app.sign_up(&taken_name, &taken_email).await;
    let (s, v) = error_of(r).await;
    assert_eq!(s, 409);
    assert_eq!(v["error"]["code"], "conflict");
    assert_eq!(fields_of(&v), ["email", "name"], "both are taken: {v}");
    let r = app
        .sign_up(&app.unique_name(), &taken_email.to_uppercase())
        .await;
    let (s, v) = error_of(r).await;
    assert_eq!(s, 409);
    assert!(v["error"]["fields"]["email"].is_string());
    assert_eq!(fields_of(&v), ["email"], "{v}");

    // 404 and 405.
    let r = app.get("/nope").await;
    assert_eq!(error_of(r).await.0, 404);
    let r = app
        .http
        .get(&url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(error_of(r).await.0, 405);

    // Only the two accepted signups were written, each with one job: in the outbox until the
    // broker confirms it, then in the work queue (nothing consumes it here).
    assert_eq!(app.count("users").await, 2);
    let work = mailroom::broker::Topology::new(&app.queues.prefix).work_queue();
    mailroom_testkit::eventually(
        "both jobs in the work queue",
        Duration::from_secs(20),
        || async {
            (app.count("outbox").await == 0 && app.queue_len(&work).await == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn users_can_be_looked_up_by_email() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let name = app.unique_name();
    let id = app.sign_up_ok(&name, &email).await;

    let v = app.user(&email.to_uppercase()).await;
    assert_eq!(v["id"], id.to_string());
    assert_eq!(v["name"], name);
    assert_eq!(v["email"], email);
    assert_eq!(v["email_verified"], false);
    assert!(v["created_at"].is_string());
    assert!(v.get("hashed_password").is_none());

    let users = format!("{}/v1/users", app.base);
    let r = app
        .http
        .get(&users)
        .query(&[("email", "nobody@example.com")])
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 404);
    let r = app
        .http
        .get(&users)
        .query(&[("email", "bad")])
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 422);
    let r = app
        .http
        .get(&users)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 400);
    let r = app
        .http
        .get(&users)
        .query(&[("email", email.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 401);
}

#[tokio::test]
async fn the_password_is_stored_as_an_argon2id_hash() {
    let app = TestApp::ingest_only().await;
    let email = app.unique_email();
    let id = app.sign_up_ok(&app.unique_name(), &email).await;
    let (hash,): (Option<String>,) =
        sqlx::query_as("SELECT hashed_password FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let hash = hash.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        mailroom::domain::Password::parse("correct horse battery")
            .unwrap()
            .verify(&hash)
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::ingest_only().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let (status, v) = app.readiness().await;
    assert_eq!(status, 200);
    assert_eq!(v["database"]["status"], "ok");
    assert!(v["outbox_backlog"].is_number());
    app.sign_up_ok(&app.unique_name(), &app.unique_email())
        .await;
    let text = app.metrics_text().await;
    assert!(
        text.contains("mailroom_events_accepted_total{kind=\"verification\"} 1"),
        "{text}"
    );
    assert!(text.contains("mailroom_outbox_backlog"), "{text}");
    // The public port serves no metrics: they count unknown and suppressed addresses.
    assert_eq!(app.get("/metrics").await.status(), 404);
    // The operations listener answers health too.
    assert_eq!(app.ops_get("/healthz").await.status(), 200);
    let r = app.ops_get("/readyz").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["database"]["status"], "ok");
    assert_eq!(app.ops_get("/nothing").await.status(), 404);
}

#[tokio::test]
async fn connections_past_the_cap_wait_in_the_backlog_until_one_closes() {
    let app = TestApp::start(mailroom_testkit::app::Settings {
        dispatcher: false,
        ingest_config: Some(|c| c.max_connections = 4),
        ..Default::default()
    })
    .await;
    // A client that keeps no connection of its own open between requests.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap()
    };
    let health = format!("{}/healthz", app.base);
    // Four connections that never send a request take every slot (with the test client's own
    // kept-alive one, maybe one of them waits in the backlog).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = fresh().get(&health).send().await;
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout()),
        "a fifth connection was served past the cap: {r:?}"
    );
    // One closing frees its slot: the waiting connections are served.
    drop(idle);
    let r = fresh().get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_errors_quote_it() {
    let app = TestApp::ingest_only().await;
    // The caller's own id is kept, on a success and in an error's body.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "caller-7f3a:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-7f3a:1");
    let r = app
        .http
        .get(format!("{}/no-such-page", app.base))
        .header("x-request-id", "caller-404")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "caller-404");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["request_id"], "caller-404", "{v}");
    // None given, or one that is not sane (too long, spaces, control characters): a new one.
    for given in [None, Some("x".repeat(129)), Some("two words".to_owned())] {
        let mut req = app.http.get(format!("{}/v1/nothing", app.base));
        if let Some(g) = &given {
            req = req.header("x-request-id", g);
        }
        let r = req.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{given:?} gave {id}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["request_id"], id.as_str());
    }
}
