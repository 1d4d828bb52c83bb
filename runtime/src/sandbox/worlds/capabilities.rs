//! What any handler may import besides its world: `wasi:keyvalue@0.2.0-draft2`
//! (mapped by `super::keyvalue`) and `wasi:logging@0.1.0-draft` (the log).

use wasmtime::component::Resource;

use super::Imports;
use super::keyvalue::{Bucket, Cas, Failure};
use crate::sandbox::bindings::Level;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat",
        world: "wharf:compat/capabilities",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::sandbox::worlds::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::sandbox::worlds::keyvalue::Cas,
        },
    });
}

use bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use bindings::wasi::logging::logging;
use store::{Error, KeyResponse};

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Denied => Error::AccessDenied,
            Failure::Other(m) => Error::Other(m),
        }
    }
}

/// A call's result as the bindings return it.
type Answer<T> = wasmtime::Result<Result<T, Error>>;

fn answer<T>(called: wasmtime::Result<Result<T, Failure>>) -> Answer<T> {
    Ok(called?.map_err(Error::from))
}

impl store::Host for Imports<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        answer(self.kv_open(identifier))
    }
}

impl store::HostBucket for Imports<'_> {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        answer(self.kv_get(&b, key).await)
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        answer(self.kv_write(&b, key, Some(value)))
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Answer<()> {
        answer(self.kv_write(&b, key, None))
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Answer<bool> {
        answer(self.kv_exists(&b, key).await)
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Answer<KeyResponse> {
        answer(self.kv_list_keys(&b).map(|r| {
            r.map(|()| KeyResponse {
                keys: Vec::new(),
                cursor: None,
            })
        }))
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.kv_drop(b)
    }
}

impl atomics::Host for Imports<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> Answer<i64> {
        answer(self.kv_increment(&b, key, delta).await)
    }

    async fn swap(
        &mut self,
        c: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        Ok(self
            .kv_swap(c, value)?
            .map_err(|f| atomics::CasError::StoreError(f.into())))
    }
}

impl atomics::HostCas for Imports<'_> {
    async fn new(&mut self, b: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        answer(self.kv_cas(&b, key).await)
    }

    async fn current(&mut self, c: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        answer(self.kv_cas_current(&c))
    }

    async fn drop(&mut self, c: Resource<Cas>) -> wasmtime::Result<()> {
        self.kv_cas_drop(c)
    }
}

impl batch::Host for Imports<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        answer(self.kv_get_many(&b, keys).await)
    }

    async fn set_many(
        &mut self,
        b: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        let writes = key_values.into_iter().map(|(k, v)| (k, Some(v))).collect();
        answer(self.kv_write_many(&b, writes))
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let writes = keys.into_iter().map(|k| (k, None)).collect();
        answer(self.kv_write_many(&b, writes))
    }
}

impl logging::Host for Imports<'_> {
    async fn log(
        &mut self,
        level: logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let level = match level {
            logging::Level::Trace => Level::Trace,
            logging::Level::Debug => Level::Debug,
            logging::Level::Info => Level::Info,
            logging::Level::Warn => Level::Warn,
            logging::Level::Error | logging::Level::Critical => Level::Error,
        };
        let line = if context.is_empty() {
            message
        } else {
            format!("{context}: {message}")
        };
        self.log.write(level, line);
        Ok(())
    }
}
