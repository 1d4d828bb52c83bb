//! Running a handler's guest: a fresh instance per delivery or batch (or,
//! with `isolation = "reuse"`, an idle one that never failed), the call to
//! `handle` (or `handle-batch`, in `batch`), the guest's output, and what
//! the call produced. Only this module creates Stores.

mod batch;
mod output;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;
use wasmtime::{Engine, Store};

pub(crate) use batch::BatchRan;

use crate::config::{HandlerConfig, Isolation};
use crate::sandbox::bindings::batch::BatchHandler;
use crate::sandbox::bindings::{HandlerError, Message, World};
use crate::sandbox::engine::{EPOCH_TICK, Pre};
use crate::sandbox::store::{Shared, StoreState, new_store, rearm, start_batch};
use crate::sandbox::trap::classify;
use crate::sandbox::worlds::Handler;
use crate::settle::{Failure, Outcome};
use crate::staged::Outgoing;
use crate::state::Write;
use crate::telemetry::RunTimes;
use output::log_output;

/// One handler's compiled component and the instances it may reuse.
pub(crate) struct Guest {
    engine: Engine,
    pre: Pre,
    /// The world the component implements.
    pub world: World,
    shared: Shared,
    /// Idle instances for `isolation = "reuse"`; each serves one delivery
    /// (or batch) at a time.
    idle: Mutex<Vec<Idle>>,
    /// Replaced by a reload: its instances are not kept for reuse, so that
    /// they give their places in the pool back to the new version's.
    retired: AtomicBool,
}

/// An instance of either kind of export.
enum Instance {
    Single(Handler),
    Batch(BatchHandler),
}

/// An instance waiting for its next delivery in reuse mode.
struct Idle {
    store: Store<StoreState>,
    instance: Instance,
    /// Deliveries (messages) it has served.
    uses: u32,
}

