//! A handler's settings for components written for other hosts' worlds
//! (wasmCloud messaging, WASI messaging): what their error result means,
//! which subjects their requests may reach, and which client names
//! `connect` accepts. Wharf's own worlds ignore them.

use std::time::Duration;

use super::{ConfigError, Site};
use crate::subject::{self, AllowList};

/// How long a request waits for its reply unless `request_timeout` says otherwise.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests one delivery may make unless `max_requests` says otherwise.
const MAX_REQUESTS: usize = 10;

/// What a guest's error result does to the message. Those worlds' errors
/// (`result<_, string>`, `wasi:messaging`'s `error`) do not say whether
/// trying again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Retry with the handler's backoff; dead-letter (`exhausted`, with the
    /// error as the reason) on the final attempt.
    Retry,
    /// Dead-letter (`rejected`, with the error as the reason) at once.
    Reject,
}

/// The settings of a handler whose component implements another host's world.
#[derive(Debug, Clone, PartialEq)]
pub struct CompatConfig {
    /// What the guest's error result does.
    pub on_error: OnError,
    /// Subjects the guest may send requests to; they run at once, not held
    /// back until the delivery succeeds. Empty: requests are refused.
    pub request: AllowList,
    /// The longest a request waits for its reply.
    pub request_timeout: Duration,
    /// Most requests one delivery may make.
    pub max_requests: usize,
    /// The names `wasi:messaging`'s `client.connect` accepts.
    pub messaging_clients: Vec<String>,
}

impl Default for CompatConfig {
    fn default() -> CompatConfig {
        CompatConfig {
            on_error: OnError::Retry,
            request: AllowList::default(),
            request_timeout: REQUEST_TIMEOUT,
            max_requests: MAX_REQUESTS,
            messaging_clients: Vec::new(),
        }
    }
}

/// The raw fields, as `[[handler]]` spells them.
pub(super) struct RawCompat {
    pub on_error: Option<String>,
    pub request: Vec<String>,
    pub request_timeout: Option<String>,
    pub max_requests: Option<usize>,
    pub messaging_clients: Vec<String>,
}

pub(super) fn validate(
    site: &Site<'_>,
    raw: RawCompat,
    dead_letter: Option<&str>,
) -> Result<CompatConfig, ConfigError> {
    let on_error = match raw.on_error.as_deref() {
        None | Some("retry") => OnError::Retry,
        Some("reject") => OnError::Reject,
        Some(other) => {
            return Err(site.err(
                "on_error",
                format!("unknown value \"{other}\"; expected \"retry\" or \"reject\""),
            ));
        }
    };
    for pattern in &raw.request {
        // A request is sent at once and its reply comes to the host's inbox:
        // a key-value or object-store subject would be a write that is not
        // staged, and an inbox another client's reply.
        if subject::is_reserved(pattern) {
            return Err(site.err(
                "request",
                format!(
                    "\"{pattern}\": requests may not reach `$…` or `_INBOX…` subjects \
                     (the server's API, key-value buckets, other clients' inboxes)"
                ),
            ));
        }
    }
    let request = AllowList::new(raw.request).map_err(|e| site.err("request", e))?;
    if let Some(dl) = dead_letter
        && request.reaches(dl)
    {
        return Err(site.err(
            "request",
            format!(
                "the list covers the handler's own dead-letter subject \"{dl}\"; \
                 a guest could forge dead-letter copies, so narrow it"
            ),
        ));
    }
    let request_timeout = site.duration(
        "request_timeout",
        raw.request_timeout.as_deref(),
        REQUEST_TIMEOUT,
    )?;
    if request_timeout < Duration::from_millis(1) {
        return Err(site.err("request_timeout", "must be at least 1ms"));
    }
    let max_requests = raw.max_requests.unwrap_or(MAX_REQUESTS);
    if max_requests > 1000 {
        return Err(site.err("max_requests", "must be between 0 and 1000"));
    }
    for name in &raw.messaging_clients {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(site.err(
                "messaging_clients",
                format!("{name:?} is not a client name: 1 to 256 characters, no controls"),
            ));
        }
    }
    Ok(CompatConfig {
        on_error,
        request,
        request_timeout,
        max_requests,
        messaging_clients: raw.messaging_clients,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(extra: &str) -> Result<CompatConfig, String> {
        Config::parse(
            Path::new("w.toml"),
            &format!(
                "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
                 dead_letter = \"dlq.h\"\n{extra}"
            ),
        )
        .map(|c| c.handlers[0].compat.clone())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_retry_errors_and_allow_no_requests_or_clients() {
        let c = parse("").unwrap();
        assert_eq!(c, CompatConfig::default());
        assert_eq!(c.on_error, OnError::Retry);
        assert!(c.request.patterns().is_empty());
        assert_eq!(
            (c.request_timeout, c.max_requests),
            (REQUEST_TIMEOUT, MAX_REQUESTS)
        );
        let c = parse(
            "on_error = \"reject\"\nrequest = [\"inventory.>\"]\nrequest_timeout = \"250ms\"\n\
             max_requests = 3\nmessaging_clients = [\"default\"]",
        )
        .unwrap();
        assert_eq!(c.on_error, OnError::Reject);
        assert!(c.request.allows("inventory.get"));
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!((c.max_requests, c.messaging_clients.len()), (3, 1));
    }

    /// Each refusal names the file, the handler and the field.
    #[test]
    fn bad_settings_are_refused_by_field() {
        for (extra, field) in [
            ("on_error = \"ignore\"", "`on_error`"),
            ("request = [\"$KV.b.k\"]", "`request`"),
            ("request = [\"_INBOX.x\"]", "`request`"),
            ("request = [\"$JS.API.>\"]", "`request`"),
            ("request = [\"dlq.*\"]", "`request`"),
            ("request = [\"a..b\"]", "`request`"),
            ("request_timeout = \"soon\"", "`request_timeout`"),
            ("max_requests = 5000", "`max_requests`"),
            ("messaging_clients = [\"\"]", "`messaging_clients`"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(
                e.starts_with("config w.toml: handler \"h\": field ") && e.contains(field),
                "{extra}: {e}"
            );
        }
    }
}
