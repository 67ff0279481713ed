//! The HTML pages ingest serves, rendered from `templates/pages/`, with the headers every
//! page gets (no referrer, a strict CSP, no caching).

use super::*;

impl App {
    pub(super) fn page(&self, status: StatusCode, title: &str, message: &str, next: &str) -> Resp {
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
}

/// An HTML page with the headers every page gets.
pub(super) fn html_response(status: StatusCode, html: String) -> Resp {
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
