//! Replaying copies to their original subject: only where the copy's
//! source stream stores it, never to the server's own subjects or inboxes,
//! without `Nats-*` headers, with a new deterministic id, deleting the copy
//! only once the replay is confirmed.

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;

use super::{Dlq, Entry, Selector};
use crate::headers;
use crate::text::escape_controls;

impl Dlq {
    /// Republishes the selected copies to their source subjects; with
    /// `remove`, deletes each copy once its replay is confirmed. Returns how
    /// many were replayed.
    pub async fn replay(&self, selector: &Selector, remove: bool) -> anyhow::Result<usize> {
        self.ensure_present(selector, super::CHANGED_NOTHING)
            .await?;
        let mut done = 0;
        let mut pages = self.pages(selector).await?;
        while let Some(page) = pages.next().await? {
            for e in page {
                self.replay_one(&e, remove).await?;
                done += 1;
            }
        }
        Ok(done)
    }

    async fn replay_one(&self, e: &Entry, remove: bool) -> anyhow::Result<()> {
        let target = e.header(headers::SOURCE_SUBJECT);
        let source = e.header(headers::SOURCE_STREAM);
        if target.is_empty() || source.is_empty() {
            bail!(
                "dead-letter message {} has no {} or {} header; it was not written by wharf",
                e.sequence,
                headers::SOURCE_SUBJECT,
                headers::SOURCE_STREAM
            );
        }
        if let Some(expected) = &self.source_stream
            && source != expected
        {
            bail!(
                "dead-letter message {} came from stream \"{source}\", not handler \"{}\"'s \
                 stream \"{expected}\"; nothing more was replayed",
                e.sequence,
                self.handler.as_deref().unwrap_or_default()
            );
        }
        // The server's own subjects and inboxes are never a replay's target,
        // whatever a (forged) copy claims; other `$` subjects (a key-value
        // bucket's, say) only for a handler that consumes that very stream.
        let reserved = crate::subject::is_reserved(target);
        if crate::subject::is_forbidden(target)
            || target.starts_with("_INBOX")
            || (reserved && self.source_stream.is_none())
        {
            bail!(
                "dead-letter message {}: its source subject \"{}\" is a reserved subject; \
                 refusing to replay it there (a `$` subject is replayed only with -c and \
                 the handler that consumes its stream)",
                e.sequence,
                escape_controls(target)
            );
        }
        // The copy's headers say where it came from; they are only trusted
        // as far as the server confirms them.
        let stored_by = crate::effects::classify::stored_by(&self.js, target).await?;
        if stored_by.as_deref() != Some(source) {
            bail!(
                "dead-letter message {}: its source subject \"{target}\" is not stored by its \
                 source stream \"{source}\"; refusing to replay it elsewhere",
                e.sequence
            );
        }
        self.js
            .publish_with_headers(
                target.to_string(),
                replay_headers(e, &self.stream_name),
                e.payload.clone(),
            )
            .await
            .with_context(|| format!("replaying {} to \"{target}\"", e.sequence))?
            .await
            .with_context(|| {
                format!(
                    "replay of {} to \"{target}\" was not confirmed; nothing was deleted",
                    e.sequence
                )
            })?;
        if remove {
            self.stream
                .delete_message(e.sequence)
                .await
                .with_context(|| {
                    format!(
                        "removing dead-letter message {} after its replay",
                        e.sequence
                    )
                })?;
        }
        Ok(())
    }
}

/// The headers a replayed message carries: the original's, without the
/// `Wharf-*` reason headers, with a replay id.
fn replay_headers(e: &Entry, dlq_stream: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in e.headers.iter() {
        let name: &str = name.as_ref();
        // Wharf's own headers describe the copy. A copy never has NATS
        // control headers of its own (the original's are kept as a value),
        // so one found here was forged: it would act on the target stream.
        if headers::is_wharf(name) || headers::is_nats(name) {
            continue;
        }
        for v in values {
            out.append(name, v.clone());
        }
    }
    out.insert(
        headers::MSG_ID,
        headers::replay_id(dlq_stream, e.sequence).as_str(),
    );
    out.insert(
        headers::REPLAYED_FROM,
        format!("{dlq_stream}:{}", e.sequence).as_str(),
    );
    out
}
