//! wasmCloud's messaging world, `wasmcloud:messaging@0.2.0`: a delivery
//! becomes a `broker-message` (its subject and payload; never a reply
//! subject, since a JetStream message's reply subject acks it), the
//! handler's `err(text)` becomes `Outcome::Errored` (or a reject, with
//! `on_error = "reject"`), `publish` goes into the delivery's outbox, and
//! `request` is sent at once, only to the subjects the handler's `request`
//! setting allows. The world has no headers: the guest sees none of the
//! message's, and its outputs carry only the host's.

use std::time::Duration;

use wasmtime::Store;

use super::{Imports, publish_error};
use crate::sandbox::bindings::Message;
use crate::sandbox::store::StoreState;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat",
        world: "wharf:compat/wasmcloud-messaging",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::wasmcloud::messaging::{consumer, types};
use types::BrokerMessage;

impl types::Host for Imports<'_> {}

impl consumer::Host for Imports<'_> {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let reply = self
            .requests
            .send(subject, Vec::new(), body, Some(timeout))
            .await;
        Ok(reply
            .map(|r| BrokerMessage {
                subject: r.subject,
                body: r.payload.to_vec(),
                reply_to: None,
            })
            .map_err(|e| e.to_string()))
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        if let Some(reply_to) = msg.reply_to {
            return Ok(Err(format!(
                "publish not allowed: reply-to \"{reply_to}\": outputs are stored in JetStream, \
                 where a message's reply subject is taken by the stream's acknowledgement; \
                 put the subject to answer on in the body instead"
            )));
        }
        Ok(self
            .outbox
            .push(msg.subject, msg.body, Vec::new())
            .map_err(publish_error))
    }
}

/// Hands one delivery to `handle-message`.
pub(super) async fn call(
    instance: &bindings::WasmcloudMessaging,
    store: &mut Store<StoreState>,
    message: &Message,
) -> wasmtime::Result<Result<(), String>> {
    let msg = BrokerMessage {
        subject: message.subject.clone(),
        body: message.payload.clone(),
        reply_to: None,
    };
    instance
        .wasmcloud_messaging_handler()
        .call_handle_message(store, &msg)
        .await
}
