//! What each handler is doing now (`HandlerStatus`, kept by its loop, line
//! and dispatcher) and the gauges read from it when `/metrics` is scraped,
//! with the build's identity.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{Labels, handler_labels};
use crate::config::HandlerConfig;
use crate::connect::LinkState;

/// The WIT package versions the host runs.
pub const WIT_WORLD: &str = "wharf:handler@0.2.0,wharf:handler@0.1.0";
/// The wasmtime release the host was built with, as the build resolved it.
pub const WASMTIME_VERSION: &str = env!("WHARF_WASMTIME_VERSION");

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
    /// From the consumer's info, polled, and read again for each scrape.
    pub pending: AtomicU64,
    pub ack_pending: AtomicU64,
    pub redelivered: AtomicU64,
    /// Asks the handler's consumer watcher to read the counts now.
    pub recount: tokio::sync::Notify,
    /// How many times the counts were read; a scrape waits for it to move.
    pub counted: tokio::sync::watch::Sender<u64>,
}

impl HandlerStatus {
    pub(super) fn new(h: &HandlerConfig) -> HandlerStatus {
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
            recount: tokio::sync::Notify::new(),
            counted: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Asks for the consumer's counts to be read now and waits until they
    /// are, for at most `wait` (the last counts stay when the server is slow).
    pub(crate) async fn recount(&self, wait: std::time::Duration) {
        let mut counted = self.counted.subscribe();
        counted.mark_unchanged();
        self.recount.notify_one();
        let _ = tokio::time::timeout(wait, counted.changed()).await;
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

/// The gauges, read from the handlers' state at each scrape.
#[derive(Debug)]
pub(super) struct State {
    pub handlers: Vec<Arc<HandlerStatus>>,
    pub link: Arc<std::sync::OnceLock<Arc<LinkState>>>,
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
        // The figure KEDA's nats-jetstream scaler scales on, from the
        // latest poll of the consumer's info.
        self.gauge(
            &mut encoder,
            "wharf_consumer_backlog_messages",
            "Messages not yet delivered plus delivered and not yet settled",
            |h| load_u(&h.pending).saturating_add(load_u(&h.ack_pending)),
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
