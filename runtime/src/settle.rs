//! The settlement table of DESIGN.md §3 as code: what a delivery produced
//! (`Outcome`) and the one function that maps it to what the host does next
//! (`Action`), the host's own failures included.

use std::fmt;
use std::time::Duration;

/// Why a guest failed without returning a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A trap: `unreachable`, a Rust panic, a stack overflow, a bad memory access.
    Trap,
    /// The wall-clock deadline (or the fuel budget) ran out.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    Memory,
}

/// What one delivery produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The guest returned `ok`.
    Ok,
    /// The guest returned `retry`, with its own delay if it gave one.
    Retry { delay: Option<Duration> },
    /// The guest returned `reject`.
    Reject { reason: String },
    /// A guest of another host's world returned its error (wasmCloud's
    /// `err(string)`, `wasi:messaging`'s `error`), which does not say whether
    /// trying again could help: retried with the backoff schedule, and
    /// dead-lettered as `exhausted` with the error as the reason on the
    /// final attempt.
    Errored { reason: String },
    /// The guest did not return at all.
    Failed { failure: Failure, detail: String },
    /// The guest succeeded but the server refused one of its outputs for
    /// good (too large, no stream stores its subject, a failed expectation):
    /// a failure of what the guest produced.
    OutputRefused { detail: String },
    /// The delivery arrived after the final attempt: an earlier delivery
    /// never settled (the host crashed, was killed, or handed it back), so
    /// the guest is not run again.
    PastFinalAttempt,
    /// The host could not store the outputs or the dead-letter copy;
    /// `tries` failed so far. An `outage` (the server unreachable, a stream
    /// electing a leader) is tried again often, so the handler resumes soon
    /// after it ends; a refusal (a dead-letter copy the stream will not
    /// take) backs off further.
    HostFailed { tries: u32, outage: bool },
    /// The guest succeeded, but its conditional key-value write no longer
    /// holds (another delivery changed the key): nothing of it was applied,
    /// and it has been run `reruns` times in this delivery so far.
    Conflict { reruns: u32, detail: String },
}

/// The reason kind written to a dead-letter copy's `Wharf-Reason-Kind` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    Rejected,
    Exhausted,
    Trap,
    Timeout,
    Memory,
    Output,
    Crashed,
    Conflict,
}

impl DeadLetterKind {
    /// Every kind, for metrics that start each at zero.
    pub const ALL: [DeadLetterKind; 8] = [
        DeadLetterKind::Rejected,
        DeadLetterKind::Exhausted,
        DeadLetterKind::Trap,
        DeadLetterKind::Timeout,
        DeadLetterKind::Memory,
        DeadLetterKind::Output,
        DeadLetterKind::Crashed,
        DeadLetterKind::Conflict,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Rejected => "rejected",
            DeadLetterKind::Exhausted => "exhausted",
            DeadLetterKind::Trap => "trap",
            DeadLetterKind::Timeout => "timeout",
            DeadLetterKind::Memory => "memory",
            DeadLetterKind::Output => "output",
            DeadLetterKind::Crashed => "crashed",
            DeadLetterKind::Conflict => "conflict",
        }
    }
}

impl From<Failure> for DeadLetterKind {
    fn from(failure: Failure) -> DeadLetterKind {
        match failure {
            Failure::Trap => DeadLetterKind::Trap,
            Failure::Timeout => DeadLetterKind::Timeout,
            Failure::Memory => DeadLetterKind::Memory,
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a delivery was settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Acked,
    Naked,
    DeadLettered(DeadLetterKind),
    /// Undeliverable, terminated without a copy because the operator opted into dropping.
    Dropped,
    /// Nothing could be told to the broker; `ack_wait` will redeliver.
    Abandoned,
}

/// Longest reason text stored in `Wharf-Reason`.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// A reason fit for one header value: one line, at most `MAX_REASON_BYTES`.
pub(crate) fn clean_reason(text: &str) -> String {
    crate::text::head(&crate::text::one_line(text), MAX_REASON_BYTES, "...")
}

/// What the host does with the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish the outbox, await every PubAck, then ack.
    PublishThenAck,
    /// Redeliver after `delay`.
    Nak { delay: Duration },
    /// Store a dead-letter copy, await its PubAck, then term.
    DeadLetter {
        kind: DeadLetterKind,
        reason: String,
    },
    /// Keep the message (its lease is kept alive) and try the step that
    /// failed again after `delay`. Never ack, never term.
    RetryStep { delay: Duration },
    /// Keep the message and run the guest again after `delay`, on fresh
    /// state, within this delivery (it does not count as an attempt).
    Rerun { delay: Duration },
}

/// The first delay after a host-side failure; it doubles with each one.
const HOST_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two tries of a step that failed for an
/// outage: short, so a held delivery resumes soon after a leader election.
pub const HOST_RETRY_OUTAGE_MAX: Duration = Duration::from_secs(1);
/// The longest delay between two tries of a step the server refused.
pub const HOST_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often a delivery whose key-value write conflicts is run again
/// before it gives up the attempt: conflicts on a hot key pass within
/// milliseconds, and a rerun does not use up an attempt.
pub const CONFLICT_RERUNS: u32 = 16;
/// The first delay before a rerun after a conflict; it doubles with each.
const CONFLICT_FIRST: Duration = Duration::from_millis(2);
/// The longest delay before a rerun after a conflict.
const CONFLICT_MAX: Duration = Duration::from_millis(500);

/// The retry delays of one handler.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Delay after a failure on attempt n is `steps[n - 1]`; the last entry repeats.
    steps: Vec<Duration>,
    /// Fraction of random spread added on top of each delay.
    jitter: f64,
    /// The longest delay a guest may ask for.
    max_guest_delay: Duration,
}

