//! Header names and message ids: every `Nats-*` and `Wharf-*` name the host
//! reads or writes, the deterministic ids of outputs and dead-letter copies,
//! and which headers a guest may set.

/// JetStream's deduplication id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace context, vendor part.
pub const TRACESTATE: &str = "tracestate";

/// Why a message was dead-lettered (`rejected`, `exhausted`, …).
pub const REASON_KIND: &str = "Wharf-Reason-Kind";
/// The reason text, on one line.
pub const REASON: &str = "Wharf-Reason";
/// The handler that dead-lettered the message.
pub const HANDLER: &str = "Wharf-Handler";
/// The stream the input came from (on outputs and dead-letter copies).
pub const SOURCE_STREAM: &str = "Wharf-Source-Stream";
/// The durable consumer that delivered the input.
pub const SOURCE_CONSUMER: &str = "Wharf-Source-Consumer";
/// The input's subject.
pub const SOURCE_SUBJECT: &str = "Wharf-Source-Subject";
/// The input's stream sequence.
pub const SOURCE_SEQUENCE: &str = "Wharf-Source-Sequence";
/// How often the input had been delivered.
pub const DELIVERIES: &str = "Wharf-Delivery-Count";
/// When the delivery failed, RFC 3339.
pub const FAILED_AT: &str = "Wharf-Failed-At";
/// On a replayed message: `<dead-letter stream>:<sequence>` it came from.
pub const REPLAYED_FROM: &str = "Wharf-Replayed-From";
/// On a dead-letter copy that had to leave the original headers out to fit
/// the server's `max_payload`: how many there were.
pub const ORIGINAL_HEADERS_DROPPED: &str = "Wharf-Original-Headers-Dropped";
/// Where a dead-letter copy keeps the original's own NATS headers, one
/// `Name: value` per value, so that JetStream does not act on them a second
/// time. (Not under a renamed header: some servers take any header whose
/// name ends in `Nats-Msg-Id` as the message's id.)
pub const ORIGINAL_NATS: &str = "Wharf-Original-Nats-Headers";

/// The id of output `index` of the delivery of `sequence` in `stream` through
/// `consumer`. Two handlers reading one stream (two consumers) never share
/// an id; redeliveries through one consumer always do, so JetStream drops a
/// repeated output.
pub fn output_id(stream: &str, consumer: &str, sequence: u64, index: usize) -> String {
    format!("wharf:{stream}:{consumer}:{sequence}:{index}")
}

/// The id of the dead-letter copy of `sequence` in `stream`, dead-lettered by `consumer`.
pub fn dead_letter_id(stream: &str, consumer: &str, sequence: u64) -> String {
    format!("wharf-dlq:{stream}:{consumer}:{sequence}")
}

/// The id of write `index` of the effect record `record`: the same each
/// time the record is applied, another for another record.
pub fn kv_write_id(record: &str, index: usize) -> String {
    format!("wharf-kv:{record}:{index}")
}

/// The id of the replay of dead-letter copy `sequence` in `dlq_stream`.
pub fn replay_id(dlq_stream: &str, sequence: u64) -> String {
    format!("wharf-replay:{dlq_stream}:{sequence}")
}

/// Whether an id is in the host's own id space (`wharf:…`, `wharf-dlq:…`,
/// `wharf-replay:…`, any case), which guests may not use: a guest could
/// otherwise make JetStream drop another handler's output or a dead-letter
/// copy as a duplicate.
pub fn is_wharf_id(id: &str) -> bool {
    has_prefix(id.trim_start(), "wharf")
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether the server may read `name` as a NATS/JetStream header: `Nats-…`
/// in any case, or anything containing it (some servers match header names
/// by their end, so `X-Nats-Msg-Id` can act as a message id).
pub fn is_nats(name: &str) -> bool {
    name.to_ascii_lowercase().contains("nats-")
}

/// Whether `name` is one of Wharf's own headers (`Wharf-…`, any case).
pub fn is_wharf(name: &str) -> bool {
    has_prefix(name, "Wharf-")
}

/// How a header a guest set on an output is treated.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestHeader {
    /// An ordinary header, kept as given.
    Plain,
    /// The guest's own deduplication id, stored under the canonical name.
    MsgId,
}

/// Decides whether a guest may set header `name` on an output. `Wharf-*`
/// headers are the host's; `Nats-*` headers change what JetStream does
/// (roll-ups, expectations, batches, TTLs, …), so apart from `Nats-Msg-Id`
/// only those the handler's `allow_headers` names are accepted.
pub fn guest_header(name: &str, allowed: &[String]) -> Result<GuestHeader, String> {
    if is_wharf(name) {
        return Err(format!(
            "header \"{name}\" is reserved: Wharf-* headers are set by the host"
        ));
    }
    if name.eq_ignore_ascii_case(MSG_ID) {
        return Ok(GuestHeader::MsgId);
    }
    if is_nats(name) && !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return Err(format!(
            "header \"{name}\" changes what JetStream does with messages; \
             the handler's `allow_headers` must name it"
        ));
    }
    Ok(GuestHeader::Plain)
}

/// Bytes a header set takes on the wire, as the server counts them against `max_payload`.
pub fn wire_size(headers: &async_nats::HeaderMap) -> usize {
    let mut size = "NATS/1.0\r\n\r\n".len();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            size += name.len() + 2 + v.as_str().len() + 2;
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_consumer() {
        assert_eq!(output_id("IN", "a", 7, 0), "wharf:IN:a:7:0");
        assert_ne!(output_id("IN", "a", 7, 0), output_id("IN", "b", 7, 0));
        assert_eq!(dead_letter_id("IN", "a", 7), "wharf-dlq:IN:a:7");
    }

    #[test]
    fn guests_cannot_set_control_headers_unless_allowed() {
        let none: Vec<String> = Vec::new();
        assert_eq!(guest_header("X-Order", &none), Ok(GuestHeader::Plain));
        assert_eq!(guest_header("nats-msg-id", &none), Ok(GuestHeader::MsgId));
        for name in [
            "X-Nats-Msg-Id",
            "Nats-Rollup",
            "nats-expected-last-sequence",
            "Nats-TTL",
            "Nats-Batch-Id",
            "Wharf-Reason-Kind",
            "wharf-source-stream",
        ] {
            assert!(guest_header(name, &none).is_err(), "{name}");
        }
        let ttl = vec!["Nats-TTL".to_string()];
        assert_eq!(guest_header("nats-ttl", &ttl), Ok(GuestHeader::Plain));
        assert!(guest_header("Wharf-X", &["Wharf-X".to_string()]).is_err());
    }
}
