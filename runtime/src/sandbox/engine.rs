//! The WebAssembly engines: one per kind of sandbox the handlers need
//! (metered with fuel or not; copy-on-write memory images or not), each with
//! an instance pool sized from the configured concurrency and the loaded
//! components; the epoch ticker; the shared linker; compiling a component
//! against the handler world.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::config::HandlerConfig;
use crate::sandbox::bindings::{World, batch::BatchHandlerPre};
use crate::sandbox::component::Footprint;
use crate::sandbox::detect::{self, Detected};
use crate::sandbox::store::StoreState;
use crate::sandbox::worlds::HandlerPre;

/// How often the epoch advances. Deadlines are checked, and looping guests
/// yield to the async runtime, once per tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Native stack a guest may use; deep recursion traps with a stack overflow.
const MAX_WASM_STACK: usize = 1024 * 1024;

/// Written pages of a linear memory slot reset in place, and kept resident,
/// when an instance is dropped; past this, the rest goes back to the kernel.
/// Bounds the memory an idle slot keeps.
const KEEP_RESIDENT_MEMORY: usize = 256 * 1024;

/// The same for a table slot.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

/// A memory image from this size on is mapped copy-on-write instead of
/// copied into every instance (see BENCHMARKS.md: small images copy faster
/// than they map; large interpreters' images the other way round).
const COPY_ON_WRITE_FROM: u64 = 1024 * 1024;

/// The sandbox settings an engine is built with; handlers that need
/// different ones get different engines, so one handler's settings never
/// change how another's guests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Kind {
    /// Fuel metering, which slows every guest on the engine.
    pub fuel: bool,
    /// Copy-on-write memory images.
    pub cow: bool,
}

impl Kind {
    pub(crate) fn for_handler(fuel: bool, footprint: &Footprint) -> Kind {
        Kind {
            fuel,
            cow: footprint.data_bytes >= COPY_ON_WRITE_FROM,
        }
    }
}

/// What one engine's instance pool must hold.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Demand {
    /// Instances alive at once.
    pub instances: u32,
    /// The largest of each figure among the components.
    pub footprint: Footprint,
    /// The largest linear memory any of its handlers may use, in bytes.
    pub max_memory: u64,
}

impl Demand {
    pub(crate) fn add(&mut self, concurrency: usize, footprint: Footprint, memory: u64) {
        // A little room over the configured concurrency, for instances whose
        // Store is still being torn down.
        let concurrency = u32::try_from(concurrency).unwrap_or(u32::MAX);
        self.instances = self
            .instances
            .saturating_add(concurrency.saturating_add(concurrency / 4 + 4));
        self.footprint = self.footprint.max(footprint);
        self.max_memory = self.max_memory.max(memory);
    }
}

/// The process's engines, one per kind in use.
#[derive(Clone)]
pub(crate) struct Engines {
    engines: Arc<BTreeMap<Kind, Engine>>,
}

impl Engines {
    /// One engine per kind in `demands`; with `cache`, compiled components
    /// are kept in that directory, keyed by the component and the engine's
    /// settings, so an unchanged component starts without compiling.
    pub(crate) fn new(
        demands: BTreeMap<Kind, Demand>,
        cache: Option<&Path>,
    ) -> anyhow::Result<Engines> {
        let mut engines = BTreeMap::new();
        for (kind, demand) in demands {
            engines.insert(kind, new_engine(kind, &demand, cache)?);
        }
        Ok(Engines {
            engines: Arc::new(engines),
        })
    }

    pub(crate) fn get(&self, kind: Kind) -> &Engine {
        &self.engines[&kind]
    }

    /// Starts the epoch ticker for every engine; it stops when dropped.
    pub(crate) fn start_ticker(&self) -> EpochTicker {
        EpochTicker::start(self.engines.values().cloned().collect())
    }
}

/// Creates an engine with a pooling instance allocator sized to `demand`:
/// a fresh instance per delivery then costs a slot reuse instead of fresh
/// mappings. Falls back to on-demand allocation, with a warning, if the pool
/// cannot be reserved (a tight `ulimit -v`, say).
fn new_engine(kind: Kind, demand: &Demand, cache: Option<&Path>) -> anyhow::Result<Engine> {
    let mut config = base_config(kind);
    if let Some(dir) = cache {
        match compile_cache(dir) {
            Ok(c) => {
                config.cache(Some(c));
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = format!("{e:#}"),
                "cannot use the compile cache; compiling every component at start"
            ),
        }
    }
    let slots = demand.instances.max(1);
    let per_slot = |n: u32, least: u32| slots.saturating_mul(n.max(least));
    let f = &demand.footprint;
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(per_slot(f.core_instances, 16))
        .total_memories(per_slot(f.memories, 2))
        .total_tables(per_slot(f.tables, 4))
        .max_core_instances_per_component(f.core_instances.max(16))
        .max_memories_per_component(f.memories.max(2))
        .max_tables_per_component(f.tables.max(4))
        .table_elements(usize::try_from(f.table_elements.max(20_000)).unwrap_or(usize::MAX))
        .total_stacks(slots)
        .max_memory_size(usize::try_from(demand.max_memory).unwrap_or(usize::MAX));
    // Measured in BENCHMARKS.md: returning memory to the kernel one instance
    // at a time (an madvise and a TLB shootdown each) was the largest cost of
    // a fresh instance per delivery; batching it more than doubled throughput.
    pool.decommit_batch_size((slots as usize / 2).clamp(1, 64));
    config.memory_init_cow(kind.cow);
    // Linux 6.7+: after each instance, memset only the pages it wrote (found
    // with the PAGEMAP_SCAN ioctl) and keep them resident, instead of handing
    // the slot's pages back to the kernel and faulting them in again on the
    // next delivery. Without the ioctl, keeping pages resident would memset
    // the whole prefix every time, which measured far slower, so it stays off.
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
    }
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %e, "cannot reserve the instance pool; allocating instances on demand");
            Engine::new(&base_config(kind))
                .map_err(anyhow::Error::from)
                .context("creating the WebAssembly engine")
        }
    }
}

