//! Pausing a handler's pulls while a stream its deliveries need is
//! unavailable: the next messages would only meet the same outage.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Deliveries of one handler held because a stream they need (for outputs
/// or the dead-letter copy) is unavailable. While any is, the handler pulls
/// nothing new: the next messages would only meet the same outage.
#[derive(Default)]
pub(crate) struct Stalls {
    count: AtomicUsize,
    cleared: Notify,
}

impl Stalls {
    /// Waits until no delivery is held for an unavailable stream.
    pub(crate) async fn cleared(&self) {
        loop {
            let notified = self.cleared.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Whether no delivery is held for an unavailable stream now.
    pub(crate) fn is_clear(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub(super) fn enter(&self) -> StallGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        StallGuard(self)
    }
}

pub(super) struct StallGuard<'a>(&'a Stalls);

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.cleared.notify_waiters();
        }
    }
}
