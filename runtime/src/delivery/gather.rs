//! A batch handler's workers: each takes the oldest waiting message, then
//! up to `max_messages` in all, waiting at most `max_wait` from the first
//! for the batch to fill, and runs them as one batch
//! (`Dispatcher::deliver_batch`), whose messages then settle each on its
//! own. A batch holds its messages' places in the pull bound until every
//! one of them is settled.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::dispatcher::Dispatcher;
use super::lease::{HandBack, Lease};
use super::line::{Line, Queue, Waiting};
use crate::telemetry::HandlerStatus;

/// One of a batch handler's `concurrency` slots: gathers a batch from the
/// line and runs it, then the next, until `stop` fires. A batch still
/// filling when `stop` fires stops filling and runs with what it has: its
/// messages are the worker's, in flight, and the drain finishes them or,
/// at its timeout (`abort`), hands back those not settled yet.
pub(crate) async fn work(
    dispatcher: Arc<Dispatcher>,
    line: Arc<Line>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let Some(batch) = dispatcher.handler.batch else {
        return super::line::work(dispatcher, line, stop, abort).await;
    };
    while !stop.is_cancelled() {
        let gathered = gather(&line.queue, batch.max_messages, batch.max_wait, &stop).await;
        if gathered.is_empty() {
            continue;
        }
        line.left(gathered.len());
        run(&dispatcher, &line.status, gathered, &abort).await;
    }
}

/// Up to `max` of the oldest items: waits for the first, takes what else is
/// there, then waits for more until the batch is full or `max_wait` has
/// passed since the first was taken. Empty only when `stop` fired before a
/// first item came; after `stop`, it takes nothing more, so what arrives
/// then stays in the queue (for the drain).
pub(crate) async fn gather<T>(
    queue: &Queue<T>,
    max: usize,
    max_wait: Duration,
    stop: &CancellationToken,
) -> Vec<T> {
    let Some(first) = queue.next(stop).await else {
        return Vec::new();
    };
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + max_wait;
    while batch.len() < max && !stop.is_cancelled() {
        let now = queue.take_now(max - batch.len());
        if !now.is_empty() {
            batch.extend(now);
            continue;
        }
        let next = tokio::select! {
            biased;
            next = queue.next(stop) => next,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        match next {
            Some(item) => batch.push(item),
            None => break,
        }
    }
    batch
}

/// Runs one gathered batch to the settlement of each of its messages; on
/// `abort` (the drain timeout) the batch is dropped and the messages not
/// settled yet are handed back.
pub(crate) async fn run(
    dispatcher: &Dispatcher,
    status: &HandlerStatus,
    batch: Vec<Waiting>,
    abort: &CancellationToken,
) {
    let n = batch.len() as i64;
    status.running.fetch_add(n, Ordering::Relaxed);
    let (leases, places): (Vec<Lease>, Vec<_>) =
        batch.into_iter().map(|w| (w.lease, w._place)).unzip();
    // The batch owns the leases; handles stay here to hand back what is
    // still unsettled if the batch must be abandoned.
    let hand_backs: Vec<HandBack> = leases.iter().map(Lease::handle).collect();
    // A bug that panics costs the batch's messages an `ack_wait`, not the
    // handler one of its slots.
    let mut delivery = Box::pin(AssertUnwindSafe(dispatcher.deliver_batch(leases)).catch_unwind());
    // An abort that came first wins: a batch not started yet never starts.
    let aborted = tokio::select! {
        biased;
        _ = abort.cancelled() => true,
        done = &mut delivery => {
            if done.is_err() {
                error!(handler = %dispatcher.handler.name, "batch panicked; ack_wait will redeliver its unsettled messages");
            }
            false
        }
    };
    if aborted {
        // Read before the batch is dropped, which ends every lease: what
        // was acked, nak'd or dead-lettered already keeps its settlement.
        let unsettled: Vec<HandBack> = hand_backs.into_iter().filter(HandBack::is_held).collect();
        drop(delivery);
        for h in unsettled {
            h.hand_back().await;
        }
    }
    drop(places);
    status.running.fetch_sub(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(items: std::ops::Range<u32>) -> Queue<u32> {
        let q = Queue::default();
        for i in items {
            q.push(i);
        }
        q
    }

    /// What is waiting fills a batch at once, oldest first, up to `max`;
    /// the rest waits for the next batch.
    #[tokio::test(start_paused = true)]
    async fn a_full_line_fills_a_batch_without_waiting() {
        let q = queue(0..10);
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let batch = gather(&q, 4, Duration::from_secs(60), &stop).await;
        assert_eq!(batch, vec![0, 1, 2, 3]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(gather(&q, 4, Duration::ZERO, &stop).await, vec![4, 5, 6, 7]);
    }

    /// A trickle fills the batch as messages arrive; at `max_wait` after
    /// the first it runs with what it has.
    #[tokio::test(start_paused = true)]
    async fn a_trickle_waits_at_most_max_wait() {
        let q = Arc::new(queue(0..1));
        let stop = CancellationToken::new();
        let feeder = {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 1..100 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    q.push(i);
                }
            })
        };
        let started = tokio::time::Instant::now();
        let batch = gather(&q, 64, Duration::from_millis(50), &stop).await;
        assert_eq!(batch, vec![0, 1, 2], "the first, and those within 50 ms");
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        feeder.abort();
    }

    /// The wait for a first message and for more both end with `stop`:
    /// nothing is taken after it.
    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_wait() {
        let q = queue(0..1);
        let stop = CancellationToken::new();
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                stop.cancel();
            })
        };
        assert_eq!(gather(&q, 8, Duration::from_secs(60), &stop).await, vec![0]);
        stopper.await.unwrap();
        q.push(1);
        assert!(
            gather(&q, 8, Duration::from_secs(60), &stop)
                .await
                .is_empty()
        );
        assert_eq!(q.take_all().len(), 1, "left for the drain");
    }
}
