//! The one seam for telemetry. The hot path produces values — a `Record` of
//! how a delivery settled with its timings, and counts in each handler's
//! `HandlerStatus` — and this module turns them into Prometheus metrics, the
//! dead-letter log line, and (with the `otlp` feature) an exported span.
//! Gauges are read from the handlers' state when `/metrics` is scraped, so
//! nothing on the hot path updates them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::info;

pub(crate) mod http;

use crate::config::HandlerConfig;
use crate::connect::LinkState;
use crate::settle::DeadLetterKind;
use crate::settle::Settled;
use crate::source::Source;

/// The WIT world every handler implements.
pub const WIT_WORLD: &str = "wharf:handler/handler@0.1.0";
/// The wasmtime release the host embeds (checked against Cargo.lock in a test).
pub const WASMTIME_VERSION: &str = "48.0.8";

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

/// What one handler is doing now, kept by its loop, line and dispatcher
/// and read when metrics are scraped or health is asked for.
#[derive(Debug)]
pub(crate) struct HandlerStatus {
    labels: Labels,
    pub name: String,
    /// Deliveries running in a guest or settling.
    pub running: AtomicI64,
    /// Messages pulled and waiting in line.
    pub waiting: AtomicI64,
    /// Deliveries held because their outputs or dead-letter copy could not be stored yet.
    pub held: AtomicI64,
    /// False once the handler's loop has ended.
    pub alive: AtomicBool,
    /// Whether the handler's consumer is bound now.
    pub bound: AtomicBool,
    /// From the consumer's info, polled.
    pub pending: AtomicU64,
    pub ack_pending: AtomicU64,
    pub redelivered: AtomicU64,
}

impl HandlerStatus {
    fn new(h: &HandlerConfig) -> HandlerStatus {
        HandlerStatus {
            labels: handler_labels(h),
            name: h.name.clone(),
            running: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            held: AtomicI64::new(0),
            alive: AtomicBool::new(true),
            bound: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            ack_pending: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
        }
    }

    /// Counts a delivery held for a host-side failure while the guard lives.
    pub(crate) fn hold(&self) -> Hold<'_> {
        self.held.fetch_add(1, Ordering::Relaxed);
        Hold(self)
    }
}

/// A delivery counted as held.
pub(crate) struct Hold<'a>(&'a HandlerStatus);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long the guest took, for a delivery that ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunTimes {
    /// Creating the instance (zero for a reused one).
    pub instantiate: Duration,
    /// Instantiation and the call together.
    pub total: Duration,
}

/// How one delivery settled, with what telemetry needs of it.
pub(crate) struct Record<'a> {
    pub settled: Settled,
    /// When the message was pulled.
    pub pulled: Instant,
    pub ran: Option<RunTimes>,
    /// Outputs stored (for an acked delivery).
    pub outputs: usize,
    /// The reason, for a dead-lettered or dropped delivery.
    pub reason: Option<&'a str>,
    pub source: &'a Source,
    /// The input's span, when it carried a valid `traceparent`.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub parent: Option<&'a crate::trace::SpanContext>,
}

/// One handler's instruments, label sets resolved once.
pub(crate) struct HandlerTelemetry {
    #[cfg(feature = "otlp")]
    exporter: Option<Arc<otlp::Exporter>>,
    pub status: Arc<HandlerStatus>,
    acked: Counter,
    retried: Counter,
    dropped: Counter,
    abandoned: Counter,
    dead_lettered: Counter,
    dead_letters: Family<Labels, Counter>,
    outputs: Counter,
    handler_duration: Histogram,
    settle_duration: Histogram,
    instantiation: Histogram,
    labels: Labels,
}

