//! The host's view of Wharf's own WIT worlds: `bindgen!` runs here, once
//! per world, and in `super::worlds` for other hosts' worlds.
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

/// The world a handler's component implements. Its `handle` export is the
/// same in every version of Wharf's own; the version only decides what it
/// may import. A batch handler exports `handle-batch` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    /// `wharf:handler/handler@0.1.0`.
    V01,
    /// `wharf:handler/handler@0.2.0`.
    V02,
    /// `wharf:handler/batch-handler@0.2.0`.
    Batch,
    /// Another host's world (run by `super::worlds`).
    Compat(super::detect::Compat),
}

impl World {
    /// The world a component built for Wharf's own world implements:
    /// `batch-handler` when it exports `handle-batch`; otherwise told by
    /// the version of the `wharf:handler` interfaces it imports. One that
    /// imports none of them runs the same under either; it is called the
    /// newest.
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

    /// The world's name, as `wharf check` and the logs show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            World::V01 => "wharf:handler/handler@0.1.0",
            World::V02 => "wharf:handler/handler@0.2.0",
            World::Batch => "wharf:handler/batch-handler@0.2.0",
            World::Compat(c) => c.name(),
        }
    }
}
