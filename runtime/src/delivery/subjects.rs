//! The streams a handler's output and dead-letter subjects land in, checked
//! before it runs: every dead-letter and literal publish subject is stored
//! by a stream, dead-letter copies cannot loop back into the handler's own
//! consumer or vanish from an interest stream, and the allow-list does not
//! reach the handler's own input.

use async_nats::jetstream;
use async_nats::jetstream::stream::RetentionPolicy;

use crate::config::HandlerConfig;
use crate::delivery::binding::{BindError, stream};
use crate::effects::classify::stored_by;
use crate::subject;

/// Checks that dead-letter copies and literal outputs have a stream to land
/// in, and that dead-letter copies cannot loop back into the handler's own consumer.
pub(crate) async fn subjects(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> Result<(), BindError> {
    if let Some(dl) = &handler.dead_letter {
        let stored = stored_by(js, dl).await.map_err(|e| {
            BindError::Unavailable(e.context(format!(
                "handler \"{}\": finding the stream for dead-letter subject \"{dl}\"",
                handler.name
            )))
        })?;
        let Some(stream) = stored else {
            return Err(BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `dead_letter`: no stream stores subject \"{dl}\"; \
                 create one (e.g. `nats stream add DLQ --subjects '{dl}'`) so dead-letter copies are kept",
                handler.name
            )));
        };
        let retention = js
            .get_stream(&stream)
            .await
            .map(|s| s.cached_info().config.retention)
            .map_err(|e| {
                BindError::Unavailable(anyhow::anyhow!(
                    "handler \"{}\": dead-letter stream \"{stream}\" is not available: {e}",
                    handler.name
                ))
            })?;
        if retention == RetentionPolicy::Interest {
            return Err(BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `dead_letter`: stream \"{stream}\", which stores \"{dl}\", \
                 keeps messages only while a consumer is interested: dead-letter copies would \
                 vanish; use a stream with limits retention",
                handler.name
            )));
        }
        let filter_hits = handler
            .filter_subject
            .as_deref()
            .is_none_or(|f| subject::matches(f, dl));
        if stream == handler.stream && filter_hits {
            return Err(BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `dead_letter`: subject \"{dl}\" is stored in the handler's own \
                 stream \"{}\" and would be delivered back to it; use a subject outside its filter",
                handler.name,
                handler.stream
            )));
        }
    }
    own_input(js, handler).await?;
    for subject in handler.publish.literals() {
        let stored = stored_by(js, subject).await.map_err(|e| {
            BindError::Unavailable(e.context(format!(
                "handler \"{}\": finding the stream for publish subject \"{subject}\"",
                handler.name
            )))
        })?;
        if stored.is_none() {
            return Err(BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `publish`: no stream stores subject \"{subject}\"; \
                 outputs must land in JetStream, so create a stream for it",
                handler.name
            )));
        }
    }
    Ok(())
}

/// Refuses an allow-list that reaches the handler's own input (its
/// stream's subjects, within its filter): every output would be delivered
/// back to the handler, which would publish again, without end.
async fn own_input(js: &jetstream::Context, handler: &HandlerConfig) -> Result<(), BindError> {
    let input = stream(js, handler).await?;
    let subjects = &input.cached_info().config.subjects;
    for pattern in handler.publish.patterns() {
        let reaches = subjects.iter().any(|s| subject::overlap(pattern, s))
            && handler
                .filter_subject
                .as_deref()
                .is_none_or(|f| subject::overlap(pattern, f));
        if reaches {
            return Err(BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `publish`: \"{pattern}\" reaches the handler's own input \
                 (stream \"{}\"{}), so its outputs would be delivered back to it; narrow the \
                 allow-list or the filter",
                handler.name,
                handler.stream,
                handler
                    .filter_subject
                    .as_deref()
                    .map(|f| format!(", filter \"{f}\""))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}