impl HandlerTelemetry {
    /// Records one settled delivery.
    pub(crate) fn settled(&self, r: &Record<'_>) {
        match r.settled {
            Settled::Acked => {
                self.acked.inc();
                self.outputs.inc_by(r.outputs as u64);
            }
            Settled::Naked => {
                self.retried.inc();
            }
            Settled::Dropped => {
                self.dropped.inc();
            }
            Settled::Abandoned => {
                self.abandoned.inc();
            }
            Settled::DeadLettered(kind) => {
                self.dead_lettered.inc();
                self.dead_letters
                    .get_or_create(&with(&self.labels, "kind", kind.as_str()))
                    .inc();
                self.log_dead_letter(kind, r);
            }
        }
        if let Some(ran) = r.ran {
            self.handler_duration.observe(ran.total.as_secs_f64());
            if !ran.instantiate.is_zero() {
                self.instantiation.observe(ran.instantiate.as_secs_f64());
            }
        }
        self.settle_duration
            .observe(r.pulled.elapsed().as_secs_f64());
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.exporter {
            exporter.export(&self.status.name, r);
        }
    }

    fn log_dead_letter(&self, kind: DeadLetterKind, r: &Record<'_>) {
        info!(
            handler = %self.status.name,
            stream = %r.source.stream,
            sequence = r.source.stream_sequence,
            kind = %kind,
            reason = %crate::settle::clean_reason(r.reason.unwrap_or_default()),
            "dead-lettered"
        );
    }
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
        let histogram =
            || Family::<Labels, Histogram>::new_with_constructor(seconds as fn() -> Histogram);
        let handler_duration = histogram();
        registry.register_with_unit(
            "wharf_handler_duration",
            "Time in the guest per delivery (instantiation and call)",
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
                handler_duration: handler_duration.get_or_create(&labels).clone(),
                settle_duration: settle_duration.get_or_create(&labels).clone(),
                instantiation: instantiation.get_or_create(&labels).clone(),
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

/// The gauges, read from the handlers' state at each scrape.
#[derive(Debug)]
struct State {
    handlers: Vec<Arc<HandlerStatus>>,
    link: Arc<std::sync::OnceLock<Arc<LinkState>>>,
}

impl State {
    fn gauge(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&HandlerStatus) -> i64,
    ) -> fmt::Result {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
        for h in &self.handlers {
            ConstGauge::new(value(h)).encode(family.encode_family(&h.labels)?)?;
        }
        Ok(())
    }
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let load = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0);
        let load_u = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.gauge(
            &mut encoder,
            "wharf_deliveries_in_flight",
            "Deliveries running in a guest or settling",
            |h| load(&h.running),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_deliveries_waiting",
            "Messages pulled, waiting in line for a free slot",
            |h| load(&h.waiting),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_deliveries_held",
            "Deliveries held until their outputs or dead-letter copy can be stored",
            |h| load(&h.held),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_consumer_pending_messages",
            "Messages in the stream not yet delivered to the consumer",
            |h| load_u(&h.pending),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_consumer_ack_pending_messages",
            "Messages delivered and not yet settled",
            |h| load_u(&h.ack_pending),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_consumer_redelivered_messages",
            "Messages delivered more than once and not yet settled",
            |h| load_u(&h.redelivered),
        )?;
        self.gauge(
            &mut encoder,
            "wharf_handler_up",
            "Whether the handler's loop is running",
            |h| i64::from(h.alive.load(Ordering::Relaxed)),
        )?;
        let link = self.link.get();
        let connected = ConstGauge::new(link.is_some_and(|l| l.connected()) as i64);
        connected.encode(encoder.encode_descriptor(
            "wharf_nats_connected",
            "Whether the NATS connection is up",
            None,
            connected.metric_type(),
        )?)?;
        let reconnects = ConstCounter::new(link.map_or(0, |l| l.reconnects()));
        reconnects.encode(encoder.encode_descriptor(
            "wharf_nats_reconnects",
            "Times the NATS connection was re-established",
            None,
            reconnects.metric_type(),
        )?)?;
        let build = ConstGauge::new(1i64);
        let labels: Labels = vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("wit_world", WIT_WORLD.to_string()),
            ("wasmtime", WASMTIME_VERSION.to_string()),
        ];
        build.encode(
            encoder
                .encode_descriptor(
                    "wharf_build_info",
                    "Wharf's version, WIT world and wasmtime",
                    None,
                    build.metric_type(),
                )?
                .encode_family(&labels)?,
        )?;
        Ok(())
    }
}

