//! Routing and the handlers. Each handler turns a request into either a response or an
//! [`ApiError`]; parsing into domain types happens here, at the edge, and nothing invalid goes
//! further. The routing table mirrors DESIGN.md's API table.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Locale, Password, Token, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::metrics::Exposition;
use mailroom::store::{self, NewUser, Verification};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::relay::BrokerState;
use crate::{App, json_response};

type Resp = Response<Full<Bytes>>;

pub(crate) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl App {
    /// Answers one request. Never panics on input and never answers 500 for bad input.
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        let route = route_name(req.uri().path());
        let resp = match tokio::time::timeout(self.request_timeout, self.dispatch(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => e.into_response(),
            Err(_) => {
                ApiError::Unavailable("the request took too long; try again".into()).into_response()
            }
        };
        self.metrics.requests.inc(&[route, resp.status().as_str()]);
        resp
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let m = &parts.method;
        match path.as_str() {
            "/v1/signups" => {
                only(m, Method::POST, "POST")?;
                self.authorize(&parts)?;
                let v = self.read_json(&parts, body).await?;
                self.signup(v).await
            }
            "/v1/verifications" => {
                only(m, Method::POST, "POST")?;
                let v = self.read_json(&parts, body).await?;
                self.verify_api(v).await
            }
            "/verify-email" => {
                only_get(m)?;
                Ok(self.verify_page(&parts).await)
            }
            "/v1/verifications/resend" => {
                only(m, Method::POST, "POST")?;
                self.authorize(&parts)?;
                let v = self.read_json(&parts, body).await?;
                self.request_email(v, JobKind::Verification).await
            }
            "/v1/password-resets" => {
                only(m, Method::POST, "POST")?;
                self.authorize(&parts)?;
                let v = self.read_json(&parts, body).await?;
                self.request_email(v, JobKind::PasswordReset).await
            }
            "/v1/password-resets/confirm" => {
                only(m, Method::POST, "POST")?;
                if is_form(&parts) {
                    let v = self.read_form(&parts, body).await?;
                    Ok(self.confirm_reset_form(v).await)
                } else {
                    let v = self.read_json(&parts, body).await?;
                    self.confirm_reset_api(v).await
                }
            }
            "/reset-password" => {
                only_get(m)?;
                Ok(self.reset_page(&parts).await)
            }
            "/openapi.json" => {
                only_get(m)?;
                Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(crate::OPENAPI.as_bytes())))
                    .expect("valid response"))
            }
            "/v1/users" => {
                only_get(m)?;
                self.authorize(&parts)?;
                self.get_user(&parts).await
            }
            "/healthz" => {
                only_get(m)?;
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            "/readyz" => {
                only_get(m)?;
                Ok(self.readyz().await)
            }
            "/metrics" => {
                only_get(m)?;
                Ok(self.metrics_text().await)
            }
            _ => Err(ApiError::NotFound {
                code: "not_found",
                message: format!("no such endpoint: {path}"),
            }),
        }
    }

    /// Checks the bearer key. Each presented key is hashed and compared with every configured
    /// key in constant time, so neither the match position nor the length leaks through timing.
    fn authorize(&self, parts: &Parts) -> Result<(), ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let digest = key_digest(presented);
        let mut ok = subtle::Choice::from(0);
        for k in &self.api_keys {
            ok |= k.ct_eq(&digest);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Reads an `application/x-www-form-urlencoded` body (the reset form) into string fields.
    async fn read_form(
        &self,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Map<String, Value>, ApiError> {
        let bytes = self.read_limited(parts, body).await?;
        Ok(url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect())
    }

    async fn read_limited(&self, parts: &Parts, body: Incoming) -> Result<Bytes, ApiError> {
        let limit = self.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        Ok(Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest(format!("could not read the body: {e}"))
                }
            })?
            .to_bytes())
    }

    /// Reads a JSON object body: 415 unless the content type is JSON, 413 over the limit (by
    /// Content-Length before reading, or while reading), 400 when it does not parse, 422 when
    /// it is not an object.
    async fn read_json(
        &self,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Map<String, Value>, ApiError> {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = self.read_limited(parts, body).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Object(m) => Ok(m),
            _ => Err(ApiError::invalid("body", "must be a JSON object")),
        }
    }

    async fn signup(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["name", "email", "password", "locale"]);
        let name = f.required("name", UserName::parse);
        let email = f.required("email", EmailAddress::parse);
        let password = f.optional("password", Password::parse);
        let locale = f.optional("locale", Locale::parse);
        f.finish()?;
        let (name, email, password, locale) = (
            name.expect("checked"),
            email.expect("checked"),
            password.flatten(),
            locale.flatten().unwrap_or_else(Locale::default_locale),
        );
        // argon2 takes tens of milliseconds of CPU: never on the async workers.
        let hashed_password = match password {
            Some(p) => Some(
                tokio::task::spawn_blocking(move || p.hash())
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing failed: {e}")))?,
            ),
            None => None,
        };
        let job = Job::new(
            JobKind::Verification,
            uuid::Uuid::new_v4(),
            locale.clone(),
            self.clock.now(),
        );
        let user = NewUser {
            name,
            email,
            hashed_password,
            locale,
        };
        store::create_user_with_job(&self.pool, &user, &job).await?;
        // Committed: the job is safe in the outbox whatever happens next. Wake the relay so it
        // goes out now rather than at the next poll.
        self.relay_wake.notify_one();
        self.metrics.accepted.inc(&[JobKind::Verification.as_str()]);
        tracing::info!(user_id = %job.user_id, job_id = %job.job_id, "signup accepted");
        Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"user_id": job.user_id, "job_id": job.job_id}),
        ))
    }

    /// Resend-verification and password-reset requests. The answer is the same 202 whether the
    /// address is known, unknown, verified or over its limit, so it reveals nothing; what
    /// really happened is recorded in `email_requests`.
    async fn request_email(
        &self,
        body: Map<String, Value>,
        kind: JobKind,
    ) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["email"]);
        let email = f.required("email", EmailAddress::parse);
        f.finish()?;
        let email = email.expect("checked");
        let (outcome, job) =
            store::request_email(&self.pool, &email, kind, self.limits, self.clock.now()).await?;
        if job.is_some() {
            self.relay_wake.notify_one();
        }
        self.metrics.accepted.inc(&[kind.as_str()]);
        self.metrics
            .requests_by_outcome
            .inc(&[kind.as_str(), outcome.as_str()]);
        tracing::info!(
            kind = kind.as_str(),
            outcome = outcome.as_str(),
            ?job,
            "email request"
        );
        Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"status": "accepted"}),
        ))
    }

    /// Checks the new password and consumes the token. Returns what happened, for the JSON and
    /// the HTML form alike.
    async fn reset(
        &self,
        token: &Token,
        password: Password,
    ) -> Result<store::PasswordReset, ApiError> {
        let hash = tokio::task::spawn_blocking(move || password.hash())
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing failed: {e}")))?;
        let r = store::reset_password(&self.pool, &token.hash(), &hash, self.clock.now()).await?;
        if let store::PasswordReset::Changed { user_id, .. } = &r {
            self.relay_wake.notify_one();
            tracing::info!(%user_id, "password changed");
        }
        Ok(r)
    }

    async fn confirm_reset_api(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["token", "password"]);
        let token = f.required("token", Token::parse);
        let password = f.required("password", Password::parse);
        f.finish()?;
        match self
            .reset(&token.expect("checked"), password.expect("checked"))
            .await?
        {
            store::PasswordReset::Changed { user_id, .. } => {
                Ok(json_response(StatusCode::OK, &json!({"user_id": user_id})))
            }
            store::PasswordReset::Expired => Err(ApiError::Gone {
                code: "token_expired",
                message: "this reset link has expired; ask for a new one".into(),
            }),
            store::PasswordReset::Used => Err(ApiError::Gone {
                code: "token_used",
                message: "this reset link was already used".into(),
            }),
            store::PasswordReset::Unknown => Err(ApiError::NotFound {
                code: "token_unknown",
                message: "no such reset token (a newer link may have replaced it)".into(),
            }),
        }
    }

    /// The reset form's POST: answers pages, never JSON.
    async fn confirm_reset_form(&self, form: Map<String, Value>) -> Resp {
        let get = |k: &str| form.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let Ok(token) = Token::parse(&get("token")) else {
            return self.page(
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The reset link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            );
        };
        let password = match Password::parse(&get("password")) {
            Ok(p) => p,
            Err(e) => {
                return self.reset_form(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &token,
                    Some(&format!("The password {e}.")),
                );
            }
        };
        match self.reset(&token, password).await {
            Ok(store::PasswordReset::Changed { .. }) => self.page(
                StatusCode::OK,
                "Your password was changed",
                "You can now sign in with your new password.",
                "We also sent you an email about the change.",
            ),
            Ok(store::PasswordReset::Used) => self.page(
                StatusCode::GONE,
                "This link was already used",
                "Your password was changed with this link before.",
                "If you need to change it again, ask for a new reset email.",
            ),
            Ok(store::PasswordReset::Expired) => self.page(
                StatusCode::GONE,
                "This link has expired",
                "Reset links work for a limited time.",
                "Ask for a new reset email.",
            ),
            Ok(store::PasswordReset::Unknown) => self.page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "We do not know this link. If you asked for several emails, only the newest link works.",
                "Use the link in the most recent email, or ask for a new one.",
            ),
            Err(e) => {
                let status = e.status();
                tracing::warn!(error = %e, "reset form failed");
                self.page(
                    status,
                    "Please try again in a moment",
                    "We could not change your password just now.",
                    "Go back and submit the form again in a minute; the link still works.",
                )
            }
        }
    }

    /// The page the reset email links to. It only looks at the token, never consumes it:
    /// mail scanners open links, and a person must still be able to use theirs afterwards.
    async fn reset_page(&self, parts: &Parts) -> Resp {
        let token = query_param(parts, "token").and_then(|t| Token::parse(&t).ok());
        let Some(token) = token else {
            return self.page(
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The reset link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            );
        };
        match store::token_state(
            &self.pool,
            store::TokenKind::Reset,
            &token.hash(),
            self.clock.now(),
        )
        .await
        {
            Ok(store::TokenState::Valid) => self.reset_form(StatusCode::OK, &token, None),
            Ok(store::TokenState::Used) => self.page(
                StatusCode::GONE,
                "This link was already used",
                "Your password was changed with this link before.",
                "If you need to change it again, ask for a new reset email.",
            ),
            Ok(store::TokenState::Expired) => self.page(
                StatusCode::GONE,
                "This link has expired",
                "Reset links work for a limited time.",
                "Ask for a new reset email.",
            ),
            Ok(store::TokenState::Unknown) => self.page(
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "We do not know this link. If you asked for several emails, only the newest link works.",
                "Use the link in the most recent email, or ask for a new one.",
            ),
            Err(e) => {
                tracing::warn!(error = %e, "reset page could not reach the database");
                self.page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Please try again in a moment",
                    "We could not check your link just now.",
                    "Reload this page in a minute; the link still works.",
                )
            }
        }
    }

    fn reset_form(&self, status: StatusCode, token: &Token, error: Option<&str>) -> Resp {
        let html = self
            .templates
            .render_page(
                "reset_form",
                &json!({
                    "action": "/v1/password-resets/confirm",
                    "token": token.expose(),
                    "min_length": 8,
                    "max_length": 128,
                    "error": error.unwrap_or(""),
                }),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reset form template failed");
                "<!doctype html><title>Error</title><h1>Error</h1>".into()
            });
        html_response(status, html)
    }

    async fn verify_api(&self, body: Map<String, Value>) -> Result<Resp, ApiError> {
        let mut f = Fields::new(body, &["token"]);
        let token = f.required("token", Token::parse);
        f.finish()?;
        let token = token.expect("checked");
        match store::consume_verification_token(&self.pool, &token.hash(), self.clock.now()).await?
        {
            Verification::Verified { user_id, email } => {
                tracing::info!(%user_id, "email verified");
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"user_id": user_id, "email": email}),
                ))
            }
            Verification::Expired => Err(ApiError::Gone {
                code: "token_expired",
                message: "this verification link has expired; ask for a new one".into(),
            }),
            Verification::Used => Err(ApiError::Gone {
                code: "token_used",
                message: "this verification link was already used".into(),
            }),
            Verification::Unknown => Err(ApiError::NotFound {
                code: "token_unknown",
                message: "no such verification token (a newer link may have replaced it)".into(),
            }),
        }
    }

    /// The page a person sees after clicking the link in the email. Always a page, never a
    /// JSON error or a 500: a database problem gets a "try again" page.
    async fn verify_page(&self, parts: &Parts) -> Resp {
        let token = query_param(parts, "token");
        let outcome = match token.as_deref().map(Token::parse) {
            None | Some(Err(_)) => Err((
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The verification link is missing its token or was cut off.",
                "Copy the whole link from the email into your browser, or ask for a new email.",
            )),
            Some(Ok(t)) => {
                match store::consume_verification_token(&self.pool, &t.hash(), self.clock.now())
                    .await
                {
                    Ok(Verification::Verified { .. }) => Ok((
                        "Your email address is confirmed",
                        "Thank you: your address is verified.",
                        "You can close this page and sign in.",
                    )),
                    Ok(Verification::Used) => Err((
                        StatusCode::GONE,
                        "This link was already used",
                        "Your address was confirmed with this link before.",
                        "Nothing else to do: you can sign in.",
                    )),
                    Ok(Verification::Expired) => Err((
                        StatusCode::GONE,
                        "This link has expired",
                        "Verification links work for a limited time.",
                        "Sign in or use the app to ask for a new verification email.",
                    )),
                    Ok(Verification::Unknown) => Err((
                        StatusCode::NOT_FOUND,
                        "This link is not valid",
                        "We do not know this link. If you asked for several emails, only the newest link works.",
                        "Use the link in the most recent email, or ask for a new one.",
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "verification page could not reach the database");
                        Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Please try again in a moment",
                            "We could not check your link just now.",
                            "Reload this page in a minute; the link still works.",
                        ))
                    }
                }
            }
        };
        let (status, (title, message, next)) = match outcome {
            Ok(t) => (StatusCode::OK, t),
            Err((s, a, b, c)) => (s, (a, b, c)),
        };
        self.page(status, title, message, next)
    }

    fn page(&self, status: StatusCode, title: &str, message: &str, next: &str) -> Resp {
        let html = self
            .templates
            .render_page(
                "page",
                &json!({"title": title, "message": message, "next_step": next}),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "page template failed");
                format!(
                    "<!doctype html><title>{0}</title><h1>{0}</h1>",
                    status.as_str()
                )
            });
        html_response(status, html)
    }

    async fn get_user(&self, parts: &Parts) -> Result<Resp, ApiError> {
        let raw = query_param(parts, "email")
            .ok_or_else(|| ApiError::BadRequest("the email query parameter is required".into()))?;
        let email = EmailAddress::parse(&raw).map_err(|e| ApiError::invalid("email", e.0))?;
        let user = store::find_user_by_email(&self.pool, &email)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                code: "user_not_found",
                message: "no user has that email address".into(),
            })?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "id": user.id,
                "name": user.name,
                "email": user.email,
                "email_verified": user.email_verified,
                "created_at": user.created_at,
            }),
        ))
    }

    /// Ready when the database answers. A broker outage is reported but does not make ingest
    /// unready: the outbox holds the jobs until RabbitMQ is back.
    async fn readyz(&self) -> Resp {
        let db = sqlx::query("SELECT 1").execute(&self.pool).await;
        let backlog = store::outbox_backlog(&self.pool).await.ok();
        let broker = match &*self.broker_state.read().expect("state lock") {
            BrokerState::Connecting => json!({"status": "connecting"}),
            BrokerState::Connected => json!({"status": "connected"}),
            BrokerState::Down(e) => json!({"status": "down", "error": e}),
        };
        let (status, db_json) = match db {
            Ok(_) => (StatusCode::OK, json!({"status": "ok"})),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "down", "error": e.to_string()}),
            ),
        };
        json_response(
            status,
            &json!({
                "ready": status == StatusCode::OK,
                "database": db_json,
                "broker": broker,
                "outbox_backlog": backlog,
            }),
        )
    }

    async fn metrics_text(&self) -> Resp {
        let backlog = store::outbox_backlog(&self.pool).await.unwrap_or(-1);
        let connected = matches!(
            &*self.broker_state.read().expect("state lock"),
            BrokerState::Connected
        );
        let m = &self.metrics;
        let text = Exposition::default()
            .counter_vec(
                "mailroom_ingest_requests_total",
                "HTTP requests by route and status.",
                &m.requests,
            )
            .counter_vec(
                "mailroom_events_accepted_total",
                "Events accepted (written to the outbox), by kind.",
                &m.accepted,
            )
            .counter_vec(
                "mailroom_email_requests_total",
                "Reset and resend requests by kind and outcome (queued, suppressed, unknown_address, already_verified).",
                &m.requests_by_outcome,
            )
            .counter(
                "mailroom_jobs_published_total",
                "Jobs published to RabbitMQ and confirmed.",
                &m.published,
            )
            .gauge(
                "mailroom_outbox_backlog",
                "Outbox rows not yet confirmed by RabbitMQ (-1: database unavailable).",
                backlog,
            )
            .gauge(
                "mailroom_broker_connected",
                "1 when the relay is connected to RabbitMQ.",
                i64::from(connected),
            )
            .finish();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(text)))
            .expect("valid response")
    }
}

