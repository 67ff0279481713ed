//! Routing: [`ROUTES`], the one table of every method and path ingest serves, who may call it
//! and its handler. Dispatch reads it, the request metrics are labelled from it, and a test
//! compares it with the `paths` of openapi.json, so that none of them can drift from the
//! others. Answers 404 for a path not in the table and 405 (with `Allow`) for a method not in
//! it; `HEAD` is served by the `GET` route of its path.
//!
//! The handlers live in one module per resource, each a function of the [`AppState`] and the
//! request's parts and body that returns a response or an [`ApiError`]: [`signups`],
//! [`requests`] (resend, reset and sign-in requests), [`sign_ins`], [`verifications`],
//! [`password_resets`],
//! [`logins`], [`users`], [`ses_notifications`], [`health`] and [`openapi`].

use std::future::Future;
use std::pin::Pin;

use http::request::Parts;
use http::{Method, Request};
use hyper::body::Incoming;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::RequestLabels;
use crate::response::Resp;
use crate::state::AppState;

mod email_changes;
pub(crate) mod health;
mod invites;
mod jobs;
mod logins;
mod openapi;
mod password_resets;
mod requests;
mod ses_notifications;
mod sign_ins;
mod signups;
mod users;
mod verifications;

/// What a handler's future gives.
pub type Handled = Result<Resp, ApiError>;

/// A handler's future, borrowing the state.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Handled> + Send + 'a>>;

/// A handler: the state, the request's parts and its body (unread: the handler reads it
/// within its limit, or not at all).
pub type Handler = for<'a> fn(&'a AppState, Parts, Incoming) -> HandlerFuture<'a>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Services, with one of `INGEST_API_KEYS` (checked before the body is read).
    ApiKey,
    /// Anyone: people's browsers, probes, SNS (whose signature its handler checks).
    Public,
}

/// One method and path, and what answers it.
pub struct Route {
    pub method: Method,
    /// The path, as in openapi.json: literal segments, and `{name}` for a segment that is a
    /// parameter (read with [`path_param`]).
    pub path: &'static str,
    pub access: Access,
    handler: Handler,
}

