//! The WASI messaging proposal, `wasi:messaging@0.2.0-draft`: a delivery
//! becomes a host-held `message` (its subject as the topic, its payload,
//! its headers as metadata and `Content-Type` as the content type), the
//! handler's `error` becomes `Outcome::Errored` (or a reject, with
//! `on_error = "reject"`), `send` goes into the delivery's outbox with the
//! metadata as headers under the handler's header policy, `connect`
//! accepts only the names in the handler's `messaging_clients`, `request`
//! is sent at once to the subjects its `request` setting allows, and
//! `reply` is refused: a JetStream message's reply subject acks it.

use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::Resource;

use super::Imports;
use crate::sandbox::bindings::{Header, Message, PublishError};
use crate::sandbox::host::request::RequestError;
use crate::sandbox::store::StoreState;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat",
        world: "wharf:compat/wasi-messaging",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:messaging/types.client": crate::sandbox::worlds::wasi_messaging::Client,
            "wasi:messaging/types.message": crate::sandbox::worlds::wasi_messaging::HostMessage,
            "wasi:messaging/request-reply.request-options": crate::sandbox::worlds::wasi_messaging::RequestOptions,
        },
    });
}

use bindings::wasi::messaging::{producer, request_reply, types};
use types::Error;

/// A client: only its name, which the handler's config allowed.
pub struct Client {
    name: String,
}

/// A message held by the host.
pub struct HostMessage {
    topic: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
    metadata: Option<Vec<(String, String)>>,
    /// Bytes not counted against the delivery's limit: the size of the
    /// message the host handed the guest, bounded by the server.
    allowance: usize,
}

impl HostMessage {
    fn size(&self) -> usize {
        self.topic.as_ref().map_or(0, String::len)
            + self.content_type.as_ref().map_or(0, String::len)
            + self.data.len()
            + self
                .metadata
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// The bytes counted against the delivery's limit.
    fn counted(&self) -> usize {
        self.size().saturating_sub(self.allowance)
    }

    /// The message as NATS headers: each metadata pair one value, and the
    /// content type as `Content-Type`, replacing any such pair.
    fn headers(&self) -> Vec<Header> {
        let mut headers: Vec<Header> = Vec::new();
        let is_content_type = |k: &str| k.eq_ignore_ascii_case("content-type");
        for (key, value) in self.metadata.iter().flatten() {
            if self.content_type.is_some() && is_content_type(key) {
                continue;
            }
            match headers.iter_mut().find(|h| h.name == *key) {
                Some(h) => h.values.push(value.clone()),
                None => headers.push(Header {
                    name: key.clone(),
                    values: vec![value.clone()],
                }),
            }
        }
        if let Some(ct) = &self.content_type {
            headers.push(Header {
                name: "Content-Type".into(),
                values: vec![ct.clone()],
            });
        }
        headers
    }
}

/// Request options: only the timeout matters to Wharf.
#[derive(Default)]
pub struct RequestOptions {
    timeout: Option<Duration>,
}

impl Imports<'_> {
    /// Changes a message, counting its growth against the delivery's limit.
    fn change(
        &mut self,
        r: &Resource<HostMessage>,
        f: impl FnOnce(&mut HostMessage),
    ) -> wasmtime::Result<()> {
        let m = self.state.get_mut(r)?;
        let before = m.counted();
        f(m);
        let after = m.counted();
        self.state.grow(before, after)
    }

    fn take_message(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<HostMessage> {
        self.state.take(r, HostMessage::counted)
    }
}

impl types::Host for Imports<'_> {}

impl types::HostClient for Imports<'_> {
    async fn connect(&mut self, name: String) -> wasmtime::Result<Result<Resource<Client>, Error>> {
        let handler = &self.state.handler;
        if !handler.compat.messaging_clients.contains(&name) {
            return Ok(Err(Error::PermissionDenied(format!(
                "client \"{name}\" is not in handler \"{}\"'s `messaging_clients` {:?}",
                handler.name, handler.compat.messaging_clients
            ))));
        }
        let bytes = name.len();
        Ok(Ok(self.state.push(Client { name }, bytes)?))
    }

    async fn disconnect(&mut self, c: Resource<Client>) -> wasmtime::Result<Result<(), Error>> {
        self.state.get(&c)?;
        Ok(Ok(()))
    }

    async fn drop(&mut self, c: Resource<Client>) -> wasmtime::Result<()> {
        self.state.take(c, |c| c.name.len())?;
        Ok(())
    }
}

impl types::HostMessage for Imports<'_> {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<HostMessage>> {
        let m = HostMessage {
            topic: None,
            content_type: None,
            data,
            metadata: None,
            allowance: 0,
        };
        let bytes = m.counted();
        self.state.push(m, bytes)
    }

    async fn topic(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.state.get(&r)?.topic.clone())
    }

    async fn content_type(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.state.get(&r)?.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        r: Resource<HostMessage>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.change(&r, |m| m.content_type = Some(content_type))
    }

    async fn data(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.state.get(&r)?.data.clone())
    }

    async fn set_data(&mut self, r: Resource<HostMessage>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.change(&r, |m| m.data = data)
    }

    async fn metadata(
        &mut self,
        r: Resource<HostMessage>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        Ok(self.state.get(&r)?.metadata.clone())
    }

    async fn add_metadata(
        &mut self,
        r: Resource<HostMessage>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.change(&r, |m| {
            let pairs = m.metadata.get_or_insert_with(Vec::new);
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
        })
    }

    async fn set_metadata(
        &mut self,
        r: Resource<HostMessage>,
        meta: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.change(&r, |m| m.metadata = Some(meta))
    }

    async fn remove_metadata(
        &mut self,
        r: Resource<HostMessage>,
        key: String,
    ) -> wasmtime::Result<()> {
        self.change(&r, |m| {
            if let Some(pairs) = &mut m.metadata {
                pairs.retain(|(k, _)| *k != key);
            }
        })
    }

    async fn drop(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<()> {
        self.take_message(r)?;
        Ok(())
    }
}

