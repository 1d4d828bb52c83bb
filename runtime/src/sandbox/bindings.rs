//! The host's only view of the WIT world: `bindgen!` runs here and nowhere else.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    exports: { default: async },
});

pub use self::wharf::handler::types::{Delivery, Header, Level, PublishError};
