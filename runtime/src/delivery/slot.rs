//! What one ordered handler's partition loops (`serve.rs`), its watch
//! (`spread.rs`) and its drain (`ordered.rs`) share: the handler's context
//! (`Ctx`: the line, the places of its bound, the partitions) and each
//! partition's state as this host serves it (`Slot`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::HandlerConfig;
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::lease::Leases;
use crate::delivery::order_line::OrderLine;

/// One partition as this host serves it.
pub(crate) struct Slot {
    pub index: usize,
    /// The partition's durable and filter.
    pub handler: Arc<HandlerConfig>,
    pub leases: Arc<Leases>,
    /// The server delivers this partition to this host now.
    pub pinned: AtomicBool,
    /// Give the partition up: pull no more, finish what is held, unpin.
    pub release: AtomicBool,
    /// Until when this host does not ask for the partition again.
    pub cool_until: Mutex<Option<Instant>>,
    /// A pull request of this host is open at the server.
    pub asking: AtomicBool,
    /// Since when the partition has been fenced.
    pub fenced_at: Mutex<Option<Instant>>,
    /// The partition came with redeliveries: take what the host before
    /// left unsettled in one pull, beyond the bound if need be.
    pub take_over: AtomicBool,
}

/// What the partition loops, the watch and the drain share.
pub(crate) struct Ctx {
    pub dispatcher: Arc<Dispatcher>,
    pub handler: Arc<HandlerConfig>,
    pub js: jetstream::Context,
    pub line: Arc<OrderLine>,
    /// Places in the host's bound, shared by the partitions.
    pub places: Arc<Semaphore>,
    pub slots: Vec<Arc<Slot>>,
    pub partitions: Option<u32>,
    pub stop: CancellationToken,
}

impl Ctx {
    /// How many places one pull of a served partition may take: the bound
    /// split between the partitions this host serves.
    pub(crate) fn share(&self) -> usize {
        let active = self
            .slots
            .iter()
            .filter(|s| s.pinned.load(Ordering::Relaxed) && !s.release.load(Ordering::Relaxed))
            .count()
            .max(1);
        let places = self.handler.concurrency + self.handler.prefetch;
        places.div_ceil(active).max(1)
    }

    /// Puts up the fence of a partition this host has just taken: nothing
    /// of it starts until every unsettled message of its consumer waits
    /// here (so the line has put them in stream order) and the stopped keys
    /// are read back (`spread::watch` opens it).
    pub(crate) fn fence(&self, slot: &Slot) {
        *slot.fenced_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.line.fence(slot.index, true);
    }
}
