//! [`Fields`]: parsing a JSON object (or form) into domain types field by field, so that one
//! 422 names every bad field at once, unknown fields included. Nothing invalid goes past it.

use std::collections::BTreeMap;

use mailroom::domain::Invalid;
use serde_json::Value;

use crate::error::ApiError;
use crate::request::Body;

/// Collects field errors so that one 422 names every bad field at once.
pub struct Fields {
    body: Body,
    errors: BTreeMap<String, String>,
}

impl Fields {
    pub fn new(body: Body, allowed: &[&str]) -> Self {
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

    pub fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
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
    pub fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
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

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}

/// A caller's `reference` for a job: 1 to 128 characters, no control characters. Echoed in the
/// job's status and its webhooks, so it is kept as given.
pub fn reference(s: &str) -> Result<String, Invalid> {
    if s.is_empty() || s.chars().count() > 128 {
        return Err(Invalid("must be 1 to 128 characters".into()));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid("must not contain control characters".into()));
    }
    Ok(s.to_owned())
}

/// A request's `method`: `link` (the default), `code` or `both`. Codes need `CODE_SECRET`:
/// without it a request for one is refused here rather than dead-lettered later.
pub fn method(codes_on: bool) -> impl FnOnce(&str) -> Result<mailroom::job::Method, Invalid> {
    move |s| {
        let m = mailroom::job::Method::parse(s)?;
        if m.sends_code() && !codes_on {
            return Err(Invalid(
                "one-time codes are off on this service (its CODE_SECRET is not set)".into(),
            ));
        }
        Ok(m)
    }
}

/// A request's `return_to`, checked against `RETURN_TO_ALLOWED`.
pub fn return_to(
    allowed: &mailroom::policy::return_to::AllowList,
) -> impl FnOnce(&str) -> Result<String, Invalid> + '_ {
    move |s| allowed.check(s)
}
