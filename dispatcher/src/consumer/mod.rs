//! The consume loop: connection, topology, prefetch, concurrency, settling each outcome with
//! the broker, pausing on account stops, reconnecting, and graceful shutdown. Owns the
//! broker side of the dispatcher; what happens to a job is [`crate::worker`]'s.
//!
//! Ordering rules, each for a reason:
//! - confirm before ack: a job moved to a retry or the dead queue is acknowledged only after
//!   the broker confirmed the copy, so a crash in between duplicates it rather than loses it;
//! - record before ack: the send log says `sent` before the ack, so a redelivery after a crash
//!   is recognised and not sent twice;
//! - on shutdown, stop consuming first, then let in-flight steps finish and settle, then close;
//! - a delivery that cannot be settled (ack refused, channel gone) ends the session: its
//!   channel is suspect, and only a new one gives back a clean prefetch window.
//!
//! # Layout
//!
//! - `reconnect`: [`Consumer::run`], session after session, with backoff when RabbitMQ is lost;
//! - `session`: one connection's session — consume, hand each delivery to a step, drain;
//! - `pause`: waiting out an account stop, asking SES whether it may send again;
//! - `concurrency`: how many steps run at once (fixed, or sized from the rate) and resizing;
//! - `settle`: one step's outcome as broker actions (ack, retry queue, dead queue).
//!
//! Dependencies run one way: the consumer uses the worker and [`crate::outcome`]; nothing in
//! the worker uses the consumer.

mod concurrency;
mod pause;
mod reconnect;
mod session;
mod settle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom::broker::{BrokerError, Topology};
use mailroom::ses::PauseReason;

use crate::worker::Worker;

pub use concurrency::{ASSUMED_STEP_TIME, AUTO_MAX, AUTO_MIN, Concurrency, auto_concurrency};
pub use settle::guard_panics;

pub struct Consumer {
    pub worker: Arc<Worker>,
    pub amqp_url: String,
    /// `AMQP_HEARTBEAT`: a broker silent for twice this ends the session (lapin fails the
    /// consumer's stream), and the consumer reconnects.
    pub heartbeat: Duration,
    pub topology: Topology,
    pub retry_delays: Vec<Duration>,
    /// How many steps run at once: fixed by `SEND_CONCURRENCY`, or sized from the rate.
    pub concurrency: Concurrency,
    /// How long an account stop pauses consumption before SES is asked again.
    pub pause_probe: Duration,
    pub shutdown_timeout: Duration,
    /// Why consumption is paused, if it is; read by the metrics endpoint.
    pub paused: Arc<Mutex<Option<PauseReason>>>,
    /// True while a session consumes the work queue (connected, topology declared, consumer
    /// started); read by `/readyz`.
    pub consuming: Arc<std::sync::atomic::AtomicBool>,
}

/// The first account stop seen in a session: why, and SES's words.
type PauseCause = Arc<Mutex<Option<(PauseReason, String)>>>;

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Paused(PauseReason, String),
    Lost(String),
    /// Retrying cannot help (a queue declared with other settings): stop and say why.
    Fatal(BrokerError),
}
