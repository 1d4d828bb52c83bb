//! Releasing a delivery's outbox: its messages published in order, each with
//! a deterministic `Nats-Msg-Id` and the source trail, every PubAck awaited.
//! What the guest publishes is collected by `crate::host::publish`.

use async_nats::jetstream::{self, context::PublishErrorKind};
use tracing::{debug, warn};

use crate::headers;
use crate::host::publish::Outgoing;
use crate::trace::SpanContext;

/// Longest `tracestate` carried over to outputs (the W3C limit is 512 bytes).
pub(crate) const MAX_TRACESTATE: usize = 512;

/// Where a delivery came from; outputs and dead-letter copies carry it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub stream: String,
    pub consumer: String,
    pub subject: String,
    pub stream_sequence: u64,
    /// The delivery's span: the parent of every output.
    pub trace: SpanContext,
    /// The input's `tracestate`, carried over.
    pub tracestate: Option<String>,
}

/// Why the outbox could not be released.
#[derive(Debug)]
pub(crate) enum FlushError {
    /// The server will not take an output as it is (too large, no stream
    /// stores its subject, a failed expectation): what the guest produced
    /// cannot be stored, and trying again will not change that.
    Refused(String),
    /// The server could not be reached, or a stream did not answer: the
    /// host's failure, worth trying again.
    Unavailable(anyhow::Error),
}

impl std::fmt::Display for FlushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushError::Refused(why) => f.write_str(why),
            FlushError::Unavailable(e) => write!(f, "{e:#}"),
        }
    }
}

/// Publishes the outbox in order and waits for every PubAck. Only when this
/// returns `Ok` may the input be acked. Publishing the same outbox again
/// (after a failure, or on a redelivery) stores nothing twice: the ids
/// are the same, and JetStream drops repeats within its duplicate window.
///
/// `first_try` says whether this delivery can have stored these outputs
/// before; a PubAck that says "duplicate" when it cannot is logged as a
/// warning (another publisher used the same id), not taken silently.
pub(crate) async fn flush(
    js: &jetstream::Context,
    source: &Source,
    entries: &[Outgoing],
    first_try: bool,
) -> Result<(), FlushError> {
    let mut acks = Vec::with_capacity(entries.len());
    for (index, out) in entries.iter().enumerate() {
        let mut headers = out.headers.clone();
        if !out.has_msg_id {
            let id = headers::output_id(
                &source.stream,
                &source.consumer,
                source.stream_sequence,
                index,
            );
            headers.insert(headers::MSG_ID, id.as_str());
        }
        headers.insert(headers::SOURCE_STREAM, source.stream.as_str());
        headers.insert(
            headers::SOURCE_SEQUENCE,
            source.stream_sequence.to_string().as_str(),
        );
        // The guest's own trace context wins; otherwise the output is a
        // child of the delivery's span.
        if headers.get(headers::TRACEPARENT).is_none() {
            headers.insert(headers::TRACEPARENT, source.trace.traceparent().as_str());
            if let Some(ts) = &source.tracestate {
                headers.insert(headers::TRACESTATE, ts.as_str());
            }
        }
        let ack = js
            .publish_with_headers(out.subject.clone(), headers, out.payload.clone())
            .await
            .map_err(|e| {
                classify(
                    &format!("output {index} to \"{}\"", out.subject),
                    &out.subject,
                    e,
                )
            })?;
        acks.push(ack);
    }
    let mut refused = None;
    for (index, ack) in acks.into_iter().enumerate() {
        let out = &entries[index];
        match ack.await {
            Ok(ack) if ack.duplicate && first_try && !out.has_msg_id => warn!(
                index,
                subject = %out.subject,
                stream = %ack.stream,
                "output was already stored under its id by another publisher; JetStream kept that copy"
            ),
            Ok(ack) if ack.duplicate => {
                debug!(index, subject = %out.subject, "output already stored (deduplicated)")
            }
            Ok(_) => {}
            Err(e) => match classify(
                &format!("output {index} to \"{}\"", out.subject),
                &out.subject,
                e,
            ) {
                // Every PubAck is awaited before deciding, so that a refusal
                // is told apart from an outage in the same flush.
                FlushError::Refused(why) => refused = refused.or(Some(why)),
                FlushError::Unavailable(e) => return Err(FlushError::Unavailable(e)),
            },
        }
    }
    match refused {
        Some(why) => Err(FlushError::Refused(why)),
        None => Ok(()),
    }
}

/// Sorts a failed publish of `what` into refused (the message's fault) and unavailable
/// (the host's). "No responders" is both a subject no stream stores and a
/// stream electing a leader; `resolve` tells them apart later.
pub(crate) fn classify(
    what: &str,
    subject: &str,
    e: jetstream::context::PublishError,
) -> FlushError {
    let what = what.to_string();
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => FlushError::Refused(format!("{what}: {e}")),
        PublishErrorKind::Other => match jetstream_error(&e) {
            Some(api) if (400..500).contains(&api.code()) => {
                FlushError::Refused(format!("{what}: refused by JetStream: {api}"))
            }
            _ => FlushError::Unavailable(anyhow::Error::new(e).context(what)),
        },
        PublishErrorKind::StreamNotFound => {
            FlushError::Unavailable(anyhow::Error::new(NoStream(subject.to_string())).context(what))
        }
        _ => FlushError::Unavailable(anyhow::Error::new(e).context(what)),
    }
}

/// A publish that no stream answered.
#[derive(Debug, thiserror::Error)]
#[error("no stream answered for subject \"{0}\"")]
pub(crate) struct NoStream(pub String);

/// Decides whether "no stream answered" means that no stream stores the
/// subject (the guest's output has nowhere to go: refused) or that its
/// stream is there but did not answer (a leader election, an offline
/// replica: unavailable). Asks JetStream's metadata leader. A subject the
/// configuration names literally was checked at start-up: its stream
/// missing now is an outage for the operator to fix, never the guest's fault.
pub(crate) async fn resolve(
    js: &jetstream::Context,
    error: FlushError,
    configured: impl Fn(&str) -> bool,
) -> FlushError {
    let FlushError::Unavailable(e) = error else {
        return error;
    };
    let Some(NoStream(subject)) = e.downcast_ref::<NoStream>() else {
        return FlushError::Unavailable(e);
    };
    if configured(subject) {
        return FlushError::Unavailable(e);
    }
    match js.stream_by_subject(subject.clone()).await {
        Err(lookup) if lookup.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {
            FlushError::Refused(format!("{e:#}: no stream stores subject \"{subject}\""))
        }
        _ => FlushError::Unavailable(e),
    }
}

/// The JetStream API error inside a failed publish, if the server sent one.
fn jetstream_error(e: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>())
}
