//! The line one ordered handler's partitions share (`OrderLine`: the
//! per-key `Keys` behind a lock, and a permit per ready key) and the
//! `concurrency` workers that run it: a worker takes the next ready key's
//! head, runs it, and then lets the key go on, or keeps the message as the
//! key's head until its retry delay has passed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::AfterDeadLetter;
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::lease::Lease;
use crate::delivery::line;
use crate::delivery::order::{Item, Keys};
use crate::delivery::stopped::Stopped;
use crate::settle::{DeadLetterKind, Settled};
use crate::telemetry::HandlerStatus;

/// A held message and its place in the host's bound.
pub(crate) struct Held {
    pub lease: Lease,
    pub place: Option<OwnedSemaphorePermit>,
}

/// The line shared by one handler's partitions and workers.
pub(crate) struct OrderLine {
    keys: Mutex<Keys<Held>>,
    ready: Semaphore,
    status: Arc<HandlerStatus>,
    /// With `key_after_dead_letter = "stop"`: the stopped keys.
    pub stopped: Option<Arc<Stopped>>,
    after: AfterDeadLetter,
}

impl OrderLine {
    pub(crate) fn new(
        partitions: usize,
        status: Arc<HandlerStatus>,
        stopped: Option<Arc<Stopped>>,
        after: AfterDeadLetter,
    ) -> Arc<OrderLine> {
        Arc::new(OrderLine {
            keys: Mutex::new(Keys::new(partitions)),
            ready: Semaphore::new(0),
            status,
            stopped,
            after,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys<Held>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `change` on the keys and wakes a worker per key it queued.
    fn with(&self, change: impl FnOnce(&mut Keys<Held>) -> usize) {
        let woken = {
            let mut keys = self.lock();
            let woken = change(&mut keys);
            self.status
                .waiting
                .store(keys.waiting() as i64, Ordering::Relaxed);
            woken
        };
        self.ready.add_permits(woken);
    }

    pub(crate) fn join(&self, key: String, item: Item<Held>) {
        self.with(|k| k.join(key, item));
    }

    pub(crate) fn fence(&self, partition: usize, on: bool) {
        self.with(|k| k.fence(partition, on));
    }

    /// Messages of a partition waiting here (not running).
    pub(crate) fn held(&self, partition: usize) -> usize {
        self.lock().held(partition)
    }

    pub(crate) fn is_fenced(&self, partition: usize) -> bool {
        self.lock().is_fenced(partition)
    }

    /// Takes the unstarted messages of one (fenced) partition, lowest sequence first.
    pub(crate) fn take_partition(&self, partition: usize) -> Vec<Item<Held>> {
        let mut taken = Vec::new();
        self.with(|k| {
            taken = k.take_partition(partition);
            0
        });
        taken
    }

    pub(crate) fn take_waiting(&self) -> Vec<(String, Item<Held>, bool)> {
        let mut taken = Vec::new();
        self.with(|k| {
            taken = k.take_waiting();
            0
        });
        taken
    }

    /// Keys blocked behind an earlier message, and the longest wait.
    pub(crate) fn blocked(&self) -> (usize, Duration) {
        self.lock().blocked(Instant::now())
    }
}

/// One of the handler's `concurrency` workers: starts the next ready
/// message until `stop` fires.
pub(crate) async fn work(
    dispatcher: Arc<Dispatcher>,
    line: Arc<OrderLine>,
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
        let next = line.lock().next();
        if let Some((key, item)) = next {
            run(&dispatcher, &line, key, item, &abort).await;
        }
    }
}

/// Runs one message of `key`, then lets the key's next one start, or keeps
/// the message as the key's head until its retry delay has passed.
pub(crate) async fn run(
    dispatcher: &Dispatcher,
    line: &Arc<OrderLine>,
    key: String,
    item: Item<Held>,
    abort: &CancellationToken,
) {
    let Item {
        value: Held { mut lease, place },
        sequence,
        partition,
        since,
    } = item;
    if let Some(stopped) = &line.stopped
        && lease.retries_in_place() == 0
        && let Some(reason) = stopped.check(&key).await
    {
        lease.in_order().stopped = Some(reason);
    }
    let (back, retried) = oneshot::channel();
    lease.in_order().retry = Some(back);
    let settled = line::deliver(dispatcher, &line.status, lease, abort).await;
    if let Ok((mut lease, delay)) = retried.await {
        lease.in_order().retries += 1;
        let item = Item {
            value: Held { lease, place },
            sequence,
            partition,
            since,
        };
        line.with(|k| {
            k.retry(&key, item);
            0
        });
        let (line, key) = (line.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            line.with(|k| k.due(&key, sequence));
        });
        return;
    }
    drop(place);
    if let (Some(stopped), AfterDeadLetter::Stop, Some(Settled::DeadLettered(kind))) =
        (&line.stopped, line.after, settled)
        && kind != DeadLetterKind::Blocked
    {
        stopped.stop(&key, sequence, kind);
    }
    line.with(|k| k.settled(&key));
}
