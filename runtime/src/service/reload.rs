//! Hot reload: on SIGHUP (and, with `--watch`, when a component or the
//! config file changes), the config file is read again and every handler
//! whose component or per-delivery settings changed gets a new version:
//! compiled, checked against the world and started once, then swapped in
//! for new deliveries while running ones finish on the old version.
//!
//! A reload is all or nothing. A component that does not load, or a change
//! that needs a different consumer, engine or connection, refuses the whole
//! reload with one log line, and the running versions keep serving.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, HandlerConfig};
use crate::delivery::binding::{self, BindError};
use crate::delivery::dispatcher::Dispatcher;
use crate::sandbox::engine::Kind;
use crate::sandbox::loader::Loader;

/// How often `--watch` looks at the files.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What a reload compares against, and what it swaps.
pub(crate) struct Reloader {
    path: PathBuf,
    loader: Arc<Loader>,
    js: jetstream::Context,
    dispatchers: Vec<Arc<Dispatcher>>,
    running: Mutex<Running>,
    pub applied: Counter,
    pub refused: Counter,
}

/// The config file as last applied, and each handler's engine kind and
/// component digest (in the config's handler order).
struct Running {
    file: Config,
    loaded: Vec<(Kind, u64)>,
}

impl Reloader {
    pub(crate) fn new(
        file: Config,
        loader: Arc<Loader>,
        js: jetstream::Context,
        dispatchers: Vec<Arc<Dispatcher>>,
        loaded: Vec<(Kind, u64)>,
        counters: (Counter, Counter),
    ) -> Reloader {
        Reloader {
            path: file.path.clone(),
            loader,
            js,
            dispatchers,
            running: Mutex::new(Running { file, loaded }),
            applied: counters.0,
            refused: counters.1,
        }
    }

    /// Reads the config again and applies what changed, or nothing.
    pub(crate) async fn reload(&self) {
        match self.try_reload().await {
            Ok(changes) if changes.is_empty() => info!("reload: nothing changed"),
            Ok(changes) => {
                self.applied.inc();
                info!(changes = %changes.join(", "), "reloaded");
            }
            Err(why) => {
                self.refused.inc();
                error!(
                    error = format!("{why:#}"),
                    "reload refused; the running handlers keep serving"
                );
            }
        }
    }

    async fn try_reload(&self) -> anyhow::Result<Vec<String>> {
        let new = Config::load(&self.path)?;
        let (old, loaded) = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            (running.file.clone(), running.loaded.clone())
        };
        let mut restart = Vec::new();
        if new.nats != old.nats {
            restart.push("[nats]".to_string());
        }
        if new.runtime != old.runtime {
            restart.push("[runtime]".to_string());
        }
        let names = |c: &Config| {
            c.handlers
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
        };
        if names(&new) != names(&old) {
            restart.push("the handlers (added, removed or reordered)".to_string());
        }
        for (n, o) in new.handlers.iter().zip(&old.handlers) {
            let fields = n.binding_changes(o);
            if !fields.is_empty() {
                restart.push(format!("handler \"{}\": {}", n.name, fields.join(", ")));
            }
        }
        if !restart.is_empty() {
            anyhow::bail!(
                "{} changed in {}; that needs a restart",
                restart.join("; "),
                self.path.display()
            );
        }
        // Load every changed handler before swapping any.
        let mut next = Vec::new();
        for (i, (n, o)) in new.handlers.iter().zip(&old.handlers).enumerate() {
            let running = self.dispatchers[i].current();
            let loader = self.loader.clone();
            let h = n.clone();
            let settings_changed = n != o;
            let was = loaded[i];
            let version = tokio::task::spawn_blocking(move || {
                loader.reload(&h, &running.guest, was, settings_changed)
            })
            .await??;
            let Some(version) = version else { continue };
            version.guest.probe().await?;
            if n.dead_letter != o.dead_letter || n.publish != o.publish {
                binding::subjects(&self.js, n)
                    .await
                    .map_err(BindError::into_error)?;
            }
            let what = if version.digest != was.1 {
                "component"
            } else {
                "settings"
            };
            next.push((i, version, format!("handler \"{}\" ({what})", n.name)));
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::new();
        for (i, version, what) in next {
            running.loaded[i] = (version.kind, version.digest);
            self.dispatchers[i].swap(version.guest);
            changes.push(what);
        }
        running.file = new;
        Ok(changes)
    }

    /// Reloads on every SIGHUP and, with `watch`, whenever the config file
    /// or a component file changes, until `stop` fires.
    pub(crate) async fn run(self: Arc<Self>, watch: bool, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; reloads are off");
                return;
            }
        };
        let mut seen = self.stamps();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading");
                    self.reload().await;
                    seen = self.stamps();
                }
                _ = tick.tick(), if watch => {
                    let now = self.stamps();
                    if now != seen {
                        info!("a watched file changed: reloading");
                        seen = now;
                        self.reload().await;
                    }
                }
            }
        }
    }

    /// When the config file and each component were last modified, and their sizes.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        std::iter::once(&self.path)
            .chain(
                running
                    .file
                    .handlers
                    .iter()
                    .map(|h: &HandlerConfig| &h.component),
            )
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}
