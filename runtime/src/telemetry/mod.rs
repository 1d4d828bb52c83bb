//! The one seam for telemetry. The hot path produces values — a `Record` of
//! how a delivery settled with its timings, and counts in each handler's
//! `HandlerStatus` — and this module turns them into Prometheus metrics, the
//! dead-letter log line, and (with the `otlp` feature) an exported span.
//! Gauges are read from the handlers' state when `/metrics` is scraped, so
//! nothing on the hot path updates them.
//!
//! Every layer that settles or runs deliveries may import this folder's
//! value types; it imports only the shared vocabulary (config, connect,
//! settle, source, trace), never `sandbox`, `effects`, `delivery` or
//! `service`.

mod handler;
pub(crate) mod http;
#[cfg(feature = "otlp")]
mod otlp;
mod record;
mod status;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub(crate) use handler::HandlerTelemetry;
pub(crate) use record::{Record, RunTimes};
pub(crate) use status::{HandlerStatus, Hold};

use crate::config::HandlerConfig;
use crate::connect::LinkState;
use crate::settle::DeadLetterKind;
use status::State;

type Labels = Vec<(&'static str, String)>;

/// A handler's labels: which handler, on which stream and consumer.
fn handler_labels(h: &HandlerConfig) -> Labels {
    vec![
        ("handler", h.name.clone()),
        ("stream", h.stream.clone()),
        ("consumer", h.consumer.clone()),
    ]
}

fn with(labels: &Labels, key: &'static str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key, value.to_string()));
    l
}

/// The process's telemetry: the registry, every handler's status, the
/// connection's state.
pub(crate) struct Telemetry {
    #[cfg(feature = "otlp")]
    exporter: Option<Arc<otlp::Exporter>>,
    registry: Registry,
    /// Reloads applied and refused.
    pub reloads: (Counter, Counter),
    pub handlers: Vec<Arc<HandlerStatus>>,
    shutting_down: Arc<AtomicBool>,
    link: Arc<std::sync::OnceLock<Arc<LinkState>>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telemetry")
    }
}

