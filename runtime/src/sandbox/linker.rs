//! The linker every handler shares: WASI p2 and the `wharf:handler`
//! imports, each capability reached through its state in the Store.

use anyhow::Context as _;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::bindings::wharf::handler::{host, types};
use super::bindings::{Header, Level, PublishError};
use super::host::{log, publish, values};
use super::store::StoreState;

/// The `wharf:handler/host` imports of one delivery, borrowing each
/// capability's state from the Store.
pub(crate) struct Imports<'a> {
    pub publish: &'a mut publish::Outbox,
    pub values: &'a values::Values,
    pub log: &'a mut log::LogBudget,
}

/// The imports of the delivery whose Store this is.
fn imports(state: &mut StoreState) -> Imports<'_> {
    Imports {
        publish: &mut state.outbox,
        values: &state.values,
        log: &mut state.log,
    }
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
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI")?;
    super::bindings::Handler::add_to_linker::<StoreState, ImportsData>(linker, imports)
        .map_err(anyhow::Error::from)
        .context("linking the wharf host API")
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}
