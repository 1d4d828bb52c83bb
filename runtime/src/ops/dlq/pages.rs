//! Reading a dead-letter stream a page at a time, so memory stays bounded
//! however many copies there are.

use std::time::Duration;

use anyhow::Context as _;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;

use super::{Dlq, Entry, Selector};
use crate::headers;

/// How many copies are held in memory at once.
const PAGE: usize = 256;

/// Reads a dead-letter stream a page at a time.
pub(super) struct Pages<'a> {
    dlq: &'a Dlq,
    selector: &'a Selector,
    /// `None` once everything was read.
    consumer: Option<PullConsumer>,
    until: u64,
}

impl Pages<'_> {
    /// The next page of selected copies (possibly empty), or `None` at the end.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<Vec<Entry>>> {
        let Some(consumer) = &self.consumer else {
            return Ok(None);
        };
        let mut fetched = consumer
            .fetch()
            .max_messages(PAGE)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .context("reading the dead-letter stream")?;
        let mut page = Vec::new();
        let mut read = 0;
        let mut done = false;
        while let Some(m) = fetched.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading the dead-letter stream: {e}"))?;
            read += 1;
            let sequence = m
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            if sequence > self.until {
                done = true;
                break;
            }
            let entry = Entry {
                sequence,
                subject: m.subject.to_string(),
                headers: m.headers.clone().unwrap_or_default(),
                payload: m.payload.clone(),
            };
            // Only Wharf's copies count, whatever else the stream holds;
            // with a config, only the chosen handler's.
            let ours = !entry.header(headers::REASON_KIND).is_empty()
                && !entry.header(headers::SOURCE_STREAM).is_empty()
                && self
                    .dlq
                    .handler
                    .as_deref()
                    .is_none_or(|h| entry.header(headers::HANDLER) == h);
            if ours && self.selector.matches(sequence) {
                page.push(entry);
            }
            if sequence >= self.until {
                done = true;
                break;
            }
        }
        if done || read == 0 {
            self.consumer = None;
        }
        if read == 0 {
            return Ok(None);
        }
        Ok(Some(page))
    }
}

impl Dlq {
    /// The selected copies, in order, a page at a time, up to the stream's
    /// last message when the command started.
    pub(super) async fn pages<'a>(&'a self, selector: &'a Selector) -> anyhow::Result<Pages<'a>> {
        let mut stream = self.stream.clone();
        let last = stream
            .info()
            .await
            .context("reading the dead-letter stream")?
            .state
            .last_sequence;
        let (first, until) = selector.bounds();
        let until = until.min(last);
        let consumer = if first > until || last == 0 {
            None
        } else {
            Some(
                self.stream
                    .create_consumer(pull::Config {
                        filter_subject: self.subject.clone().unwrap_or_default(),
                        ack_policy: AckPolicy::None,
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: first,
                        },
                        inactive_threshold: Duration::from_secs(30),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| {
                        format!("reading dead-letter stream \"{}\"", self.stream_name)
                    })?,
            )
        };
        Ok(Pages {
            dlq: self,
            selector,
            consumer,
            until,
        })
    }
}