/// What one call hands the guest.
#[derive(Clone, Copy)]
enum Call<'m> {
    One(&'m Message),
    Batch(&'m [Message]),
}

/// What the guest returned from one call.
enum Returned {
    One(Outcome),
    Batch(Vec<Result<(), HandlerError>>),
}

/// What the guest returned, or why it did not: `Err` when it was still
/// blocked (in a host call) at its deadline.
type CallResult = Result<wasmtime::Result<Returned>, Blocked>;

/// The instance of one call, with its Store and timings.
struct Called {
    store: Store<StoreState>,
    instance: Option<Instance>,
    uses: u32,
    times: RunTimes,
}

/// What running the guest for one delivery produced.
pub(crate) struct Ran {
    pub outcome: Outcome,
    /// The outbox, when the guest succeeded; empty otherwise.
    pub outputs: Vec<Outgoing>,
    /// The staged key-value writes, when the guest succeeded; empty otherwise.
    pub writes: Vec<Write>,
    /// How long it took; `None` when the guest was not run.
    pub times: Option<RunTimes>,
}

impl Guest {
    pub(crate) fn new(engine: Engine, pre: Pre, world: World, shared: Shared) -> Guest {
        Guest {
            engine,
            pre,
            world,
            shared,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        }
    }
    /// Stops keeping instances for reuse and drops the idle ones: a reload
    /// replaced this version, and the new one needs their places in the pool.
    pub(crate) fn retire(&self) {
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            self.retired.store(true, Ordering::Relaxed);
            std::mem::take(&mut *idle)
        };
        drop(idle);
    }

    /// The same compiled component with other per-delivery settings.
    pub(crate) fn with_settings(&self, shared: Shared) -> Guest {
        Guest::new(self.engine.clone(), self.pre.clone(), self.world, shared)
    }

    /// The server's `max_payload`, once known.
    pub(crate) fn max_payload(&self) -> Option<usize> {
        self.shared.max_payload.known()
    }

    pub(crate) fn handler(&self) -> &Arc<HandlerConfig> {
        &self.shared.handler
    }

    /// Instantiates the component once, as a delivery would, to refuse at
    /// start-up one that cannot start within the handler's limits.
    pub(crate) async fn probe(&self) -> anyhow::Result<()> {
        let mut store = new_store(&self.engine, &self.shared);
        let started = self.instantiate(&mut store).await;
        let handler = &self.shared.handler;
        let limits = &store.data().limits;
        let timeout = || {
            anyhow::anyhow!(
                "handler \"{}\": component {} does not finish starting within `timeout` = {}",
                handler.name,
                handler.component.display(),
                humantime::format_duration(handler.timeout)
            )
        };
        match started {
            Ok(Ok(_)) => Ok(()),
            _ if limits.hit == Some(Failure::Memory) => {
                Err(memory_too_small(handler, limits.wanted as u64))
            }
            Err(_) => Err(timeout()),
            Ok(Err(_)) if limits.hit == Some(Failure::Timeout) => Err(timeout()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!(
                "handler \"{}\": component {} failed to start",
                handler.name,
                handler.component.display()
            ))),
        }
    }

    /// Runs `handle` for one message in a fresh instance, or, with
    /// `isolation = "reuse"`, in an idle instance that has served fewer than
    /// its limit and never failed.
    pub(crate) async fn run(&self, message: &Message) -> Ran {
        let handler = &self.shared.handler;
        let (result, mut called) = self.call(Call::One(message)).await;
        let state = called.store.data_mut();
        let output = state.wasi.output.take();
        log_output(&self.shared.name, &output, state.log.dropped);
        let outcome = match result {
            Ok(Ok(Returned::One(outcome))) => outcome,
            Ok(Ok(Returned::Batch(_))) => unreachable!("a single call returns one result"),
            Ok(Err(e)) => {
                called.instance = None;
                let (failure, detail) =
                    classify(&e, state.limits.hit, handler, &output.stderr_tail);
                Outcome::Failed { failure, detail }
            }
            Err(Blocked) => {
                called.instance = None;
                blocked(handler)
            }
        };
        let (outputs, writes) = if outcome == Outcome::Ok {
            (state.outbox.take(), state.kv.take())
        } else {
            (Vec::new(), Vec::new())
        };
        let times = called.times;
        self.keep(called, 1);
        Ran {
            outcome,
            outputs,
            writes,
            times: Some(times),
        }
    }

    /// Calls the guest once: in an idle instance (reuse mode) or a fresh
    /// one, within the handler's deadline.
    async fn call(&self, call: Call<'_>) -> (CallResult, Called) {
        let reused = match self.shared.handler.isolation {
            Isolation::Fresh => None,
            Isolation::Reuse(_) => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        let (mut store, instance, uses) = match reused {
            Some(mut idle) => {
                rearm(&mut idle.store);
                (idle.store, Some(idle.instance), idle.uses)
            }
            None => (new_store(&self.engine, &self.shared), None, 0),
        };
        if let Call::Batch(messages) = call {
            start_batch(&mut store, &self.shared, messages.len());
        }
        let started = Instant::now();
        let mut instantiate = Duration::ZERO;
        let mut kept = None;
        let result = async {
            let instance = match instance {
                Some(i) => i,
                None => match self.instantiate(&mut store).await? {
                    Ok(i) => {
                        instantiate = started.elapsed();
                        i
                    }
                    Err(e) => return Ok(Err(e)),
                },
            };
            let deadline = outer_deadline(&store);
            let returned = match (&instance, call) {
                (Instance::Single(h), Call::One(m)) => {
                    tokio::time::timeout_at(deadline, h.call_handle(&mut store, m))
                        .await
                        .map(|r| r.map(Returned::One))
                }
                (Instance::Batch(h), Call::Batch(m)) => {
                    tokio::time::timeout_at(deadline, h.call_handle_batch(&mut store, m))
                        .await
                        .map(|r| r.map(Returned::Batch))
                }
                _ => Ok(Err(wasmtime::Error::msg(
                    "the component's export does not match the handler's `batch` setting",
                ))),
            }
            .map_err(|_| Blocked)?;
            kept = Some(instance);
            Ok(returned)
        }
        .await;
        let called = Called {
            store,
            instance: kept,
            uses,
            times: RunTimes {
                instantiate,
                total: started.elapsed(),
            },
        };
        (result, called)
    }

    /// Keeps a call's instance for the next delivery in reuse mode, unless
    /// it failed (its state may be anything) or has served its limit.
    fn keep(&self, called: Called, deliveries: u32) {
        let uses = called.uses.saturating_add(deliveries);
        if let (Isolation::Reuse(limit), Some(instance)) =
            (self.shared.handler.isolation, called.instance)
            && uses < limit
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !self.retired.load(Ordering::Relaxed) {
                idle.push(Idle {
                    store: called.store,
                    instance,
                    uses,
                });
            }
        }
    }

    /// A new instance in `store`. The instance pool holds a place for every
    /// delivery that can run at once and a margin, so it is full only for a
    /// moment (a reload's probe beside a full line, say): that is the host's
    /// condition, not the guest's, and the host waits for a place with a new
    /// Store and deadline each time, under the message's lease. A guest that
    /// traps, hits a limit or blocks while it starts fails at once.
    async fn instantiate(
        &self,
        store: &mut Store<StoreState>,
    ) -> Result<wasmtime::Result<Instance>, Blocked> {
        let mut waited = false;
        loop {
            let deadline = outer_deadline(store);
            let started = match &self.pre {
                Pre::Single(pre) => {
                    tokio::time::timeout_at(deadline, pre.instantiate_async(&mut *store))
                        .await
                        .map(|r| r.map(Instance::Single))
                }
                Pre::Batch(pre) => {
                    tokio::time::timeout_at(deadline, pre.instantiate_async(&mut *store))
                        .await
                        .map(|r| r.map(Instance::Batch))
                }
            }
            .map_err(|_| Blocked)?;
            match started {
                Err(e) if pool_full(&e) => {
                    if !waited {
                        warn!(handler = %self.shared.name, error = %e, "the instance pool is full; waiting for a place");
                        waited = true;
                    }
                    tokio::time::sleep(EPOCH_TICK).await;
                    let batch = store.data().batch.len();
                    *store = new_store(&self.engine, &self.shared);
                    if batch > 0 {
                        start_batch(store, &self.shared, batch);
                    }
                }
                started => return Ok(started),
            }
        }
    }

    /// Times `n` deliveries of `message` without NATS: a fresh Store,
    /// instantiation and the call each time. Returns the mean time to
    /// instantiate and the mean time of the call.
    pub(crate) async fn time(
        &self,
        message: &Message,
        n: u32,
    ) -> anyhow::Result<(Duration, Duration)> {
        let Pre::Single(pre) = &self.pre else {
            anyhow::bail!("timing deliveries needs a handler of one message at a time");
        };
        let mut instantiate = Duration::ZERO;
        let mut call = Duration::ZERO;
        for _ in 0..n {
            let t0 = Instant::now();
            let mut store = new_store(&self.engine, &self.shared);
            let instance = pre.instantiate_async(&mut store).await?;
            let t1 = Instant::now();
            let outcome = instance.call_handle(&mut store, message).await?;
            drop(store);
            let t2 = Instant::now();
            anyhow::ensure!(outcome == Outcome::Ok, "the guest did not succeed");
            instantiate += t1 - t0;
            call += t2 - t1;
        }
        let n = n.max(1);
        Ok((instantiate / n, call / n))
    }
}

