//! One delivery's outbox in the test host, checked the way the host's
//! `publish` import checks it (`runtime/src/sandbox/host/publish.rs`) where
//! that is cheap to mirror: subject syntax, the allow-list, reserved
//! headers, header values and the outbox's limits, counting the headers the
//! host adds to each output.

use super::{Published, Settings};
use crate::__bindings::wharf::handler::types::{Header, PublishError};

/// Subject roots no guest may ever publish to, allowed or not.
const FORBIDDEN_ROOTS: [&str; 4] = ["$JS", "$JSC", "$SYS", "$NRG"];

/// The longest subject the host takes.
const MAX_SUBJECT_LEN: usize = 512;

/// Bytes a header block takes on the wire, as the server counts them.
fn header_wire_size<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut size = "NATS/1.0\r\n\r\n".len();
    for (name, value) in pairs {
        size += name.len() + 2 + value.len() + 2;
    }
    size as u64
}

/// What the headers the host adds to one output take at most: its id, the
/// source trail, `traceparent` and the longest `tracestate` it carries over.
fn host_header_bytes(stream: &str, consumer: &str) -> u64 {
    let max = u64::MAX.to_string();
    let id = format!("wharf:{stream}:{consumer}:{max}:99999");
    let trace = "00-".repeat(19);
    header_wire_size([
        ("Nats-Msg-Id", id.as_str()),
        ("Wharf-Source-Stream", stream),
        ("Wharf-Source-Sequence", max.as_str()),
        ("traceparent", trace.as_str()),
    ]) + 512
        + "tracestate".len() as u64
        + 4
}

