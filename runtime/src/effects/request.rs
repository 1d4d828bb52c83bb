//! Requests a guest sends while it runs (another host's world's
//! `request`), on the host's NATS connection: the `crate::request::Requester`
//! the sandbox calls through.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, Request};
use bytes::Bytes;

use crate::request::{Reply, RequestFailure, RequestFuture, Requester};

/// Requests on the host's connection, each with its own timeout.
pub(crate) struct NatsRequester(pub async_nats::Client);

impl Requester for NatsRequester {
    fn request<'a>(
        &'a self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        timeout: Duration,
    ) -> RequestFuture<'a> {
        Box::pin(async move {
            let request = Request::new()
                .payload(payload)
                .headers(headers)
                .timeout(Some(timeout));
            match self.0.send_request(subject, request).await {
                Ok(reply) => Ok(Reply {
                    subject: reply.subject.to_string(),
                    payload: reply.payload,
                    headers: reply.headers.unwrap_or_default(),
                }),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::TimedOut => RequestFailure::TimedOut,
                    RequestErrorKind::NoResponders => RequestFailure::NoResponders,
                    _ => RequestFailure::Failed(e.to_string()),
                }),
            }
        })
    }
}
