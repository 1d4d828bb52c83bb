//! `wasi:keyvalue@0.2.0-draft`, the earlier draft wasmCloud's hosts
//! provide, mapped as `0.2.0-draft2` is (`super::keyvalue`); its
//! `increment` takes and returns unsigned numbers, so a counter that would
//! go below zero is refused.

use wasmtime::component::Resource;

use super::Imports;
use super::keyvalue::{Bucket, Failure};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat",
        world: "wharf:compat/keyvalue-draft",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::sandbox::worlds::keyvalue::Bucket,
        },
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
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
        _cursor: Option<u64>,
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
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: u64) -> Answer<u64> {
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(Error::Other(format!(
                "an increment of {delta} overflows a 64-bit integer"
            ))));
        };
        let sum = self.kv_increment(&b, key.clone(), delta).await?;
        Ok(match sum {
            Ok(n) => u64::try_from(n)
                .map_err(|_| Error::Other(format!("key \"{key}\" holds {n}, below zero"))),
            Err(f) => Err(f.into()),
        })
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