/// Buckets from 100 µs to about 100 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Telemetry {
    /// Sets up the registry for these handlers; returns it and each
    /// handler's instruments, in the handlers' order.
    pub(crate) fn new(handlers: &[HandlerConfig]) -> (Telemetry, Vec<HandlerTelemetry>) {
        let mut registry = Registry::default();
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "wharf_deliveries",
            "Deliveries settled, by how",
            deliveries.clone(),
        );
        let dead_letters = Family::<Labels, Counter>::default();
        registry.register(
            "wharf_dead_letters",
            "Dead-letter copies stored, by reason kind",
            dead_letters.clone(),
        );
        let outputs = Family::<Labels, Counter>::default();
        registry.register(
            "wharf_outputs_published",
            "Outputs stored in JetStream for acked deliveries",
            outputs.clone(),
        );
        let reruns = Family::<Labels, Counter>::default();
        registry.register(
            "wharf_conflict_reruns",
            "Guest runs repeated because a key-value write conflicted",
            reruns.clone(),
        );
        let histogram =
            || Family::<Labels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let handler_duration = histogram();
        registry.register_with_unit(
            "wharf_handler_duration",
            "Time in the guest per delivery or batch (instantiation and call)",
            Unit::Seconds,
            handler_duration.clone(),
        );
        let settle_duration = histogram();
        registry.register_with_unit(
            "wharf_settle_duration",
            "Time from pulling a message to settling it",
            Unit::Seconds,
            settle_duration.clone(),
        );
        let instantiation = histogram();
        registry.register_with_unit(
            "wharf_instantiation_duration",
            "Time to create a fresh instance",
            Unit::Seconds,
            instantiation.clone(),
        );
        let batch_messages = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(1.0, 2.0, 11))) as fn() -> Histogram,
        );
        registry.register(
            "wharf_batch_messages",
            "Messages per call of a batch handler",
            batch_messages.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "wharf_reloads",
            "Reloads (SIGHUP or a watched file), applied or refused",
            reloads.clone(),
        );
        let result = |r: &str| {
            reloads
                .get_or_create(&vec![("result", r.to_string())])
                .clone()
        };
        let reload_counters = (result("applied"), result("refused"));
        #[cfg(feature = "otlp")]
        let exporter = otlp::Exporter::from_env().map(Arc::new);
        let mut statuses = Vec::new();
        let mut instruments = Vec::new();
        for h in handlers {
            let labels = handler_labels(h);
            let by = |settlement: &str| {
                deliveries
                    .get_or_create(&with(&labels, "settlement", settlement))
                    .clone()
            };
            // Every kind from the start, at zero, so dashboards show rates
            // rather than gaps.
            for kind in DeadLetterKind::ALL {
                let _ = dead_letters.get_or_create(&with(&labels, "kind", kind.as_str()));
            }
            let status = Arc::new(HandlerStatus::new(h));
            statuses.push(status.clone());
            instruments.push(HandlerTelemetry {
                #[cfg(feature = "otlp")]
                exporter: exporter.clone(),
                status,
                acked: by("acked"),
                retried: by("retried"),
                dropped: by("dropped"),
                abandoned: by("abandoned"),
                dead_lettered: by("dead_lettered"),
                dead_letters: dead_letters.clone(),
                outputs: outputs.get_or_create(&labels).clone(),
                reruns: reruns.get_or_create(&labels).clone(),
                handler_duration: handler_duration.get_or_create(&labels).clone(),
                settle_duration: settle_duration.get_or_create(&labels).clone(),
                instantiation: instantiation.get_or_create(&labels).clone(),
                batch_messages: batch_messages.get_or_create(&labels).clone(),
                labels,
            });
        }
        let link = Arc::new(std::sync::OnceLock::new());
        let shutting_down = Arc::new(AtomicBool::new(false));
        registry.register_collector(Box::new(State {
            handlers: statuses.clone(),
            link: link.clone(),
        }));
        (
            Telemetry {
                #[cfg(feature = "otlp")]
                exporter,
                registry,
                reloads: reload_counters,
                handlers: statuses,
                shutting_down,
                link,
            },
            instruments,
        )
    }

    /// The connection whose state the metrics and readiness report.
    pub(crate) fn watch(&self, link: Arc<LinkState>) {
        let _ = self.link.set(link);
    }

    /// Sends what is still buffered for export (spans, with `otlp`).
    pub(crate) fn flush(&self) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.exporter {
            exporter.shutdown();
        }
    }

    /// Readiness goes false for good: the host is draining.
    pub(crate) fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// `Ok` when the process and every handler loop are alive; otherwise why not.
    pub(crate) fn health(&self) -> Result<(), String> {
        let dead: Vec<&str> = self
            .handlers
            .iter()
            .filter(|h| !h.alive.load(Ordering::Relaxed))
            .map(|h| h.name.as_str())
            .collect();
        if dead.is_empty() {
            Ok(())
        } else {
            Err(format!("handler loop stopped: {}", dead.join(", ")))
        }
    }

    /// What ordered handlers are doing, one line each, for `/readyz`.
    pub(crate) fn detail(&self) -> String {
        let mut out = String::new();
        for h in &self.handlers {
            let Some(order) = &h.order else { continue };
            let now = order.now();
            let served: Vec<String> = now.served.iter().map(u32::to_string).collect();
            let partitions = match now.partitions {
                Some(n) => format!("serving partitions [{}] of {n}", served.join(", ")),
                None if now.served.is_empty() => "on standby".to_string(),
                None => "serving the stream".to_string(),
            };
            out.push_str(&format!(
                "handler {}: ordered, {partitions}; {} keys waiting, longest {:.1}s; {} keys stopped\n",
                h.name,
                now.keys_waiting,
                now.longest_wait.as_secs_f64(),
                now.keys_stopped,
            ));
        }
        out
    }

    /// `Ok` when connected, every consumer is bound and the host is not
    /// shutting down; otherwise why not.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        match self.link.get() {
            None => return Err("starting".into()),
            Some(link) if !link.connected() => return Err("not connected to NATS".into()),
            Some(_) => {}
        }
        let unbound: Vec<&str> = self
            .handlers
            .iter()
            .filter(|h| !h.bound.load(Ordering::Relaxed))
            .map(|h| h.name.as_str())
            .collect();
        if unbound.is_empty() {
            Ok(())
        } else {
            Err(format!("consumer not bound: {}", unbound.join(", ")))
        }
    }
}
