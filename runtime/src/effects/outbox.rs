//! Releasing a delivery's outbox: its messages published in order, each with
//! a deterministic `Nats-Msg-Id` and the source trail, every PubAck awaited.
//! What the guest publishes is collected by `crate::sandbox::host::publish`.

use tracing::{debug, warn};

use super::Jet;
use super::classify::{FlushError, Looked, StreamCache, classify, no_stream};
use crate::headers;
use crate::source::Source;
use crate::staged::Outgoing;

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

/// Checks, before anything of a delivery is applied, that a stream stores
/// every output's subject (the cached metadata), so that a delivery whose
/// key-value writes are applied is not then held for an output with
/// nowhere to go.
pub(crate) async fn check_destinations(
    jet: &Jet,
    streams: &StreamCache,
    entries: &[Outgoing],
    configured: impl Fn(&str) -> bool,
) -> Result<(), FlushError> {
    for (index, out) in entries.iter().enumerate() {
        let what = format!("output {index} to \"{}\"", out.subject);
        match streams.lookup(&jet.api, &out.subject).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(no_stream(&what, &out.subject, &configured)),
            Err(e) => return Err(FlushError::Unavailable(e.context(what))),
        }
    }
    Ok(())
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
