//! The settlement table, row by row.

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
        // Another host's world's error: the backoff, then `exhausted` with its text.
        (
            Outcome::Errored {
                reason: "db down".into(),
            },
            2,
            3,
            Action::Nak { delay: secs(5) },
        ),
        (
            Outcome::Errored {
                reason: "db down".into(),
            },
            3,
            3,
            dl(DeadLetterKind::Exhausted, "db down"),
        ),
        (
            Outcome::Errored { reason: " ".into() },
            3,
            3,
            dl(
                DeadLetterKind::Exhausted,
                "handler returned an empty error on attempt 3 of 3",
            ),
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
        // A key-value conflict past its reruns uses up the attempt, and
        // dead-letters only on the final one.
        (
            conflict(CONFLICT_RERUNS),
            1,
            3,
            Action::Nak { delay: secs(1) },
        ),
        (
            conflict(CONFLICT_RERUNS),
            3,
            3,
            dl(
                DeadLetterKind::Conflict,
                "key-value write conflicted 16 times on attempt 3 of 3: key k moved",
            ),
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
        assert_eq!(
            settle(outcome.clone(), attempt, max, &backoff),
            expected,
            "{outcome:?} on attempt {attempt}/{max}"
        );
    }
}

fn conflict(reruns: u32) -> Outcome {
    Outcome::Conflict {
        reruns,
        detail: "key k moved".into(),
    }
}

/// A conflict reruns the guest at once, within the delivery, on any
/// attempt (the final one too), with a full-jitter delay that grows to a
/// cap; only past its reruns does it use up the attempt.
#[test]
fn a_conflict_reruns_within_the_delivery() {
    let backoff = Backoff::new(vec![secs(1)], 0.0, secs(3600));
    for attempt in [1, 3] {
        for reruns in 0..CONFLICT_RERUNS {
            match settle(conflict(reruns), attempt, 3, &backoff) {
                Action::Rerun { delay } => {
                    assert!(delay <= Duration::from_millis(500), "{delay:?}")
                }
                other => panic!("rerun {reruns} on attempt {attempt}: {other:?}"),
            }
        }
    }
}

#[test]
fn backoff_repeats_its_last_step() {
    let b = Backoff::new(vec![secs(1), secs(2)], 0.0, secs(3600));
    assert_eq!(b.delay(1), secs(1));
    assert_eq!(b.delay(2), secs(2));
    assert_eq!(b.delay(9), secs(2));
    assert_eq!(b.delay(0), secs(1));
}

#[test]
fn jitter_only_adds_within_its_fraction() {
    let b = Backoff::new(vec![secs(10)], 0.5, secs(3600));
    for _ in 0..100 {
        let d = b.delay(1);
        assert!(d >= secs(10) && d <= secs(15), "{d:?}");
    }
}

#[test]
fn long_reasons_are_cut_on_a_character_boundary() {
    let long = "é".repeat(2000);
    let r = clean_reason(&long);
    assert!(r.len() <= MAX_REASON_BYTES);
    assert!(r.ends_with("..."));
}