impl producer::Host for Imports<'_> {
    async fn send(
        &mut self,
        c: Resource<Client>,
        topic: String,
        message: Resource<HostMessage>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.state.get(&c)?;
        let m = self.take_message(message)?;
        let headers = m.headers();
        Ok(self
            .outbox
            .push(topic, m.data, headers)
            .map_err(|e| match e {
                PublishError::NotAllowed(m) => Error::PermissionDenied(m),
                PublishError::OutboxFull(m) => Error::Other(format!("outbox full: {m}")),
                PublishError::Invalid(m) => Error::Other(format!("invalid message: {m}")),
            }))
    }
}

impl request_reply::HostRequestOptions for Imports<'_> {
    async fn new(&mut self) -> wasmtime::Result<Resource<RequestOptions>> {
        self.state.push(RequestOptions::default(), 0)
    }

    async fn set_timeout_ms(
        &mut self,
        r: Resource<RequestOptions>,
        timeout_ms: u32,
    ) -> wasmtime::Result<()> {
        self.state.get_mut(&r)?.timeout = Some(Duration::from_millis(u64::from(timeout_ms)));
        Ok(())
    }

    async fn set_expected_replies(
        &mut self,
        r: Resource<RequestOptions>,
        _expected_replies: u32,
    ) -> wasmtime::Result<()> {
        self.state.get(&r)?;
        Ok(())
    }

    async fn drop(&mut self, r: Resource<RequestOptions>) -> wasmtime::Result<()> {
        self.state.take(r, |_| 0)?;
        Ok(())
    }
}

impl request_reply::Host for Imports<'_> {
    async fn request(
        &mut self,
        c: Resource<Client>,
        topic: String,
        message: Resource<HostMessage>,
        options: Option<Resource<RequestOptions>>,
    ) -> wasmtime::Result<Result<Vec<Resource<HostMessage>>, Error>> {
        self.state.get(&c)?;
        let timeout = match options {
            Some(o) => self.state.take(o, |_| 0)?.timeout,
            None => None,
        };
        let m = self.state.get(&message)?;
        let (headers, data) = (m.headers(), m.data.clone());
        let reply = match self.requests.send(topic, headers, data, timeout).await {
            Ok(reply) => reply,
            Err(e) => {
                return Ok(Err(match e {
                    RequestError::TimedOut(_) => Error::Timeout,
                    RequestError::NotAllowed(m) => Error::PermissionDenied(m),
                    RequestError::Failed(m) => Error::Connection(m),
                    other => Error::Other(other.to_string()),
                }));
            }
        };
        let headers: Vec<Header> = reply
            .headers
            .iter()
            .map(|(name, values)| Header {
                name: name.to_string(),
                values: values.iter().map(|v| v.as_str().to_string()).collect(),
            })
            .collect();
        let m = incoming(reply.subject, reply.payload.to_vec(), &headers);
        let bytes = m.counted();
        Ok(Ok(vec![self.state.push(m, bytes)?]))
    }

    async fn reply(
        &mut self,
        reply_to: Resource<HostMessage>,
        message: Resource<HostMessage>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.state.get(&reply_to)?;
        self.take_message(message)?;
        Ok(Err(Error::PermissionDenied(
            "reply is not supported: the message came from JetStream, where its reply subject \
             acknowledges it; send the answer to a subject with `producer.send` instead"
                .into(),
        )))
    }
}

/// A message as the host hands it to the guest: a subject, a payload and
/// headers, each value one metadata pair.
fn incoming(subject: String, data: Vec<u8>, headers: &[Header]) -> HostMessage {
    let content_type = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .and_then(|h| h.values.first().cloned());
    let pairs: Vec<(String, String)> = headers
        .iter()
        .flat_map(|h| h.values.iter().map(|v| (h.name.clone(), v.clone())))
        .collect();
    let mut m = HostMessage {
        topic: Some(subject),
        content_type,
        data,
        metadata: (!pairs.is_empty()).then_some(pairs),
        allowance: 0,
    };
    m.allowance = m.size();
    m
}

/// Hands one delivery to `incoming-handler.handle`; an error comes back as text.
pub(super) async fn call(
    instance: &bindings::WasiMessaging,
    store: &mut Store<StoreState>,
    message: &Message,
) -> wasmtime::Result<Result<(), String>> {
    let m = incoming(
        message.subject.clone(),
        message.payload.clone(),
        &message.headers,
    );
    let r = store.data_mut().compat.push(m, 0)?;
    let result = instance
        .wasi_messaging_incoming_handler()
        .call_handle(store, r)
        .await?;
    Ok(result.map_err(|e| match e {
        Error::Timeout => "timeout".to_string(),
        Error::Connection(m) => format!("connection: {m}"),
        Error::PermissionDenied(m) => format!("permission denied: {m}"),
        Error::Other(m) => m,
    }))
}
