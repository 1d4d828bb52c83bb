//! The `batch-host` import's per-message state: what a batch handler
//! stages, it stages for one message of the batch, named by its index, into
//! that message's own outbox and key-value staging. Each message's limits
//! are its own, as if it had been delivered alone, and what it staged is
//! handed back per message, so the host releases it only if that message
//! succeeds.

use super::kv::Kv;
use super::publish::Outbox;
use crate::staged::Outgoing;
use crate::state::Write;

/// One message's staging within a batch.
#[derive(Debug)]
pub(crate) struct Slot {
    pub outbox: Outbox,
    pub kv: Kv,
}

/// What every message of the running batch has staged, by index. Empty
/// (and unallocated) outside a batch call.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    slots: Vec<Slot>,
}

impl Staging {
    /// Starts a batch of `n` messages, each with an empty outbox and staging.
    pub(crate) fn start(&mut self, n: usize, slot: impl Fn() -> Slot) {
        self.slots.clear();
        self.slots.extend((0..n).map(|_| slot()));
    }

    /// Message `index`'s staging, or why there is none: the guest named a
    /// message that is not in the batch.
    pub(crate) fn slot(&mut self, index: u32) -> Result<&mut Slot, String> {
        let n = self.slots.len();
        usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or_else(|| format!("message index {index} is not in this batch of {n} messages"))
    }

    /// Empties the staging, returning each message's outputs and writes, in
    /// the batch's order.
    pub(crate) fn take(&mut self) -> Vec<(Vec<Outgoing>, Vec<Write>)> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|mut s| (s.outbox.take(), s.kv.take()))
            .collect()
    }

    /// How many messages the running batch has (0 outside a batch call).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Drops whatever was staged (a reused instance's next call).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests;
