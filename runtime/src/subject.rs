//! The NATS subject grammar: validating subjects and patterns, wildcard
//! matching, and the rules of a handler's publish allow-list.
//!
//! A wildcard in an allow-list never reaches the server's control plane or
//! other clients' reply inboxes: subjects whose first token starts with `$`
//! or `_INBOX` are allowed only when listed literally, and the JetStream
//! API, acks and system subjects (`$JS.…`, `$JSC.…`, `$SYS.…`, `$NRG.…`),
//! key-value buckets and object stores (`$KV.…`, `$O.…`, which a guest
//! reaches through its `kv` table, staged and exactly once) and Wharf's
//! own effect records (`$WHARF.…`) not even then.

/// The longest subject Wharf publishes to or accepts in its configuration.
/// The server refuses a protocol line over 4 KiB by dropping the whole
/// connection, so a subject must stay far below that.
pub const MAX_LEN: usize = 512;

/// Checks a subject (or, with `wildcards`, a subject pattern) against NATS rules.
pub fn validate(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject must not be empty".into());
    }
    if subject.len() > MAX_LEN {
        return Err(format!(
            "a subject of {} bytes is longer than the {MAX_LEN} Wharf allows",
            subject.len()
        ));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("\"{subject}\" has an empty token"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("\"{subject}\" contains whitespace"));
        }
        let is_wild = *token == "*" || *token == ">";
        if (token.contains('*') || token.contains('>')) && !is_wild {
            return Err(format!("\"{subject}\": wildcards must be whole tokens"));
        }
        if is_wild && !wildcards {
            return Err(format!(
                "\"{subject}\" must be a literal subject, without wildcards"
            ));
        }
        if *token == ">" && i != tokens.len() - 1 {
            return Err(format!("\"{subject}\": '>' must be the last token"));
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern` with NATS wildcard semantics (`*` one
/// token, `>` one or more at the end).
pub fn matches(pattern: &str, subject: &str) -> bool {
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

/// Whether two patterns can match a common subject, so that one subject may
/// be delivered through both.
pub fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Subjects owned by the server itself: the JetStream API and acks, flow
/// control, clustering and system accounts. No guest may publish there.
const FORBIDDEN_ROOTS: [&str; 4] = ["$JS", "$JSC", "$SYS", "$NRG"];

/// Whether the subject lives in a reserved namespace that a wildcard must not reach.
pub(crate) fn is_reserved(subject: &str) -> bool {
    let root = subject.split('.').next().unwrap_or_default();
    root.starts_with('$') || root.starts_with("_INBOX")
}

/// Roots a guest may never publish under, even listed literally: besides
/// the server's own, buckets and object stores (written only through the
/// `kv` capability) and Wharf's effect records.
const GUEST_FORBIDDEN_ROOTS: [&str; 3] = ["$KV", "$O", "$WHARF"];

/// Whether a guest may never publish to `subject`.
pub(crate) fn is_forbidden_to_guests(subject: &str) -> bool {
    let root = subject.split('.').next().unwrap_or_default();
    is_forbidden(subject) || GUEST_FORBIDDEN_ROOTS.contains(&root)
}

pub(crate) fn is_forbidden(subject: &str) -> bool {
    let root = subject.split('.').next().unwrap_or_default();
    FORBIDDEN_ROOTS.contains(&root)
}

/// The subjects a handler's guest may publish to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<String>,
}

impl AllowList {
    /// Checks every pattern; the error says which one and why.
    pub fn new(patterns: Vec<String>) -> Result<AllowList, String> {
        for p in &patterns {
            validate(p, true)?;
            if is_forbidden(p) {
                return Err(format!(
                    "\"{p}\" is reserved to the server (JetStream API, acks, system subjects); \
                     guests may never publish there"
                ));
            }
            if is_forbidden_to_guests(p) {
                return Err(format!(
                    "\"{p}\" is a key-value bucket's, an object store's or Wharf's own; guests \
                     reach buckets through the handler's `kv` table, where writes are staged \
                     and applied exactly once"
                ));
            }
            if is_reserved(p) && p.contains(['*', '>']) {
                return Err(format!(
                    "\"{p}\": subjects under `$…` or `_INBOX…` may only be listed literally, \
                     without wildcards"
                ));
            }
        }
        Ok(AllowList { patterns })
    }

    /// Whether a guest may publish to `subject` (a valid literal subject).
    /// Wildcards never match reserved subjects; only a literal entry does.
    pub fn allows(&self, subject: &str) -> bool {
        if is_forbidden_to_guests(subject) {
            return false;
        }
        if is_reserved(subject) {
            return self.patterns.iter().any(|p| p == subject);
        }
        self.patterns.iter().any(|p| matches(p, subject))
    }

    /// The patterns, as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The literal entries: subjects that must each be stored by a stream.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .filter(|p| !p.contains(['*', '>']))
            .map(String::as_str)
    }

    /// Whether some subject matching `pattern` would be allowed.
    pub fn reaches(&self, pattern: &str) -> bool {
        self.patterns.iter().any(|p| {
            if is_reserved(pattern) || is_reserved(p) {
                p == pattern
            } else {
                overlap(p, pattern)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_nats_wildcards() {
        assert!(matches("orders.>", "orders.a.b"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches("orders.*.new", "orders.eu.new"));
        assert!(!matches("orders.*", "orders.eu.new"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(validate("a.>.b", true).is_err());
        assert!(validate("a.b*", true).is_err());
        assert!(validate("a.*", false).is_err());
        assert!(validate("a..b", false).is_err());
        assert!(validate(&format!("out.{}", "a".repeat(600)), false).is_err());
    }

    #[test]
    fn overlapping_patterns() {
        assert!(overlap(">", "dlq.x"));
        assert!(overlap("dlq.*", "dlq.x"));
        assert!(overlap("dlq.*", "*.x"));
        assert!(!overlap("dlq.*", "dlq.x.y"));
        assert!(!overlap("out.>", "dlq.x"));
    }

    #[test]
    fn wildcards_never_reach_reserved_subjects() {
        let all = AllowList::new(vec![">".into()]).unwrap();
        for s in [
            "$JS.API.STREAM.PURGE.ORDERS",
            "$JS.ACK.IN.c.1.2.3.4.5",
            "$SYS.REQ.SERVER.PING",
            "$KV.bucket.key",
            "_INBOX.abc",
            "_INBOX_custom.x",
        ] {
            assert!(!all.allows(s), "{s}");
        }
        assert!(all.allows("orders.new"));
        let star = AllowList::new(vec!["*.>".into()]).unwrap();
        assert!(!star.allows("$KV.bucket.key"));
    }

    #[test]
    fn reserved_subjects_only_literally_and_never_the_server_s_own() {
        let other = AllowList::new(vec!["$MINE.topic".into()]).unwrap();
        assert!(other.allows("$MINE.topic"));
        assert!(!other.allows("$MINE.other"));
        for bad in [
            "$KV.bucket.key",
            "$KV.bucket.>",
            "$O.store.chunks.x",
            "$WHARF.fx.IN.c.1",
            "_INBOX.*",
            "$JS.API.>",
            "$JS.ACK.>",
            "$SYS.>",
            "$JS.API.INFO",
        ] {
            assert!(AllowList::new(vec![bad.into()]).is_err(), "{bad}");
        }
    }
}
