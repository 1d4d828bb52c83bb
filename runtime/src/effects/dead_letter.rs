//! Dead-letter copies: the original payload and headers plus `Wharf-*`
//! headers saying why, published to JetStream and confirmed before the
//! source message may be terminated.

use async_nats::HeaderMap;
use bytes::Bytes;

use super::Jet;
use super::classify::{FlushError, Looked, classify};
use crate::headers;
use crate::headers::wire_size;
use crate::settle::{DeadLetterKind, clean_reason};
use crate::source::Source;

/// Why a message is being dead-lettered.
#[derive(Debug, Clone)]
pub(crate) struct Reason<'a> {
    pub kind: DeadLetterKind,
    pub text: &'a str,
    pub handler: &'a str,
    pub deliveries: u64,
}

/// Builds the dead-letter copy's headers from the original's. With a
/// `room` (the bytes of headers that fit under the server's `max_payload`
/// beside the payload), a copy that would not fit first gets a shorter
/// reason, then leaves the original headers out (saying how many), so that
/// a message near the size limit can still be dead-lettered with its payload.
pub(crate) fn copy_headers(
    original: Option<&HeaderMap>,
    source: &Source,
    reason: &Reason<'_>,
    room: Option<usize>,
) -> HeaderMap {
    let text = clean_reason(reason.text);
    // One time for every try below: its length varies with the fraction of
    // the second, and the tries must measure the same headers.
    let failed_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let build = |original: Option<&HeaderMap>, text: &str| {
        build(original, source, reason, text, &failed_at)
    };
    let full = build(original, &text);
    let Some(room) = room else { return full };
    if wire_size(&full) <= room {
        return full;
    }
    let cut = |base: &HeaderMap| {
        let left = room.saturating_sub(wire_size(base));
        crate::text::head(&text, left, "...")
    };
    let without_reason = build(original, "");
    if wire_size(&without_reason) < room {
        return build(original, &cut(&without_reason));
    }
    let dropped = original.map_or(0, |o| o.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut bare = build(None, "");
    bare.insert(
        headers::ORIGINAL_HEADERS_DROPPED,
        dropped.to_string().as_str(),
    );
    let text = cut(&bare);
    let mut bare = build(None, &text);
    bare.insert(
        headers::ORIGINAL_HEADERS_DROPPED,
        dropped.to_string().as_str(),
    );
    bare
}

fn build(
    original: Option<&HeaderMap>,
    source: &Source,
    reason: &Reason<'_>,
    text: &str,
    failed_at: &str,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            for v in values {
                if headers::is_nats(name) || headers::is_wharf(name) {
                    let kept = format!("{name}: {}", v.as_str());
                    out.append(headers::ORIGINAL_NATS, kept.as_str());
                } else {
                    out.append(name, v.clone());
                }
            }
        }
    }
    let id = headers::dead_letter_id(&source.stream, &source.consumer, source.stream_sequence);
    out.insert(headers::MSG_ID, id.as_str());
    out.insert(headers::REASON_KIND, reason.kind.as_str());
    out.insert(headers::REASON, text);
    out.insert(headers::HANDLER, reason.handler);
    out.insert(headers::SOURCE_STREAM, source.stream.as_str());
    out.insert(headers::SOURCE_CONSUMER, source.consumer.as_str());
    out.insert(headers::SOURCE_SUBJECT, source.subject.as_str());
    out.insert(
        headers::SOURCE_SEQUENCE,
        source.stream_sequence.to_string().as_str(),
    );
    out.insert(headers::DELIVERIES, reason.deliveries.to_string().as_str());
    out.insert(headers::FAILED_AT, failed_at);
    out
}

/// Publishes the copy and waits for JetStream to confirm it. A copy the
/// stream refuses (too large for it, say) is told apart from an outage, as
/// for outputs; a missing dead-letter stream is an outage.
pub(crate) async fn publish(
    jet: &Jet,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<(), FlushError> {
    let what = format!("dead-letter copy to \"{subject}\"");
    // The dead-letter subject was checked at start-up: a missing stream is an outage.
    let configured = |_: &str| true;
    let failed = match jet
        .publish
        .publish_with_headers(subject.to_string(), headers, payload)
        .await
    {
        Ok(ack) => match ack.await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let mut looked = Looked::default();
    Err(classify(jet, &mut looked, &what, subject, failed, &configured).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            stream: "ORDERS".into(),
            consumer: "audit".into(),
            subject: "orders.new".into(),
            stream_sequence: 42,
            trace: crate::trace::SpanContext::child_of(None),
            tracestate: None,
        }
    }

    #[test]
    fn copy_keeps_original_headers_and_adds_reason() {
        let mut original = HeaderMap::new();
        original.append("X-Tenant", "a");
        original.append("X-Tenant", "b");
        original.insert("Nats-Msg-Id", "client-1");
        let reason = Reason {
            kind: DeadLetterKind::Rejected,
            text: "missing field `id`\non line 2",
            handler: "orders",
            deliveries: 1,
        };
        let h = copy_headers(Some(&original), &source(), &reason, None);
        let tenants: Vec<&str> = h.get_all("X-Tenant").map(|v| v.as_str()).collect();
        assert_eq!(tenants, ["a", "b"]);
        assert_eq!(
            h.get(headers::ORIGINAL_NATS).unwrap().as_str(),
            "Nats-Msg-Id: client-1"
        );
        assert!(
            h.iter()
                .filter(|(n, _)| {
                    let n: &str = n.as_ref();
                    n.to_ascii_lowercase().contains("nats-msg-id")
                })
                .count()
                == 1,
            "only the copy's own id names Nats-Msg-Id: {h:?}"
        );
        assert_eq!(
            h.get("Nats-Msg-Id").unwrap().as_str(),
            "wharf-dlq:ORDERS:audit:42"
        );
        assert_eq!(h.get(headers::REASON_KIND).unwrap().as_str(), "rejected");
        assert_eq!(
            h.get(headers::REASON).unwrap().as_str(),
            "missing field `id` on line 2"
        );
        assert_eq!(h.get(headers::SOURCE_SEQUENCE).unwrap().as_str(), "42");
        assert_eq!(h.get(headers::SOURCE_CONSUMER).unwrap().as_str(), "audit");
    }

    #[test]
    fn a_copy_near_the_size_limit_drops_reason_then_original_headers() {
        let mut original = HeaderMap::new();
        original.insert("X-Big", "v".repeat(500).as_str());
        let long = "r".repeat(900);
        let reason = Reason {
            kind: DeadLetterKind::Rejected,
            text: &long,
            handler: "orders",
            deliveries: 1,
        };
        let full = copy_headers(Some(&original), &source(), &reason, None);
        let room = wire_size(&full) - 300;
        let h = copy_headers(Some(&original), &source(), &reason, Some(room));
        assert!(wire_size(&h) <= room);
        assert!(h.get("X-Big").is_some(), "the reason goes first");
        assert!(h.get(headers::REASON).unwrap().as_str().ends_with("..."));
        let h = copy_headers(Some(&original), &source(), &reason, Some(room - 900));
        assert!(wire_size(&h) <= room - 900);
        assert!(h.get("X-Big").is_none());
        assert_eq!(
            h.get(headers::ORIGINAL_HEADERS_DROPPED).unwrap().as_str(),
            "1"
        );
        assert_eq!(h.get(headers::REASON_KIND).unwrap().as_str(), "rejected");
    }
}
