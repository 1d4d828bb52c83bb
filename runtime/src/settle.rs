//! The settlement table of DESIGN.md §3 as code: what a delivery produced
//! (`Outcome`) and the one function that maps it to what the host does next
//! (`Action`), the host's own failures included.

use std::fmt;
use std::time::Duration;

pub use crate::backoff::Backoff;

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
    /// In ordered mode with `key_after_dead_letter = "stop"`: an earlier
    /// message with the same key was dead-lettered, so this one is parked
    /// without running the guest; `reason` names the earlier message.
    KeyStopped { reason: String },
    /// The host could not store the outputs or the dead-letter copy;
    /// `tries` failed so far. An `outage` (the server unreachable, a stream
    /// electing a leader) is tried again often, so the handler resumes soon
    /// after it ends; a refusal (a dead-letter copy the stream will not
    /// take) backs off further.
    HostFailed { tries: u32, outage: bool },
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
    /// Parked behind an earlier message of its key that was dead-lettered.
    Blocked,
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
        DeadLetterKind::Blocked,
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
            DeadLetterKind::Blocked => "blocked",
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
}

/// The first delay after a host-side failure; it doubles with each one.
const HOST_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two tries of a step that failed for an
/// outage: short, so a held delivery resumes soon after a leader election.
pub const HOST_RETRY_OUTAGE_MAX: Duration = Duration::from_secs(1);
/// The longest delay between two tries of a step the server refused.
pub const HOST_RETRY_MAX: Duration = Duration::from_secs(30);

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
        Outcome::KeyStopped { reason } => Action::DeadLetter {
            kind: DeadLetterKind::Blocked,
            reason,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn every_row_of_the_settlement_table() {
        let backoff = Backoff::new(vec![secs(1), secs(5), secs(30)], 0.0, secs(3600));
        let trap = |failure| Outcome::Failed {
            failure,
            detail: "boom".into(),
        };
        let dl = |kind: DeadLetterKind, reason: &str| Action::DeadLetter {
            kind,
            reason: reason.into(),
        };
        let retry_reason = "handler asked to retry on attempt 3 of 3";
        let refused = || Outcome::OutputRefused {
            detail: "too big".into(),
        };
        // (outcome, attempt, max attempts, expected action)
        let rows: Vec<(Outcome, u32, u32, Action)> = vec![
            (Outcome::Ok, 1, 3, Action::PublishThenAck),
            (Outcome::Ok, 3, 3, Action::PublishThenAck),
            (
                Outcome::Retry {
                    delay: Some(secs(7)),
                },
                1,
                3,
                Action::Nak { delay: secs(7) },
            ),
            (
                Outcome::Retry { delay: None },
                1,
                3,
                Action::Nak { delay: secs(1) },
            ),
            // A guest's own delay is cut to the handler's max_retry_delay.
            (
                Outcome::Retry {
                    delay: Some(secs(100 * 365 * 24 * 3600)),
                },
                1,
                3,
                Action::Nak { delay: secs(3600) },
            ),
            (
                Outcome::Retry { delay: None },
                2,
                3,
                Action::Nak { delay: secs(5) },
            ),
            (
                Outcome::Retry {
                    delay: Some(secs(7)),
                },
                3,
                3,
                dl(DeadLetterKind::Exhausted, retry_reason),
            ),
            (
                Outcome::Reject {
                    reason: "bad".into(),
                },
                1,
                3,
                dl(DeadLetterKind::Rejected, "bad"),
            ),
            (
                Outcome::Reject {
                    reason: "bad".into(),
                },
                3,
                3,
                dl(DeadLetterKind::Rejected, "bad"),
            ),
            (trap(Failure::Trap), 1, 3, Action::Nak { delay: secs(1) }),
            (trap(Failure::Timeout), 2, 3, Action::Nak { delay: secs(5) }),
            (trap(Failure::Memory), 1, 3, Action::Nak { delay: secs(1) }),
            (trap(Failure::Trap), 3, 3, dl(DeadLetterKind::Trap, "boom")),
            (
                trap(Failure::Timeout),
                3,
                3,
                dl(DeadLetterKind::Timeout, "boom"),
            ),
            (
                trap(Failure::Memory),
                3,
                3,
                dl(DeadLetterKind::Memory, "boom"),
            ),
            // A redelivery past the final attempt (its dead-letter publish failed) still dead-letters.
            (trap(Failure::Trap), 4, 3, dl(DeadLetterKind::Trap, "boom")),
            // An output the server refuses is the guest's failure: retried, then dead-lettered.
            (refused(), 1, 3, Action::Nak { delay: secs(1) }),
            (refused(), 3, 3, dl(DeadLetterKind::Output, "too big")),
            // Past the final attempt the guest is not run: dead-letter as crashed.
            (
                Outcome::PastFinalAttempt,
                4,
                3,
                dl(
                    DeadLetterKind::Crashed,
                    "delivery 4 arrived after the final attempt (3): an earlier delivery never \
                     settled (the host crashed, was killed, or handed the message back at \
                     shutdown), or max_attempts was lowered since, so the handler was not run \
                     again",
                ),
            ),
            // A message parked behind its stopped key is dead-lettered as blocked, on any attempt.
            (
                Outcome::KeyStopped {
                    reason: "key stopped".into(),
                },
                1,
                3,
                dl(DeadLetterKind::Blocked, "key stopped"),
            ),
            (
                Outcome::KeyStopped {
                    reason: "key stopped".into(),
                },
                4,
                3,
                dl(DeadLetterKind::Blocked, "key stopped"),
            ),
            // Host-side failures keep the message, backing off exponentially up to a cap.
            (
                Outcome::HostFailed {
                    tries: 0,
                    outage: true,
                },
                1,
                3,
                Action::RetryStep {
                    delay: Duration::from_millis(100),
                },
            ),
            (
                Outcome::HostFailed {
                    tries: 3,
                    outage: false,
                },
                3,
                3,
                Action::RetryStep {
                    delay: Duration::from_millis(800),
                },
            ),
            (
                Outcome::HostFailed {
                    tries: 40,
                    outage: true,
                },
                9,
                3,
                Action::RetryStep {
                    delay: HOST_RETRY_OUTAGE_MAX,
                },
            ),
            (
                Outcome::HostFailed {
                    tries: 40,
                    outage: false,
                },
                9,
                3,
                Action::RetryStep {
                    delay: HOST_RETRY_MAX,
                },
            ),
            // One attempt only: the first failure is final.
            (
                Outcome::Retry { delay: None },
                1,
                1,
                dl(
                    DeadLetterKind::Exhausted,
                    "handler asked to retry on attempt 1 of 1",
                ),
            ),
        ];
        for (outcome, attempt, max, expected) in rows {
            let got = settle(outcome.clone(), attempt, max, &backoff);
            assert_eq!(got, expected, "{outcome:?} on attempt {attempt}/{max}");
        }
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let r = clean_reason(&long);
        assert!(r.len() <= MAX_REASON_BYTES);
        assert!(r.ends_with("..."));
    }
}
