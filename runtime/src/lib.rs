//! Wharf runs WebAssembly message handlers against NATS JetStream.
//!
//! The host binds each configured handler to a JetStream durable pull
//! consumer, runs every delivery in a fresh, sandboxed instance of the
//! handler's component, and settles the message according to what the guest
//! returned: ack on success (after its outputs are stored), redelivery with
//! backoff, or a dead-letter copy before the message is terminated.
//!
//! `main` is thin: it parses arguments and calls [`run`], [`check`] or
//! [`dev::run`]; tests drive the same functions in-process.

pub mod bindings;
pub mod config;
pub mod connect;
pub mod consumer;
pub mod dead_letter;
pub mod dev;
pub mod dispatch;
pub mod dlq;
pub mod engine;
pub mod host;
pub mod outbox;
pub mod server;
pub mod settle;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, HandlerConfig, subject_matches};
use crate::dispatch::Dispatcher;
use crate::engine::{
    EngineSettings, EpochTicker, StoreState, load_component, new_engine, new_linker,
};
use crate::host::HostContext;
use crate::settle::Backoff;

/// Every handler's component compiled and checked against the world.
pub struct Prepared {
    engine: wasmtime::Engine,
    handlers: Vec<(Arc<HandlerConfig>, bindings::HandlerPre<StoreState>)>,
}

/// Compiles and links every handler's component; no server needed. This is
/// all of `wharf check` and the first step of `wharf run`.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let engine = new_engine(&EngineSettings::for_config(config))?;
    let linker = new_linker(&engine)?;
    let mut handlers = Vec::new();
    for h in &config.handlers {
        let pre = load_component(&engine, &linker, &h.name, &h.component)?;
        handlers.push((Arc::new(h.clone()), pre));
    }
    Ok(Prepared { engine, handlers })
}

/// Validates a configuration and its components without a server.
pub fn check(config: &Config) -> anyhow::Result<()> {
    prepare(config).map(|_| ())
}

/// Checks what `check` does, then, against the server, that every handler's
/// stream exists and its dead-letter and publish subjects are stored by a stream.
pub async fn check_with_server(config: &Config) -> anyhow::Result<()> {
    check(config)?;
    let client = connect::connect(&config.nats, "wharf-check").await?;
    let js = jetstream::new(client);
    for handler in &config.handlers {
        consumer::handler_stream(&js, handler).await?;
        verify_subjects(&js, handler).await?;
    }
    Ok(())
}

/// Runs every handler until `shutdown` resolves, then drains and returns.
///
/// Refuses to start, with one message naming the handler and the problem,
/// when a component is invalid, the server cannot be reached, a stream is
/// missing or a dead-letter subject is not stored by any stream.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let prepared = prepare(&config)?;
    let client = connect::connect(&config.nats, "wharf").await?;
    let js = jetstream::new(client.clone());
    for (handler, _) in &prepared.handlers {
        verify_subjects(&js, handler).await?;
        consumer::ensure_consumer(&js, handler).await?;
    }
    let _ticker = EpochTicker::start(&prepared.engine);
    let stop = CancellationToken::new();
    let mut loops = JoinSet::new();
    for (handler, pre) in prepared.handlers {
        let dispatcher = Arc::new(Dispatcher {
            backoff: Backoff::new(handler.backoff.clone(), handler.backoff_jitter),
            host: Arc::new(HostContext {
                handler: handler.clone(),
            }),
            config: handler.clone(),
            engine: prepared.engine.clone(),
            pre,
            js: js.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
        });
        info!(
            handler = %handler.name,
            stream = %handler.stream,
            consumer = %handler.consumer,
            concurrency = handler.concurrency,
            "handler running"
        );
        loops.spawn(consumer::run(
            dispatcher,
            js.clone(),
            stop.clone(),
            config.runtime.drain_timeout,
        ));
    }
    tokio::select! {
        _ = shutdown => info!("shutting down: no new deliveries; draining"),
        Some(ended) = loops.join_next() => {
            // A pull loop only ends on its own by failing.
            error!(?ended, "a handler loop stopped unexpectedly; shutting down");
        }
    }
    stop.cancel();
    while let Some(ended) = loops.join_next().await {
        if let Ok(Err(e)) = ended {
            warn!(error = format!("{e:#}"), "handler loop ended with an error");
        }
    }
    client.flush().await.ok();
    info!("stopped");
    Ok(())
}

/// Checks that dead-letter copies and outputs have a stream to land in, and
/// that dead-letter copies cannot loop back into the handler's own consumer.
async fn verify_subjects(js: &jetstream::Context, handler: &HandlerConfig) -> anyhow::Result<()> {
    if let Some(dl) = &handler.dead_letter {
        let stream = js.stream_by_subject(dl.clone()).await.map_err(|_| {
            anyhow::anyhow!(
                "handler \"{}\": field `dead_letter`: no stream stores subject \"{dl}\"; \
                 create one (e.g. `nats stream add DLQ --subjects '{dl}'`) so dead-letter copies are kept",
                handler.name
            )
        })?;
        let filter_hits = handler
            .filter_subject
            .as_deref()
            .is_none_or(|f| subject_matches(f, dl));
        if stream == handler.stream && filter_hits {
            bail!(
                "handler \"{}\": field `dead_letter`: subject \"{dl}\" is stored in the handler's own \
                 stream \"{}\" and would be delivered back to it; use a subject outside its filter",
                handler.name,
                handler.stream
            );
        }
    }
    for pattern in &handler.publish {
        if pattern.contains(['*', '>']) {
            continue;
        }
        js.stream_by_subject(pattern.clone()).await.map_err(|_| {
            anyhow::anyhow!(
                "handler \"{}\": field `publish`: no stream stores subject \"{pattern}\"; \
                 outputs must land in JetStream, so create a stream for it",
                handler.name
            )
        })?;
    }
    Ok(())
}

/// SIGINT and SIGTERM, listened for from creation on, so that a signal
/// arriving while the previous one is being handled is not missed.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call from inside the Tokio runtime.
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