/// Exporting one span per delivery over OTLP, with the ids the delivery's
/// trace context already gave it (so logs, outputs and the exported span agree).
#[cfg(feature = "otlp")]
mod otlp {
    use std::time::SystemTime;

    use opentelemetry::trace::{
        Span as _, SpanBuilder, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceId, TraceState, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

    use super::Record;
    use crate::settle::Settled;

    pub(crate) struct Exporter {
        provider: SdkTracerProvider,
        tracer: SdkTracer,
    }

    impl Exporter {
        /// An exporter configured by the standard `OTEL_EXPORTER_OTLP_*`
        /// variables, when an endpoint is set; `None` otherwise.
        pub(crate) fn from_env() -> Option<Exporter> {
            let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
            if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                return None;
            }
            let exporter = match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up the OTLP exporter; spans are not exported");
                    return None;
                }
            };
            let mut resource = opentelemetry_sdk::Resource::builder();
            if !set("OTEL_SERVICE_NAME") {
                resource = resource.with_service_name("wharf");
            }
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.build())
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("wharf");
            tracing::info!("exporting a span per delivery over OTLP");
            Some(Exporter { provider, tracer })
        }

        pub(crate) fn export(&self, handler: &str, r: &Record<'_>) {
            let s = r.source;
            let end = SystemTime::now();
            let start = end - r.pulled.elapsed();
            let parent = match r.parent {
                Some(p) => {
                    Context::new().with_remote_span_context(opentelemetry::trace::SpanContext::new(
                        TraceId::from_bytes(p.trace_id),
                        SpanId::from_bytes(p.span_id),
                        TraceFlags::new(p.flags),
                        true,
                        TraceState::default(),
                    ))
                }
                None => Context::new(),
            };
            let settlement = match r.settled {
                Settled::Acked => "acked".to_string(),
                Settled::Naked => "retried".to_string(),
                Settled::Dropped => "dropped".to_string(),
                Settled::Abandoned => "abandoned".to_string(),
                Settled::DeadLettered(kind) => format!("dead_lettered:{kind}"),
            };
            let builder = SpanBuilder::from_name(format!("process {}", s.subject))
                .with_trace_id(TraceId::from_bytes(s.trace.trace_id))
                .with_span_id(SpanId::from_bytes(s.trace.span_id))
                .with_kind(SpanKind::Consumer)
                .with_start_time(start)
                .with_attributes([
                    KeyValue::new("messaging.system", "nats"),
                    KeyValue::new("messaging.operation.type", "process"),
                    KeyValue::new("messaging.destination.name", s.subject.clone()),
                    KeyValue::new("messaging.consumer.group.name", s.consumer.clone()),
                    KeyValue::new("messaging.message.id", s.stream_sequence.to_string()),
                    KeyValue::new("wharf.handler", handler.to_string()),
                    KeyValue::new("wharf.stream", s.stream.clone()),
                    KeyValue::new("wharf.settlement", settlement),
                ]);
            let mut span = self.tracer.build_with_context(builder, &parent);
            if matches!(r.settled, Settled::DeadLettered(_) | Settled::Abandoned) {
                span.set_status(Status::error(r.reason.unwrap_or_default().to_string()));
            }
            span.end_with_timestamp(end);
        }

        pub(crate) fn shutdown(&self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "flushing exported spans failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_wasmtime_version_is_the_locked_one() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let wanted = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"");
        assert!(
            lock.contains(&wanted),
            "Cargo.lock does not pin wasmtime {WASMTIME_VERSION}"
        );
    }
}
