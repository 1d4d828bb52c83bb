//! The delivery's outbox: what a guest publishes is held here and released
//! only after the guest succeeded, each message with a deterministic
//! `Nats-Msg-Id` so that a redelivery cannot duplicate it downstream.

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream;
use bytes::Bytes;

use crate::bindings::{Header, PublishError};
use crate::config::{HandlerConfig, subject_matches, validate_subject};

/// Where a delivery came from; outputs and dead-letter copies carry it.
#[derive(Debug, Clone)]
pub struct Source {
    pub stream: String,
    pub subject: String,
    pub stream_sequence: u64,
    /// W3C trace context of the input, propagated to outputs.
    pub traceparent: Option<String>,
}

/// The id JetStream uses to drop a repeated output of the same delivery.
pub fn output_msg_id(source: &Source, index: usize) -> String {
    format!(
        "wharf:{}:{}:{}",
        source.stream, source.stream_sequence, index
    )
}

/// One message waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    pub headers: HeaderMap,
    /// Whether the guest set its own `Nats-Msg-Id`, which then wins.
    has_msg_id: bool,
}

/// Messages published by the guest during one delivery.
#[derive(Debug)]
pub struct Outbox {
    handler: Arc<HandlerConfig>,
    entries: Vec<Outgoing>,
    bytes: u64,
}

impl Outbox {
    pub fn new(handler: Arc<HandlerConfig>) -> Outbox {
        Outbox {
            handler,
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a message, or tells the guest why not. Never touches the network.
    pub fn push(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<(), PublishError> {
        validate_subject(&subject, false).map_err(PublishError::Invalid)?;
        if !self
            .handler
            .publish
            .iter()
            .any(|p| subject_matches(p, &subject))
        {
            return Err(PublishError::NotAllowed(format!(
                "subject \"{subject}\" is not in handler \"{}\"'s publish allow-list",
                self.handler.name
            )));
        }
        if self.entries.len() >= self.handler.max_outbox_messages {
            return Err(PublishError::OutboxFull(format!(
                "at most {} messages per delivery",
                self.handler.max_outbox_messages
            )));
        }
        let mut size = payload.len() as u64 + subject.len() as u64;
        let mut map = HeaderMap::new();
        let mut has_msg_id = false;
        for h in headers {
            let name = HeaderName::try_from(h.name.as_str()).map_err(|_| {
                PublishError::Invalid(format!("invalid header name \"{}\"", h.name))
            })?;
            if h.name.eq_ignore_ascii_case("Nats-Msg-Id") {
                has_msg_id = true;
            }
            for v in h.values {
                if v.contains(['\r', '\n']) {
                    return Err(PublishError::Invalid(format!(
                        "header \"{}\" has a line break in its value",
                        h.name
                    )));
                }
                size += (h.name.len() + v.len()) as u64;
                map.append(name.clone(), HeaderValue::from(v));
            }
        }
        if self.bytes + size > self.handler.max_outbox_bytes {
            return Err(PublishError::OutboxFull(format!(
                "at most {} bytes per delivery",
                self.handler.max_outbox_bytes
            )));
        }
        self.bytes += size;
        self.entries.push(Outgoing {
            subject,
            payload: Bytes::from(payload),
            headers: map,
            has_msg_id,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn take(&mut self) -> Vec<Outgoing> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// Publishes the outbox in order and waits for every PubAck. Only when this
/// returns `Ok` may the input be acked.
pub async fn flush(
    js: &jetstream::Context,
    source: &Source,
    entries: Vec<Outgoing>,
) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(entries.len());
    for (index, mut out) in entries.into_iter().enumerate() {
        if !out.has_msg_id {
            out.headers
                .insert("Nats-Msg-Id", output_msg_id(source, index).as_str());
        }
        out.headers
            .insert("Wharf-Source-Stream", source.stream.as_str());
        out.headers.insert(
            "Wharf-Source-Sequence",
            source.stream_sequence.to_string().as_str(),
        );
        if let Some(tp) = &source.traceparent
            && out.headers.get("traceparent").is_none()
        {
            out.headers.insert("traceparent", tp.as_str());
        }
        let subject = out.subject.clone();
        let ack = js
            .publish_with_headers(out.subject, out.headers, out.payload)
            .await
            .with_context(|| format!("publishing output {index} to \"{subject}\""))?;
        acks.push((index, subject, ack));
    }
    for (index, subject, ack) in acks {
        ack.await.with_context(|| {
            format!("output {index} to \"{subject}\" was not confirmed by JetStream")
        })?;
    }
    Ok(())
}
