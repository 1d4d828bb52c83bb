//! The host as a service: compile and check every handler, connect and
//! bind, run one pull loop per handler with the reloader beside them, and
//! drain on shutdown.
//!
//! Owns the process's life: start-up (`prepare`, `start`), `run`, reloads
//! and signals. May import every layer below it (delivery, sandbox,
//! effects, telemetry and the shared vocabulary); nothing below imports it.

pub mod bench;
mod check;
mod reload;
mod shutdown;

pub use check::{Checked, check, check_with_server};
pub use shutdown::Signals;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::connect;
use crate::delivery::binding::{self, BindError, Seen};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::{ordered, partition, pull};
use crate::problems::Problems;
use crate::sandbox::engine;
use crate::sandbox::engine::Kind;
use crate::sandbox::loader::{Loaded, Loader};
use crate::telemetry::{self, http};

/// Every handler's component compiled, checked against the world, and
/// instantiated once within its limits.
struct Prepared {
    loader: Arc<Loader>,
    loaded: Vec<Loaded>,
    /// Runs for as long as any Store can: every deadline depends on it.
    _ticker: engine::EpochTicker,
}

/// Compiles and links every handler's component, and starts each once to
/// refuse one that cannot start within its limits; no server needed. This
/// is the first step of `wharf run`.
async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let in_config = || format!("config {}", config.path.display());
    prepare_handlers(config).await.with_context(in_config)
}

async fn prepare_handlers(config: &Config) -> anyhow::Result<Prepared> {
    let handlers = config.handlers.clone();
    let cache = config.runtime.compile_cache.clone();
    // Compiling is CPU-bound and can take seconds for a large component.
    let (loader, loaded) =
        tokio::task::spawn_blocking(move || Loader::start(&handlers, cache.as_deref()))
            .await
            .context("compiling the components")??;
    let ticker = loader.start_ticker();
    for l in &loaded {
        l.guest.probe().await?;
    }
    Ok(Prepared {
        loader: Arc::new(loader),
        loaded,
        _ticker: ticker,
    })
}

/// Runs every handler until `shutdown` resolves, then drains and returns.
///
/// Refuses to start, with one message naming the handler and the problem,
/// when a component is invalid, no seed server can be reached, a stream is
/// missing or a dead-letter subject is not stored by any stream. A server
/// that cannot answer yet (a leader election) is waited for, up to
/// `startup_timeout`; `shutdown` is honoured at every step. Returns an
/// error, after draining the others, when a handler cannot go on.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_serving(config, shutdown, |_| {}).await
}

