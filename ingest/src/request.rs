//! Reading requests at the edge: bodies within their limits (JSON objects and HTML forms),
//! content types and query parameters. Every failure is an [`ApiError`] with its status (413,
//! 415, 400, 422), and nothing reads a body without a limit.

use bytes::Bytes;
use http::header;
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON object body, or the fields of a form, as string keys to values.
pub type Body = Map<String, Value>;

/// Reads a JSON object body: 415 unless the content type is JSON, 413 over `limit` (by
/// Content-Length before reading, or while reading), 400 when it does not parse, 422 when it
/// is not an object.
pub async fn read_json(parts: &Parts, body: Incoming, limit: usize) -> Result<Body, ApiError> {
    if content_type(parts).as_deref() != Some("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_limited(parts, body, limit).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid("body", "must be a JSON object")),
    }
}

/// Reads an `application/x-www-form-urlencoded` body (the pages' forms) into string fields.
pub async fn read_form(parts: &Parts, body: Incoming, limit: usize) -> Result<Body, ApiError> {
    let bytes = read_limited(parts, body, limit).await?;
    Ok(url::form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect())
}

/// Reads a body of at most `limit` bytes: 413 by Content-Length before reading, or while
/// reading.
pub async fn read_limited(parts: &Parts, body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
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

/// Whether the body is a form (`application/x-www-form-urlencoded`).
pub fn is_form(parts: &Parts) -> bool {
    content_type(parts).as_deref() == Some("application/x-www-form-urlencoded")
}

/// The first value of the query parameter `name`, decoded.
pub fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The content type's essence (no parameters), in lower case.
fn content_type(parts: &Parts) -> Option<String> {
    let ct = parts.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}
