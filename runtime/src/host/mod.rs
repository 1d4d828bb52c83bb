//! What a guest can reach: WASI p2 without files, sockets, environment or
//! arguments (`wasi`), and the `wharf:handler/host` imports, one module per
//! capability, each with its own per-delivery state: `publish` (the
//! outbox), `values` (`config` lookups) and `log`.
//!
//! The per-delivery Store state (`crate::store::StoreState`) only holds these.
//! A new capability is a new WIT interface, one module here with its state
//! and its `Host` implementation, and one line in `add_to_linker`.

pub(crate) mod log;
pub(crate) mod publish;
pub(crate) mod values;
pub(crate) mod wasi;

use anyhow::Context as _;
use wasmtime::component::{HasData, Linker};

use crate::bindings::wharf::handler::{host, types};
use crate::bindings::{Header, Level, PublishError};
use crate::store::StoreState;

/// The `wharf:handler/host` imports of one delivery, borrowing each
/// capability's state from the Store.
pub(crate) struct Imports<'a> {
    pub publish: &'a mut publish::Outbox,
    pub values: &'a values::Values,
    pub log: &'a mut log::LogBudget,
}

struct ImportsData;

impl HasData for ImportsData {
    type Data<'a> = Imports<'a>;
}

impl types::Host for Imports<'_> {}

impl host::Host for Imports<'_> {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<(), PublishError> {
        self.publish.push(subject, payload, headers)
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.values.get(&key)
    }

    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, message);
    }
}

/// Builds the linker every handler shares: WASI p2 and the host imports.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    wasi::add_to_linker(linker)?;
    crate::bindings::Handler::add_to_linker::<StoreState, ImportsData>(linker, StoreState::imports)
        .map_err(anyhow::Error::from)
        .context("linking the wharf host API")
}
