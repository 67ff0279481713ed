//! Amazon SES v2: building the client, sending one email, sorting every failure into an
//! [`ErrorClass`], and the identity and account calls behind `dispatcher identities`. Owns the
//! SDK's configuration.
//!
//! - [`client`]: the client from the shared options (timeouts, the SDK's retries).
//! - [`send`](mod@send): `SendEmail`.
//! - [`classify`]: error codes to classes, as a table of rules.
//! - [`operator`]: identities, policies, configuration sets, the account, suppressions.

pub mod classify;
pub mod client;
pub mod operator;
pub mod send;

pub use classify::{
    Classified, ErrorClass, PauseReason, SesError, classify, classify_send, sender_not_verified,
};
pub use client::{client, client_from, load_sdk_config};
pub use operator::*;
pub use send::{OutgoingEmail, Sent, send};

#[cfg(test)]
mod tests;
