//! The sandbox: one Engine per process, one pre-linked component per handler,
//! a fresh Store per delivery, the epoch ticker and the per-instance limits.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{Handler, HandlerPre};
use crate::outbox::Outbox;

/// How often the epoch advances. Deadlines are checked, and looping guests
/// yield to the async runtime, once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Native stack a guest may use; deep recursion traps with a stack overflow.
const MAX_WASM_STACK: usize = 1024 * 1024;

/// Written pages of a linear memory slot reset in place, and kept resident,
/// when an instance is dropped; past this, the rest goes back to the kernel.
/// Bounds the memory an idle slot keeps.
const KEEP_RESIDENT_MEMORY: usize = 256 * 1024;

/// The same for a table slot.
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

/// What the process-wide engine must be able to hold.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Whether any handler meters fuel; metering slows every guest down.
    pub fuel: bool,
    /// Instances alive at once, across all handlers: the pool's size.
    pub slots: u32,
    /// The largest linear memory any handler may use, in bytes.
    pub max_memory: u64,
}

impl EngineSettings {
    pub fn for_config(config: &crate::config::Config) -> EngineSettings {
        let in_flight: usize = config.handlers.iter().map(|h| h.concurrency).sum();
        EngineSettings {
            fuel: config.handlers.iter().any(|h| h.fuel.is_some()),
            // A little room over the configured concurrency, for instances
            // whose Store is still being torn down.
            slots: u32::try_from(in_flight + in_flight / 4 + 4).unwrap_or(u32::MAX),
            max_memory: config
                .handlers
                .iter()
                .map(|h| h.memory)
                .max()
                .unwrap_or(crate::config::defaults::MEMORY),
        }
    }
}

/// Creates the process-wide engine, with a pooling instance allocator sized
/// to the configured concurrency: a fresh instance per delivery then costs a
/// slot reuse instead of fresh mappings. Falls back to on-demand allocation,
/// with a warning, if the pool cannot be reserved (a tight `ulimit -v`, say).
pub fn new_engine(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let mut config = base_config(settings);
    let slots = settings.slots.max(1);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX));
    // Measured in BENCHMARKS.md: returning memory to the kernel one instance
    // at a time (an madvise and a TLB shootdown each) was the largest cost of
    // a fresh instance per delivery; batching it more than doubled throughput.
    pool.decommit_batch_size((slots as usize / 2).clamp(1, 64));
    // Copy-on-write images map the guest's initial memory per instance: for
    // small handlers, copying the data segments is cheaper than the mapping.
    config.memory_init_cow(false);
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
            Engine::new(&base_config(settings))
                .map_err(anyhow::Error::from)
                .context("creating the WebAssembly engine")
        }
    }
}

fn base_config(settings: &EngineSettings) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Handlers are plain WASI p2 components: no component-model concurrency,
    // so the Store need not set up its data structures.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.consume_fuel(settings.fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
    config.async_stack_size(MAX_WASM_STACK + 1024 * 1024);
    config
}

/// Advances the engine's epoch on its own thread, so deadlines fire even when
/// every async worker is busy running guests. Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
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

/// Builds the linker every handler shares: WASI p2 (without preopens,
/// sockets, environment or arguments, which `sandboxed_wasi` never grants)
/// and the `wharf:handler/host` imports.
pub fn new_linker(engine: &Engine) -> anyhow::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI")?;
    Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("linking the wharf host API")?;
    Ok(linker)
}

/// Compiles a handler's component and checks it implements the `handler` world.
pub fn load_component(
    engine: &Engine,
    linker: &Linker<StoreState>,
    handler: &str,
    path: &Path,
) -> anyhow::Result<HandlerPre<StoreState>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "handler \"{handler}\": cannot read component {}",
            path.display()
        )
    })?;
    if wasmparser::Parser::is_core_wasm(&bytes) {
        bail!(
            "handler \"{handler}\": {} is a core WebAssembly module, not a component; \
             build it for the wasm32-wasip2 target with the wharf-guest SDK",
            path.display()
        );
    }
    if !wasmparser::Parser::is_component(&bytes) {
        bail!(
            "handler \"{handler}\": {} is not a WebAssembly component",
            path.display()
        );
    }
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "handler \"{handler}\": compiling component {}",
                path.display()
            )
        })?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "handler \"{handler}\": component {} imports something Wharf does not provide \
             (only WASI p2 and wharf:handler/host@0.1.0 are available)",
                path.display()
            )
        })?;
    HandlerPre::new(pre).map_err(anyhow::Error::from).with_context(|| {
        format!(
            "handler \"{handler}\": component {} does not implement the wharf:handler/handler@0.1.0 world \
             (it must export `handle: func(msg: message) -> result<_, handler-error>`)",
            path.display()
        )
    })
}

