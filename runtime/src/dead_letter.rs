//! Dead-letter copies: the original payload and headers plus `Wharf-*`
//! headers saying why, published to JetStream and confirmed before the
//! source message may be terminated.

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use crate::headers;
use crate::outbox::{FlushError, Source, classify, resolve};
use crate::settle::DeadLetterKind;

/// Longest reason text stored in `Wharf-Reason`.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// Why a message is being dead-lettered.
#[derive(Debug, Clone)]
pub(crate) struct Reason<'a> {
    pub kind: DeadLetterKind,
    pub text: &'a str,
    pub handler: &'a str,
    pub deliveries: u64,
}

/// Builds the dead-letter copy's headers from the original's.
pub(crate) fn copy_headers(
    original: Option<&HeaderMap>,
    source: &Source,
    reason: &Reason<'_>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            let kept = if headers::is_nats(name) {
                format!("{}{name}", headers::ORIGINAL_PREFIX)
            } else {
                name.to_string()
            };
            for v in values {
                out.append(kept.as_str(), v.clone());
            }
        }
    }
    let id = headers::dead_letter_id(&source.stream, &source.consumer, source.stream_sequence);
    out.insert(headers::MSG_ID, id.as_str());
    out.insert(headers::REASON_KIND, reason.kind.as_str());
    out.insert(headers::REASON, clean_reason(reason.text).as_str());
    out.insert(headers::HANDLER, reason.handler);
    out.insert(headers::SOURCE_STREAM, source.stream.as_str());
    out.insert(headers::SOURCE_CONSUMER, source.consumer.as_str());
    out.insert(headers::SOURCE_SUBJECT, source.subject.as_str());
    out.insert(
        headers::SOURCE_SEQUENCE,
        source.stream_sequence.to_string().as_str(),
    );
    out.insert(headers::DELIVERIES, reason.deliveries.to_string().as_str());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    out.insert(headers::FAILED_AT, now.as_str());
    out
}

/// A reason fit for one header value: one line, at most `MAX_REASON_BYTES`.
pub(crate) fn clean_reason(text: &str) -> String {
    crate::text::head(&crate::text::one_line(text), MAX_REASON_BYTES, "...")
}

/// Publishes the copy and waits for JetStream to confirm it. A copy the
/// server refuses (too large for the stream, no stream stores the subject)
/// is told apart from an outage, as for outputs.
pub(crate) async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<(), FlushError> {
    let what = format!("dead-letter copy to \"{subject}\"");
    let sent = js
        .publish_with_headers(subject.to_string(), headers, payload)
        .await
        .map_err(|e| classify(&what, subject, e));
    let confirmed = match sent {
        Ok(ack) => ack
            .await
            .map(|_| ())
            .map_err(|e| classify(&what, subject, e)),
        Err(e) => Err(e),
    };
    match confirmed {
        Ok(()) => Ok(()),
        // The dead-letter subject was checked at start-up: a missing stream is an outage.
        Err(e) => Err(resolve(js, e, |_| true).await),
    }
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
        let h = copy_headers(Some(&original), &source(), &reason);
        let tenants: Vec<&str> = h.get_all("X-Tenant").map(|v| v.as_str()).collect();
        assert_eq!(tenants, ["a", "b"]);
        assert_eq!(
            h.get("Wharf-Original-Nats-Msg-Id").unwrap().as_str(),
            "client-1"
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
    fn long_reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let r = clean_reason(&long);
        assert!(r.len() <= MAX_REASON_BYTES);
        assert!(r.ends_with("..."));
    }
}
