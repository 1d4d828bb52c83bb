//! The linker every handler shares: WASI p2, every version and world of
//! the `wharf:handler` imports and the imports of other hosts' worlds
//! (`super::worlds`), each capability reached through its state in the
//! Store. A component links against whichever version and world it was
//! built for; all are served by the same capabilities (a batch's
//! `batch-host` through one outbox and key-value staging per message).

use anyhow::Context as _;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::bindings::{Entry, Header, KvError, Level, PublishError, batch, v01, v02};
use super::host::{batch::Staging, kv, log, publish, values};
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

/// The `batch-host` imports of one batch call: each message's staging by
/// its index, and the handler-wide config values and log budget.
struct BatchImports<'a> {
    staging: &'a mut Staging,
    values: &'a values::Values,
    log: &'a mut log::LogBudget,
}

fn batch_imports(state: &mut StoreState) -> BatchImports<'_> {
    BatchImports {
        staging: &mut state.batch,
        values: &state.values,
        log: &mut state.log,
    }
}

struct BatchImportsData;

impl HasData for BatchImportsData {
    type Data<'a> = BatchImports<'a>;
}

impl v01::wharf::handler::types::Host for BatchImports<'_> {}

impl v02::wharf::handler::kv_types::Host for BatchImports<'_> {}

impl batch::wharf::handler::batch_host::Host for BatchImports<'_> {
    fn publish(
        &mut self,
        index: u32,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<(), PublishError> {
        let slot = self.staging.slot(index).map_err(PublishError::Invalid)?;
        slot.outbox.push(subject, payload, headers)
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.values.get(&key)
    }

    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, message);
    }

    async fn kv_get(
        &mut self,
        index: u32,
        bucket: String,
        key: String,
    ) -> Result<Option<Entry>, KvError> {
        let slot = self.staging.slot(index).map_err(KvError::Invalid)?;
        slot.kv.get(bucket, key).await
    }

    fn kv_put(
        &mut self,
        index: u32,
        bucket: String,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<(), KvError> {
        let condition = expected.map_or(Condition::None, Condition::Revision);
        let slot = self.staging.slot(index).map_err(KvError::Invalid)?;
        slot.kv.stage(bucket, key, Some(value), condition)
    }

    fn kv_create(
        &mut self,
        index: u32,
        bucket: String,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let slot = self.staging.slot(index).map_err(KvError::Invalid)?;
        slot.kv.stage(bucket, key, Some(value), Condition::Absent)
    }

    fn kv_delete(
        &mut self,
        index: u32,
        bucket: String,
        key: String,
        expected: Option<u64>,
    ) -> Result<(), KvError> {
        let condition = expected.map_or(Condition::None, Condition::Revision);
        let slot = self.staging.slot(index).map_err(KvError::Invalid)?;
        slot.kv.stage(bucket, key, None, condition)
    }
}

/// Builds the linker every handler shares: WASI p2 and the host imports of
/// every `wharf:handler` version and world.
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
    batch::BatchHandler::add_to_linker::<StoreState, BatchImportsData>(linker, batch_imports)
        .map_err(anyhow::Error::from)
        .context("linking the wharf:handler@0.2.0 batch host API")?;
    super::worlds::add_to_linker(linker)
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}