impl Backoff {
    pub fn new(steps: Vec<Duration>, jitter: f64, max_guest_delay: Duration) -> Backoff {
        assert!(!steps.is_empty(), "config validation guarantees one step");
        Backoff {
            steps,
            jitter,
            max_guest_delay,
        }
    }

    /// The schedule's delay after a failure on `attempt` (1-based), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) as usize - 1).min(self.steps.len() - 1);
        self.steps[i]
    }

    /// The delay to use after a failure on `attempt`, with jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 + self.jitter * fastrand::f64())
    }
}

/// Maps what a delivery produced to what the host does next.
///
/// `attempt` is this delivery's attempt (1-based); on `max_attempts` and after
/// it, a failure dead-letters instead of retrying, so JetStream's own
/// `max_deliver` never silently stops a message. A failure of the host's
/// own (storing outputs or the copy) is never the message's fault: it keeps
/// the message and tries again, backing off up to `HOST_RETRY_MAX`.
pub fn settle(outcome: Outcome, attempt: u32, max_attempts: u32, backoff: &Backoff) -> Action {
    let last = attempt >= max_attempts;
    match outcome {
        Outcome::Ok => Action::PublishThenAck,
        Outcome::Reject { reason } => Action::DeadLetter {
            kind: DeadLetterKind::Rejected,
            reason,
        },
        Outcome::Retry { delay } if !last => Action::Nak {
            delay: match delay {
                // A nak'd message counts against the consumer's ack-pending
                // limit until it comes back: a guest must not park messages
                // for years.
                Some(d) => d.min(backoff.max_guest_delay),
                None => backoff.delay(attempt),
            },
        },
        Outcome::Retry { .. } => Action::DeadLetter {
            kind: DeadLetterKind::Exhausted,
            reason: format!("handler asked to retry on attempt {attempt} of {max_attempts}"),
        },
        Outcome::Errored { .. } if !last => Action::Nak {
            delay: backoff.delay(attempt),
        },
        Outcome::Errored { reason } => Action::DeadLetter {
            kind: DeadLetterKind::Exhausted,
            reason: if reason.trim().is_empty() {
                format!("handler returned an empty error on attempt {attempt} of {max_attempts}")
            } else {
                reason
            },
        },
        Outcome::Failed { .. } | Outcome::OutputRefused { .. } if !last => Action::Nak {
            delay: backoff.delay(attempt),
        },
        Outcome::OutputRefused { detail } => Action::DeadLetter {
            kind: DeadLetterKind::Output,
            reason: detail,
        },
        Outcome::PastFinalAttempt => Action::DeadLetter {
            kind: DeadLetterKind::Crashed,
            reason: format!(
                "delivery {attempt} arrived after the final attempt ({max_attempts}): an earlier \
                 delivery never settled (the host crashed, was killed, or handed the message back \
                 at shutdown), or max_attempts was lowered since, so the handler was not run again"
            ),
        },
        Outcome::HostFailed { tries, outage } => Action::RetryStep {
            delay: HOST_RETRY_FIRST
                .saturating_mul(1 << tries.min(16))
                .min(if outage {
                    HOST_RETRY_OUTAGE_MAX
                } else {
                    HOST_RETRY_MAX
                }),
        },
        Outcome::Failed { failure, detail } => Action::DeadLetter {
            kind: failure.into(),
            reason: detail,
        },
        // Full jitter: deliveries conflicting on one key spread out.
        Outcome::Conflict { reruns, .. } if reruns < CONFLICT_RERUNS => Action::Rerun {
            delay: CONFLICT_FIRST
                .saturating_mul(1 << reruns.min(16))
                .min(CONFLICT_MAX)
                .mul_f64(fastrand::f64()),
        },
        Outcome::Conflict { .. } if !last => Action::Nak {
            delay: backoff.delay(attempt),
        },
        Outcome::Conflict { reruns, detail } => Action::DeadLetter {
            kind: DeadLetterKind::Conflict,
            reason: format!(
                "key-value write conflicted {reruns} times on attempt {attempt} of \
                 {max_attempts}: {detail}"
            ),
        },
    }
}

#[cfg(test)]
mod tests;
