//! What became of one job: the [`Outcome`] a step returns and the consumer settles. Its own
//! module so that the step (which makes it) and the consumer (which turns it into ack, retry
//! queue or dead queue) both depend on it and not on each other.

use mailroom::ses::PauseReason;

/// What became of one job. The consumer turns it into ack / retry queue / dead queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// SES accepted the email.
    Sent { message_id: String },
    /// Nothing to send (user gone, already verified); recorded with the reason.
    Skipped { reason: String },
    /// The recipient is on the suppression list: no SES call, no attempt spent.
    Suppressed { reason: String },
    /// The send log says this job was already finished: a redelivery, not sent again.
    Duplicate,
    /// Another consumer is sending this job right now (a second copy within the claim lease):
    /// wait in a delay queue, no attempt spent, and see again.
    Busy,
    /// May succeed later: goes to the next delay queue, or dead after the last.
    Retry { error: String },
    /// Cannot succeed: goes to the dead letters at once.
    Dead { error_class: String, error: String },
    /// SES will not send for this account right now (paused, quota, credentials, sending
    /// configuration): return the job uncounted and pause.
    AccountStop { reason: PauseReason, error: String },
    /// The dispatcher is shutting down before the job could be handled: give it back.
    Abandoned,
}
