//! One delivery: run the guest (or not, past the final attempt), map what it
//! produced through the settlement table, and carry the result out with the
//! broker. Nothing here acks before the guest has returned `ok` for this
//! delivery and its outbox is confirmed, and nothing terms before the
//! dead-letter copy is confirmed.

use std::sync::{Arc, RwLock};

use async_nats::jetstream;
use tracing::{Instrument, debug, info_span, warn};

use super::stalls::Stalls;
use crate::config::HandlerConfig;
use crate::delivery::lease::Lease;
use crate::effects::Jet;
use crate::effects::classify::StreamCache;
use crate::headers;
use crate::sandbox::bindings::{Delivery, Header, Message};
use crate::sandbox::guest::{Guest, Ran};
use crate::settle::{Backoff, Outcome, Settled, settle};
use crate::source::Source;
use crate::telemetry::{HandlerTelemetry, Record};
use crate::text::escape_controls;
use crate::throttle::Throttle;
use crate::trace::SpanContext;

/// Everything needed to run deliveries for one handler.
pub(crate) struct Dispatcher {
    /// The settings the handler was bound with: its stream, consumer and
    /// pull bounds. A reload never changes these.
    pub handler: Arc<HandlerConfig>,
    /// The component and per-delivery settings new deliveries use; a reload
    /// swaps it, and deliveries already running finish on the one they took.
    current: RwLock<Arc<Version>>,
    pub(super) jet: Jet,
    /// Deliveries waiting for a stream that is unavailable.
    pub stalls: Stalls,
    /// Which stream stores each output subject.
    pub(super) streams: StreamCache,
    pub(super) throttle: Throttle,
    pub telemetry: HandlerTelemetry,
}

/// One version of a handler: its component and per-delivery settings.
pub(crate) struct Version {
    pub guest: Guest,
    pub(super) backoff: Backoff,
}

impl Version {
    fn new(guest: Guest) -> Version {
        let h = guest.handler();
        Version {
            backoff: Backoff::new(h.backoff.clone(), h.backoff_jitter, h.max_retry_delay),
            guest,
        }
    }
}

impl Dispatcher {
    pub(crate) fn new(
        guest: Guest,
        js: jetstream::Context,
        telemetry: HandlerTelemetry,
    ) -> Dispatcher {
        Dispatcher {
            telemetry,
            handler: guest.handler().clone(),
            current: RwLock::new(Arc::new(Version::new(guest))),
            jet: Jet::new(js),
            stalls: Stalls::default(),
            streams: StreamCache::default(),
            throttle: Throttle::default(),
        }
    }

    /// The version new deliveries use.
    pub(crate) fn current(&self) -> Arc<Version> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `guest` (a new component, new per-delivery settings, or both)
    /// the version new deliveries use.
    pub(crate) fn swap(&self, guest: Guest) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(Version::new(guest)),
        );
        old.guest.retire();
    }

    /// Runs one delivery to its settlement.
    pub(crate) async fn deliver(&self, lease: Lease) -> Settled {
        let version = self.current();
        let handler = version.guest.handler().clone();
        let msg = lease.message();
        let info = match msg.info() {
            Ok(info) => info,
            Err(e) => {
                warn!(handler = %handler.name, error = %e, "message without JetStream metadata; ignoring it");
                return Settled::Abandoned;
            }
        };
        // In ordered mode a retry runs again in place, within one delivery.
        let attempt = u32::try_from(info.delivered.max(1))
            .unwrap_or(u32::MAX)
            .saturating_add(lease.retries_in_place());
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let parent = header(headers::TRACEPARENT)
            .as_deref()
            .and_then(SpanContext::parse);
        let trace = SpanContext::child_of(parent.as_ref());
        let source = Source {
            stream: info.stream.to_string(),
            consumer: info.consumer.to_string(),
            subject: msg.subject.as_str().to_owned(),
            stream_sequence: info.stream_sequence,
            trace,
            tracestate: header(headers::TRACESTATE)
                .filter(|s| s.len() <= crate::trace::MAX_TRACESTATE),
        };
        let span = info_span!(
            "delivery",
            otel.kind = "consumer",
            otel.name = %format_args!("process {}", source.subject),
            handler = %handler.name,
            trace_id = %trace.trace_hex(),
            span_id = %trace.span_hex(),
            parent_span_id = parent.map(|p| p.span_hex()).unwrap_or_default(),
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = %source.subject,
            messaging.consumer.group.name = %info.consumer,
            messaging.message.id = info.stream_sequence,
            messaging.message.delivery_count = attempt,
        );
        let message = Message {
            subject: source.subject.clone(),
            payload: msg.payload.to_vec(),
            headers: headers_for_guest(msg.headers.as_ref()),
            delivery: Delivery {
                stream: source.stream.clone(),
                consumer: source.consumer.clone(),
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                attempt,
                max_attempts: handler.max_attempts,
                published_at_nanos: u64::try_from(info.published.unix_timestamp_nanos())
                    .unwrap_or(0),
            },
        };
        let stopped = lease.stopped_key().map(str::to_owned);
        async move {
            let ran = if let Some(reason) = stopped {
                Ran {
                    outcome: Outcome::KeyStopped { reason },
                    outputs: Vec::new(),
                    times: None,
                }
            } else if attempt > handler.max_attempts {
                Ran {
                    outcome: Outcome::PastFinalAttempt,
                    outputs: Vec::new(),
                    times: None,
                }
            } else {
                version.guest.run(&message).await
            };
            match &ran.outcome {
                Outcome::Failed { failure, detail } => {
                    warn!(?failure, detail = %escape_controls(detail), "guest failed")
                }
                Outcome::Retry { delay } => debug!(?delay, "guest asked to retry"),
                Outcome::Reject { reason } => {
                    debug!(reason = %escape_controls(reason), "guest rejected the message")
                }
                _ => {}
            }
            let pulled = lease.pulled();
            let action = settle(ran.outcome, attempt, handler.max_attempts, &version.backoff);
            let (settled, reason) = self
                .apply(&version, lease, &source, attempt, action, &ran.outputs)
                .await;
            self.telemetry.settled(&Record {
                settled,
                pulled,
                ran: ran.times,
                outputs: ran.outputs.len(),
                reason: reason.as_deref(),
                source: &source,
                parent: parent.as_ref(),
            });
            settled
        }
        .instrument(span)
        .await
    }
}

/// Turns the input's headers into the WIT shape, sorted by name so guests see a stable order.
fn headers_for_guest(map: Option<&async_nats::HeaderMap>) -> Vec<Header> {
    let Some(map) = map else { return Vec::new() };
    let mut out: Vec<Header> = map
        .iter()
        .map(|(name, values)| Header {
            name: name.to_string(),
            values: values.iter().map(|v| v.as_str().to_string()).collect(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
