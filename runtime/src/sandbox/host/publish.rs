//! The `publish` import: what a guest publishes goes into its delivery's
//! outbox, checked against the handler's allow-list, header policy and
//! limits, and never touches the network while the guest runs
//! (`crate::effects::outbox::flush` releases it once the delivery succeeded).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use bytes::Bytes;

use crate::config::HandlerConfig;
use crate::headers::{self, GuestHeader, wire_size};
use crate::sandbox::bindings::{Header, PublishError};
use crate::staged::Outgoing;

/// The largest set of headers the host adds to one output: its id, the
/// source trail and trace context. Counted against the outbox's byte limit
/// and the server's `max_payload` when the guest publishes, so that an
/// output accepted into the outbox is one the server can take.
pub(crate) fn host_header_bytes(handler: &HandlerConfig) -> usize {
    let mut h = HeaderMap::new();
    let id = headers::output_id(&handler.stream, &handler.consumer, u64::MAX, 99_999);
    h.insert(headers::MSG_ID, id.as_str());
    h.insert(headers::SOURCE_STREAM, handler.stream.as_str());
    h.insert(headers::SOURCE_SEQUENCE, u64::MAX.to_string().as_str());
    h.insert(headers::TRACEPARENT, "00-".repeat(19).as_str());
    wire_size(&h) + crate::trace::MAX_TRACESTATE + headers::TRACESTATE.len() + 4
}

/// The server's `max_payload`, learnt when the host connects; 0 while unknown.
#[derive(Debug, Clone, Default)]
pub(crate) struct MaxPayload(Arc<AtomicUsize>);

impl MaxPayload {
    pub(crate) fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// The server's `max_payload`, once the host has connected.
    pub(crate) fn known(&self) -> Option<usize> {
        Some(self.get()).filter(|n| *n > 0)
    }
}

/// Messages published by the guest during one delivery.
#[derive(Debug)]
pub(crate) struct Outbox {
    handler: Arc<HandlerConfig>,
    max_payload: MaxPayload,
    host_bytes: usize,
    entries: Vec<Outgoing>,
    bytes: u64,
}

