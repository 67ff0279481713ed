//! Policy: the decisions Mailroom makes, as pure functions of plain inputs.
//!
//! Nothing here touches the database, the broker or the clock: the store reads the facts a
//! decision needs, calls the function here, and carries out what it answers. So every rule can
//! be unit-tested (table-driven, and with property tests where a rule has an invariant) without
//! PostgreSQL, and reading this module tells an operator what Mailroom does, without SQL.
//!
//! - [`feedback`]: what an SES event does to a send's delivery status and to the suppression
//!   list (permanent bounces, soft bounces within a window, complaints).
//! - [`requests`]: whether a reset or resend request for an address is sent, and why not.
//! - [`logins`]: when an address is locked after failed logins, and until when.
//! - [`signups`]: what a signup does to an address or name held by another user (verified:
//!   409; unverified: taken over).
//! - [`idempotency`]: what a repeated `Idempotency-Key` gets.
//! - [`codes`]: what a guess at a one-time code gets (and an address without one).
//! - [`return_to`]: where a person may be sent back to after a link (`RETURN_TO_ALLOWED`).
//! - [`retention`]: how long each table keeps its rows, and which tables are never swept.

pub mod codes;
pub mod feedback;
pub mod idempotency;
pub mod logins;
pub mod requests;
pub mod retention;
pub mod return_to;
pub mod signups;
