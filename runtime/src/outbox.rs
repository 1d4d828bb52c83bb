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

/// The JetStream contexts a flush uses: publishes wait for their PubAcks as
/// long as the client usually waits; metadata look-ups (which stream stores
/// a subject) time out soon, as every JetStream API request does.
#[derive(Clone)]
pub(crate) struct Jet {
    pub publish: jetstream::Context,
    pub api: jetstream::Context,
}

impl Jet {
    pub(crate) fn new(publish: jetstream::Context) -> Jet {
        let mut api = publish.clone();
        api.set_timeout(crate::binding::REQUEST_TIMEOUT);
        Jet { publish, api }
    }
}

/// What one flush learned from JetStream's metadata, fresh: each subject
/// is asked about once per flush, not once per output.
#[derive(Default)]
pub(crate) struct Looked(std::collections::HashMap<String, Option<Option<String>>>);

impl Looked {
    /// The stream that stores `subject` now (`Some(None)`: none does), as
    /// fresh metadata says; `None` when the metadata could not be read.
    async fn stream(
        &mut self,
        streams: Option<&StreamCache>,
        api: &jetstream::Context,
        subject: &str,
    ) -> Option<Option<String>> {
        if let Some(known) = self.0.get(subject) {
            return known.clone();
        }
        let known = match streams {
            Some(cache) => {
                cache.forget(subject);
                cache.lookup(api, subject).await.ok()
            }
            None => crate::binding::stored_by(api, subject).await.ok(),
        };
        self.0.insert(subject.to_string(), known.clone());
        known
    }
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
/// returns `Ok` may the input be acked. `confirmed` records which outputs
/// JetStream has confirmed: trying again (after a host-side failure) sends
/// only the others, so a long outage cannot outlast the duplicate window
/// and store an output twice. Every output goes only to a subject a stream
/// stores, as JetStream's metadata says (`streams`): a subject no stream
/// stores is refused before anything is sent (a core NATS service on it
/// could otherwise answer in JetStream's place), and a PubAck from another
/// stream than the one that stores the subject is not a confirmation.
///
/// `first_try` says whether this delivery can have stored these outputs
/// before; a PubAck that says "duplicate" when it cannot is logged as a
/// warning (another publisher used the same id), not taken silently.
pub(crate) async fn flush(
    jet: &Jet,
    streams: &StreamCache,
    source: &Source,
    entries: &[Outgoing],
    confirmed: &mut [bool],
    first_try: bool,
    configured: impl Fn(&str) -> bool,
) -> Result<(), FlushError> {
    let what = |index: usize, out: &Outgoing| format!("output {index} to \"{}\"", out.subject);
    let mut acks = Vec::with_capacity(entries.len());
    // A failure before every output is sent still waits for the PubAcks of
    // those that were, so that they count as confirmed next time.
    let mut not_sent = None;
    let mut looked = Looked::default();
    for (index, out) in entries.iter().enumerate() {
        if confirmed[index] {
            continue;
        }
        let stream = match streams.lookup(&jet.api, &out.subject).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                not_sent = Some(no_stream(&what(index, out), &out.subject, &configured));
                break;
            }
            Err(e) => {
                not_sent = Some(FlushError::Unavailable(e.context(what(index, out))));
                break;
            }
        };
        let headers = output_headers(source, index, out);
        match jet
            .publish
            .publish_with_headers(out.subject.clone(), headers, out.payload.clone())
            .await
        {
            Ok(ack) => acks.push((index, stream, ack)),
            Err(e) => {
                let what = what(index, out);
                not_sent =
                    Some(classify(jet, &mut looked, &what, &out.subject, e, &configured).await);
                break;
            }
        }
    }
    let mut refused = None;
    let mut unavailable = None;
    for (index, stream, ack) in acks {
        let out = &entries[index];
        match ack.await {
            // The subject may have moved to another stream since it was
            // looked up: only fresh metadata that disagrees refuses it.
            Ok(ack) if ack.stream != stream => {
                match looked.stream(Some(streams), &jet.api, &out.subject).await {
                    Some(now) if now.as_deref() == Some(ack.stream.as_str()) => {
                        confirmed[index] = true
                    }
                    Some(_) => {
                        refused = refused.or(Some(format!(
                            "{}: confirmed by stream \"{}\", which does not store the subject",
                            what(index, out),
                            ack.stream
                        )))
                    }
                    None => {
                        unavailable =
                            unavailable.or(Some(FlushError::Unavailable(anyhow::anyhow!(
                                "{}: confirmed by stream \"{}\"; which stream stores the \
                                 subject could not be read",
                                what(index, out),
                                ack.stream
                            ))))
                    }
                }
            }
            Ok(ack) => {
                confirmed[index] = true;
                if ack.duplicate && first_try && !out.has_msg_id {
                    warn!(
                        index,
                        subject = %out.subject,
                        stream = %ack.stream,
                        "output was already stored under its id by another publisher; JetStream kept that copy"
                    );
                } else if ack.duplicate {
                    debug!(index, subject = %out.subject, "output already stored (deduplicated)");
                }
            }
            // Every PubAck is awaited before deciding: the outputs after a
            // failed one may be stored, and count as confirmed next time;
            // and a refusal is told apart from an outage in the same flush.
            Err(e) => {
                streams.forget(&out.subject);
                let what = what(index, out);
                match classify(jet, &mut looked, &what, &out.subject, e, &configured).await {
                    FlushError::Refused(why) => refused = refused.or(Some(why)),
                    outage => unavailable = unavailable.or(Some(outage)),
                }
            }
        }
    }
    match (refused, unavailable.or(not_sent)) {
        (Some(why), _) => Err(FlushError::Refused(why)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}

/// Output `index`'s headers: the guest's, its id, the source trail and the
/// trace context.
fn output_headers(source: &Source, index: usize, out: &Outgoing) -> async_nats::HeaderMap {
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
    // The guest's own trace context wins; otherwise the output is a child of
    // the delivery's span.
    if headers.get(headers::TRACEPARENT).is_none() {
        headers.insert(headers::TRACEPARENT, source.trace.traceparent().as_str());
        if let Some(ts) = &source.tracestate {
            headers.insert(headers::TRACESTATE, ts.as_str());
        }
    }
    headers
}

/// Which stream stores each subject a handler publishes to, as JetStream's
/// metadata said within the last minute. A subject no stream stores is not
/// remembered, so a stream created for it is found at once.
#[derive(Default)]
pub(crate) struct StreamCache {
    known: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

/// How long a subject's stream is remembered.
const STREAM_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How many subjects are remembered at most; the cache starts over past it.
const STREAM_CACHE_MAX: usize = 4096;

impl StreamCache {
    /// The stream that stores `subject`, or `None` when none does.
    pub(crate) async fn lookup(
        &self,
        js: &jetstream::Context,
        subject: &str,
    ) -> anyhow::Result<Option<String>> {
        if let Some((stream, at)) = self.lock().get(subject)
            && at.elapsed() < STREAM_CACHE_TTL
        {
            return Ok(Some(stream.clone()));
        }
        let found = crate::binding::stored_by(js, subject).await?;
        if let Some(stream) = &found {
            let mut known = self.lock();
            if known.len() >= STREAM_CACHE_MAX {
                known.clear();
            }
            known.insert(
                subject.to_string(),
                (stream.clone(), std::time::Instant::now()),
            );
        }
        Ok(found)
    }

    fn forget(&self, subject: &str) {
        self.lock().remove(subject);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, std::time::Instant)>>
    {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sorts a failed publish of `what` into refused (the message's fault) and
/// unavailable (the host's). "No responders" is both a subject no stream
/// stores and a stream electing a leader: JetStream's metadata tells them
/// apart.
pub(crate) async fn classify(
    jet: &Jet,
    looked: &mut Looked,
    what: &str,
    subject: &str,
    e: jetstream::context::PublishError,
    configured: &impl Fn(&str) -> bool,
) -> FlushError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => FlushError::Refused(format!("{what}: {e}")),
        PublishErrorKind::Other => match jetstream_error(&e) {
            Some(api) if (400..500).contains(&api.code()) || stream_limit(api) => {
                FlushError::Refused(format!("{what}: refused by JetStream: {api}"))
            }
            _ => FlushError::Unavailable(anyhow::Error::new(e).context(what.to_string())),
        },
        PublishErrorKind::StreamNotFound => match looked.stream(None, &jet.api, subject).await {
            Some(None) => no_stream(what, subject, configured),
            _ => FlushError::Unavailable(anyhow::anyhow!(
                "{what}: no stream answered for subject \"{subject}\" (its leader is being \
                 elected, or it is offline)"
            )),
        },
        _ => FlushError::Unavailable(anyhow::Error::new(e).context(what.to_string())),
    }
}

/// No stream stores `subject`. A subject the config names literally was
/// checked at start-up: its stream missing now is an outage for the
/// operator to fix, never the guest's fault. Any other subject has nowhere
/// to go: the output is refused.
fn no_stream(what: &str, subject: &str, configured: &impl Fn(&str) -> bool) -> FlushError {
    let why = format!("{what}: no stream stores subject \"{subject}\"");
    if configured(subject) {
        FlushError::Unavailable(anyhow::anyhow!(why))
    } else {
        FlushError::Refused(why)
    }
}

/// Whether the stream refused the message for one of its own limits (too
/// large, full with "discard new"): a property of the message and the
/// stream, not an outage that passes. A store that failed for another
/// reason (closed during a leader move, a disk error) is an outage.
fn stream_limit(api: &jetstream::Error) -> bool {
    use jetstream::ErrorCode;
    match api.error_code() {
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_MAX_STREAM_BYTES_EXCEEDED => true,
        // "maximum messages exceeded", "maximum bytes exceeded", "maximum
        // messages per subject exceeded": a full stream that discards new;
        // "message too large" for the store.
        ErrorCode::STREAM_STORE_FAILED => {
            let text = api.to_string();
            text.contains("maximum") || text.contains("too large")
        }
        _ => false,
    }
}

/// The JetStream API error inside a failed publish, if the server sent one.
fn jetstream_error(e: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>())
}
