//! Telling a refused publish (the message's fault: no stream stores its
//! subject, a stream's own limit, a failed expectation) from an outage (the
//! host's: the server unreachable, a stream electing a leader), and the
//! stream look-ups that needs.

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::jetstream::{self, context::PublishErrorKind};

use super::Jet;

/// What one flush learned from JetStream's metadata, fresh: each subject
/// is asked about once per flush, not once per output.
#[derive(Default)]
pub(crate) struct Looked(std::collections::HashMap<String, Option<Option<String>>>);

impl Looked {
    /// The stream that stores `subject` now (`Some(None)`: none does), as
    /// fresh metadata says; `None` when the metadata could not be read.
    pub(super) async fn stream(
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
            None => crate::effects::classify::stored_by(api, subject).await.ok(),
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
        let found = crate::effects::classify::stored_by(js, subject).await?;
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

    pub(super) fn forget(&self, subject: &str) {
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
pub(super) fn no_stream(
    what: &str,
    subject: &str,
    configured: &impl Fn(&str) -> bool,
) -> FlushError {
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

/// The stream that stores `subject`: `Ok(None)` when none does, an error
/// when the server cannot say.
pub(crate) async fn stored_by(
    js: &jetstream::Context,
    subject: &str,
) -> anyhow::Result<Option<String>> {
    match js.stream_by_subject(subject.to_string()).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e)),
    }
}