impl Outbox {
    /// An empty outbox; `host_bytes` is `host_header_bytes(&handler)`,
    /// computed once per handler rather than per delivery.
    pub(crate) fn new(
        handler: Arc<HandlerConfig>,
        max_payload: MaxPayload,
        host_bytes: usize,
    ) -> Outbox {
        Outbox {
            host_bytes,
            handler,
            max_payload,
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a message, or tells the guest why not. Never touches the network.
    pub(crate) fn push(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<(), PublishError> {
        crate::subject::validate(&subject, false).map_err(PublishError::Invalid)?;
        if !self.handler.publish.allows(&subject) {
            return Err(PublishError::NotAllowed(format!(
                "subject \"{subject}\" is not in handler \"{}\"'s publish allow-list ({}); \
                 add it to the handler's `publish` in the config",
                self.handler.name,
                allowed(self.handler.publish.patterns())
            )));
        }
        if self.entries.len() >= self.handler.max_outbox_messages {
            return Err(PublishError::OutboxFull(format!(
                "at most {} messages per delivery",
                self.handler.max_outbox_messages
            )));
        }
        let (map, has_msg_id) = self.guest_headers(headers)?;
        let message_bytes = payload.len() + wire_size(&map) + self.host_bytes;
        let size = (subject.len() + message_bytes) as u64;
        if self.bytes + size > self.handler.max_outbox_bytes {
            return Err(PublishError::OutboxFull(format!(
                "at most {} bytes per delivery, the host's headers included",
                self.handler.max_outbox_bytes
            )));
        }
        let max_payload = self.max_payload.get();
        if max_payload > 0 && message_bytes > max_payload {
            return Err(PublishError::Invalid(format!(
                "a message of {message_bytes} bytes (payload and headers, the host's included) \
                 exceeds the server's max_payload of {max_payload} bytes"
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

    /// The guest's headers as a header map, if the handler's policy allows
    /// each; and whether they carry the guest's own deduplication id.
    fn guest_headers(&self, headers: Vec<Header>) -> Result<(HeaderMap, bool), PublishError> {
        let mut map = HeaderMap::new();
        let mut has_msg_id = false;
        for h in headers {
            let kind = headers::guest_header(&h.name, &self.handler.allow_headers)
                .map_err(PublishError::NotAllowed)?;
            if h.name.is_empty() {
                return Err(PublishError::Invalid("a header needs a name".into()));
            }
            // A reader downstream may not parse a value with control
            // characters; a line break would end the header block.
            for v in &h.values {
                if v.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(PublishError::Invalid(format!(
                        "header \"{}\" has a control character in its value",
                        h.name
                    )));
                }
            }
            if kind == GuestHeader::MsgId {
                // JetStream reads the id under its exact name, once: an id
                // spelt otherwise, empty or repeated would silently turn
                // deduplication off.
                match h.values.as_slice() {
                    [id] if headers::is_wharf_id(id) => {
                        return Err(PublishError::NotAllowed(format!(
                            "a {} starting with \"wharf\" is the host's: choose another id",
                            headers::MSG_ID
                        )));
                    }
                    [id] if !id.trim().is_empty() && !has_msg_id => {
                        map.insert(headers::MSG_ID, id.as_str());
                        has_msg_id = true;
                        continue;
                    }
                    _ => {
                        return Err(PublishError::Invalid(format!(
                            "header \"{}\" must have exactly one non-empty value",
                            headers::MSG_ID
                        )));
                    }
                }
            }
            let name = HeaderName::try_from(h.name.as_str()).map_err(|_| {
                PublishError::Invalid(format!("invalid header name \"{}\"", h.name))
            })?;
            for v in h.values {
                map.append(name.clone(), HeaderValue::from(v));
            }
        }
        Ok((map, has_msg_id))
    }

    /// Empties the outbox, returning what it held.
    pub(crate) fn take(&mut self) -> Vec<Outgoing> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// The allow-list as a person reads it, cut after a few patterns.
fn allowed(patterns: &[String]) -> String {
    const SHOWN: usize = 8;
    if patterns.is_empty() {
        return "empty: the handler may not publish".into();
    }
    let mut shown: Vec<String> = patterns
        .iter()
        .take(SHOWN)
        .map(|p| format!("\"{p}\""))
        .collect();
    if patterns.len() > SHOWN {
        shown.push(format!("and {} more", patterns.len() - SHOWN));
    }
    format!("allowed: {}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn outbox(extra: &str) -> Outbox {
        let config = Config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
                 dead_letter = \"dlq.h\"\npublish = [\"out.>\"]\n{extra}"
            ),
        )
        .unwrap();
        let handler = Arc::new(config.handlers[0].clone());
        let host_bytes = host_header_bytes(&handler);
        Outbox::new(handler, MaxPayload::default(), host_bytes)
    }

    fn header(name: &str, values: &[&str]) -> Header {
        Header {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn refuses_what_the_handler_does_not_allow() {
        let mut o = outbox("");
        assert!(o.push("out.a".into(), b"x".to_vec(), vec![]).is_ok());
        match o.push("elsewhere".into(), vec![], vec![]) {
            Err(PublishError::NotAllowed(why)) => assert_eq!(
                why,
                "subject \"elsewhere\" is not in handler \"h\"'s publish allow-list \
                 (allowed: \"out.>\"); add it to the handler's `publish` in the config"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            o.push("out.*".into(), vec![], vec![]),
            Err(PublishError::Invalid(_))
        ));
        for forbidden in [
            "Nats-Rollup",
            "nats-expected-last-sequence",
            "Wharf-Handler",
        ] {
            assert!(
                matches!(
                    o.push("out.a".into(), vec![], vec![header(forbidden, &["x"])]),
                    Err(PublishError::NotAllowed(_))
                ),
                "{forbidden}"
            );
        }
        assert_eq!(o.take().len(), 1);
    }

    /// A refused subject's error shows the allow-list, or that it is empty,
    /// and cuts a long one.
    #[test]
    fn the_refusal_shows_the_allow_list() {
        assert_eq!(allowed(&[]), "empty: the handler may not publish");
        let many: Vec<String> = (0..10).map(|i| format!("out.{i}")).collect();
        let shown = allowed(&many);
        assert!(
            shown.starts_with("allowed: \"out.0\", \"out.1\"") && shown.ends_with("and 2 more"),
            "{shown}"
        );
    }

    /// Headers every reader can parse: a name, and values without control characters.
    #[test]
    fn header_names_and_values_are_well_formed() {
        let mut o = outbox("");
        for bad in [
            header("", &["v"]),
            header("bad name", &["v"]),
            header("x", &["a\u{0}b"]),
            header("x", &["\u{1b}[2J"]),
            header("x", &["a\r\nb"]),
        ] {
            assert!(
                matches!(
                    o.push("out.a".into(), vec![], vec![bad]),
                    Err(PublishError::Invalid(_))
                ),
                "accepted"
            );
        }
        o.push("out.a".into(), vec![], vec![header("x", &["a\tb ü"])])
            .unwrap();
    }

    #[test]
    fn a_guest_msg_id_is_canonical_single_and_non_empty() {
        let mut o = outbox("");
        o.push(
            "out.a".into(),
            vec![],
            vec![header("nats-msg-id", &["order-1"])],
        )
        .unwrap();
        let out = o.take();
        assert!(out[0].has_msg_id);
        assert_eq!(
            out[0].headers.get(headers::MSG_ID).unwrap().as_str(),
            "order-1"
        );
        assert!(matches!(
            o.push(
                "out.a".into(),
                vec![],
                vec![header("Nats-Msg-Id", &["WHARF-dlq:IN:c:1"])]
            ),
            Err(PublishError::NotAllowed(_))
        ));
        for values in [&[""][..], &[" "], &["a", "b"], &[]] {
            assert!(
                matches!(
                    o.push("out.a".into(), vec![], vec![header("Nats-Msg-Id", values)]),
                    Err(PublishError::Invalid(_))
                ),
                "{values:?}"
            );
        }
    }

    #[test]
    fn limits_count_the_host_headers_and_max_payload() {
        let mut o = outbox("max_outbox_messages = 2\nmax_outbox_bytes = \"2KiB\"");
        // 1,800 bytes of payload fit alone, but not with the host's headers.
        assert!(matches!(
            o.push("out.a".into(), vec![0; 1800], vec![]),
            Err(PublishError::OutboxFull(_))
        ));
        o.push("out.a".into(), vec![0; 10], vec![]).unwrap();
        o.push("out.a".into(), vec![0; 10], vec![]).unwrap();
        assert!(matches!(
            o.push("out.a".into(), vec![0; 10], vec![]),
            Err(PublishError::OutboxFull(_))
        ));
        let mut o = outbox("");
        o.max_payload.set(1000);
        assert!(matches!(
            o.push("out.a".into(), vec![0; 900], vec![]),
            Err(PublishError::Invalid(_))
        ));
        o.push("out.a".into(), vec![0; 100], vec![]).unwrap();
    }
}
