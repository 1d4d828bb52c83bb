//! W3C trace context for deliveries: the input's `traceparent` is the
//! parent of the delivery's span, and the delivery's span is the parent of
//! every output. The span's ids are recorded on the `delivery` tracing span
//! (`trace_id`, `span_id`, `parent_span_id`), so logs can be joined to
//! traces; with the `otlp` feature the span is also exported.

/// Longest `tracestate` carried over to outputs (the W3C limit is 512 bytes).
pub(crate) const MAX_TRACESTATE: usize = 512;

/// A trace id and a span id, as in a `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// W3C trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl SpanContext {
    /// Parses a `traceparent` header value; `None` when it is not valid.
    pub(crate) fn parse(value: &str) -> Option<SpanContext> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || !hex_ok(version) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = decode::<16>(trace)?;
        let span_id = decode::<8>(span)?;
        let flags = u8::from_str_radix(flags, 16)
            .ok()
            .filter(|_| flags.len() == 2)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(SpanContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A child of `parent` (same trace, new span id), or the root of a new
    /// trace when there is no parent.
    pub(crate) fn child_of(parent: Option<&SpanContext>) -> SpanContext {
        let span_id = nonzero::<8>();
        match parent {
            Some(p) => SpanContext {
                trace_id: p.trace_id,
                span_id,
                flags: p.flags,
            },
            None => SpanContext {
                trace_id: nonzero::<16>(),
                span_id,
                flags: ROOT_FLAGS,
            },
        }
    }

    /// The `traceparent` header value naming this span as the parent.
    pub(crate) fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }

    pub(crate) fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub(crate) fn span_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// Flags of a trace the host starts itself: sampled when spans are
/// exported, so that downstream services record theirs too.
const ROOT_FLAGS: u8 = if cfg!(feature = "otlp") { 1 } else { 0 };

fn hex_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !hex_ok(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for byte in out.iter_mut() {
            *byte = fastrand::u8(..);
        }
        if out != [0; N] {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let p = SpanContext::parse(PARENT).unwrap();
        assert_eq!(p.traceparent(), PARENT);
        assert_eq!(p.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(SpanContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let p = SpanContext::parse(PARENT).unwrap();
        let c = SpanContext::child_of(Some(&p));
        assert_eq!(c.trace_id, p.trace_id);
        assert_ne!(c.span_id, p.span_id);
        assert_eq!(c.flags, 1);
        let root = SpanContext::child_of(None);
        assert_ne!(root.trace_id, [0; 16]);
    }
}
