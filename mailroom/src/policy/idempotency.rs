//! What a repeated `Idempotency-Key` gets (Stripe's semantics, as the IETF draft "The
//! Idempotency-Key HTTP Header Field" describes them): the first answer again when the request
//! is the same, 422 when the key is reused for a different request, 409 while the first one
//! still runs.

/// What the key held, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    pub same_route: bool,
    pub same_fingerprint: bool,
    /// The stored answer: None while the first request runs.
    pub answer: Option<(u16, &'a str)>,
}

/// The decision on a key that was not free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat<'a> {
    /// Answer this again, with `Idempotent-Replayed: true`, and do nothing.
    Replay { status: u16, body: &'a str },
    /// 422 `idempotency_key_reused`: the key was first used with another request.
    Reused,
    /// 409 `idempotency_key_in_progress`: the first request has no answer yet.
    InProgress,
}

pub fn repeat(facts: KeyFacts<'_>) -> Repeat<'_> {
    // A different request is refused even while the first runs: the key is spoken for.
    if !(facts.same_route && facts.same_fingerprint) {
        return Repeat::Reused;
    }
    match facts.answer {
        Some((status, body)) => Repeat::Replay { status, body },
        None => Repeat::InProgress,
    }
}

/// Whether `key` is an acceptable `Idempotency-Key`: 1 to 255 printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_replays_only_the_same_request_with_an_answer() {
        let f = |same_route, same_fingerprint, answer| KeyFacts {
            same_route,
            same_fingerprint,
            answer,
        };
        let done = Some((202, "{}"));
        assert_eq!(
            repeat(f(true, true, done)),
            Repeat::Replay {
                status: 202,
                body: "{}"
            }
        );
        assert_eq!(repeat(f(true, true, None)), Repeat::InProgress);
        for answer in [done, None] {
            assert_eq!(repeat(f(true, false, answer)), Repeat::Reused);
            assert_eq!(repeat(f(false, true, answer)), Repeat::Reused);
        }
    }

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("ünicode"));
    }
}
