//! Every SQL statement of the workspace, one module per table group, and the migrations.
//!
//! # Layout
//!
//! - [`users`]: creating users (one signup or a batch, each with its verification job), finding
//!   them, what a login reads and the password-hash upgrade.
//! - [`tokens`]: link tokens (minted in batches by the dispatcher) and consuming them:
//!   verification and password reset.
//! - [`codes`]: one-time codes (minted by the dispatcher) and taking a guess at one.
//! - [`email_changes`]: changing a user's address, confirmed by the new one (and the old).
//! - [`invites`]: users created by an invite, resending, revoking and accepting them.
//! - [`sign_ins`]: sign-in by email: consuming its link or code.
//! - [`outbox`]: the transactional outbox the relay publishes from.
//! - [`sends`]: the send log and its status lifecycle: claims, records of each outcome.
//! - [`dead_letters`]: dead letters as the send log knows them, and their replay marks.
//! - [`requests`]: per-address reset and resend requests and their limits.
//! - [`jobs`]: the calling service's view of its jobs (status, a user's emails).
//! - [`idempotency`]: idempotency keys, reserved before a request's work and completed by it.
//! - [`suppressions`]: the suppression list.
//! - [`feedback`]: SES events and what they do.
//! - [`logins`]: login attempts and lockout.
//! - [`webhooks`]: webhook events and deliveries.
//! - [`dispatchers`]: the dispatchers sharing one SES rate.
//! - [`audit`]: the audit log of operator actions.
//! - [`retention`]: the sweep's statements: expired rows in batches, reminders and expiry of
//!   unverified users, and its leader lock.
//! - [`erasure`]: erasing a person: what names them goes, what counts stays.
//! - [`read`]: the read models of the dashboard and of health checks.
//!
//! The store imports nothing from the rest of `mailroom` but domain types ([`crate::domain`],
//! [`crate::job`], [`crate::events`]) and the pure decisions of [`crate::policy`], which it
//! carries out: it decides nothing itself. Functions take the current time as an argument (from
//! [`crate::clock::Clock`]) rather than calling `now()` in SQL, so that expiry is testable;
//! the shared rate is the exception (it must agree across hosts, so it uses the database's
//! clock). Each item is re-exported here, so callers write `store::find_send`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod audit;
pub mod codes;
pub mod dead_letters;
pub mod dispatchers;
pub mod email_changes;
pub mod erasure;
pub mod feedback;
pub mod idempotency;
pub mod invites;
pub mod jobs;
pub mod logins;
pub mod outbox;
pub mod read;
pub mod requests;
pub mod retention;
pub mod sends;
pub mod sign_ins;
pub mod suppressions;
pub mod tokens;
pub mod users;
pub mod webhooks;

pub use audit::*;
pub use codes::*;
pub use dead_letters::*;
pub use email_changes::*;
pub use erasure::*;
pub use feedback::*;
pub use idempotency::*;
pub use invites::*;
pub use jobs::*;
pub use logins::*;
pub use outbox::*;
pub use requests::*;
pub use sends::*;
pub use sign_ins::*;
pub use suppressions::*;
pub use tokens::*;
pub use users::*;

// Types whose home is a domain module, re-exported where store callers have always found them.
pub use crate::domain::SuppressionReason;
pub use crate::policy::requests::{AddressLimits, RequestOutcome};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. `acquire_timeout` is short so that a database outage turns into a clear error
/// (and a 503 or a retry) quickly instead of a hung request.
///
/// No ping before each use (`test_before_acquire`): it is a round trip per query, about a fifth
/// of a signup's time. A connection that broke while idle (the database restarted) fails its
/// next query instead, with an error every caller already handles (503, or the job held), and
/// the pool replaces it.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    connect_sized(url, DEFAULT_POOL_SIZE).await
}

/// The pool size of the one-off commands and the tests; services take `DATABASE_POOL_SIZE`.
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// [`connect`] with at most `size` connections.
pub async fn connect_sized(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
}

/// Opens a pool without connecting; connections are made on first use. For processes that must
/// start (and report unreadiness) while the database is down. No ping before each use, as in
/// [`connect`].
pub fn connect_lazy(url: &str) -> Result<PgPool, sqlx::Error> {
    connect_lazy_sized(url, DEFAULT_POOL_SIZE)
}

/// [`connect_lazy`] with at most `size` connections.
pub fn connect_lazy_sized(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(opts))
}

/// The database cannot take the statement now, as opposed to refusing it for what it is:
/// unreachable or going away (connection lost, pool exhausted or closed; SQLSTATE class 08
/// connection exception, 57 operator intervention such as `57P01` on a restart), refusing
/// writes (class 25, e.g. `25006` read-only after a failover), out of resources (class 53:
/// disk full `53100`, out of memory, too many connections), or a transaction to retry (class
/// 40: serialization failure, deadlock). Callers wait, or answer 503 with `Retry-After`, for
/// these; a batch is not re-run one statement at a time for them, since each would fail alike.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| UNAVAILABLE_CLASSES.iter().any(|class| c.starts_with(class)))
}

/// The SQLSTATE classes of [`is_unavailable`].
const UNAVAILABLE_CLASSES: [&str; 5] = ["08", "25", "40", "53", "57"];

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
