//! What a signup does when its name or address is already held. A *verified* holder is an
//! account: 409, naming what it holds. An *unverified* holder is not an account yet, only a
//! claim nobody proved: the newest signup takes it over (its name, password and locale replace
//! the older ones, every older link dies, a fresh verification email goes out). Nobody is
//! stuck behind a typo or a lost email, and an account pre-hijacked by someone who signed up
//! with another person's address first is taken back by that person's signup: the attacker's
//! password is gone and only the newest link (sent to the address's owner) verifies.

use uuid::Uuid;

/// A user holding the signup's address or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub id: Uuid,
    pub verified: bool,
}

/// What the signup does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    /// Nobody holds either (any more): create the user.
    Create,
    /// 409 naming what verified users hold.
    Taken { name: bool, email: bool },
    /// Take over the unverified user `user`; `remove` (another unverified user, holding the
    /// name only) is deleted to free the name.
    TakeOver { user: Uuid, remove: Option<Uuid> },
}

/// The decision, from the holder of the address and the holder of the name (possibly the same
/// user).
pub fn decide(by_email: Option<Holder>, by_name: Option<Holder>) -> Signup {
    let verified = |h: Option<Holder>| h.is_some_and(|h| h.verified);
    if verified(by_email) || verified(by_name) {
        return Signup::Taken {
            name: verified(by_name),
            email: verified(by_email),
        };
    }
    match (by_email, by_name) {
        (None, None) => Signup::Create,
        // The address is who the person is: its holder is the account taken over.
        (Some(e), Some(n)) if e.id != n.id => Signup::TakeOver {
            user: e.id,
            remove: Some(n.id),
        },
        (Some(h), _) | (None, Some(h)) => Signup::TakeOver {
            user: h.id,
            remove: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_holders_refuse_and_unverified_ones_are_taken_over() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let h = |id, verified| Some(Holder { id, verified });
        let taken = |name, email| Signup::Taken { name, email };
        let over = |user, remove| Signup::TakeOver { user, remove };
        let table = [
            (None, None, Signup::Create),
            (h(a, true), None, taken(false, true)),
            (None, h(a, true), taken(true, false)),
            (h(a, true), h(a, true), taken(true, true)),
            (h(a, true), h(b, false), taken(false, true)),
            (h(a, false), h(b, true), taken(true, false)),
            (h(a, false), None, over(a, None)),
            (None, h(b, false), over(b, None)),
            (h(a, false), h(a, false), over(a, None)),
            (h(a, false), h(b, false), over(a, Some(b))),
        ];
        for (by_email, by_name, want) in table {
            assert_eq!(decide(by_email, by_name), want, "{by_email:?} {by_name:?}");
        }
    }
}
