//! Finding the message that failed a batch: a batch call that fails as a
//! whole (a trap, a timeout, the memory cap, a result list of the wrong
//! length) tells nothing about which message caused it. With `bisect` on,
//! its messages are run again in halves, each half in its own instance,
//! and a half that fails again is halved again, until the message that
//! fails is alone: only its failure is its own, and its neighbours get the
//! results of the halves they succeed in.
//!
//! All of this happens within the messages' current delivery: no nak, so
//! the halves do not use up attempts (a message's attempt is JetStream's
//! delivery count, which only a redelivery moves). A poison message costs
//! its batch at most `2 × log2(n)` further calls; a guest that fails every
//! message alone costs `2n - 1` calls in all, about twice the instances a
//! handler of one message at a time would start for them.

use std::future::Future;
use std::ops::Range;

use crate::settle::Failure;

/// A batch call that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Whole {
    pub failure: Failure,
    pub detail: String,
}

/// Runs messages `0..n` as one batch with `call`, and, when the batch fails
/// as a whole and `bisect` is on, its halves again, recursively; returns
/// each message's result in order: its own result from the smallest batch
/// that returned, or the failure of the batch it failed in, worded for its
/// dead-letter reason. The halves run one after the other (each in a
/// fresh instance, so no more instances run at once than without them),
/// left first, so results keep the batch's order.
pub(super) async fn run<R, F, Fut>(n: usize, bisect: bool, mut call: F) -> Vec<Result<R, Whole>>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, Whole>>,
{
    let mut results: Vec<Option<Result<R, Whole>>> = (0..n).map(|_| None).collect();
    let mut todo: Vec<Range<usize>> = Vec::new();
    todo.push(0..n);
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        match call(range.clone()).await {
            Ok(each) => {
                debug_assert_eq!(each.len(), range.len(), "one result per message");
                for (i, r) in range.zip(each) {
                    results[i] = Some(Ok(r));
                }
            }
            Err(whole) if bisect && range.len() > 1 => {
                tracing::warn!(
                    messages = range.len(),
                    failure = ?whole.failure,
                    detail = %crate::text::escape_controls(&whole.detail),
                    "a batch failed as a whole; running its halves to find the message that failed it"
                );
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Err(whole) => {
                let whole = Whole {
                    detail: explain(&whole.detail, range.len(), n, bisect),
                    failure: whole.failure,
                };
                for i in range {
                    results[i] = Some(Err(whole.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every message ran in some batch"))
        .collect()
}

/// A whole batch's failure as one of its messages' reason: what happened,
/// and whether the message was alone when it happened.
fn explain(detail: &str, size: usize, batch: usize, bisect: bool) -> String {
    match (size, batch) {
        (_, 1) => detail.to_string(),
        (1, _) => format!("{detail} (run alone after its batch of {batch} messages failed)"),
        _ if bisect => format!("{detail} (in a batch of {size} of the {batch} messages)"),
        _ => format!(
            "{detail} (the whole batch of {size} messages failed, and `bisect` is off: this \
             message may not be the one that failed it)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trap() -> Whole {
        Whole {
            failure: Failure::Trap,
            detail: "trap: unreachable".into(),
        }
    }

    /// A guest that fails any batch holding one of `poison`, and returns
    /// each message's index otherwise; records every batch it was called with.
    async fn guest(
        n: usize,
        bisect: bool,
        poison: &[usize],
    ) -> (Vec<Result<usize, Whole>>, Vec<Range<usize>>) {
        let mut calls = Vec::new();
        let results = run(n, bisect, |range: Range<usize>| {
            calls.push(range.clone());
            let failed = range.clone().any(|i| poison.contains(&i));
            async move {
                if failed {
                    Err(trap())
                } else {
                    Ok(range.collect())
                }
            }
        })
        .await;
        (results, calls)
    }

    #[tokio::test]
    async fn a_batch_that_succeeds_is_called_once() {
        let (results, calls) = guest(8, true, &[]).await;
        assert_eq!(calls, vec![0..8]);
        let ok: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(ok, (0..8).collect::<Vec<_>>());
    }

    /// One poison message in 64 is run alone after log2(64) = 6 halvings,
    /// in 13 calls, and fails alone; its 63 neighbours get their results.
    #[tokio::test]
    async fn bisection_isolates_one_poison_message() {
        let (results, calls) = guest(64, true, &[37]).await;
        assert_eq!(calls.len(), 1 + 2 * 6, "{calls:?}");
        assert!(calls.contains(&(37..38)));
        for (i, r) in results.iter().enumerate() {
            match (i, r) {
                (37, Err(w)) => assert_eq!(
                    w.detail,
                    "trap: unreachable (run alone after its batch of 64 messages failed)"
                ),
                (37, Ok(_)) => panic!("the poison message succeeded"),
                (_, Ok(v)) => assert_eq!(*v, i),
                (_, Err(e)) => panic!("message {i} failed with its neighbour: {e:?}"),
            }
        }
    }

    /// Two poison messages in different halves are each found alone.
    #[tokio::test]
    async fn bisection_isolates_several_poison_messages() {
        let (results, _) = guest(10, true, &[0, 9]).await;
        let failed: Vec<usize> = (0..10).filter(|i| results[*i].is_err()).collect();
        assert_eq!(failed, vec![0, 9]);
    }

    /// A guest that fails everything costs 2n - 1 calls, and each message
    /// fails alone.
    #[tokio::test]
    async fn a_guest_failing_everything_costs_two_n_minus_one_calls() {
        let (results, calls) = guest(5, true, &[0, 1, 2, 3, 4]).await;
        assert_eq!(calls.len(), 9);
        assert!(results.iter().all(Result::is_err));
    }

    /// Without bisection, a failed batch fails every message, each with a
    /// reason that says it may not be the cause; a batch of one keeps its
    /// own reason.
    #[tokio::test]
    async fn without_bisection_the_whole_batch_fails() {
        let (results, calls) = guest(4, false, &[2]).await;
        assert_eq!(calls, vec![0..4]);
        for r in &results {
            let w = r.as_ref().unwrap_err();
            assert!(w.detail.contains("`bisect` is off"), "{}", w.detail);
        }
        let (results, _) = guest(1, true, &[0]).await;
        assert_eq!(results[0].as_ref().unwrap_err(), &trap());
    }
}
