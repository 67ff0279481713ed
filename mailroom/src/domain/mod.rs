//! Domain newtypes, parsed once at the edge so that an invalid value cannot reach the database
//! or the queue. Each `parse` returns a message meant for the person who sent the value.
//! This module must never log or display a password or a token.

use std::fmt;

use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod code;
mod suppression;
pub use code::{Code, CodeKey, CodePurpose};
pub use suppression::{SuppressedAddress, SuppressionReason};

/// Why a value was refused, in words fit for an API response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// An email address as SES can send to it: at most 255 characters (the seed's column), one `@`,
/// a non-empty ASCII local part of at most 64 characters, and a dotted domain, no spaces or
/// control characters. An internationalised domain (`bücher.test`) is kept in its ASCII form
/// (`xn--bcher-kva.test`), so both spellings are one address; SES cannot send to a non-ASCII
/// local part (SMTPUTF8), so such an address is refused with a message that says so. Case is
/// kept as given; uniqueness is case-insensitive (the database compares `lower(email)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(invalid("must contain an @"));
        };
        if local.is_empty() || local.contains('@') || local.chars().count() > 64 {
            return Err(invalid("is not a valid email address"));
        }
        if !local.is_ascii() {
            return Err(invalid(
                "has non-ASCII characters before the @, which Amazon SES cannot deliver to; \
                 use an address whose part before the @ is plain ASCII",
            ));
        }
        if s.contains(['<', '>', ',', ';', '"', '\\', '(', ')', '[', ']']) {
            return Err(invalid("contains characters not allowed in an address"));
        }
        // UTS #46 processing: lower-cases and normalises Unicode labels and turns them into
        // punycode; an ASCII domain passes through (lower-cased).
        let domain = idna::domain_to_ascii(domain)
            .map_err(|_| invalid("has no valid domain after the @"))?;
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err(invalid("has no valid domain after the @"));
        }
        let address = format!("{local}@{domain}");
        if address.len() > 255 {
            return Err(invalid("must be at most 255 characters"));
        }
        Ok(Self(address))
    }

    /// The address as a notice to another address names it: the first character of the
    /// local part, then `***`, then the domain (`n***@example.com`), so that a mailbox that
    /// is not the new one learns where the account went without reading the address whole.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1–31 characters after trimming (the seed's column), no control characters.
