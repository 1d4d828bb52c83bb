//! What a delivery asks the host to do once it has succeeded, staged while
//! the guest runs: its outputs. The sandbox fills these in
//! (`crate::sandbox::host::publish`), the effects release them
//! (`crate::effects::outbox`).

use async_nats::HeaderMap;
use bytes::Bytes;

/// One message waiting in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    /// The guest's headers, checked against the handler's policy.
    pub headers: HeaderMap,
    /// Whether the guest set its own `Nats-Msg-Id`, which then wins.
    pub has_msg_id: bool,
}
