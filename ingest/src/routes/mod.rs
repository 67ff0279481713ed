//! Routing: the one table of every path and method ingest serves ([`App::dispatch`], mirroring
//! [`crate::ROUTES`] and the API table of docs/api.md), and what every handler shares — the API-key
//! check, reading bodies within their limits, field parsing that names every bad field at once
//! ([`Fields`]) and the bounded password hashing. The handlers live in one module per resource:
//! [`signups`], [`requests`] (resend and reset requests), [`verifications`],
//! [`password_resets`], [`logins`], [`users`], [`ses_notifications`], [`health`], and the
//! HTML [`pages`]. Each turns a request into a response or an [`ApiError`]; parsing into domain
//! types happens at this edge, and nothing invalid goes further.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use mailroom::domain::{EmailAddress, Locale, Password, Token, UserName};
use mailroom::job::{Job, JobKind};
use mailroom::metrics::KindLabel;
use mailroom::store::{self, NewUser, Verification};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::relay::BrokerState;
use crate::{App, VerifyLinkMode, json_response};

mod health;
mod logins;
mod pages;
mod password_resets;
mod requests;
mod ses_notifications;
mod signups;
mod users;
mod verifications;

use pages::html_response;

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
        self.metrics
            .requests
            .get_or_create(&crate::RequestLabels {
                route,
                status: resp.status().as_u16(),
            })
            .inc();
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
            "/verify-email" => match *m {
                // HEAD never consumes: link scanners and previews send it, people do not.
                Method::HEAD => Ok(self.verify_head(&parts).await),
                Method::GET if self.verify_link_mode == VerifyLinkMode::Click => {
                    Ok(self.verify_confirm_page(&parts).await)
                }
                Method::GET => {
                    let token = query_param(&parts, "token");
                    Ok(self.verify_page(token).await)
                }
                // The confirm page's button (and any form post with a token).
                Method::POST => {
                    let form = if is_form(&parts) {
                        self.read_form(&parts, body).await?
                    } else {
                        Map::new()
                    };
                    let token = form.get("token").and_then(Value::as_str).map(str::to_owned);
                    Ok(self.verify_page(token).await)
                }
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            },
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
            "/v1/logins" => {
                only(m, Method::POST, "POST")?;
                self.authorize(&parts)?;
                let v = self.read_json(&parts, body).await?;
                self.login(v).await
            }
            "/v1/ses/notifications" => {
                only(m, Method::POST, "POST")?;
                // Authenticated by SNS's signature, not an API key; SNS sends text/plain, so
                // the JSON content-type rule of the API does not apply.
                self.ses_notification(&parts, body).await
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
        read_limited(parts, body, self.max_body_bytes).await
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

    /// Hashes through the bounded pool (see [`crate::hashing`]), counting what became of it.
    async fn hash_password(&self, password: Password) -> Result<String, ApiError> {
        match self.hashes.run(move || password.hash()).await {
            Ok(h) => {
                mailroom::metrics::count(&self.metrics.password_hashes, "done");
                Ok(h)
            }
            Err(crate::hashing::HashError::Busy(_)) => {
                mailroom::metrics::count(&self.metrics.password_hashes, "refused");
                Err(ApiError::Busy)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Largest SNS message (SNS's own limit is 256 KiB), plus room for the envelope.
const SNS_MAX_BYTES: usize = 300 * 1024;

/// Reads a body of at most `limit` bytes: 413 by Content-Length before reading, or while
/// reading.
async fn read_limited(parts: &Parts, body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
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
