//! Request/reply as the layers share it: a reply, why a request failed,
//! and the `Requester` the sandbox's request capability calls through
//! (implemented on the NATS client by `crate::effects::request`, handed
//! down by `crate::service`, so the sandbox imports no NATS code).
//!
//! A request is the one thing a guest does that is not staged: it is sent
//! while the guest runs, so its effect happens at least once, whatever
//! becomes of the delivery.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

/// The reply to a request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The subject the reply arrived on (the requester's inbox).
    pub subject: String,
    pub payload: Bytes,
    pub headers: HeaderMap,
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestFailure {
    /// No reply within the timeout.
    TimedOut,
    /// Nobody listens on the subject.
    NoResponders,
    /// The server could not be reached, or refused the request.
    Failed(String),
}

/// A boxed future, as a trait object's method returns it.
pub(crate) type RequestFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Reply, RequestFailure>> + Send + 'a>>;

/// Sends requests and waits for their replies.
pub(crate) trait Requester: Send + Sync {
    /// Sends `payload` to `subject` and waits up to `timeout` for one reply.
    fn request<'a>(
        &'a self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        timeout: Duration,
    ) -> RequestFuture<'a>;
}

/// The requester a handler's guests use, set once the host has connected
/// (`wharf check` never connects; its probes send nothing).
#[derive(Clone, Default)]
pub(crate) struct RequesterCell(Arc<OnceLock<Arc<dyn Requester>>>);

impl std::fmt::Debug for RequesterCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequesterCell")
    }
}

impl RequesterCell {
    pub(crate) fn set(&self, requester: Arc<dyn Requester>) {
        let _ = self.0.set(requester);
    }

    pub(crate) fn get(&self) -> Option<&Arc<dyn Requester>> {
        self.0.get()
    }
}
