//! What one delivery of a component of another host's world holds on the
//! host's side: its resources (`wasi:messaging` messages, clients and
//! request options; `wasi:keyvalue` buckets and compare-and-swap handles),
//! bounded in number and, for messages, in bytes, so a guest cannot make
//! the host allocate without end.
//!
//! In `isolation = "reuse"` mode the resources outlive a delivery, as the
//! guest's own state does: the guest's handles point into this table, so
//! emptying it would let a handle it kept name another resource later. An
//! instance that hits a limit traps and is never reused.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};

use crate::config::HandlerConfig;

/// Most resources a delivery may hold at once, beyond its outbox's messages.
const MAX_RESOURCES: usize = 1000;

/// Bytes of messages a delivery may hold beyond what its outbox may hold.
const MESSAGE_HEADROOM: usize = 1024 * 1024;

/// One delivery's resources.
pub(crate) struct State {
    table: ResourceTable,
    /// Bytes held by the messages the guest made (the one the host handed
    /// it is bounded by the server's `max_payload` and not counted).
    bytes: usize,
    max_bytes: usize,
    max_resources: usize,
    pub handler: Arc<HandlerConfig>,
}

impl State {
    pub(crate) fn new(handler: Arc<HandlerConfig>) -> State {
        let max_resources = MAX_RESOURCES + handler.max_outbox_messages;
        let max_bytes = usize::try_from(handler.max_outbox_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(MESSAGE_HEADROOM);
        let mut table = ResourceTable::new();
        table.set_max_capacity(max_resources);
        State {
            table,
            bytes: 0,
            max_bytes,
            max_resources,
            handler,
        }
    }

    /// Holds a resource of `bytes` counted bytes; traps past the limits.
    pub(super) fn push<T: Send + 'static>(
        &mut self,
        value: T,
        bytes: usize,
    ) -> wasmtime::Result<Resource<T>> {
        self.grow(0, bytes)?;
        let pushed = self.table.push(value);
        if pushed.is_err() {
            self.bytes -= bytes;
        }
        pushed.map_err(|e| {
            wasmtime::Error::msg(format!(
                "handler \"{}\" holds more than {} host resources at once ({e})",
                self.handler.name, self.max_resources
            ))
        })
    }

    pub(super) fn get<T: Send + 'static>(&self, r: &Resource<T>) -> wasmtime::Result<&T> {
        Ok(self.table.get(r)?)
    }

    pub(super) fn get_mut<T: Send + 'static>(
        &mut self,
        r: &Resource<T>,
    ) -> wasmtime::Result<&mut T> {
        Ok(self.table.get_mut(r)?)
    }

    /// Takes a resource out of the table, giving back `bytes` counted bytes.
    pub(super) fn take<T: Send + 'static>(
        &mut self,
        r: Resource<T>,
        bytes: impl FnOnce(&T) -> usize,
    ) -> wasmtime::Result<T> {
        let value = self.table.delete(r)?;
        self.bytes = self.bytes.saturating_sub(bytes(&value));
        Ok(value)
    }

    /// Counts a resource growing from `old` to `new` bytes; traps past the limit.
    pub(super) fn grow(&mut self, old: usize, new: usize) -> wasmtime::Result<()> {
        let total = self.bytes.saturating_sub(old).saturating_add(new);
        if total > self.max_bytes {
            return Err(wasmtime::Error::msg(format!(
                "handler \"{}\" holds more than {} bytes of messages \
                 (`max_outbox_bytes` and 1 MiB)",
                self.handler.name, self.max_bytes
            )));
        }
        self.bytes = total;
        Ok(())
    }
}
