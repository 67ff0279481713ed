//! Building responses: JSON with the API's headers, and the HTML pages people see (rendered
//! from `templates/pages/`) with the headers every page gets (no referrer, a strict CSP, no
//! caching). A page whose template fails still answers, with a bare page of its status.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use mailroom::templates::Templates;
use serde_json::json;

/// What every handler answers.
pub type Resp = Response<Full<Bytes>>;

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json value serialises"),
        )))
        .expect("valid response")
}

/// A JSON body already serialised (a stored answer replayed), with the API's headers.
pub fn raw_json(status: StatusCode, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// A body of another type than JSON, as it is (`/metrics`, `/openapi.json`).
pub fn text_response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// An HTML page with the headers every page gets.
pub fn html_response(status: StatusCode, html: String) -> Resp {
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

/// The words of a plain page: its title, what happened, and what to do next.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub title: &'static str,
    pub message: &'static str,
    pub next_step: &'static str,
}

/// The generic page (`templates/pages/page.html.hbs`) with `status`.
pub fn page(templates: &Templates, status: StatusCode, page: Page) -> Resp {
    continuing_page(templates, status, page, None)
}

/// [`page`] with a "Continue" link to `continue_url` (a `return_to` the allow-list passed).
pub fn continuing_page(
    templates: &Templates,
    status: StatusCode,
    page: Page,
    continue_url: Option<&str>,
) -> Resp {
    let html = templates
        .render_page(
            "page",
            &json!({"title": page.title, "message": page.message, "next_step": page.next_step,
                    "continue_url": continue_url}),
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

/// A form page (`templates/pages/<name>.html.hbs`) with `status`.
pub fn form_page(
    templates: &Templates,
    status: StatusCode,
    name: &str,
    data: &serde_json::Value,
) -> Resp {
    let html = templates.render_page(name, data).unwrap_or_else(|e| {
        tracing::error!(error = %e, template = name, "form template failed");
        "<!doctype html><title>Error</title><h1>Error</h1>".into()
    });
    html_response(status, html)
}
