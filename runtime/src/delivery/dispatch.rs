//! One delivery: run the guest (or not, past the final attempt), map what it
//! produced through the settlement table, and carry the result out with the
//! broker. Nothing here acks before the guest has returned `ok` for this
//! delivery and its outbox is confirmed, and nothing terms before the
//! dead-letter copy is confirmed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::config::HandlerConfig;
use crate::delivery::lease::Lease;
use crate::effects::classify::{FlushError, StreamCache};
use crate::effects::{Jet, dead_letter, outbox};
use crate::headers;
use crate::sandbox::bindings::{Delivery, Header, Message};
use crate::sandbox::guest::{Guest, Ran};
use crate::settle::{Action, Backoff, DeadLetterKind, Outcome, Settled, settle};
use crate::source::Source;
use crate::staged::Outgoing;
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
    jet: Jet,
    /// Deliveries waiting for a stream that is unavailable.
    pub stalls: Stalls,
    /// Which stream stores each output subject.
    streams: StreamCache,
    throttle: Throttle,
    pub telemetry: HandlerTelemetry,
}

/// One version of a handler: its component and per-delivery settings.
pub(crate) struct Version {
    pub guest: Guest,
    backoff: Backoff,
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

/// Deliveries of one handler held because a stream they need (for outputs
/// or the dead-letter copy) is unavailable. While any is, the handler pulls
/// nothing new: the next messages would only meet the same outage.
#[derive(Default)]
pub(crate) struct Stalls {
    count: AtomicUsize,
    cleared: Notify,
}

impl Stalls {
    /// Waits until no delivery is held for an unavailable stream.
    pub(crate) async fn cleared(&self) {
        loop {
            let notified = self.cleared.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn enter(&self) -> StallGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        StallGuard(self)
    }
}

struct StallGuard<'a>(&'a Stalls);

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.cleared.notify_waiters();
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
        let attempt = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
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
        async move {
            let ran = if attempt > handler.max_attempts {
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

    /// Carries out the settlement. Every path that ends a message (ack, term)
    /// first has its outputs or its dead-letter copy confirmed; a host-side
    /// failure on the way keeps the message (under its lease) and tries the
    /// step again, as `settle` says.
    async fn apply(
        &self,
        version: &Version,
        lease: Lease,
        source: &Source,
        attempt: u32,
        action: Action,
        outputs: &[Outgoing],
    ) -> (Settled, Option<String>) {
        let handler = version.guest.handler();
        let settle = |outcome| settle(outcome, attempt, handler.max_attempts, &version.backoff);
        let mut action = action;
        // The step to try again after `Action::RetryStep`, and how often it failed.
        let mut again: Option<Action> = None;
        let mut tries = 0u32;
        let mut held = Held::default();
        let mut confirmed = vec![false; outputs.len()];
        loop {
            let step = match action {
                Action::RetryStep { delay } => {
                    tokio::time::sleep(delay).await;
                    again.take().expect("a retry follows a failed step")
                }
                other => other,
            };
            let failed = match &step {
                Action::Nak { delay } => return nak(lease, *delay).await,
                Action::PublishThenAck => {
                    let first_try = attempt == 1 && tries == 0;
                    match self
                        .flush(handler, source, outputs, &mut confirmed, first_try)
                        .await
                    {
                        Ok(()) => {
                            failpoint::after_outbox();
                            return ack(lease, handler.double_ack, outputs.len()).await;
                        }
                        Err(FlushError::Refused(detail)) => {
                            warn!(detail = %escape_controls(&detail), "the server refused an output");
                            action = settle(Outcome::OutputRefused { detail });
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Action::DeadLetter { kind, reason } => {
                    let Some(subject) = &handler.dead_letter else {
                        return drop_message(lease, *kind, reason.clone()).await;
                    };
                    let copy = dead_letter::Reason {
                        kind: *kind,
                        text: reason,
                        handler: &handler.name,
                        deliveries: u64::from(attempt),
                    };
                    let max_payload = version.guest.max_payload();
                    match self
                        .dead_letter(subject, &lease, source, &copy, max_payload)
                        .await
                    {
                        Ok(()) => return term(lease, *kind, reason.clone()).await,
                        Err(e) => e,
                    }
                }
                Action::RetryStep { .. } => unreachable!("settle never retries a retry"),
            };
            self.log_host_failure(handler, &step, &failed);
            held.enter(self, &failed);
            again = Some(step);
            let outage = matches!(failed, FlushError::Unavailable(_));
            action = settle(Outcome::HostFailed { tries, outage });
            tries += 1;
        }
    }

    /// Publishes the outputs not confirmed yet; a subject only a wildcard
    /// allowed and no stream stores is the output's failure, a subject the
    /// config names is the host's.
    async fn flush(
        &self,
        handler: &HandlerConfig,
        source: &Source,
        outputs: &[Outgoing],
        confirmed: &mut [bool],
        first_try: bool,
    ) -> Result<(), FlushError> {
        let configured = |s: &str| handler.publish.literals().any(|l| l == s);
        outbox::flush(
            &self.jet,
            &self.streams,
            source,
            outputs,
            confirmed,
            first_try,
            configured,
        )
        .await
    }

    /// Stores the message's dead-letter copy.
    async fn dead_letter(
        &self,
        subject: &str,
        lease: &Lease,
        source: &Source,
        reason: &dead_letter::Reason<'_>,
        max_payload: Option<usize>,
    ) -> Result<(), FlushError> {
        let msg = lease.message();
        let room = max_payload.map(|max| max.saturating_sub(msg.payload.len()));
        let copy = dead_letter::copy_headers(msg.headers.as_ref(), source, reason, room);
        dead_letter::publish(&self.jet, subject, copy, msg.payload.clone()).await
    }

    /// One error line per kind of failure and interval, with how many were not logged.
    fn log_host_failure(&self, handler: &HandlerConfig, step: &Action, e: &FlushError) {
        let (kind, what) = match step {
            Action::DeadLetter { .. } => ("dead-letter", "dead-letter copy not stored"),
            _ => ("outbox", "outputs not confirmed"),
        };
        if let Some(suppressed) = self.throttle.admit(kind) {
            error!(
                handler = %handler.name,
                error = %e,
                suppressed,
                "{what}; holding the message and trying again"
            );
        }
    }
}

/// What a delivery held for a host-side failure counts in, while it lasts.
#[derive(Default)]
struct Held<'a> {
    /// In the handler's held gauge.
    _counted: Option<crate::telemetry::Hold<'a>>,
    /// In the handler's stalls while the latest failure is an outage: it
    /// pauses the handler's pulls. A copy the server refuses (too large for
    /// the stream, say) holds only its message, even after an outage.
    _stalled: Option<StallGuard<'a>>,
}

impl<'a> Held<'a> {
    fn enter(&mut self, dispatcher: &'a Dispatcher, e: &FlushError) {
        self._counted
            .get_or_insert_with(|| dispatcher.telemetry.status.hold());
        if matches!(e, FlushError::Unavailable(_)) {
            self._stalled
                .get_or_insert_with(|| dispatcher.stalls.enter());
        } else {
            self._stalled = None;
        }
    }
}

async fn ack(lease: Lease, double: bool, outputs: usize) -> (Settled, Option<String>) {
    match lease.ack(double).await {
        Ok(()) => {
            debug!(outputs, "acked");
            (Settled::Acked, None)
        }
        Err(e) => {
            // The outputs are stored with deterministic ids, so the
            // redelivery this causes will not duplicate them.
            warn!(error = %e, "ack failed; the message will be redelivered");
            (Settled::Abandoned, None)
        }
    }
}

async fn nak(lease: Lease, delay: Duration) -> (Settled, Option<String>) {
    match lease.nak(delay).await {
        Ok(()) => (Settled::Naked, None),
        Err(e) => {
            warn!(error = %e, "nak failed; ack_wait will redeliver the message");
            (Settled::Abandoned, None)
        }
    }
}

async fn term(lease: Lease, kind: DeadLetterKind, reason: String) -> (Settled, Option<String>) {
    match lease.term().await {
        Ok(()) => (Settled::DeadLettered(kind), Some(reason)),
        Err(e) => {
            // The copy's id is derived from the source sequence, so
            // dead-lettering it again on redelivery is a no-op.
            warn!(error = %e, "term failed after the dead-letter copy was stored");
            (Settled::Abandoned, None)
        }
    }
}

async fn drop_message(
    lease: Lease,
    kind: DeadLetterKind,
    reason: String,
) -> (Settled, Option<String>) {
    error!(
        kind = %kind,
        reason = %escape_controls(&reason),
        "dropping undeliverable message: no dead_letter subject and drop_after_max_attempts = true"
    );
    match lease.term().await {
        Ok(()) => (Settled::Dropped, Some(reason)),
        Err(e) => {
            warn!(error = %e, "term failed; ack_wait will redeliver the message");
            (Settled::Abandoned, None)
        }
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

/// Crash-test hooks, compiled in only with the `failpoints` feature.
mod failpoint {
    /// With `WHARF_FAILPOINT_EXIT_AFTER_OUTBOX=N` set, the process exits on
    /// its N-th confirmed outbox, after the outputs are stored and before
    /// the input is acked: the worst moment for duplicates.
    #[cfg(feature = "failpoints")]
    pub(super) fn after_outbox() {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static EVERY: OnceLock<Option<u64>> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let every = EVERY.get_or_init(|| {
            std::env::var("WHARF_FAILPOINT_EXIT_AFTER_OUTBOX")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
        });
        if let Some(n) = every
            && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            eprintln!("failpoint: exiting after the outbox was confirmed, before the ack");
            std::process::exit(86);
        }
    }

    #[cfg(not(feature = "failpoints"))]
    pub(super) fn after_outbox() {}
}
