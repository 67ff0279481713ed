//! ingest's requests as a client sends them: the input is an HTTP/1.1 request (head, a blank
//! line, body), served by hyper exactly as ingest serves a connection, and routed by its path
//! to what that route's handler does with it before touching the database: the body read
//! within its limit (`read_json`, or `read_form` for a form post), the fields checked by
//! `Fields` with the domain parsers (`EmailAddress` with IDN, `UserName`, `Password`, `Token`,
//! `Locale`), or the query parameter the page routes read. The field lists below are those of
//! the handlers in `ingest/src/routes/` (signups, logins, requests, verifications,
//! password_resets, users); keep them alike.
//!
//! The target writes `content-length` for the body unless the head has one already or says
//! `transfer-encoding` (then the fuzzer's own framing is used, and a wrong one is what it is).
//! Beyond "no panic", it checks what the handlers rely on: a body that passes `Fields::finish`
//! has every required field (the handlers `expect` them), bad input is always a 4xx that
//! renders as a response, and each parser's output parses again to itself (one spelling of an
//! address, a name, a locale, a token).

#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ingest::error::ApiError;
use ingest::fuzzing::{Body, Fields, is_form, query_param, read_form, read_json};
use libfuzzer_sys::fuzz_target;
use mailroom::domain::{EmailAddress, Locale, Password, Token, UserName};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// ingest's default `MAX_BODY_BYTES`.
const LIMIT: usize = 16 * 1024;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
});

type Handled = Result<(), ApiError>;

/// The parts of the route handlers that read and check what the client sent.
async fn route(req: Request<Incoming>) -> Handled {
    let (parts, body) = req.into_parts();
    let post = parts.method == http::Method::POST;
    match (post, parts.uri.path()) {
        // signups::create
        (true, "/v1/signups") => {
            let body = read_json(&parts, body, LIMIT).await?;
            check_strings(&body);
            let mut f = Fields::new(body, &["name", "email", "password", "locale"]);
            let name = f.required("name", UserName::parse);
            let email = f.required("email", EmailAddress::parse);
            let password = f.optional("password", Password::parse);
            let locale = f.optional("locale", Locale::parse);
            f.finish()?;
            let (name, email, _password, locale) = (
                name.expect("checked"),
                email.expect("checked"),
                password.flatten(),
                locale.flatten().unwrap_or_else(Locale::default_locale),
            );
            check_name(&name);
            check_email(&email);
            check_locale(&locale);
        }
        // logins::check
        (true, "/v1/logins") => {
            let body = read_json(&parts, body, LIMIT).await?;
            check_strings(&body);
            let mut f = Fields::new(body, &["email", "password"]);
            let email = f.required("email", EmailAddress::parse);
            let password = f.required("password", Password::parse_presented);
            f.finish()?;
            check_email(&email.expect("checked"));
            password.expect("checked");
        }
        // requests::request_email (resend and reset requests)
        (true, "/v1/verifications/resend" | "/v1/password-resets") => {
            let body = read_json(&parts, body, LIMIT).await?;
            check_strings(&body);
            let mut f = Fields::new(body, &["email"]);
            let email = f.required("email", EmailAddress::parse);
            f.finish()?;
            check_email(&email.expect("checked"));
        }
        // verifications::verify
        (true, "/v1/verifications") => {
            let body = read_json(&parts, body, LIMIT).await?;
            check_strings(&body);
            let mut f = Fields::new(body, &["token"]);
            let token = f.required("token", Token::parse);
            f.finish()?;
            check_token(&token.expect("checked"));
        }
        // password_resets::confirm: the form's post, or JSON
        (true, "/v1/password-resets/confirm") => {
            if is_form(&parts) {
                let form = read_form(&parts, body, LIMIT).await?;
                check_strings(&form);
                let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                if let Ok(token) = Token::parse(&get("token")) {
                    check_token(&token);
                    if let Err(e) = Password::parse(&get("password")) {
                        let _ = format!("The password {e}.");
                    }
                }
            } else {
                let body = read_json(&parts, body, LIMIT).await?;
                check_strings(&body);
                let mut f = Fields::new(body, &["token", "password"]);
                let token = f.required("token", Token::parse);
                let password = f.required("password", Password::parse);
                f.finish()?;
                check_token(&token.expect("checked"));
                password.expect("checked");
            }
        }
        // verifications::confirm_link: the confirm button's form post
        (true, "/verify-email") => {
            let form = if is_form(&parts) {
                read_form(&parts, body, LIMIT).await?
            } else {
                Body::new()
            };
            check_strings(&form);
            let token = form.get("token").and_then(Value::as_str).map(str::to_owned);
            if let Some(Ok(t)) = token.as_deref().map(Token::parse) {
                check_token(&t);
            }
        }
        // verifications::open_link and password_resets::open_link
        (false, "/verify-email" | "/reset-password") => {
            if let Some(Ok(t)) = query_param(&parts, "token").map(|t| Token::parse(&t)) {
                check_token(&t);
            }
        }
        // users::find
        (false, "/v1/users") => {
            let raw = query_param(&parts, "email").ok_or_else(|| {
                ApiError::BadRequest("the email query parameter is required".into())
            })?;
            let email = EmailAddress::parse(&raw).map_err(|e| ApiError::invalid("email", e.0))?;
            check_email(&email);
        }
        _ => {}
    }
    Ok(())
}