/// Why `subject` is not a literal NATS subject, in the host's words.
fn subject_problem(subject: &str) -> Option<String> {
    if subject.is_empty() {
        return Some("subject must not be empty".into());
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Some(format!(
            "a subject of {} bytes is longer than the {MAX_SUBJECT_LEN} Wharf allows",
            subject.len()
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Some(format!("\"{subject}\" has an empty token"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(format!("\"{subject}\" contains whitespace"));
        }
        if (token.contains('*') || token.contains('>')) && token != "*" && token != ">" {
            return Some(format!("\"{subject}\": wildcards must be whole tokens"));
        }
        if token == "*" || token == ">" {
            return Some(format!(
                "\"{subject}\" must be a literal subject, without wildcards"
            ));
        }
    }
    None
}

/// Whether `subject` matches `pattern` with NATS wildcards.
fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether the allow-list lets a handler publish to `subject`: wildcards
/// never reach `$…` or `_INBOX…` subjects (only a literal entry does), and
/// `$JS`, `$JSC`, `$SYS` and `$NRG` never.
pub(crate) fn allows(allow: &[String], subject: &str) -> bool {
    let root = subject.split('.').next().unwrap_or_default();
    if FORBIDDEN_ROOTS.contains(&root) {
        return false;
    }
    if root.starts_with('$') || root.starts_with("_INBOX") {
        return allow.iter().any(|p| p == subject);
    }
    allow.iter().any(|p| matches(p, subject))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// One delivery's outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) published: Vec<Published>,
    bytes: u64,
    host_bytes: u64,
}

impl Outbox {
    /// An empty outbox for a message from `stream`, delivered by `consumer`.
    pub(crate) fn new(stream: &str, consumer: &str) -> Outbox {
        Outbox {
            published: Vec::new(),
            bytes: 0,
            host_bytes: host_header_bytes(stream, consumer),
        }
    }

    /// Adds a message, or says why the host would refuse it.
    pub(crate) fn push(
        &mut self,
        settings: &Settings,
        subject: &str,
        payload: &[u8],
        headers: &[Header],
    ) -> Result<(), PublishError> {
        if let Some(problem) = subject_problem(subject) {
            return Err(PublishError::Invalid(problem));
        }
        if !allows(&settings.allow, subject) {
            return Err(PublishError::NotAllowed(format!(
                "subject \"{subject}\" is not in handler \"{}\"'s publish allow-list {:?} \
                 (its publish setting in wharf.toml; tests give it with TestHost::allow)",
                settings.handler_name, settings.allow
            )));
        }
        if self.published.len() >= settings.max_outbox_messages {
            return Err(PublishError::OutboxFull(format!(
                "at most {} messages per delivery",
                settings.max_outbox_messages
            )));
        }
        let pairs = check_headers(settings, headers)?;
        let size = subject.len() as u64
            + payload.len() as u64
            + header_wire_size(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            + self.host_bytes;
        if self.bytes + size > settings.max_outbox_bytes {
            return Err(PublishError::OutboxFull(format!(
                "at most {} bytes per delivery, the host's headers included",
                settings.max_outbox_bytes
            )));
        }
        self.bytes += size;
        self.published.push(Published {
            subject: subject.to_string(),
            payload: payload.to_vec(),
            headers: pairs,
        });
        Ok(())
    }
}

/// The host's header policy: the (name, value) pairs, or its refusal.
fn check_headers(
    settings: &Settings,
    headers: &[Header],
) -> Result<Vec<(String, String)>, PublishError> {
    let mut pairs = Vec::new();
    let mut has_msg_id = false;
    for h in headers {
        let name = h.name.as_str();
        if starts_with_ignore_case(name, "Wharf-") {
            return Err(PublishError::NotAllowed(format!(
                "header \"{name}\" is reserved: Wharf-* headers are set by the host"
            )));
        }
        let msg_id = name.eq_ignore_ascii_case("Nats-Msg-Id");
        if !msg_id
            && name.to_ascii_lowercase().contains("nats-")
            && !settings
                .allow_headers
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
        {
            return Err(PublishError::NotAllowed(format!(
                "header \"{name}\" changes what JetStream does with messages; the handler's \
                 `allow_headers` must name it"
            )));
        }
        if name.is_empty() {
            return Err(PublishError::Invalid("a header needs a name".into()));
        }
        for v in &h.values {
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(PublishError::Invalid(format!(
                    "header \"{name}\" has a control character in its value"
                )));
            }
        }
        if msg_id {
            match h.values.as_slice() {
                [id] if starts_with_ignore_case(id.trim_start(), "wharf") => {
                    return Err(PublishError::NotAllowed(
                        "a Nats-Msg-Id starting with \"wharf\" is the host's: choose another id"
                            .into(),
                    ));
                }
                [id] if !id.trim().is_empty() && !has_msg_id => {
                    // The host stores the id under JetStream's spelling.
                    pairs.push(("Nats-Msg-Id".to_string(), id.clone()));
                    has_msg_id = true;
                    continue;
                }
                _ => {
                    return Err(PublishError::Invalid(
                        "header \"Nats-Msg-Id\" must have exactly one non-empty value".into(),
                    ));
                }
            }
        }
        if name.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
            return Err(PublishError::Invalid(format!(
                "invalid header name \"{name}\""
            )));
        }
        for v in &h.values {
            pairs.push((name.to_string(), v.clone()));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, values: &[&str]) -> Header {
        Header {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// The allow-list decides as the host does: wildcards, never `$JS…`,
    /// `$…` and `_INBOX…` only literally.
    #[test]
    fn the_allow_list_decides_as_the_host_does() {
        let allow: Vec<String> = ["out.>", "a.*.c", "$KV.b.k", ">"]
            .map(String::from)
            .to_vec();
        for ok in ["out.x", "out.x.y", "a.b.c", "$KV.b.k", "anything"] {
            assert!(allows(&allow, ok), "{ok}");
        }
        for refused in ["$JS.API.INFO", "$KV.b.other", "_INBOX.x", "$SYS.x"] {
            assert!(!allows(&allow, refused), "{refused}");
        }
        assert!(!allows(&[], "out.x"));
    }

    /// Refusals name what the host names: subject, allow-list, limits, headers.
    #[test]
    fn publishes_are_refused_as_the_host_refuses_them() {
        let mut s = Settings {
            allow: vec!["out.>".into()],
            max_outbox_messages: 1,
            ..Settings::default()
        };
        let mut o = Outbox::new("TEST", "test");
        assert!(matches!(
            o.push(&s, "out.*", b"", &[]),
            Err(PublishError::Invalid(_))
        ));
        assert!(matches!(
            o.push(&s, "other", b"", &[]),
            Err(PublishError::NotAllowed(_))
        ));
        assert!(matches!(
            o.push(&s, "out.a", b"", &[header("Wharf-Reason", &["x"])]),
            Err(PublishError::NotAllowed(_))
        ));
        assert!(matches!(
            o.push(&s, "out.a", b"", &[header("Nats-Rollup", &["sub"])]),
            Err(PublishError::NotAllowed(_))
        ));
        assert!(matches!(
            o.push(&s, "out.a", b"", &[header("nats-msg-id", &["a", "b"])]),
            Err(PublishError::Invalid(_))
        ));
        assert!(matches!(
            o.push(&s, "out.a", b"", &[header("k", &["a\nb"])]),
            Err(PublishError::Invalid(_))
        ));
        o.push(&s, "out.a", b"x", &[header("nats-msg-id", &["order-7"])])
            .unwrap();
        assert_eq!(
            o.published[0].headers,
            [("Nats-Msg-Id".to_string(), "order-7".to_string())]
        );
        assert!(matches!(
            o.push(&s, "out.a", b"", &[]),
            Err(PublishError::OutboxFull(_))
        ));
        s.max_outbox_messages = 100;
        s.max_outbox_bytes = 1000;
        let mut o = Outbox::new("TEST", "test");
        assert!(matches!(
            o.push(&s, "out.a", &[0; 600], &[]),
            Err(PublishError::OutboxFull(_))
        ));
    }
}
