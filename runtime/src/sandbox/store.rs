//! One delivery's Store: the per-delivery state every capability keeps
//! (WASI, outbox, config values, log budget, key-value writes, requests,
//! other worlds' resources), the memory limiter and the
//! wall-clock deadline. Only `super::guest` creates Stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

use super::host::{
    batch::Slot, batch::Staging, kv::Kv, kv::KvAccess, log::LogBudget, publish::MaxPayload,
    publish::Outbox, request::RequestAccess, request::Requests, values::Values, wasi::Wasi,
};
use crate::config::HandlerConfig;
use crate::settle::Failure;

/// The deadline error raised into the guest when its time is up.
#[derive(Debug, thiserror::Error)]
#[error("deadline of {0:?} exceeded")]
pub(crate) struct DeadlineExceeded(pub Duration);

/// Memory cap for one instance: all of its linear memories together.
pub(crate) struct Limits {
    /// Most bytes of linear memory, all memories together.
    cap: usize,
    /// Bytes of linear memory the instance has now, all memories together.
    used: usize,
    /// The limit the guest hit, recorded by the limiter and the deadline
    /// callback so that a trap can be told apart from a limit being hit.
    pub hit: Option<Failure>,
    /// The total the instance asked for when it was refused.
    pub wanted: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            self.hit = Some(Failure::Memory);
            self.wanted = self.wanted.max(total);
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// What a host call may carry beyond the outbox's byte limit (WASI writes,
/// log lines, the host's bookkeeping of strings and lists).
const HOSTCALL_HEADROOM: usize = 1024 * 1024;

/// What every Store of one handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub handler: Arc<HandlerConfig>,
    pub name: Arc<str>,
    pub values: Values,
    pub max_payload: MaxPayload,
    pub kv: KvAccess,
    pub requests: RequestAccess,
    /// The most bytes of headers the host adds to one output.
    host_bytes: usize,
}

impl Shared {
    pub(crate) fn new(
        handler: Arc<HandlerConfig>,
        max_payload: MaxPayload,
        kv_reader: crate::state::ReaderCell,
        requester: crate::request::RequesterCell,
    ) -> Shared {
        let name: Arc<str> = Arc::from(handler.name.as_str());
        Shared {
            requests: RequestAccess::new(handler.clone(), requester),
            kv: KvAccess::new(name.clone(), handler.kv.clone(), kv_reader),
            name,
            values: Values::new(handler.values.clone()),
            host_bytes: super::host::publish::host_header_bytes(&handler),
            handler,
            max_payload,
        }
    }
}

/// Everything one delivery's Store owns.
pub(crate) struct StoreState {
    pub wasi: Wasi,
    pub limits: Limits,
    pub outbox: Outbox,
    pub values: Values,
    pub log: LogBudget,
    pub kv: Kv,
    /// A batch call's staging, one outbox and key-value staging per message.
    pub batch: Staging,
    pub requests: Requests,
    /// The resources of a component of another host's world.
    pub compat: super::worlds::state::State,
    /// When the current call must stop; re-armed for every delivery.
    deadline: Instant,
    timeout: Duration,
    fuel: Option<u64>,
}

impl StoreState {
    /// When the running delivery must have finished.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Creates a Store for one delivery, with its memory cap, deadline and fuel.
pub(crate) fn new_store(engine: &Engine, shared: &Shared) -> Store<StoreState> {
    let handler = &shared.handler;
    let timeout = handler.timeout;
    let state = StoreState {
        wasi: Wasi::new(handler.max_output_bytes as usize),
        limits: Limits {
            cap: usize::try_from(handler.memory).unwrap_or(usize::MAX),
            used: 0,
            hit: None,
            wanted: 0,
        },
        outbox: Outbox::new(
            handler.clone(),
            shared.max_payload.clone(),
            shared.host_bytes,
        ),
        values: shared.values.clone(),
        log: LogBudget::new(shared.name.clone(), handler.max_output_bytes as usize),
        kv: Kv::new(shared.kv.clone()),
        batch: Staging::default(),
        requests: Requests::new(shared.requests.clone()),
        compat: super::worlds::state::State::new(handler.clone()),
        deadline: Instant::now() + timeout,
        timeout,
        fuel: handler.fuel,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // What one host call may carry from the guest (counted as the host's
    // own data, strings and lists included): room for the largest outbox,
    // and little more, so a guest cannot make the host allocate beyond its
    // memory cap or spend seconds converting data in one call.
    store.set_hostcall_fuel(
        usize::try_from(handler.max_outbox_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(HOSTCALL_HEADROOM),
    );
    store.epoch_deadline_callback(move |mut ctx| {
        if Instant::now() >= ctx.data().deadline {
            ctx.data_mut().limits.hit = Some(Failure::Timeout);
            return Err(wasmtime::Error::new(DeadlineExceeded(timeout)));
        }
        // Yield every tick so that a spinning guest shares its worker thread.
        Ok(UpdateDeadline::Yield(1))
    });
    start_clock(&mut store);
    store
}

/// Prepares a used Store for its next delivery (reuse mode): per-delivery
/// state (outbox, captured output, log budget, limit record) reset, then a
/// new deadline and fuel budget.
pub(crate) fn rearm(store: &mut Store<StoreState>) {
    let state = store.data_mut();
    state.limits.hit = None;
    state.outbox.take();
    state.kv.take();
    state.batch.clear();
    state.requests.reset();
    state.wasi.output.take();
    state.log.reset();
    start_clock(store);
}

/// Gives each of a batch's `n` messages its own empty outbox and key-value
/// staging, with the handler's per-delivery limits.
pub(crate) fn start_batch(store: &mut Store<StoreState>, shared: &Shared, n: usize) {
    let shared = shared.clone();
    store.data_mut().batch.start(
        n,
        Box::new(move || Slot {
            outbox: Outbox::new(
                shared.handler.clone(),
                shared.max_payload.clone(),
                shared.host_bytes,
            ),
            kv: Kv::new(shared.kv.clone()),
        }),
    );
}

/// Starts the delivery's deadline and fuel budget.
fn start_clock(store: &mut Store<StoreState>) {
    if let Some(fuel) = store.data().fuel {
        // Cannot fail: a handler with fuel runs on an engine that meters it.
        let _ = store.set_fuel(fuel);
    }
    store.set_epoch_deadline(1);
    let timeout = store.data().timeout;
    store.data_mut().deadline = Instant::now() + timeout;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_counts_every_memory_together() {
        let mut limits = Limits {
            cap: 100,
            used: 0,
            hit: None,
            wanted: 0,
        };
        // Two memories of 40 bytes each fit; growing one by 30 more does not.
        assert!(limits.memory_growing(0, 40, None).unwrap());
        assert!(limits.memory_growing(0, 40, None).unwrap());
        assert!(!limits.memory_growing(40, 70, None).unwrap());
        assert_eq!((limits.hit, limits.wanted), (Some(Failure::Memory), 110));
        // Growing one within what is left still works.
        assert!(limits.memory_growing(40, 60, None).unwrap());
        assert_eq!(limits.used, 100);
    }
}
