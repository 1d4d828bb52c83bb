//! One delivery: run the guest (or not, past the final attempt), map what it
//! produced through the settlement table, and carry the result out with the
//! broker. Nothing here acks before the guest has returned `ok` for this
//! delivery and its outbox is confirmed, and nothing terms before the
//! dead-letter copy is confirmed.

use async_nats::jetstream;
use tracing::{Instrument, debug, info_span, warn};

use super::apply::{Carried, Run};
use super::commit::Effects;
use super::dispatcher::Dispatcher;
use crate::config::HandlerConfig;
use crate::delivery::lease::Lease;
use crate::effects::record::Found;
use crate::headers;
use crate::sandbox::bindings::{Delivery, Header, Message};
use crate::settle::{Outcome, Settled, settle};
use crate::source::Source;
use crate::telemetry::Record;
use crate::text::escape_controls;
use crate::trace::SpanContext;

/// A pulled message as a delivery sees it: where it came from, its
/// attempt, the guest's view of it, and the span its settlement runs in.
pub(super) struct Incoming {
    pub source: Source,
    pub attempt: u32,
    pub message: Message,
    /// The input's span, when it carried a valid `traceparent`.
    pub parent: Option<SpanContext>,
    pub span: tracing::Span,
}

/// Reads a pulled message; `None` (logged) for one without JetStream
/// metadata, which cannot be settled.
/// `retries_in_place`: the retries an ordered handler ran within this
/// delivery, which JetStream's count does not see.
pub(super) fn incoming(
    handler: &HandlerConfig,
    msg: &jetstream::Message,
    retries_in_place: u32,
) -> Option<Incoming> {
    let info = match msg.info() {
        Ok(info) => info,
        Err(e) => {
            warn!(handler = %handler.name, error = %e, "message without JetStream metadata; ignoring it");
            return None;
        }
    };
    let attempt = u32::try_from(info.delivered.max(1))
        .unwrap_or(u32::MAX)
        .saturating_add(retries_in_place);
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
        tracestate: header(headers::TRACESTATE).filter(|s| s.len() <= crate::trace::MAX_TRACESTATE),
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
            published_at_nanos: u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
        },
    };
    Some(Incoming {
        source,
        attempt,
        message,
        parent,
        span,
    })
}

impl Dispatcher {
    /// Runs one delivery to its settlement.
    pub(crate) async fn deliver(&self, lease: Lease) -> Settled {
        let version = self.current();
        let handler = version.guest.handler().clone();
        let Some(Incoming {
            source,
            attempt,
            message,
            parent,
            span,
        }) = incoming(&handler, lease.message(), lease.retries_in_place())
        else {
            return Settled::Abandoned;
        };
        let mut stopped = lease.stopped_key().map(str::to_owned);
        async move {
            let pulled = lease.pulled();
            let mut lease = lease;
            // A redelivery of a handler that writes state may find the
            // effects an earlier delivery recorded: it applies those and
            // does not run the guest again (or, when they were applied and
            // the message acked, applies nothing).
            let mut recorded = self.recorded_if_any(&handler, attempt, &source).await;
            let mut after = 0;
            let mut reruns = 0;
            let mut times = None;
            let (settled, reason, outputs) = loop {
                let (outcome, mut effects) = match std::mem::replace(&mut recorded, Found::Nothing) {
                    Found::Record(stored) => {
                        debug!(record = %stored.record.id, "applying the effects an earlier delivery recorded");
                        (Outcome::Ok, Effects::recorded(stored.record, stored.sequence))
                    }
                    Found::Done => {
                        debug!("an earlier delivery applied this message's effects and was acked");
                        (Outcome::Ok, Effects::Done)
                    }
                    // Parked behind its stopped key (ordered mode): not run.
                    Found::Nothing if stopped.is_some() => (
                        Outcome::KeyStopped {
                            reason: stopped.take().unwrap_or_default(),
                        },
                        Effects::Outputs(Vec::new()),
                    ),
                    Found::Nothing if attempt > handler.max_attempts => {
                        (Outcome::PastFinalAttempt, Effects::Outputs(Vec::new()))
                    }
                    Found::Nothing => {
                        let ran = version.guest.run(&message).await;
                        log_outcome(&ran.outcome);
                        times = ran.times;
                        (ran.outcome, Effects::of(ran.outputs, ran.writes, after))
                    }
                };
                let action = settle(outcome, attempt, handler.max_attempts, &version.backoff);
                match self
                    .apply(
                        &version,
                        lease,
                        &source,
                        Run { attempt, reruns },
                        action,
                        &mut effects,
                    )
                    .await
                {
                    Carried::Settled(settled, reason) => {
                        break (settled, reason, effects.outputs().len());
                    }
                    Carried::Rerun {
                        lease: kept,
                        delay,
                        after: conflicted,
                    } => {
                        lease = *kept;
                        after = conflicted;
                        reruns += 1;
                        tokio::time::sleep(delay).await;
                    }
                }
            };
            self.telemetry.settled(&Record {
                settled,
                pulled,
                ran: times,
                outputs,
                reruns,
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

/// Logs what the guest returned, when it did not succeed.
pub(super) fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Failed { failure, detail } => {
            warn!(?failure, detail = %escape_controls(detail), "guest failed")
        }
        Outcome::Retry { delay } => debug!(?delay, "guest asked to retry"),
        Outcome::Errored { reason } => {
            debug!(reason = %escape_controls(reason), "guest returned an error")
        }
        Outcome::Reject { reason } => {
            debug!(reason = %escape_controls(reason), "guest rejected the message")
        }
        _ => {}
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
