//! The one error type of the HTTP surface. Each variant documents its status; expected
//! outcomes (bad input, conflicts, spent tokens) carry a precise code for the client, and
//! unexpected ones are logged with their cause chain and answered 500 without internals.

use std::collections::BTreeMap;

use http::{StatusCode, header};
use mailroom::store::CreateUserError;
use serde_json::json;

use crate::hashing::HashError;
use crate::response::{Resp, json_response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or a query parameter is missing.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no API key, or not one of `INGEST_API_KEYS`.
    #[error("a valid API key is required: send Authorization: Bearer <key>")]
    Unauthorized,
    /// 401 `invalid_credentials`: the same for an unknown address, a wrong password and a user
    /// without a password, so that the answer does not tell which.
    #[error("the email address or the password is wrong")]
    InvalidCredentials,
    /// 429 with `Retry-After`: too many failed logins for this address lately.
    #[error("too many failed logins for this address; try again in {0} s")]
    TooManyAttempts(u64),
    /// 429 `address_limited` with `Retry-After`: the address got as many emails of this kind
    /// lately as `ADDRESS_LIMIT_PER_MINUTE` / `_PER_HOUR` allow (where telling it is safe: an
    /// email change names a user the caller already knows).
    #[error(
        "this address got as many emails of this kind lately as its limits allow; try again later"
    )]
    AddressLimited,
    /// 403: an SNS message whose signature, topic or certificate does not check out.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown path, user or token.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 405: known path, wrong method; the methods it takes (the `Allow` header).
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(String),
    /// 409: the name or the email address is already registered, or both are: `fields` names
    /// each one taken (see [`ApiError::taken`]).
    #[error("{message}")]
    Conflict {
        fields: BTreeMap<String, String>,
        message: String,
    },
    /// 422 `idempotency_key_reused`: the `Idempotency-Key` was first used with another
    /// request (another body or endpoint).
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// 409 `idempotency_key_in_progress` with `Retry-After`: the first request with this key
    /// has not been answered yet.
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    IdempotencyKeyInProgress,
    /// 410: the token expired or was already used.
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// 413: body over `MAX_BODY_BYTES`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: not `application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 422 `invalid_code` with `attempts_left`: a wrong one-time code, or an address with no
    /// live code (answered alike, so that the answer does not tell which).
    #[error("that code is not right; {0} attempt(s) left")]
    WrongCode(u32),
    /// 422: well-formed JSON whose fields break the rules; one message per field.
    #[error("some fields are invalid")]
    Invalid(BTreeMap<String, String>),
    /// 503: a dependency (the database) is down or the request took too long; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After: 1`: every password-hashing slot and its queue is taken.
    #[error("too many password operations in progress; try again in a moment")]
    Busy,
    /// 500: a bug or an unexpected failure; details go to the log only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why a link's token did not work. Every link endpoint answers these alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    Expired,
    Used,
    /// Never issued, or replaced by a newer link.
    Unknown,
}

impl ApiError {
    /// The answer for a `what` link (`verification`, `reset`) whose token did not work: 410
    /// when it expired or was used, 404 when it is unknown.
    pub fn link(what: &str, why: LinkRefused) -> Self {
        match why {
            LinkRefused::Expired => ApiError::Gone {
                code: "token_expired",
                message: format!("this {what} link has expired; ask for a new one"),
            },
            LinkRefused::Used => ApiError::Gone {
                code: "token_used",
                message: format!("this {what} link was already used"),
            },
            LinkRefused::Unknown => ApiError::NotFound {
                code: "token_unknown",
                message: format!("no such {what} token (a newer link may have replaced it)"),
            },
        }
    }
}

impl ApiError {
    /// The answer to a one-time code that did not work (see `mailroom::policy::codes`).
    pub fn code_refused(answer: mailroom::policy::codes::Answer) -> Self {
        use mailroom::policy::codes::Answer;
        let gone = |code, message: &str| ApiError::Gone {
            code,
            message: message.to_owned(),
        };
        match answer {
            Answer::Wrong { attempts_left } => ApiError::WrongCode(attempts_left),
            Answer::Expired => gone("code_expired", "this code has expired; ask for a new one"),
            Answer::Used => gone("code_used", "this code was already used"),
            Answer::Exhausted => gone(
                "code_exhausted",
                "too many wrong attempts: this code no longer works; ask for a new one",
            ),
            // Not an error; a caller that got here has a bug.
            Answer::Matched => ApiError::Internal(anyhow::anyhow!("a matched code was refused")),
        }
    }