/// Every route ingest serves; the OpenAPI document lists exactly these (a test checks it).
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::POST,
        path: "/v1/signups",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(signups::create(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/verifications",
        access: Access::Public,
        handler: |s, p, b| Box::pin(verifications::verify(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/verifications/resend",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(requests::resend_verification(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/password-resets",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(requests::request_reset(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/sign-in-emails",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(requests::request_sign_in(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/sign-ins",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(sign_ins::sign_in(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/invites",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(invites::create(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/invites/accept",
        access: Access::Public,
        handler: |s, p, b| Box::pin(invites::accept(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/invites/{user_id}/resend",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(invites::resend(s, p, b)),
    },
    Route {
        method: Method::DELETE,
        path: "/v1/invites/{user_id}",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(invites::revoke(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/accept-invite",
        access: Access::Public,
        handler: |s, p, _| Box::pin(invites::open_link(s, p)),
    },
    Route {
        method: Method::POST,
        path: "/v1/users/{id}/email-changes",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(email_changes::request(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/email-changes/{change_id}/confirm",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(email_changes::confirm_code(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/confirm-email-change",
        access: Access::Public,
        handler: |s, p, _| Box::pin(email_changes::open_link(s, p)),
    },
    Route {
        method: Method::POST,
        path: "/confirm-email-change",
        access: Access::Public,
        handler: |s, p, b| Box::pin(email_changes::use_link(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/cancel-email-change",
        access: Access::Public,
        handler: |s, p, _| Box::pin(email_changes::open_link(s, p)),
    },
    Route {
        method: Method::POST,
        path: "/cancel-email-change",
        access: Access::Public,
        handler: |s, p, b| Box::pin(email_changes::use_link(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/password-resets/confirm",
        access: Access::Public,
        handler: |s, p, b| Box::pin(password_resets::confirm(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/verify-email",
        access: Access::Public,
        handler: |s, p, _| Box::pin(verifications::open_link(s, p)),
    },
    Route {
        method: Method::POST,
        path: "/verify-email",
        access: Access::Public,
        handler: |s, p, b| Box::pin(verifications::confirm_link(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/reset-password",
        access: Access::Public,
        handler: |s, p, _| Box::pin(password_resets::open_link(s, p)),
    },
    Route {
        method: Method::GET,
        path: "/v1/users",
        access: Access::ApiKey,
        handler: |s, p, _| Box::pin(users::find(s, p)),
    },
    Route {
        method: Method::GET,
        path: "/v1/jobs/{job_id}",
        access: Access::ApiKey,
        handler: |s, p, _| Box::pin(jobs::show(s, p)),
    },
    Route {
        method: Method::GET,
        path: "/v1/users/{id}/emails",
        access: Access::ApiKey,
        handler: |s, p, _| Box::pin(jobs::of_user(s, p)),
    },
    Route {
        method: Method::DELETE,
        path: "/v1/users/{id}",
        access: Access::ApiKey,
        handler: |s, p, _| Box::pin(users::erase(s, p)),
    },
    Route {
        method: Method::PATCH,
        path: "/v1/users/{id}",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(users::correct(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/ses/notifications",
        access: Access::Public,
        handler: |s, p, b| Box::pin(ses_notifications::receive(s, p, b)),
    },
    Route {
        method: Method::POST,
        path: "/v1/logins",
        access: Access::ApiKey,
        handler: |s, p, b| Box::pin(logins::check(s, p, b)),
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        access: Access::Public,
        handler: |_, _, _| Box::pin(health::healthz()),
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        access: Access::Public,
        handler: |s, _, _| Box::pin(health::readyz(s)),
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        access: Access::Public,
        handler: |_, _, _| Box::pin(openapi::document()),
    },
];

/// The parameters of the request's path, in order (see [`Route::path`]). Put in the request's
/// extensions by [`dispatch`].
#[derive(Debug, Clone, Default)]
pub struct PathParams(Vec<String>);

/// The `i`-th parameter of the request's path (`{…}` segments, counted from 0).
pub fn path_param(parts: &Parts, i: usize) -> &str {
    parts
        .extensions
        .get::<PathParams>()
        .and_then(|p| p.0.get(i))
        .map_or("", String::as_str)
}

/// Whether `path` is an instance of the route template `template`; its parameters if so. A
/// parameter segment is never empty.
fn match_path(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') && !b.is_empty() => {
                params.push(b.to_owned());
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// The request id of the request being answered (see [`handle`]), for error bodies.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller's `x-request-id` when it is a sane one (1 to 128 characters of letters, digits
/// and `-_.:`), so that a trace spans the calling service too; else a new UUID. Anything else
/// a caller sends there is not trusted into logs.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Answers one request within `REQUEST_TIMEOUT` and counts it by route and status. Never
/// panics on input and never answers 500 for bad input. Every answer carries the request's
/// id (`x-request-id`, taken or made), every log line of the request has it (its span), and
/// so does every error body.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Resp {
    use tracing::Instrument;
    let route = route_name(req.uri().path());
    let id = request_id(&req);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), route);
    let timeout = state.settings.http.request_timeout;
    // Set by dispatch once the key checked out, for the metrics label.
    let caller = std::sync::Mutex::new(None::<Caller>);
    let answer = async {
        match tokio::time::timeout(timeout, guard_panics(dispatch(state, req, &caller))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => e.into_response(),
            Err(_) => {
                ApiError::Unavailable("the request took too long; try again".into()).into_response()
            }
        }
    };
    let mut resp = REQUEST_ID.scope(id.clone(), answer.instrument(span)).await;
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: resp.status().as_u16(),
            api_key: caller
                .into_inner()
                .ok()
                .flatten()
                .map_or_else(|| "none".to_owned(), |c| c.name().to_owned()),
        })
        .inc();
    resp
}

/// Runs a handler, turning a panic into a 500 with the usual JSON error body: without this,
/// hyper drops the connection and the caller sees a reset instead of an answer it can retry.
/// The panic is logged; whatever the handler committed before it stays committed, as with any
/// 500.
async fn guard_panics(handler: impl std::future::Future<Output = Handled>) -> Handled {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(handled) => handled,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(ApiError::Internal(anyhow::anyhow!(
                "handler panicked: {what}"
            )))
        }
    }
}

/// Finds the route, checks the API key where the route wants one (the [`Caller`] goes into
/// the request's extensions, and into `caller` for the metrics), and runs its handler.
async fn dispatch(
    state: &AppState,
    req: Request<Incoming>,
    caller: &std::sync::Mutex<Option<Caller>>,
) -> Handled {
    let (mut parts, body) = req.into_parts();
    let route = find(&parts.method, parts.uri.path())?;
    if let Some(params) = match_path(route.path, parts.uri.path()) {
        parts.extensions.insert(PathParams(params));
    }
    if route.access == Access::ApiKey {
        let who = state.settings.api_keys.authorize(&parts)?;
        if let Ok(mut c) = caller.lock() {
            *c = Some(who.clone());
        }
        parts.extensions.insert(who);
    }
    (route.handler)(state, parts, body).await
}

/// The caller of an API-key route (set by [`dispatch`] before the handler runs).
pub fn caller_of(parts: &Parts) -> Caller {
    parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller(std::sync::Arc::from(Caller::DEFAULT)))
}

/// The route of `method` and `path`: 404 when no route has the path, 405 when none of its
/// routes has the method (`HEAD` is taken by a `GET` route).
fn find(method: &Method, path: &str) -> Result<&'static Route, ApiError> {
    let of_path = || {
        ROUTES
            .iter()
            .filter(move |r| match_path(r.path, path).is_some())
    };
    let takes =
        |r: &&Route| r.method == *method || (*method == Method::HEAD && r.method == Method::GET);
    if let Some(route) = of_path().find(takes) {
        return Ok(route);
    }
    let allowed: Vec<&str> = of_path().map(|r| r.method.as_str()).collect();
    if allowed.is_empty() {
        Err(ApiError::NotFound {
            code: "not_found",
            message: format!("no such endpoint: {path}"),
        })
    } else {
        Err(ApiError::MethodNotAllowed(allowed.join(", ")))
    }
}

/// The metrics label of a path: its route's template when it is routed, else `other`.
fn route_name(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| match_path(r.path, path).is_some())
        .map_or("other", |r| r.path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_table_and_the_openapi_paths_are_the_same() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routed but not in openapi.json: {undocumented:?}; in openapi.json but not routed: \
             {unrouted:?}"
        );
        assert_eq!(routed.len(), ROUTES.len(), "a method and path routed twice");
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405_with_allow() {
        assert_eq!(
            find(&Method::POST, "/v1/signups").unwrap().path,
            "/v1/signups"
        );
        assert_eq!(find(&Method::HEAD, "/healthz").unwrap().method, Method::GET);
        assert_eq!(
            find(&Method::POST, "/verify-email").unwrap().method,
            Method::POST
        );
        match find(&Method::GET, "/v1/signups") {
            Err(ApiError::MethodNotAllowed(allow)) => assert_eq!(allow, "POST"),
            _ => panic!("405"),
        }
        match find(&Method::DELETE, "/verify-email") {
            Err(ApiError::MethodNotAllowed(allow)) => assert_eq!(allow, "GET, POST"),
            _ => panic!("405"),
        }
        match find(&Method::HEAD, "/v1/logins") {
            Err(ApiError::MethodNotAllowed(allow)) => assert_eq!(allow, "POST"),
            _ => panic!("405"),
        }
        assert!(matches!(
            find(&Method::GET, "/nope"),
            Err(ApiError::NotFound { .. })
        ));
        assert_eq!(route_name("/v1/users"), "/v1/users");
        assert_eq!(route_name("/v1/users/1/x"), "other");
        assert_eq!(route_name("/v1/jobs/abc"), "/v1/jobs/{job_id}");
        assert_eq!(route_name("/v1/jobs/"), "other");
    }

    #[test]
    fn path_parameters_are_whole_non_empty_segments() {
        let m = |t, p| match_path(t, p);
        assert_eq!(
            m("/v1/jobs/{job_id}", "/v1/jobs/42"),
            Some(vec!["42".into()])
        );
        assert_eq!(m("/v1/jobs/{job_id}", "/v1/jobs/"), None);
        assert_eq!(m("/v1/jobs/{job_id}", "/v1/jobs/4/2"), None);
        assert_eq!(
            m("/v1/users/{id}/emails", "/v1/users/u1/emails"),
            Some(vec!["u1".into()])
        );
        assert_eq!(m("/v1/users", "/v1/users"), Some(vec![]));
        assert_eq!(m("/v1/users", "/v1/users/"), None);
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_instead_of_dropping_the_connection() {
        let handled = guard_panics(async { panic!("boom") }).await;
        let resp = handled.unwrap_err().into_response();
        assert_eq!(resp.status(), 500);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{:?}",
            resp.headers()
        );
    }
}
