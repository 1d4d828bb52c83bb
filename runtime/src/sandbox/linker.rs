//! The linker every handler shares: WASI p2, every version of the
//! `wharf:handler` imports and the imports of other hosts' worlds
//! (`super::worlds`), each capability reached through its state in the
//! Store. A component links against whichever version it was built
//! for; both are served by the same capabilities.

use anyhow::Context as _;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::bindings::{Entry, Header, KvError, Level, PublishError, v01, v02};
use super::host::{kv, log, publish, values};
use super::store::StoreState;
use crate::state::Condition;

/// The `wharf:handler` imports of one delivery, borrowing each
/// capability's state from the Store.
struct Imports<'a> {
    publish: &'a mut publish::Outbox,
    values: &'a values::Values,
    log: &'a mut log::LogBudget,
    kv: &'a mut kv::Kv,
}

/// The imports of the delivery whose Store this is.
fn imports(state: &mut StoreState) -> Imports<'_> {
    Imports {
        publish: &mut state.outbox,
        values: &state.values,
        log: &mut state.log,
        kv: &mut state.kv,
    }
}

struct ImportsData;

impl HasData for ImportsData {
    type Data<'a> = Imports<'a>;
}

impl v01::wharf::handler::types::Host for Imports<'_> {}

impl v01::wharf::handler::host::Host for Imports<'_> {
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

impl v02::wharf::handler::host::Host for Imports<'_> {
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

impl v02::wharf::handler::kv_types::Host for Imports<'_> {}

impl v02::wharf::handler::kv::Host for Imports<'_> {
    async fn get(&mut self, bucket: String, key: String) -> Result<Option<Entry>, KvError> {
        self.kv.get(bucket, key).await
    }

    fn put(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<(), KvError> {
        let condition = expected.map_or(Condition::None, Condition::Revision);
        self.kv.stage(bucket, key, Some(value), condition)
    }

    fn create(&mut self, bucket: String, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.kv.stage(bucket, key, Some(value), Condition::Absent)
    }

    fn delete(
        &mut self,
        bucket: String,
        key: String,
        expected: Option<u64>,
    ) -> Result<(), KvError> {
        let condition = expected.map_or(Condition::None, Condition::Revision);
        self.kv.stage(bucket, key, None, condition)
    }
}

/// Builds the linker every handler shares: WASI p2 and the host imports of
/// every `wharf:handler` version.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(anyhow::Error::from)
        .context("linking WASI")?;
    v01::Handler::add_to_linker::<StoreState, ImportsData>(linker, imports)
        .map_err(anyhow::Error::from)
        .context("linking the wharf:handler@0.1.0 host API")?;
    v02::Handler::add_to_linker::<StoreState, ImportsData>(linker, imports)
        .map_err(anyhow::Error::from)
        .context("linking the wharf:handler@0.2.0 host API")?;
    super::worlds::add_to_linker(linker)
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}