    /// 422 for a request that needs one-time codes on a service without `CODE_SECRET`.
    pub fn codes_off(field: &str) -> Self {
        ApiError::invalid(
            field,
            "one-time codes are off on this service (its CODE_SECRET is not set)",
        )
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(field.to_owned(), message.into());
        ApiError::Invalid(m)
    }

    /// 409 naming what is taken of a signup's name and email address (at least one of them).
    pub fn taken(name: bool, email: bool) -> Self {
        const NAME: &str = "that name is taken";
        const EMAIL: &str = "that email address is already registered";
        let mut fields = BTreeMap::new();
        if name {
            fields.insert("name".to_owned(), NAME.to_owned());
        }
        if email {
            fields.insert("email".to_owned(), EMAIL.to_owned());
        }
        let message = match (name, email) {
            (true, true) => format!("{NAME} and {EMAIL}"),
            (true, false) => NAME.to_owned(),
            _ => EMAIL.to_owned(),
        };
        ApiError::Conflict { fields, message }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts(_) | ApiError::AddressLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } | ApiError::IdempotencyKeyInProgress => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::WrongCode(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::TooManyAttempts(_) => "too_many_attempts",
            ApiError::AddressLimited => "address_limited",
            ApiError::NotFound { code, .. } | ApiError::Gone { code, .. } => code,
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInProgress => "idempotency_key_in_progress",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Invalid(_) => "invalid_fields",
            ApiError::WrongCode(_) => "invalid_code",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Busy => "busy",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn into_response(self) -> Resp {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed unexpectedly");
                "something went wrong on our side; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let fields = match &self {
            ApiError::Invalid(f) => json!(f),
            ApiError::Conflict { fields, .. } => json!(fields),
            _ => json!({}),
        };
        let mut body =
            json!({ "error": { "code": self.code(), "message": message, "fields": fields } });
        if let ApiError::WrongCode(left) = &self {
            body["error"]["attempts_left"] = json!(left);
        }
        // The id the caller can quote (and find in the logs): see routes::handle.
        if let Some(id) = crate::routes::current_request_id() {
            body["error"]["request_id"] = json!(id);
        }
        let mut resp = json_response(status, &body);
        if let ApiError::Unauthorized = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        if let ApiError::TooManyAttempts(secs) = self {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                secs.max(1).to_string().parse().expect("digits"),
            );
        }
        if let ApiError::AddressLimited = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, "60".parse().expect("static"));
        }
        // Both kinds of 503 pass by themselves: say when to try again.
        if let ApiError::Busy | ApiError::Unavailable(_) | ApiError::IdempotencyKeyInProgress = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("static"));
        }
        if let ApiError::MethodNotAllowed(allow) = &self {
            resp.headers_mut()
                .insert(header::ALLOW, allow.parse().expect("method names"));
        }
        resp
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy(_) => ApiError::Busy,
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // A restart or failover ends connections with 57P01 and the like: that is the
        // database being away (503, retry), not a fault of the request (500).
        if mailroom::store::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable("the database is unavailable; try again shortly".into())
        } else {
            ApiError::Internal(anyhow::Error::new(e).context("database"))
        }
    }
}

impl From<CreateUserError> for ApiError {
    fn from(e: CreateUserError) -> Self {
        match e {
            CreateUserError::NameTaken => ApiError::taken(true, false),
            CreateUserError::EmailTaken => ApiError::taken(false, true),
            CreateUserError::Db(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(e: ApiError) -> Vec<String> {
        let body = http_body_util::BodyExt::collect(e.into_response().into_body());
        let bytes = futures_util::FutureExt::now_or_never(body)
            .expect("a full body is ready")
            .expect("infallible")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["error"]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn a_conflict_names_every_field_taken() {
        assert_eq!(fields_of(ApiError::taken(true, false)), ["name"]);
        assert_eq!(fields_of(ApiError::taken(false, true)), ["email"]);
        assert_eq!(fields_of(ApiError::taken(true, true)), ["email", "name"]);
        assert_eq!(
            ApiError::taken(true, true).to_string(),
            "that name is taken and that email address is already registered"
        );
        assert_eq!(ApiError::taken(true, true).status(), StatusCode::CONFLICT);
    }
}