/// Why a guest stopped early, recorded by the limiter and the deadline callback
/// so that a trap can be told apart from a limit being hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Timeout,
}

/// The deadline error raised into the guest when its time is up.
#[derive(Debug, thiserror::Error)]
#[error("deadline of {0:?} exceeded")]
pub struct DeadlineExceeded(pub Duration);

/// Memory cap for one instance.
pub struct Limits {
    /// Largest linear memory, in bytes.
    memory: usize,
    pub hit: Option<LimitHit>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = Some(LimitHit::Memory);
            return Ok(false);
        }
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

/// Everything one delivery's Store owns. Created fresh for each delivery.
pub struct StoreState {
    /// Built on the guest's first WASI call; many handlers never make one.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub limits: Limits,
    pub outbox: Outbox,
    pub output: CapturedOutput,
    /// Bytes the guest may still write through the `log` import in this delivery.
    pub log_budget: usize,
    /// Log lines dropped because the budget ran out.
    pub log_dropped: u64,
    /// When the current call must stop; re-armed for every delivery.
    pub deadline: Instant,
    pub host: Arc<crate::host::HostContext>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| sandboxed_wasi(output)),
            table: &mut self.table,
        }
    }
}

/// The WASI context a guest gets: its stdout and stderr captured, no
/// preopened directories, no environment, no arguments, and a socket policy
/// that denies every address.
fn sandboxed_wasi(output: &CapturedOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build()
}

impl StoreState {
    fn new(host: Arc<crate::host::HostContext>) -> StoreState {
        let handler = host.handler.clone();
        let output = CapturedOutput::new(handler.max_output_bytes as usize);
        StoreState {
            wasi: None,
            table: ResourceTable::new(),
            limits: Limits {
                memory: handler.memory as usize,
                hit: None,
            },
            outbox: Outbox::new(handler.clone()),
            output,
            log_budget: handler.max_output_bytes as usize,
            log_dropped: 0,
            deadline: Instant::now() + handler.timeout,
            host,
        }
    }
}

/// Creates the Store for one delivery, with its memory cap, deadline and fuel.
pub fn new_store(engine: &Engine, host: Arc<crate::host::HostContext>) -> Store<StoreState> {
    let timeout = host.handler.timeout;
    let mut store = Store::new(engine, StoreState::new(host));
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(move |mut ctx| {
        if Instant::now() >= ctx.data().deadline {
            ctx.data_mut().limits.hit = Some(LimitHit::Timeout);
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
/// fresh deadline and fuel budget.
pub fn arm(store: &mut Store<StoreState>) {
    let state = store.data_mut();
    state.limits.hit = None;
    state.outbox.take();
    state.output.take();
    state.log_budget = state.host.handler.max_output_bytes as usize;
    state.log_dropped = 0;
    start_clock(store);
}

/// Starts the delivery's deadline and fuel budget.
fn start_clock(store: &mut Store<StoreState>) {
    let (timeout, fuel) = {
        let handler = &store.data().host.handler;
        (handler.timeout, handler.fuel)
    };
    if let Some(fuel) = fuel {
        // Cannot fail: fuel is only configured when the engine meters it.
        let _ = store.set_fuel(fuel);
    }
    store.set_epoch_deadline(1);
    store.data_mut().deadline = Instant::now() + timeout;
}

/// Which guest stream a write came from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: u64,
}

/// Guest stdout and stderr, kept up to a byte cap shared by both streams;
/// writes past the cap are accepted and counted but not kept, so a guest that
/// floods its output neither grows host memory nor fails.
#[derive(Clone)]
pub struct CapturedOutput {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl CapturedOutput {
    fn new(cap: usize) -> CapturedOutput {
        CapturedOutput {
            cap,
            inner: Arc::default(),
        }
    }

    fn stream(&self, which: Stream) -> CapturedStream {
        CapturedStream {
            output: self.clone(),
            which,
        }
    }

    fn write(&self, which: Stream, bytes: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let used = c.stdout.len() + c.stderr.len();
        let room = self.cap.saturating_sub(used);
        let keep = bytes.len().min(room);
        let buf = match which {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        buf.extend_from_slice(&bytes[..keep]);
        c.dropped += (bytes.len() - keep) as u64;
    }

    /// Takes what was captured: stdout, stderr and the number of bytes dropped.
    pub fn take(&self) -> (Vec<u8>, Vec<u8>, u64) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let c = std::mem::take(&mut *c);
        (c.stdout, c.stderr, c.dropped)
    }
}

struct CapturedStream {
    output: CapturedOutput,
    which: Stream,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CapturedStream {
            output: self.output.clone(),
            which: self.which,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CapturedStream {
            output: self.output.clone(),
            which: self.which,
        })
    }
}

/// Largest single write the guest is told it may make.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.output.write(self.which, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.write(self.which, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
