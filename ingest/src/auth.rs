//! The API keys services authenticate with (`Authorization: Bearer <key>`): kept only as
//! SHA-256 digests, and checked in constant time against every configured key.

use std::fmt;

use http::header;
use http::request::Parts;
use mailroom::config::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The accepted keys, never empty (see [`ApiKeys::parse`]). Each is kept as the SHA-256 of the
/// key, so that the comparison time depends neither on the key's length nor on its content.
pub struct ApiKeys(Vec<[u8; 32]>);

impl ApiKeys {
    /// The keys of `INGEST_API_KEYS`, trimmed, blank ones left out; refused when none is left.
    pub fn parse(keys: &[Secret]) -> Result<Self, String> {
        let digests: Vec<[u8; 32]> = keys
            .iter()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
            .map(digest)
            .collect();
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
    pub fn authorize(&self, parts: &Parts) -> Result<(), ApiError> {
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
        let mut ok = subtle::Choice::from(0);
        for k in &self.0 {
            ok |= k.ct_eq(&presented);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
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
}
