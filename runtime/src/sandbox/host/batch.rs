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

/// Makes one message's empty staging, with the handler's limits.
pub(crate) type MakeSlot = Box<dyn Fn() -> Slot + Send + Sync>;

/// What every message of the running batch has staged, by index. Empty
/// (and unallocated) outside a batch call; a message's staging is made
/// when the handler first stages something for it, so a batch that
/// stages nothing costs one vector.
#[derive(Default)]
pub(crate) struct Staging {
    slots: Vec<Option<Slot>>,
    make: Option<MakeSlot>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// Starts a batch of `n` messages, each with nothing staged.
    pub(crate) fn start(&mut self, n: usize, make: MakeSlot) {
        self.slots.clear();
        self.slots.resize_with(n, || None);
        self.make = Some(make);
    }

    /// Message `index`'s staging, or why there is none: the guest named a
    /// message that is not in the batch.
    pub(crate) fn slot(&mut self, index: u32) -> Result<&mut Slot, String> {
        let n = self.slots.len();
        let out_of_batch = || format!("message index {index} is not in this batch of {n} messages");
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or_else(out_of_batch)?;
        let make = self.make.as_ref().ok_or_else(out_of_batch)?;
        Ok(slot.get_or_insert_with(make))
    }

    /// Empties the staging, returning each message's outputs and writes, in
    /// the batch's order.
    pub(crate) fn take(&mut self) -> Vec<(Vec<Outgoing>, Vec<Write>)> {
        self.make = None;
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|s| match s {
                Some(mut s) => (s.outbox.take(), s.kv.take()),
                None => (Vec::new(), Vec::new()),
            })
            .collect()
    }

    /// How many messages the running batch has (0 outside a batch call).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Drops whatever was staged (a reused instance's next call).
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.make = None;
    }
}

#[cfg(test)]
mod tests;
