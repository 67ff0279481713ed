//! One-time codes: the digits an email carries beside (or instead of) a link. A code is
//! minted at send time from the OS's random source, mailed, and only its keyed hash is
//! stored: HMAC-SHA256 under `CODE_SECRET` over the purpose, the user and the code. A plain
//! SHA-256 would not do: a six-digit code has a million values, so its unkeyed hash is
//! reversed offline in a second by whoever reads the table. The key makes a stolen table
//! useless without the secret, and binding the purpose and user makes one row's hash useless
//! for another. Hashes are compared in constant time.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::Invalid;

/// What a code is for: each purpose has its own live code per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePurpose {
    Verification,
    Reset,
    SignIn,
    /// Confirming the new address of an email change.
    EmailChange,
}

impl CodePurpose {
    /// As stored in `one_time_codes.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Verification => "verification",
            CodePurpose::Reset => "reset",
            CodePurpose::SignIn => "sign_in",
            CodePurpose::EmailChange => "email_change",
        }
    }
}

/// The fewest and most digits `CODE_LENGTH` may ask for. Under 6, five guesses are too good a
/// chance (1 in 2 000 at 4 digits); over 10, people mistype.
pub const MIN_DIGITS: usize = 6;
pub const MAX_DIGITS: usize = 10;

/// A code as minted or as typed: only ASCII digits. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// `digits` uniform random digits (leading zeros included).
    pub fn generate(digits: usize) -> Self {
        let digits = digits.clamp(MIN_DIGITS, MAX_DIGITS);
        let bound = 10u64.pow(digits as u32);
        // Rejection sampling: the largest multiple of `bound` under 2^64 keeps every value
        // equally likely (a plain `% bound` would favour the small ones).
        let zone = u64::MAX - (u64::MAX % bound);
        let n = loop {
            let n = OsRng
                .try_next_u64()
                .expect("the operating system's random source failed");
            if n < zone {
                break n % bound;
            }
        };
        Self(format!("{n:0digits$}"))
    }

    /// What a person typed: digits, with the spaces and hyphens people put in groups
    /// (`123 456`, `123-456`) taken out. Exactly `digits` of them.
    pub fn parse(raw: &str, digits: usize) -> Result<Self, Invalid> {
        let s: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid(format!(
                "must be the {digits}-digit code from the email"
            )));
        }
        Ok(Self(s))
    }

    /// The code itself, for the email. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code([redacted])")
    }
}

/// The key codes are hashed with (`CODE_SECRET`). Never logged.
#[derive(Clone)]
pub struct CodeKey(Vec<u8>);

/// The shortest `CODE_SECRET` accepted: 32 bytes, the size of the HMAC's own output.
pub const MIN_SECRET_BYTES: usize = 32;

impl CodeKey {
    pub fn new(secret: &str) -> Result<Self, Invalid> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Invalid(format!(
                "must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
            )));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The stored form of `code` for `user` and `purpose`: HMAC-SHA256, hex.
    pub fn hash(&self, purpose: CodePurpose, user: Uuid, code: &Code) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        // Fixed-width fields around a separator: no two inputs run together.
        mac.update(purpose.as_str().as_bytes());
        mac.update(b":");
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(code.0.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `code` is the one `stored` was made from, in constant time.
    pub fn matches(&self, purpose: CodePurpose, user: Uuid, code: &Code, stored: &str) -> bool {
        let want = self.hash(purpose, user, code);
        want.as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_length_and_every_digit_turns_up() {
        let mut seen = [false; 10];
        for _ in 0..500 {
            let c = Code::generate(6);
            assert_eq!(c.expose().len(), 6);
            for b in c.expose().bytes() {
                seen[(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
        assert_eq!(Code::generate(8).expose().len(), 8);
        assert_eq!(Code::generate(2).expose().len(), MIN_DIGITS);
    }

    #[test]
    fn typed_codes_lose_their_grouping_and_nothing_else() {
        assert_eq!(Code::parse("123 456", 6).unwrap().expose(), "123456");
        assert_eq!(Code::parse("123-456", 6).unwrap().expose(), "123456");
        assert!(Code::parse("12345", 6).is_err());
        assert!(Code::parse("1234567", 6).is_err());
        assert!(Code::parse("12345a", 6).is_err());
        assert!(
            Code::parse("１２３４５６", 6).is_err(),
            "full-width digits are not ASCII"
        );
        assert_eq!(
            format!("{:?}", Code::parse("123456", 6).unwrap()),
            "Code([redacted])"
        );
    }

    #[test]
    fn the_hash_is_keyed_and_bound_to_its_user_and_purpose() {
        let key = CodeKey::new(&"k".repeat(32)).unwrap();
        let other = CodeKey::new(&"j".repeat(32)).unwrap();
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        let code = Code::parse("042042", 6).unwrap();
        let stored = key.hash(CodePurpose::Verification, u, &code);
        assert_eq!(stored.len(), 64);
        assert!(key.matches(CodePurpose::Verification, u, &code, &stored));
        assert!(!other.matches(CodePurpose::Verification, u, &code, &stored));
        assert!(!key.matches(CodePurpose::Reset, u, &code, &stored));
        assert!(!key.matches(CodePurpose::Verification, v, &code, &stored));
        let wrong = Code::parse("042043", 6).unwrap();
        assert!(!key.matches(CodePurpose::Verification, u, &wrong, &stored));
        assert!(CodeKey::new("short").is_err());
    }
}
