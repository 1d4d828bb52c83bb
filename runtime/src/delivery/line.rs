//! The line: messages pulled ahead of a free slot wait here, oldest first,
//! and `concurrency` long-lived workers take them in arrival order (one at
//! a time, or, for a batch handler, a batch at a time: `super::batch`).

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

/// Items oldest first, and a permit for each, so that whoever waits for
/// one takes them in arrival order (tokio's semaphore is fair).
pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Semaphore,
}

impl<T> Default for Queue<T> {
    fn default() -> Queue<T> {
        Queue {
            items: Mutex::default(),
            ready: Semaphore::new(0),
        }
    }
}

impl<T> Queue<T> {
    pub(crate) fn push(&self, item: T) {
        self.lock().push_back(item);
        self.ready.add_permits(1);
    }

    /// The oldest item, once there is one; `None` if `stop` fires first, or
    /// if `take_all` emptied the queue meanwhile.
    pub(crate) async fn next(&self, stop: &CancellationToken) -> Option<T> {
        let ready = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            ready = self.ready.acquire() => ready.expect("semaphore is never closed"),
        };
        ready.forget();
        self.lock().pop_front()
    }

    /// Up to `max` of the oldest items that are there now, without waiting.
    pub(crate) fn take_now(&self, max: usize) -> Vec<T> {
        let n = self.ready.available_permits().min(max);
        if n == 0 {
            return Vec::new();
        }
        let Ok(ready) = self.ready.try_acquire_many(n as u32) else {
            return Vec::new();
        };
        ready.forget();
        let mut items = self.lock();
        let n = n.min(items.len());
        items.drain(..n).collect()
    }

    /// Empties the queue, oldest first. Permits left behind find it empty.
    pub(crate) fn take_all(&self) -> VecDeque<T> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Messages pulled ahead, oldest first, with the handler's counts of
/// running and waiting deliveries.
pub(crate) struct Line {
    pub(super) queue: Queue<Waiting>,
    /// Counts of running and waiting deliveries, for metrics and the shutdown log.
    pub(super) status: Arc<HandlerStatus>,
}

impl Line {
    pub(crate) fn new(status: Arc<HandlerStatus>) -> Line {
        Line {
            queue: Queue::default(),
            status,
        }
    }

    pub(crate) fn join(&self, w: Waiting) {
        self.status.waiting.fetch_add(1, Ordering::Relaxed);
        self.queue.push(w);
    }

    /// Counts messages that left the line to run.
    pub(super) fn left(&self, n: usize) {
        self.status.waiting.fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Empties the line, oldest first.
    pub(crate) fn take_all(&self) -> VecDeque<Waiting> {
        let all = self.queue.take_all();
        self.left(all.len());
        all
    }

    /// Deliveries running now.
    pub(crate) fn running(&self) -> i64 {
        self.status.running.load(Ordering::Relaxed)
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
    while !stop.is_cancelled() {
        // Empty only if shutdown took the line meanwhile.
        let Some(next) = line.queue.next(&stop).await else {
            continue;
        };
        line.left(1);
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
