//! Requests from other hosts' worlds (wasmCloud's `consumer.request`,
//! `wasi:messaging`'s `request-reply.request`): the one call that is not
//! staged. A request is sent while the guest runs, through the handler's
//! `crate::request::Requester`, so it is allowed only to the subjects the
//! handler's `request` setting names, at most `max_requests` times per
//! delivery, each waiting at most `request_timeout`; its effect happens at
//! least once, whatever becomes of the delivery.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use bytes::Bytes;

use crate::config::HandlerConfig;
use crate::request::{Reply, RequestFailure, RequesterCell};
use crate::sandbox::bindings::Header;

/// What every Store of one handler shares: its settings and the requester.
#[derive(Debug, Clone)]
pub(crate) struct RequestAccess {
    handler: Arc<HandlerConfig>,
    requester: RequesterCell,
}

impl RequestAccess {
    pub(crate) fn new(handler: Arc<HandlerConfig>, requester: RequesterCell) -> RequestAccess {
        RequestAccess { handler, requester }
    }
}

/// Why a request was refused or got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The handler's `request` setting does not allow the subject.
    NotAllowed(String),
    /// The subject or a header is not valid.
    Invalid(String),
    /// The delivery has made `max_requests` requests already.
    Limit(String),
    /// No reply came in time.
    TimedOut(String),
    /// Nobody answered, or the server could not be reached.
    Failed(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotAllowed(m) => write!(f, "request not allowed: {m}"),
            RequestError::Invalid(m) => write!(f, "invalid request: {m}"),
            RequestError::Limit(m) => write!(f, "request limit: {m}"),
            RequestError::TimedOut(m) => write!(f, "request timed out: {m}"),
            RequestError::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

/// The requests of one delivery.
#[derive(Debug)]
pub(crate) struct Requests {
    access: RequestAccess,
    made: usize,
}

impl Requests {
    pub(crate) fn new(access: RequestAccess) -> Requests {
        Requests { access, made: 0 }
    }

    /// Starts the next delivery's count (reuse mode).
    pub(crate) fn reset(&mut self) {
        self.made = 0;
    }

    /// Sends a request and waits for its reply, for at most the guest's
    /// `timeout` cut to the handler's `request_timeout`.
    pub(crate) async fn send(
        &mut self,
        subject: String,
        headers: Vec<Header>,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Reply, RequestError> {
        let handler = &self.access.handler;
        let settings = &handler.compat;
        crate::subject::validate(&subject, false).map_err(RequestError::Invalid)?;
        if settings.request.patterns().is_empty() {
            return Err(RequestError::NotAllowed(format!(
                "handler \"{}\" lists no subjects in its `request` setting; a request is sent \
                 at once, not held back until the message succeeds, so each subject must be \
                 allowed by name",
                handler.name
            )));
        }
        if !settings.request.allows(&subject) {
            return Err(RequestError::NotAllowed(format!(
                "subject \"{subject}\" is not in handler \"{}\"'s `request` list",
                handler.name
            )));
        }
        if self.made >= settings.max_requests {
            return Err(RequestError::Limit(format!(
                "at most {} requests per delivery (`max_requests`)",
                settings.max_requests
            )));
        }
        let headers = request_headers(headers, &handler.allow_headers)?;
        let timeout = timeout
            .map_or(settings.request_timeout, |t| {
                t.min(settings.request_timeout)
            })
            .max(Duration::from_millis(1));
        self.made += 1;
        let Some(requester) = self.access.requester.get().cloned() else {
            return Err(RequestError::Failed("not connected to a server".into()));
        };
        tracing::debug!(handler = %handler.name, subject, ?timeout, "guest request");
        requester
            .request(subject.clone(), headers, Bytes::from(payload), timeout)
            .await
            .map_err(|failure| match failure {
                RequestFailure::TimedOut => RequestError::TimedOut(format!(
                    "no reply on \"{subject}\" within {}",
                    humantime::format_duration(timeout)
                )),
                RequestFailure::NoResponders => {
                    RequestError::Failed(format!("no responders on \"{subject}\""))
                }
                RequestFailure::Failed(e) => {
                    RequestError::Failed(format!("requesting on \"{subject}\": {e}"))
                }
            })
    }
}

/// A request's headers under the handler's header policy: no `Wharf-*`,
/// no `Nats-*` but those `allow_headers` names (and `Nats-Msg-Id`), a name
/// and no control characters.
fn request_headers(headers: Vec<Header>, allowed: &[String]) -> Result<HeaderMap, RequestError> {
    let mut map = HeaderMap::new();
    for h in headers {
        crate::headers::guest_header(&h.name, allowed).map_err(RequestError::NotAllowed)?;
        let name = HeaderName::try_from(h.name.as_str())
            .map_err(|_| RequestError::Invalid(format!("invalid header name \"{}\"", h.name)))?;
        for v in h.values {
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RequestError::Invalid(format!(
                    "header \"{}\" has a control character in its value",
                    h.name
                )));
            }
            map.append(name.clone(), HeaderValue::from(v));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn requests(extra: &str) -> Requests {
        let config = Config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
                 dead_letter = \"dlq.h\"\n{extra}"
            ),
        )
        .unwrap();
        let handler = Arc::new(config.handlers[0].clone());
        Requests::new(RequestAccess::new(handler, RequesterCell::default()))
    }

    fn send(r: &mut Requests, subject: &str, headers: Vec<Header>) -> RequestError {
        let f = r.send(subject.into(), headers, b"x".to_vec(), None);
        futures::executor::block_on(f).unwrap_err()
    }

    /// Requests go only to the subjects the handler lists, within its
    /// count, under the header policy; refusals count for nothing.
    #[test]
    fn requests_are_allowed_by_name_and_counted() {
        let mut none = requests("");
        assert!(matches!(
            send(&mut none, "inventory.get", vec![]),
            RequestError::NotAllowed(m) if m.contains("`request` setting")
        ));
        let mut r = requests("request = [\"inventory.>\"]\nmax_requests = 1");
        assert!(matches!(
            send(&mut r, "billing.x", vec![]),
            RequestError::NotAllowed(_)
        ));
        assert!(matches!(
            send(&mut r, "inventory.*", vec![]),
            RequestError::Invalid(_)
        ));
        let wharf = Header {
            name: "Wharf-Handler".into(),
            values: vec!["x".into()],
        };
        assert!(matches!(
            send(&mut r, "inventory.get", vec![wharf]),
            RequestError::NotAllowed(_)
        ));
        // Allowed, but not connected: it counts, and the next one is over the limit.
        assert!(matches!(
            send(&mut r, "inventory.get", vec![]),
            RequestError::Failed(_)
        ));
        assert!(matches!(
            send(&mut r, "inventory.get", vec![]),
            RequestError::Limit(_)
        ));
        r.reset();
        assert!(matches!(
            send(&mut r, "inventory.get", vec![]),
            RequestError::Failed(_)
        ));
    }
}
