//! [`InFlight`]: at most one request at a time per key, for work that only one of several
//! concurrent requests can usefully do. A password reset's token is the case: of several
//! confirmations with one valid token, one can succeed, so only one is let through to the
//! argon2 hash; the others are told to try again, and then find the token used.

use std::collections::HashSet;
use std::sync::Mutex;

/// The keys of the requests under way.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<String>>);

/// A key admitted by [`InFlight::admit`]; the next request for it is admitted once this is
/// dropped (when the request ends, whichever way).
pub struct Admitted<'a> {
    set: &'a InFlight,
    key: String,
}

impl InFlight {
    /// Admits `key` unless a request for it is under way.
    pub fn admit(&self, key: &str) -> Option<Admitted<'_>> {
        let mut keys = self.0.lock().expect("in-flight lock");
        keys.insert(key.to_owned()).then(|| Admitted {
            set: self,
            key: key.to_owned(),
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.set.0.lock().expect("in-flight lock").remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_key_at_a_time() {
        let set = InFlight::default();
        let first = set.admit("a").expect("admitted");
        assert!(
            set.admit("a").is_none(),
            "a second request for the same key"
        );
        assert!(set.admit("b").is_some(), "another key");
        drop(first);
        assert!(
            set.admit("a").is_some(),
            "admitted again once the first ended"
        );
    }
}