/// `run`, telling `serving` the address of the metrics listener once it is
/// bound (for `wharf dev`, which may pick a free port).
pub(crate) async fn run_serving(
    config: Config,
    shutdown: impl Future<Output = ()>,
    serving: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let (telemetry, instruments) = telemetry::Telemetry::new(&config.handlers);
    let telemetry = Arc::new(telemetry);
    let listener_stop = CancellationToken::new();
    // The listener comes first: a liveness probe must answer while a large
    // component compiles, and readiness says "starting" meanwhile.
    if let Some(addr) = config.runtime.metrics_addr {
        serving(http::serve(addr, telemetry.clone(), listener_stop.clone()).await?);
    }
    let _listener = listener_stop.clone().drop_guard();
    let started = tokio::select! {
        started = start(&config) => started?,
        _ = &mut shutdown => {
            info!("shutting down before start-up finished");
            return Ok(());
        }
    };
    let Started {
        prepared,
        link,
        js,
        api,
        state,
    } = started;
    telemetry.watch(link.state.clone());
    let stop = CancellationToken::new();
    let mut loops = JoinSet::new();
    let Prepared {
        loader,
        loaded,
        _ticker,
    } = prepared;
    let versions: Vec<(Kind, u64)> = loaded.iter().map(|l| (l.kind, l.digest)).collect();
    let mut dispatchers = Vec::new();
    for (l, instruments) in loaded.into_iter().zip(instruments) {
        let handler = l.guest.handler().clone();
        let world = l.guest.world.name();
        let dispatcher = Arc::new(Dispatcher::new(
            l.guest,
            js.clone(),
            instruments,
            state.for_handler(&handler),
        ));
        dispatchers.push(dispatcher.clone());
        info!(
            handler = %handler.name,
            stream = %handler.stream,
            consumer = %handler.consumer,
            concurrency = handler.concurrency,
            world,
            "handler running"
        );
        let name = handler.name.clone();
        let (api, stop, drain) = (api.clone(), stop.clone(), config.runtime.drain_timeout);
        if handler.order_by.is_some() {
            loops.spawn(async move { (name, ordered::run(dispatcher, api, stop, drain).await) });
        } else {
            loops.spawn(async move { (name, pull::run(dispatcher, api, stop, drain).await) });
        }
    }
    // Reloads compare against the file as written, without the command
    // line's overrides; a config that did not come from a file cannot reload.
    match Config::load(&config.path) {
        Ok(file) => {
            let reloader = Arc::new(reload::Reloader::new(
                file,
                loader.clone(),
                api.clone(),
                dispatchers,
                versions,
                telemetry.reloads.clone(),
            ));
            tokio::spawn(reloader.run(config.runtime.watch, stop.clone()));
        }
        Err(e) => warn!(error = %e, "reloads are off: the config file cannot be read again"),
    }
    let mut failed = Vec::new();
    tokio::select! {
        _ = &mut shutdown => info!("shutting down: no new deliveries; draining"),
        Some(ended) = loops.join_next() => failed.extend(ended_badly(ended)),
    }
    telemetry.shutting_down();
    stop.cancel();
    while let Some(ended) = loops.join_next().await {
        failed.extend(ended_badly(ended));
    }
    if tokio::time::timeout(Duration::from_secs(1), link.client.flush())
        .await
        .is_err()
    {
        warn!(
            connected = link.state.connected(),
            "could not flush the last acks to the server; what they settled will be redelivered"
        );
    }
    // Closing the connection before returning, rather than when the last
    // handle is dropped, means nothing is left to notice a server that
    // stops right after (`wharf dev` stops its own).
    let close = async {
        if link.client.drain().await.is_ok() {
            link.state.closed().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    telemetry.flush();
    if failed.is_empty() {
        info!(reconnects = link.state.reconnects(), "stopped");
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", failed.join("; ")))
    }
}

/// A handler loop that ended with an error or a panic, as one message.
fn ended_badly(
    ended: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<String> {
    let message = match ended {
        Ok((_, Ok(()))) => return None,
        Ok((name, Err(e))) => format!("handler \"{name}\" stopped: {e:#}"),
        Err(e) => format!("a handler loop panicked: {e}"),
    };
    error!(error = %message, "a handler stopped; shutting the others down");
    Some(message)
}

struct Started {
    prepared: Prepared,
    link: connect::Link,
    /// For publishing outputs and dead-letter copies.
    js: jetstream::Context,
    /// For JetStream API requests: binding, pulling, consumer info.
    api: jetstream::Context,
    /// The buckets and the effects stream.
    state: crate::delivery::state::Bound,
}

/// Compiles, connects and binds every handler, waiting out a server that
/// cannot answer yet for up to `startup_timeout`.
async fn start(config: &Config) -> anyhow::Result<Started> {
    let prepared = prepare(config).await?;
    let link = connect::link(&config.nats, "wharf").await?;
    prepared
        .loader
        .max_payload
        .set(link.client.server_info().max_payload);
    // Two contexts: JetStream API requests (binding, consumer info) time out
    // soon, so a host notices an election and asks again; PubAcks for
    // outputs and dead-letter copies get the client's usual time.
    //
    // The client's own limit on unconfirmed publishes would make a publish
    // wait for a free slot, while the flushes holding the slots wait for
    // their remaining publishes to go out: with enough outputs in flight,
    // every flush would wait forever. The host bounds them already
    // (`concurrency` times `max_outbox_messages`), so the client does not.
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(tokio::sync::Semaphore::MAX_PERMITS)
        .build(link.client.clone());
    let mut api = js.clone();
    api.set_timeout(crate::connect::REQUEST_TIMEOUT);
    let deadline = tokio::time::Instant::now() + config.runtime.startup_timeout;
    // Every handler's subjects first, then every consumer: a config that
    // does not match the server is refused with all its problems, before
    // any consumer is created.
    let mut problems = Problems::new();
    for loaded in &prepared.loaded {
        let handler = loaded.guest.handler();
        let checked = answered(config, deadline, &handler.name, || {
            binding::subjects(&api, handler)
        });
        if let Err(e) = checked.await? {
            problems.add(e);
        }
    }
    let in_config = || format!("config {}", config.path.display());
    problems.clone().into_result().with_context(in_config)?;
    for loaded in &prepared.loaded {
        let handler = loaded.guest.handler();
        let bound = answered(config, deadline, &handler.name, || async {
            if handler.order_by.is_some() {
                partition::bind(&api, handler, Seen::First)
                    .await
                    .map(|_| ())
            } else {
                binding::consumer(&api, handler, Seen::First)
                    .await
                    .map(|_| ())
            }
        });
        if let Err(e) = bound.await? {
            problems.add(e);
        }
    }
    problems.into_result().with_context(in_config)?;
    let state = answered(config, deadline, "key-value state", || {
        crate::delivery::state::open(&api, config)
    })
    .await??;
    prepared
        .loader
        .kv_reader
        .set(Arc::new(state.buckets.clone()));
    prepared
        .loader
        .requester
        .set(Arc::new(crate::effects::request::NatsRequester(
            link.client.clone(),
        )));
    Ok(Started {
        prepared,
        link,
        js,
        api,
        state,
    })
}

/// Runs a binding step until the server answers: `Ok(Err(_))` when the config
/// does not match it, `Err(_)` when it did not answer within `startup_timeout`.
async fn answered<T, F: Future<Output = Result<T, BindError>>>(
    config: &Config,
    deadline: tokio::time::Instant,
    what: &str,
    step: impl Fn() -> F,
) -> anyhow::Result<anyhow::Result<T>> {
    let mut delay = Duration::from_millis(100);
    loop {
        match step().await {
            Ok(t) => return Ok(Ok(t)),
            Err(BindError::Config(e)) => return Ok(Err(e)),
            Err(BindError::Unavailable(e)) => {
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(e.context(format!(
                        "the server did not answer within startup_timeout ({})",
                        humantime::format_duration(config.runtime.startup_timeout)
                    )));
                }
                warn!(handler = %what, error = format!("{e:#}"), "waiting for the server");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