fn compile_cache(dir: &Path) -> anyhow::Result<wasmtime::Cache> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the compile cache {}", dir.display()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config).map_err(anyhow::Error::from)
}

fn base_config(kind: Kind) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Handlers are plain WASI p2 components: no component-model concurrency,
    // so the Store need not set up its data structures.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.consume_fuel(kind.fuel);
    config.memory_init_cow(kind.cow);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(MAX_WASM_STACK + 1024 * 1024);
    config
}

/// Advances the engines' epochs on their own thread, so deadlines fire even
/// when every async worker is busy running guests. Stops when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engines: Vec<Engine>) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The linker every handler on `engine` shares: WASI p2 (without preopens,
/// sockets, environment or arguments) and the `wharf:handler/host` imports.
pub(crate) fn new_linker(engine: &Engine) -> anyhow::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    super::linker::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// A handler's compiled component, linked and ready to instantiate, by the
/// kind of export it has.
#[derive(Clone)]
pub(crate) enum Pre {
    /// `handle` (any world with one message per call).
    Single(HandlerPre),
    /// `handle-batch`: a batch of messages per call.
    Batch(BatchHandlerPre<StoreState>),
}

/// Compiles a handler's component, tells which world it implements
/// (`super::detect`), checks it is the one the handler's config asks for
/// (`batch` or not), and that it links and exports what that world calls.
/// Returns the linked component, its world, and what detection saw.
pub(crate) fn compile(
    engine: &Engine,
    linker: &Linker<StoreState>,
    handler: &HandlerConfig,
    bytes: &[u8],
) -> anyhow::Result<(Pre, World, Detected)> {
    let (name, path) = (&handler.name, handler.component.display());
    let detected = detect::detect(name, &handler.component, bytes)?;
    let component = Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("handler \"{name}\": compiling component {path}"))?;
    let world = match detected.world {
        None => World::of(engine, &component),
        Some(c) => World::Compat(c),
    };
    match (world, handler.batch.is_some()) {
        (World::Batch, false) => anyhow::bail!(
            "handler \"{name}\": component {path} exports `handle-batch` ({}), but the handler \
             has no `batch` field; add one, e.g. batch = {{ max_messages = 64, max_wait = \"50ms\" }}, \
             or build the component for the handler world (export `handle`)",
            world.name()
        ),
        (World::V01 | World::V02 | World::Compat(_), true) => anyhow::bail!(
            "handler \"{name}\": field `batch`: component {path} implements {}, not \
             wharf:handler/batch-handler@0.2.0 (export `handle-batch`); remove `batch`, or \
             build the component for the batch-handler world",
            world.name()
        ),
        _ => {}
    }
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "handler \"{name}\": component {path} imports something Wharf does not provide \
                 (only WASI p2, the imports of the worlds Wharf runs, wasi:keyvalue@0.2.0-draft2 \
                 and @0.2.0-draft, and wasi:logging@0.1.0-draft are available)",
            )
        })?;
    let export = match (world, detected.world) {
        (World::Batch, _) => {
            "handle-batch: func(messages: list<message>) -> list<result<_, handler-error>>"
        }
        (_, None) => "handle: func(msg: message) -> result<_, handler-error>",
        (_, Some(c)) => c.export(),
    };
    let does_not_match = || {
        format!(
            "handler \"{name}\": component {path} does not implement {} as Wharf runs it: \
             its `{export}` export does not match",
            world.name(),
        )
    };
    let pre = if world == World::Batch {
        BatchHandlerPre::new(pre)
            .map(Pre::Batch)
            .map_err(anyhow::Error::from)
            .with_context(does_not_match)?
    } else {
        HandlerPre::new(detected.world, pre)
            .map(Pre::Single)
            .map_err(anyhow::Error::from)
            .with_context(does_not_match)?
    };
    Ok((pre, world, detected))
}
