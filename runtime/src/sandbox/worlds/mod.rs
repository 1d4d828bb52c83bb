//! Components written for other hosts' worlds, run unchanged: wasmCloud's
//! messaging (`wasmcloud`), the WASI messaging proposal (`wasi_messaging`),
//! and the WASI key-value and logging imports any handler may use
//! (`capabilities`, `keyvalue_draft`, both mapped by `keyvalue`). Each module holds its world's `bindgen!` (from
//! `wit/compat/`) and maps its types onto Wharf's: the delivery onto the
//! world's message, its result onto a `crate::settle::Outcome`, and its
//! calls onto the same capabilities Wharf's own world uses (the outbox, the
//! staged key-value writes, the log), so the same allow-lists, header
//! policy, limits and exactly-once commit apply. Everything from the
//! settlement on is Wharf's.
//!
//! `HandlerPre` and `Handler` are what `super::guest` instantiates and
//! calls, whichever world the component implements.

mod capabilities;
mod keyvalue;
mod keyvalue_draft;
pub(crate) mod state;
mod wasi_messaging;
mod wasmcloud;

pub(crate) use super::detect::Compat;
pub(crate) use state::State;

use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{HasData, InstancePre, Linker};

use super::bindings::{HandlerError, Message, PublishError, v01};
use super::host::{kv::Kv, log::LogBudget, publish::Outbox, request::Requests};
use super::store::StoreState;
use crate::config::OnError;
use crate::settle::Outcome;

/// A handler's component, linked and checked against its world.
#[derive(Clone)]
pub(crate) enum HandlerPre {
    /// `wharf:handler/handler`, any version: its `handle` is the same.
    Wharf(v01::HandlerPre<StoreState>),
    WasmCloud(wasmcloud::bindings::WasmcloudMessagingPre<StoreState>),
    WasiMessaging(wasi_messaging::bindings::WasiMessagingPre<StoreState>),
}

/// One instance of a handler's component.
pub(crate) enum Handler {
    Wharf(v01::Handler),
    WasmCloud(wasmcloud::bindings::WasmcloudMessaging),
    WasiMessaging(wasi_messaging::bindings::WasiMessaging),
}

impl HandlerPre {
    /// Checks that the linked component exports what `world` calls.
    pub(crate) fn new(
        world: Option<Compat>,
        pre: InstancePre<StoreState>,
    ) -> wasmtime::Result<HandlerPre> {
        Ok(match world {
            None => HandlerPre::Wharf(v01::HandlerPre::new(pre)?),
            Some(Compat::WasmCloudMessaging) => {
                HandlerPre::WasmCloud(wasmcloud::bindings::WasmcloudMessagingPre::new(pre)?)
            }
            Some(Compat::WasiMessaging) => {
                HandlerPre::WasiMessaging(wasi_messaging::bindings::WasiMessagingPre::new(pre)?)
            }
        })
    }

    pub(crate) async fn instantiate_async(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Handler> {
        Ok(match self {
            HandlerPre::Wharf(pre) => Handler::Wharf(pre.instantiate_async(store).await?),
            HandlerPre::WasmCloud(pre) => Handler::WasmCloud(pre.instantiate_async(store).await?),
            HandlerPre::WasiMessaging(pre) => {
                Handler::WasiMessaging(pre.instantiate_async(store).await?)
            }
        })
    }
}

impl Handler {
    /// Calls the component's handler with one delivery and says what it
    /// produced; `Err` is a trap.
    pub(crate) async fn call_handle(
        &self,
        store: &mut Store<StoreState>,
        message: &Message,
    ) -> wasmtime::Result<Outcome> {
        let result = match self {
            Handler::Wharf(h) => {
                return Ok(match h.call_handle(&mut *store, message).await? {
                    Ok(()) => Outcome::Ok,
                    Err(HandlerError::Retry(ms)) => Outcome::Retry {
                        delay: ms.map(Duration::from_millis),
                    },
                    Err(HandlerError::Reject(reason)) => Outcome::Reject { reason },
                });
            }
            Handler::WasmCloud(h) => wasmcloud::call(h, store, message).await?,
            Handler::WasiMessaging(h) => wasi_messaging::call(h, store, message).await?,
        };
        Ok(match result {
            Ok(()) => Outcome::Ok,
            Err(reason) => match store.data().compat.handler.compat.on_error {
                OnError::Retry => Outcome::Errored { reason },
                OnError::Reject => Outcome::Reject { reason },
            },
        })
    }
}

/// The imports of other hosts' worlds, for one delivery: the capabilities
/// Wharf's own world uses, and the delivery's resources.
pub(super) struct Imports<'a> {
    outbox: &'a mut Outbox,
    kv: &'a mut Kv,
    log: &'a mut LogBudget,
    requests: &'a mut Requests,
    state: &'a mut State,
}

fn imports(state: &mut StoreState) -> Imports<'_> {
    Imports {
        outbox: &mut state.outbox,
        kv: &mut state.kv,
        log: &mut state.log,
        requests: &mut state.requests,
        state: &mut state.compat,
    }
}

struct ImportsData;

impl HasData for ImportsData {
    type Data<'a> = Imports<'a>;
}

/// Adds the imports of every world in this module to the shared linker.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    wasmcloud::bindings::WasmcloudMessaging::add_to_linker::<StoreState, ImportsData>(
        linker, imports,
    )
    .map_err(anyhow::Error::from)
    .context("linking the wasmcloud:messaging@0.2.0 imports")?;
    wasi_messaging::bindings::WasiMessaging::add_to_linker::<StoreState, ImportsData>(
        linker, imports,
    )
    .map_err(anyhow::Error::from)
    .context("linking the wasi:messaging@0.2.0-draft imports")?;
    capabilities::bindings::Capabilities::add_to_linker::<StoreState, ImportsData>(linker, imports)
        .map_err(anyhow::Error::from)
        .context("linking the wasi:keyvalue@0.2.0-draft2 and wasi:logging@0.1.0-draft imports")?;
    keyvalue_draft::bindings::KeyvalueDraft::add_to_linker::<StoreState, ImportsData>(
        linker, imports,
    )
    .map_err(anyhow::Error::from)
    .context("linking the wasi:keyvalue@0.2.0-draft imports")
}

/// A refused publish in words, for worlds whose errors are text.
fn publish_error(e: PublishError) -> String {
    match e {
        PublishError::NotAllowed(m) => format!("publish not allowed: {m}"),
        PublishError::OutboxFull(m) => format!("outbox full: {m}"),
        PublishError::Invalid(m) => format!("invalid publish: {m}"),
    }
}
