//! Dead-letter copies: the original payload and headers plus `Wharf-*`
//! headers saying why, published to JetStream and confirmed before the
//! source message may be terminated.

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use crate::host::floor_char_boundary;
use crate::outbox::Source;
use crate::settle::DeadLetterKind;

/// Longest reason text stored in `Wharf-Reason`.
pub const MAX_REASON_BYTES: usize = 1024;

/// Header names on every dead-letter copy.
pub mod headers {
    pub const KIND: &str = "Wharf-Reason-Kind";
    pub const REASON: &str = "Wharf-Reason";
    pub const HANDLER: &str = "Wharf-Handler";
    pub const SOURCE_STREAM: &str = "Wharf-Source-Stream";
    pub const SOURCE_SUBJECT: &str = "Wharf-Source-Subject";
    pub const SOURCE_SEQUENCE: &str = "Wharf-Source-Sequence";
    pub const DELIVERIES: &str = "Wharf-Delivery-Count";
    pub const FAILED_AT: &str = "Wharf-Failed-At";
    /// Prefix under which the original's own `Nats-*` headers are kept, so
    /// that JetStream does not act on them a second time.
    pub const ORIGINAL_PREFIX: &str = "Wharf-Original-";
}

/// The id that makes a repeated dead-letter publish of the same source message a no-op.
pub fn dead_letter_msg_id(source: &Source) -> String {
    format!("wharf-dlq:{}:{}", source.stream, source.stream_sequence)
}

/// Why a message is being dead-lettered.
#[derive(Debug, Clone)]
pub struct Reason<'a> {
    pub kind: DeadLetterKind,
    pub text: &'a str,
    pub handler: &'a str,
    pub deliveries: u64,
}

/// Builds the dead-letter copy's headers from the original's.
pub fn copy_headers(
    original: Option<&HeaderMap>,
    source: &Source,
    reason: &Reason<'_>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            let kept = if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
                format!("{}{name}", headers::ORIGINAL_PREFIX)
            } else {
                name.to_string()
            };
            for v in values {
                out.append(kept.as_str(), v.clone());
            }
        }
    }
    out.insert("Nats-Msg-Id", dead_letter_msg_id(source).as_str());
    out.insert(headers::KIND, reason.kind.as_str());
    out.insert(headers::REASON, clean_reason(reason.text).as_str());
    out.insert(headers::HANDLER, reason.handler);
    out.insert(headers::SOURCE_STREAM, source.stream.as_str());
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
pub fn clean_reason(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.len() <= MAX_REASON_BYTES {
        return one_line.to_string();
    }
    let cut = floor_char_boundary(one_line, MAX_REASON_BYTES - 3);
    format!("{}...", &one_line[..cut])
}

/// Publishes the copy and waits for JetStream to confirm it.
pub async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> anyhow::Result<()> {
    js.publish_with_headers(subject.to_string(), headers, payload)
        .await
        .with_context(|| format!("publishing dead-letter copy to \"{subject}\""))?
        .await
        .with_context(|| {
            format!("dead-letter copy to \"{subject}\" was not confirmed by JetStream")
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            stream: "ORDERS".into(),
            subject: "orders.new".into(),
            stream_sequence: 42,
            traceparent: None,
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
            "wharf-dlq:ORDERS:42"
        );
        assert_eq!(h.get(headers::KIND).unwrap().as_str(), "rejected");
        assert_eq!(
            h.get(headers::REASON).unwrap().as_str(),
            "missing field `id` on line 2"
        );
        assert_eq!(h.get(headers::SOURCE_SEQUENCE).unwrap().as_str(), "42");
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let r = clean_reason(&long);
        assert!(r.len() <= MAX_REASON_BYTES);
        assert!(r.ends_with("..."));
    }
}
