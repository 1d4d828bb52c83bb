//! The end of a handler's pull loop: hand back what waits in line, let
//! running deliveries (and batches) finish for up to `drain_timeout`, run
//! messages waiting for their final attempt, then hand back the rest.
//! Bounded even when the server is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::Puller;
use crate::delivery::gather;
use crate::delivery::line::{self, Waiting};

/// How long, after the drain, the host keeps trying to hand back what it
/// still holds before it gives up and leaves it to `ack_wait`.
pub(crate) const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

impl Puller {
    /// Hands back what waits in line, lets running deliveries finish for up
    /// to `drain_timeout`, then hands back the rest. Bounded even when the
    /// server is gone.
    pub(super) async fn drain(
        &self,
        workers: TaskTracker,
        abort: CancellationToken,
        drain_timeout: Duration,
    ) {
        // Workers take nothing new once `stop` has fired.
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + drain_timeout;
        // A hand-back counts as a delivery: a message waiting on its final
        // attempt would come back past it, and be dead-lettered without
        // ever running. Such messages run within the drain, once the
        // running deliveries are done (so no more instances run at once
        // than `concurrency`); the others go back at once.
        let max = self.dispatcher.current().guest.handler().max_attempts;
        let (last, others): (Vec<Waiting>, Vec<Waiting>) =
            self.line.take_all().into_iter().partition(|w| {
                w.lease
                    .message()
                    .info()
                    .is_ok_and(|i| i.delivered >= i64::from(max))
            });
        let mut settled = bounded(async {
            for w in others {
                w.lease.hand_back().await;
            }
        })
        .await;
        let in_flight = self.line.running();
        if in_flight > 0 {
            info!(handler = %self.handler.name, in_flight, "draining in-flight deliveries");
        }
        workers.close();
        let mut drained = tokio::time::timeout_at(deadline, workers.wait())
            .await
            .is_ok();
        if drained {
            // A batch handler's run in batches, as they would have.
            let size = self.handler.batch.map_or(1, |b| b.max_messages);
            let batched = self.handler.batch.is_some();
            let mut last = last.into_iter().peekable();
            let mut batches = Vec::new();
            while last.peek().is_some() {
                batches.push(last.by_ref().take(size).collect::<Vec<Waiting>>());
            }
            let (dispatcher, status) = (self.dispatcher.clone(), self.status.clone());
            let run = move |batch: Vec<Waiting>, abort: CancellationToken| {
                let (dispatcher, status) = (dispatcher.clone(), status.clone());
                async move {
                    if batched {
                        gather::run(&dispatcher, &status, batch, &abort).await
                    } else {
                        for waiting in batch {
                            line::run(&dispatcher, &status, waiting, &abort).await
                        }
                    }
                }
            };
            let finals = run_finals(batches, self.handler.concurrency, deadline, &abort, run);
            let (done, ok) = finals.await;
            drained = done;
            settled &= ok;
        } else {
            // Out of time: what waits for its final attempt goes back too.
            settled &= bounded(async {
                for w in last {
                    w.lease.hand_back().await;
                }
            })
            .await;
        }
        if !drained {
            warn!(handler = %self.handler.name, remaining = self.line.running(), "drain timeout; handing the rest back");
            abort.cancel();
            settled &= bounded(workers.wait()).await;
        }
        let unsettled = self.leases.count();
        if !settled || unsettled > 0 {
            warn!(
                handler = %self.handler.name,
                unsettled,
                "could not hand every message back (is the server reachable?); ack_wait will redeliver them"
            );
        }
    }
}

/// Runs the messages of a drain that wait for their final attempt, at most
/// `concurrency` at once, until `deadline`; past it, aborts them (their
/// messages are handed back). Returns whether they finished in time, and
/// whether every abort settled.
pub(crate) async fn run_finals<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    deadline: tokio::time::Instant,
    abort: &CancellationToken,
    run: F,
) -> (bool, bool)
where
    T: Send + 'static,
    F: Fn(T, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let finals = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(concurrency));
    for item in items {
        let (slots, work) = (slots.clone(), run(item, abort.clone()));
        finals.spawn(async move {
            let _slot = slots.acquire_owned().await;
            work.await
        });
    }
    finals.close();
    if tokio::time::timeout_at(deadline, finals.wait())
        .await
        .is_ok()
    {
        return (true, true);
    }
    abort.cancel();
    (false, bounded(finals.wait()).await)
}

/// Runs `work` for at most `HAND_BACK_GRACE`; returns whether it finished.
pub(crate) async fn bounded(work: impl Future<Output = ()>) -> bool {
    tokio::time::timeout(HAND_BACK_GRACE, work).await.is_ok()
}