/// Every string of a body through every parser, whatever its field: the parsers see more
/// than the fields the route names.
fn check_strings(body: &Body) {
    for (k, v) in body {
        for s in [Some(k.as_str()), v.as_str()].into_iter().flatten() {
            if let Ok(e) = EmailAddress::parse(s) {
                check_email(&e);
            }
            if let Ok(n) = UserName::parse(s) {
                check_name(&n);
            }
            if let Ok(l) = Locale::parse(s) {
                check_locale(&l);
            }
            if let Ok(t) = Token::parse(s) {
                check_token(&t);
            }
            let _ = Password::parse(s);
            let _ = Password::parse_presented(s);
        }
    }
}

fn check_email(e: &EmailAddress) {
    let s = e.as_str();
    assert!(s.is_ascii() && s.len() <= 255, "{s:?}");
    assert_eq!(s.matches('@').count(), 1, "{s:?}");
    assert_eq!(
        EmailAddress::parse(s).as_ref(),
        Ok(e),
        "an address parses to itself"
    );
}

fn check_name(n: &UserName) {
    let s = n.as_str();
    assert!((1..=31).contains(&s.chars().count()), "{s:?}");
    assert_eq!(
        UserName::parse(s).as_ref(),
        Ok(n),
        "a name parses to itself"
    );
}

fn check_locale(l: &Locale) {
    assert_eq!(
        Locale::parse(l.as_str()).as_ref(),
        Ok(l),
        "a locale parses to itself"
    );
    let chain = l.fallback_chain();
    assert_eq!(chain[0], l.as_str());
    assert!(chain.iter().any(|c| c == "en"), "{chain:?}");
}

fn check_token(t: &Token) {
    let s = t.expose();
    assert!(
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{s:?}"
    );
    assert_eq!(Token::parse(s).as_ref(), Ok(t), "a token parses to itself");
    assert_eq!(t.hash().as_str().len(), 64);
}

/// Serves one connection whose client sends `raw` and closes, as ingest serves connections.
async fn serve(raw: Vec<u8>) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let svc = service_fn(|req: Request<Incoming>| async move {
        let resp = match route(req).await {
            Ok(()) => ingest::json_response(StatusCode::OK, &json!({"status": "ok"})),
            Err(e) => {
                let status = e.status();
                assert!(
                    status.is_client_error(),
                    "input is answered 4xx, never {status}: {e:?}"
                );
                e.into_response()
            }
        };
        Ok::<_, Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(false)
        // The client below closes its side once it has written the request (so that a body
        // shorter than it says ends in an error, not a wait): serve what came before that.
        .half_close(true)
        .serve_connection(TokioIo::new(server), svc);
    client
        .write_all(&raw)
        .await
        .expect("the duplex holds the request");
    client.shutdown().await.expect("shutdown");
    let _ = conn.await;
}

fuzz_target!(|data: &[u8]| {
    let split = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    let head = &data[..split];
    let body = data.get(split + 4..).unwrap_or_default();
    let mut raw = head.to_vec();
    let lower = head.to_ascii_lowercase();
    let has = |name: &[u8]| lower.windows(name.len()).any(|w| w == name);
    if !has(b"content-length:") && !has(b"transfer-encoding:") {
        raw.extend_from_slice(format!("\r\ncontent-length: {}", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(body);
    RUNTIME.block_on(serve(raw));
});
