//! The API keys services authenticate with (`Authorization: Bearer <key>`): kept only as
//! SHA-256 digests, and checked in constant time against every configured key. Each key has a
//! name (`INGEST_API_KEYS=billing:k3y,web:0th3r`; a bare key is named `default`): the name,
//! never the key, is what jobs, requests, metrics and idempotency keys are recorded under, so
//! a key can be rotated by configuring a second key of the same name.

use std::fmt;
use std::sync::Arc;

use http::header;
use http::request::Parts;
use mailroom::config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The accepted keys, never empty (see [`ApiKeys::parse`]). Each is kept as the SHA-256 of the
/// key, so that the comparison time depends neither on the key's length nor on its content.
pub struct ApiKeys(Vec<(Caller, [u8; 32])>);

/// Who a request came from: the name of the API key it presented. Put in the request's
/// extensions by the router for every API-key route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Arc<str>);

impl Caller {
    /// The name of a bare key (`INGEST_API_KEYS=k3y`).
    pub const DEFAULT: &str = "default";

    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Whether `s` may name a key: 1 to 32 of `a-z`, `0-9`, `_`, `-` (it becomes a metrics label).
fn is_key_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl ApiKeys {
    /// The keys of `INGEST_API_KEYS`, trimmed, blank ones left out; refused when none is left.
    /// `name:key` names a key; a key without `:` is a bare key named `default`.
    pub fn parse(keys: &[Secret]) -> Result<Self, String> {
        let mut digests = Vec::new();
        for raw in keys
            .iter()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
        {
            let (name, key) = match raw.split_once(':') {
                Some((name, key)) if is_key_name(name) => (name, key.trim()),
                Some((name, _)) => {
                    return Err(format!(
                        "INGEST_API_KEYS: the key name {name:?} may hold only a-z, 0-9, _ and - \
                         (write name:key)"
                    ));
                }
                _ => (Caller::DEFAULT, raw),
            };
            if key.is_empty() {
                return Err(format!("INGEST_API_KEYS: the key named {name:?} is empty"));
            }
            digests.push((Caller(Arc::from(name)), digest(key)));
        }
        if digests.is_empty() {
            return Err(
                "INGEST_API_KEYS is empty: set at least one key (e.g. INGEST_API_KEYS=dev-key)"
                    .into(),
            );
        }
        Ok(Self(digests))
    }

    /// Checks the bearer key of a request. The presented key is hashed and compared with every
    /// configured key in constant time, so neither the match position nor the length leaks
    /// through timing.
    pub fn authorize(&self, parts: &Parts) -> Result<Caller, ApiError> {
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
        let presented = digest(presented);
        // Every key is compared, matched or not: the time does not say which one matched.
        let mut found = None;
        for (caller, k) in &self.0 {
            if bool::from(k.ct_eq(&presented)) {
                found = Some(caller);
            }
        }
        found.cloned().ok_or(ApiError::Unauthorized)
    }

    /// The distinct names of the keys, for `--print-config`.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.iter().map(|(c, _)| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.0.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut req = http::Request::builder().uri("/v1/users");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn blank_keys_are_left_out_and_none_left_is_refused() {
        assert!(ApiKeys::parse(&[]).is_err());
        assert!(ApiKeys::parse(&[Secret::new("  "), Secret::new("")]).is_err());
        let keys =
            ApiKeys::parse(&[Secret::new(" k3y-one "), Secret::new(""), Secret::new("b")]).unwrap();
        assert_eq!(keys.0.len(), 2);
        assert!(!format!("{keys:?}").contains("k3y"));
    }

    #[test]
    fn only_a_configured_bearer_key_is_accepted() {
        let keys = ApiKeys::parse(&[Secret::new("one"), Secret::new("two")]).unwrap();
        assert!(keys.authorize(&parts(Some("Bearer one"))).is_ok());
        assert!(keys.authorize(&parts(Some("bearer two "))).is_ok());
        assert!(keys.authorize(&parts(Some("Bearer three"))).is_err());
        assert!(keys.authorize(&parts(Some("one"))).is_err());
        assert!(keys.authorize(&parts(None)).is_err());
    }

    #[test]
    fn named_keys_name_their_caller_and_two_keys_may_share_a_name() {
        let keys = ApiKeys::parse(&[
            Secret::new("billing:old-key"),
            Secret::new("billing:new-key"),
            Secret::new("bare-key"),
        ])
        .unwrap();
        let name = |h: &str| keys.authorize(&parts(Some(h))).unwrap().name().to_owned();
        assert_eq!(name("Bearer old-key"), "billing");
        assert_eq!(name("Bearer new-key"), "billing");
        assert_eq!(name("Bearer bare-key"), "default");
        assert!(
            keys.authorize(&parts(Some("Bearer billing:old-key")))
                .is_err()
        );
        assert_eq!(keys.names(), ["billing", "default"]);
        let e = ApiKeys::parse(&[Secret::new("Billing Team:k")]).unwrap_err();
        assert!(e.contains("a-z"), "{e}");
        let e = ApiKeys::parse(&[Secret::new("web:")]).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
