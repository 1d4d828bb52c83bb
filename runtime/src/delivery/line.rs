//! The line: messages pulled ahead of a free slot wait here, oldest first,
//! and `concurrency` long-lived workers take them in arrival order.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::lease::Lease;
use crate::settle::Settled;
use crate::telemetry::HandlerStatus;

/// A pulled message waiting for a free slot, holding its place in the bound.
pub(crate) struct Waiting {
    pub lease: Lease,
    pub _place: OwnedSemaphorePermit,
}

/// Messages pulled ahead, oldest first, and a permit for each, so that the
/// workers take them in arrival order (tokio's semaphore is fair).
pub(crate) struct Line {
    waiting: Mutex<VecDeque<Waiting>>,
    ready: Semaphore,
    /// Counts of running and waiting deliveries, for metrics and the shutdown log.
    status: Arc<HandlerStatus>,
}

impl Line {
    pub(crate) fn new(status: Arc<HandlerStatus>) -> Line {
        Line {
            waiting: Mutex::default(),
            ready: Semaphore::new(0),
            status,
        }
    }

    pub(crate) fn join(&self, w: Waiting) {
        self.lock().push_back(w);
        self.status.waiting.fetch_add(1, Ordering::Relaxed);
        self.ready.add_permits(1);
    }

    /// Empties the line, oldest first.
    pub(crate) fn take_all(&self) -> VecDeque<Waiting> {
        let all = std::mem::take(&mut *self.lock());
        self.status
            .waiting
            .fetch_sub(all.len() as i64, Ordering::Relaxed);
        all
    }

    /// Deliveries running now.
    pub(crate) fn running(&self) -> i64 {
        self.status.running.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One of the handler's `concurrency` slots: runs the oldest waiting message,
/// then the next, until `stop` fires. On `abort` (the drain timeout) the
/// running delivery is dropped and its message handed back.
pub(crate) async fn work(
    dispatcher: Arc<Dispatcher>,
    line: Arc<Line>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    loop {
        let ready = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ready = line.ready.acquire() => ready.expect("semaphore is never closed"),
        };
        ready.forget();
        // Empty only if shutdown took the line meanwhile.
        let Some(next) = line.lock().pop_front() else {
            continue;
        };
        line.status.waiting.fetch_sub(1, Ordering::Relaxed);
        run(&dispatcher, &line.status, next, &abort).await;
    }
}

/// Runs one waiting message's delivery; on `abort` (the drain timeout) the
/// delivery is dropped and its message handed back.
pub(crate) async fn run(
    dispatcher: &Dispatcher,
    status: &HandlerStatus,
    waiting: Waiting,
    abort: &CancellationToken,
) {
    let Waiting { lease, _place } = waiting;
    deliver(dispatcher, status, lease, abort).await;
    drop(_place);
}

/// Runs one delivery, counted as running; how it settled, or `None` when it
/// was abandoned at `abort` (its message handed back) or panicked.
pub(crate) async fn deliver(
    dispatcher: &Dispatcher,
    status: &HandlerStatus,
    lease: Lease,
    abort: &CancellationToken,
) -> Option<Settled> {
    status.running.fetch_add(1, Ordering::Relaxed);
    // The delivery owns the lease; a handle stays here to hand the message
    // back if the delivery must be abandoned.
    let hand_back = lease.handle();
    // A bug that panics while one message is handled costs that message an
    // `ack_wait`, not the handler one of its slots.
    let delivery = AssertUnwindSafe(dispatcher.deliver(lease)).catch_unwind();
    // An abort that came first wins: a delivery not started yet never starts.
    let settled = tokio::select! {
        biased;
        _ = abort.cancelled() => {
            hand_back.hand_back().await;
            None
        }
        done = delivery => match done {
            Ok(settled) => Some(settled),
            Err(_) => {
                error!(handler = %dispatcher.handler.name, "delivery panicked; ack_wait will redeliver the message");
                None
            }
        },
    };
    status.running.fetch_sub(1, Ordering::Relaxed);
    settled
}