/// A delivery's guest ran past its deadline while blocked in a host call.
pub(crate) struct Blocked;

/// What the guest returned for one message, as the settlement table reads it.
fn outcome(result: Result<(), HandlerError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(HandlerError::Retry(ms)) => Outcome::Retry {
            delay: ms.map(Duration::from_millis),
        },
        Err(HandlerError::Reject(reason)) => Outcome::Reject { reason },
    }
}

/// The outcome of a guest still blocked in a host call at its deadline.
fn blocked(handler: &HandlerConfig) -> Outcome {
    Outcome::Failed {
        failure: Failure::Timeout,
        detail: format!(
            "handler exceeded its timeout of {} (blocked in a host call)",
            humantime::format_duration(handler.timeout)
        ),
    }
}

/// The epoch deadline stops a guest that runs code; a timer at this instant
/// also stops one blocked in a host call (a WASI sleep, a poll).
fn outer_deadline(store: &Store<StoreState>) -> tokio::time::Instant {
    (store.data().deadline() + 2 * EPOCH_TICK).into()
}

/// Whether instantiation failed only because the instance pool had no place.
fn pool_full(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
}

/// The error for a `memory` setting below what the component needs to start.
pub(crate) fn memory_too_small(handler: &HandlerConfig, needed: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "handler \"{}\": field `memory`: component {} needs at least {} of linear memory \
         to start, more than `memory` = {}; raise it",
        handler.name,
        handler.component.display(),
        crate::config::mib(needed),
        crate::config::mib(handler.memory)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full pool is told from every other failure to instantiate, so that
    /// only it is waited out.
    #[test]
    fn a_full_pool_is_recognised() {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        // The smallest component: the preamble and nothing else.
        let component =
            wasmtime::component::Component::new(&engine, b"\0asm\x0d\x00\x01\x00").unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut first = Store::new(&engine, ());
        let _held = linker.instantiate(&mut first, &component).unwrap();
        let mut second = Store::new(&engine, ());
        let err = linker.instantiate(&mut second, &component).err().unwrap();
        assert!(pool_full(&err), "{err:#}");
        let other = wasmtime::Error::msg("something else");
        assert!(!pool_full(&other));
    }
}