/// An HTML page with the headers every page gets.
fn html_response(status: StatusCode, html: String) -> Resp {
    Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            // The token is in the URL: keep it out of Referer headers and forbid anything but
            // our own inline styles.
            .header("referrer-policy", "no-referrer")
            .header(
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            )
            .header("x-content-type-options", "nosniff")
            .body(Full::new(Bytes::from(html)))
            .expect("valid response")
}

fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn only(m: &Method, want: Method, allow: &'static str) -> Result<(), ApiError> {
    if *m == want {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(allow))
    }
}

fn only_get(m: &Method) -> Result<(), ApiError> {
    if *m == Method::GET || *m == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed("GET"))
    }
}

fn route_name(path: &str) -> &'static str {
    crate::ROUTES
        .iter()
        .find(|(_, p)| *p == path)
        .map_or("other", |(_, p)| p)
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Collects field errors so that one 422 names every bad field at once.
struct Fields {
    body: Map<String, Value>,
    errors: BTreeMap<String, String>,
}

impl Fields {
    fn new(body: Map<String, Value>, allowed: &[&str]) -> Self {
        let mut errors = BTreeMap::new();
        for k in body.keys() {
            if !allowed.contains(&k.as_str()) {
                errors.insert(k.clone(), "unknown field".to_owned());
            }
        }
        Self { body, errors }
    }

    fn string(&mut self, name: &str) -> Option<Option<String>> {
        match self.body.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => {
                self.errors.insert(name.into(), "must be a string".into());
                None
            }
        }
    }

    fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, mailroom::domain::Invalid>,
    ) -> Option<T> {
        match self.string(name)? {
            None => {
                self.errors.insert(name.into(), "is required".into());
                None
            }
            Some(s) => match parse(&s) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.errors.insert(name.into(), e.0);
                    None
                }
            },
        }
    }

    /// `Some(None)`: absent; `Some(Some(v))`: present and valid; `None`: invalid.
    fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, mailroom::domain::Invalid>,
    ) -> Option<Option<T>> {
        match self.string(name)? {
            None => Some(None),
            Some(s) => match parse(&s) {
                Ok(v) => Some(Some(v)),
                Err(e) => {
                    self.errors.insert(name.into(), e.0);
                    None
                }
            },
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}
