//! The host's only view of the WIT worlds: `bindgen!` runs here and nowhere
//! else, once per world the host runs.
//!
//! `wharf:handler@0.2.0`'s `types` interface is the same as 0.1.0's, so
//! both versions share one set of Rust types (`Message`, `HandlerError`, …)
//! and the rest of the host does not care which version a component
//! implements.

/// `wharf:handler/handler@0.1.0`: `handle`, with `host` (publish, config, log).
pub(crate) mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "handler",
        exports: { default: async },
    });
}

/// `wharf:handler/handler@0.2.0`: `handle`, with `host` and `kv`.
pub(crate) mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "handler",
        imports: { "wharf:handler/kv.get": async },
        exports: { default: async },
        with: {
            "wharf:handler/types@0.2.0": super::v01::wharf::handler::types,
        },
    });
}

/// `wharf:handler/batch-handler@0.2.0`: `handle-batch`, with `batch-host`.
pub(crate) mod batch {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "batch-handler",
        imports: { "wharf:handler/batch-host.kv-get": async },
        exports: { default: async },
        with: {
            "wharf:handler/types@0.2.0": super::v01::wharf::handler::types,
            "wharf:handler/kv-types@0.2.0": super::v02::wharf::handler::kv_types,
        },
    });
}

pub use self::v01::wharf::handler::types::{
    Delivery, HandlerError, Header, Level, Message, PublishError,
};
pub use self::v02::wharf::handler::kv_types::{Entry, KvError};

/// The world a handler's component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    /// `wharf:handler/handler@0.1.0`.
    V01,
    /// `wharf:handler/handler@0.2.0`.
    V02,
    /// `wharf:handler/batch-handler@0.2.0`.
    Batch,
}

impl World {
    /// The worlds Wharf runs, for messages.
    pub(crate) const ACCEPTED: &str = "wharf:handler/handler@0.2.0, \
         wharf:handler/handler@0.1.0 or wharf:handler/batch-handler@0.2.0";

    /// The world a component was built for: `batch-handler` when it
    /// exports `handle-batch`; otherwise told by the version of the
    /// `wharf:handler` interfaces it imports. One that imports none of them
    /// runs the same under either; it is called the newest.
    pub(crate) fn of(
        engine: &wasmtime::Engine,
        component: &wasmtime::component::Component,
    ) -> World {
        let ty = component.component_type();
        if ty.exports(engine).any(|(name, _)| name == "handle-batch") {
            return World::Batch;
        }
        let old = ty
            .imports(engine)
            .any(|(name, _)| name.starts_with("wharf:handler/") && name.ends_with("@0.1.0"));
        if old { World::V01 } else { World::V02 }
    }

    /// The world's name, as `wharf check` and metrics show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            World::V01 => "wharf:handler/handler@0.1.0",
            World::V02 => "wharf:handler/handler@0.2.0",
            World::Batch => "wharf:handler/batch-handler@0.2.0",
        }
    }
}

/// A handler's compiled component, linked and ready to instantiate, by the
/// kind of export it has.
pub(crate) enum Pre<T: 'static> {
    /// `handle`: one message per call (either `handler` world).
    Single(v01::HandlerPre<T>),
    /// `handle-batch`: a batch of messages per call.
    Batch(batch::BatchHandlerPre<T>),
}

impl<T: 'static> Clone for Pre<T> {
    fn clone(&self) -> Pre<T> {
        match self {
            Pre::Single(p) => Pre::Single(p.clone()),
            Pre::Batch(p) => Pre::Batch(p.clone()),
        }
    }
}