/// It goes into emails, where templates escape it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        let n = s.chars().count();
        if n == 0 {
            return Err(invalid("must not be empty"));
        }
        if n > 31 {
            return Err(invalid("must be at most 31 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 8–128 characters. Never printed; only its argon2id hash is stored.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let n = raw.chars().count();
        if n < 8 {
            return Err(invalid("must be at least 8 characters"));
        }
        if n > 128 {
            return Err(invalid("must be at most 128 characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Hashes with argon2id (PHC string). CPU-heavy: call it on a blocking thread.
    pub fn hash(&self) -> Result<String, argon2::password_hash::Error> {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Ok(argon2::Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)?
            .to_string())
    }

    /// Checks this password against a stored PHC string.
    pub fn verify(&self, phc: &str) -> bool {
        verify_phc(self.0.as_bytes(), phc) != Verified::No
    }

    /// A password as presented at a login: only the upper bound is enforced (the rules for new
    /// passwords may have changed since it was set; a password over 128 characters was never
    /// accepted and is refused before any hashing).
    pub fn parse_presented(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if raw.chars().count() > 128 {
            return Err(invalid("must be at most 128 characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Checks this password against a stored PHC string, and says whether the hash was made
    /// with other parameters than today's (then it should be re-hashed).
    pub fn check(&self, phc: &str) -> Verified {
        verify_phc(self.0.as_bytes(), phc)
    }

    /// Spends the time of a real check against a hash of today's parameters, for an address
    /// that has no user or no password: the answer and its timing must not tell which.
    pub fn check_against_nothing(&self) {
        let _ = verify_phc(self.0.as_bytes(), dummy_hash());
    }

    /// Builds the dummy hash now (ingest calls it at start), so that the first unknown address
    /// does not pay for making it and stand out by its timing.
    pub fn prepare_dummy() {
        let _ = dummy_hash();
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Password("no user has this password".into())
            .hash()
            .expect("hashing a constant")
    })
}

/// What a password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Right password, but hashed with older parameters (or another algorithm variant).
    YesButStale,
}

/// Whether a stored hash is bcrypt's, as Node's `bcrypt`/`bcryptjs` (and PHP) write it: `$2a$`,
/// `$2b$` or `$2y$`, 60 characters.
pub fn is_bcrypt(stored: &str) -> bool {
    stored.len() == 60
        && ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
}

fn verify_phc(password: &[u8], phc: &str) -> Verified {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    // An imported user's bcrypt hash: right or wrong, checked by bcrypt itself (which, like
    // Node's, reads at most 72 bytes of the password). Right means "re-hash": the login then
    // stores argon2id, so a user stays on bcrypt only until their first login (or a reset).
    if is_bcrypt(phc) {
        return match bcrypt::verify(password, phc) {
            Ok(true) => Verified::YesButStale,
            _ => Verified::No,
        };
    }
    let Ok(h) = PasswordHash::new(phc) else {
        // A stored value that is not a PHC string still costs a real check, or a fast "no"
        // would tell that the address exists.
        let _ = PasswordHash::new(dummy_hash()).map(|d| {
            argon2::Argon2::default()
                .verify_password(password, &d)
                .is_ok()
        });
        return Verified::No;
    };
    if argon2::Argon2::default()
        .verify_password(password, &h)
        .is_err()
    {
        return Verified::No;
    }
    let current = argon2::Params::default();
    let same = h.algorithm.as_str() == "argon2id"
        && h.version == Some(0x13)
        && argon2::Params::try_from(&h).is_ok_and(|p| {
            p.m_cost() == current.m_cost()
                && p.t_cost() == current.t_cost()
                && p.p_cost() == current.p_cost()
        });
    if same {
        Verified::Yes
    } else {
        Verified::YesButStale
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A link token: 32 random bytes from the OS, as 64 lowercase hex characters. Only its
/// [`TokenHash`] is ever stored; the token itself exists in the email and in the link.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random source failed");
        Self(hex::encode(bytes))
    }

    /// Accepts exactly 64 hex characters (either case).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("must be 64 hexadecimal characters"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The secret itself, for putting into a link. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// The SHA-256 of a [`Token`], hex: what the `users` table stores. Safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP-47-style language tag such as `en`, `de` or `pt-BR`: letters and digits in
/// hyphen-separated parts, the first 2–3 letters, at most 35 characters. Stored lowercased
/// in its first part (`de`, `pt-BR` stays `pt-BR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Locale(String);

impl TryFrom<String> for Locale {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Locale> for String {
    fn from(l: Locale) -> String {
        l.0
    }
}

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().replace('_', "-");
        if s.is_empty() || s.len() > 35 {
            return Err(invalid("must be a language tag such as en or pt-BR"));
        }
        let mut parts = s.split('-');
        let first = parts.next().unwrap_or_default();
        if !(2..=3).contains(&first.len()) || !first.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(invalid("must be a language tag such as en or pt-BR"));
        }
        let mut out = first.to_ascii_lowercase();
        for p in parts {
            if p.is_empty() || p.len() > 8 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid("must be a language tag such as en or pt-BR"));
            }
            out.push('-');
            out.push_str(p);
        }
        Ok(Self(out))
    }

    pub fn default_locale() -> Self {
        Self("en".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The chain of locales to try for templates: `pt-BR` → `pt-BR`, `pt`, then the default.
    pub fn fallback_chain(&self) -> Vec<String> {
        let mut chain = vec![self.0.clone()];
        let mut s = self.0.as_str();
        while let Some((head, _)) = s.rsplit_once('-') {
            chain.push(head.to_owned());
            s = head;
        }
        if !chain.iter().any(|c| c == "en") {
            chain.push("en".into());
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(EmailAddress::parse("ada@example.com").is_ok());
        // The local part keeps its case; the domain is normalised (case does not matter there).
        assert_eq!(
            EmailAddress::parse("  Ada@Example.com ").unwrap().as_str(),
            "Ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@exa mple.com",
            "a@b@c.com",
            "ada@-x.com",
            "<ada>@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(64));
        assert!(EmailAddress::parse(&long).is_ok());
        let too_long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&too_long_local).is_err());
        let too_long = format!("a@{}.com", "b.".repeat(130));
        assert!(EmailAddress::parse(&too_long).is_err());
    }

    #[test]
    fn international_domains_become_punycode_and_are_one_address() {
        let unicode = EmailAddress::parse("leser@bücher.test").unwrap();
        assert_eq!(unicode.as_str(), "leser@xn--bcher-kva.test");
        assert_eq!(
            EmailAddress::parse("leser@xn--bcher-kva.test").unwrap(),
            unicode
        );
        assert_eq!(EmailAddress::parse("leser@BÜCHER.test").unwrap(), unicode);
    }

    #[test]
    fn a_non_ascii_local_part_is_refused_with_the_reason() {
        let e = EmailAddress::parse("jürgen@example.com").unwrap_err();
        assert!(e.0.contains("non-ASCII"), "{e}");
        assert!(e.0.contains("SES"), "{e}");
    }

    #[test]
    fn names() {
        assert!(UserName::parse("Ada <b> & co").is_ok());
        assert!(UserName::parse(&"é".repeat(31)).is_ok());
        assert!(UserName::parse(&"é".repeat(32)).is_err());
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse("a\nb").is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        let phc = p.hash().unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(p.verify(&phc));
        assert!(!Password::parse("wrong horse!").unwrap().verify(&phc));
        assert_eq!(format!("{p:?}"), "Password([redacted])");
    }

    #[test]
    fn an_old_hash_verifies_and_is_reported_stale() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let p = Password::parse("correct horse").unwrap();
        let old = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"correct horse",
            &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
        )
        .unwrap()
        .to_string();
        assert_eq!(p.check(&old), Verified::YesButStale);
        assert_eq!(p.check(&p.hash().unwrap()), Verified::Yes);
        assert_eq!(
            Password::parse("wrong horse!").unwrap().check(&old),
            Verified::No
        );
        assert!(Password::parse_presented(&"x".repeat(129)).is_err());
        assert!(Password::parse_presented("short").is_ok());
    }

    #[test]
    fn tokens() {
        let t = Token::generate();
        assert_eq!(t.expose().len(), 64);
        assert_ne!(t.expose(), Token::generate().expose());
        assert_eq!(Token::parse(&t.expose().to_uppercase()).unwrap(), t);
        assert_eq!(t.hash().as_str().len(), 64);
        assert_ne!(t.hash().as_str(), t.expose());
        assert!(Token::parse("abc").is_err());
        assert!(Token::parse(&"g".repeat(64)).is_err());
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn locales() {
        assert_eq!(Locale::parse("DE").unwrap().as_str(), "de");
        assert_eq!(Locale::parse("pt_BR").unwrap().as_str(), "pt-BR");
        assert!(Locale::parse("x").is_err());
        assert!(Locale::parse("en-").is_err());
        assert_eq!(
            Locale::parse("pt-BR").unwrap().fallback_chain(),
            vec!["pt-BR", "pt", "en"]
        );
        assert_eq!(Locale::parse("en").unwrap().fallback_chain(), vec!["en"]);
    }
}

/// [`EmailAddress::masked`] for an address already stored (the store keeps them as text).
pub fn mask(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

#[cfg(test)]
mod bcrypt_tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_of_every_prefix_check_and_ask_to_be_rehashed() {
        let pw = Password::parse_presented("correct horse battery").unwrap();
        let parts = bcrypt::hash_with_result("correct horse battery", 4).unwrap();
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let stored = parts.format_for_version(version);
            assert!(is_bcrypt(&stored), "{stored}");
            assert_eq!(pw.check(&stored), Verified::YesButStale, "{stored}");
            let wrong = Password::parse_presented("wrong horse battery").unwrap();
            assert_eq!(wrong.check(&stored), Verified::No, "{stored}");
        }
        assert!(!is_bcrypt("$2b$10$short"));
        assert!(!is_bcrypt(&pw.hash().unwrap()));
    }
}

#[cfg(test)]
mod mask_tests {
    #[test]
    fn a_masked_address_keeps_its_first_letter_and_domain() {
        assert_eq!(super::mask("new.person@example.com"), "n***@example.com");
        assert_eq!(super::mask("x@example.com"), "x***@example.com");
        assert_eq!(super::mask("broken"), "***");
    }
}
