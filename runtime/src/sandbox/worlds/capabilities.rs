//! What any handler may import besides its world: `wasi:keyvalue@0.2.0-draft2`
//! on Wharf's key-value capability (`crate::sandbox::host::kv`), and
//! `wasi:logging@0.1.0-draft` on its log.
//!
//! Reads go to the bucket and see the delivery's own staged writes; writes
//! are staged and applied, exactly once in effect, only if the handler
//! succeeds; `open` reaches only the buckets the handler's `kv` table names,
//! in its mode. `increment` and `swap` are a read and a write conditional on
//! the revision read: a delivery's one conditional write, checked when its
//! writes are applied (a key that moved on makes the host apply nothing and
//! run the handler again on fresh state, so `cas-failed` is never
//! returned). Counters are decimal text. `list-keys` is refused: listing a
//! bucket is unbounded and would not see the staged writes.

use wasmtime::component::Resource;

use super::Imports;
use crate::config::KvMode;
use crate::sandbox::bindings::{KvError, Level};
use crate::state::Condition;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/compat",
        world: "wharf:compat/capabilities",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::sandbox::worlds::capabilities::Bucket,
            "wasi:keyvalue/atomics.cas": crate::sandbox::worlds::capabilities::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use bindings::wasi::logging::logging;
use store::{Error, KeyResponse};

/// Most keys one `get-many` reads.
const MAX_GET_MANY: usize = 1000;

/// An open bucket: a name the handler's `kv` table holds.
pub struct Bucket {
    name: String,
}

/// A key read for a later `swap`.
pub struct Cas {
    bucket: String,
    key: String,
    current: Option<Vec<u8>>,
    condition: Condition,
}

/// A key-value error as the proposal's `error`.
fn kv_error(e: KvError) -> Error {
    match e {
        KvError::Denied(m) => {
            tracing::debug!(reason = %m, "wasi:keyvalue access denied");
            Error::AccessDenied
        }
        KvError::Invalid(m) => Error::Other(format!("invalid: {m}")),
        KvError::Limit(m) => Error::Other(format!("limit: {m}")),
        KvError::Unavailable(m) => Error::Other(format!("unavailable: {m}")),
    }
}

/// A counter's value: decimal text.
fn counter(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl Imports<'_> {
    fn bucket(&self, r: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.state.get(r)?.name.clone())
    }

    /// Reads a key for a conditional write: its value, and the condition
    /// the write needs (none when this delivery wrote the key already: the
    /// first write's condition holds for both).
    async fn read_for_write(
        &mut self,
        bucket: &str,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, Condition), KvError> {
        let entry = self.kv.get(bucket.to_string(), key.to_string()).await?;
        let condition = match (&entry, self.kv.is_staged(bucket, key)) {
            (_, true) => Condition::None,
            (Some(e), false) => Condition::Revision(e.revision),
            (None, false) => Condition::Absent,
        };
        Ok((entry.map(|e| e.value), condition))
    }
}

impl store::Host for Imports<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        if self.kv.mode(&identifier).is_none() {
            tracing::debug!(bucket = %identifier, "wasi:keyvalue open refused: not in the handler's `kv` table");
            return Ok(Err(Error::AccessDenied));
        }
        let bytes = identifier.len();
        Ok(Ok(self.state.push(Bucket { name: identifier }, bytes)?))
    }
}

impl store::HostBucket for Imports<'_> {
    async fn get(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .kv
            .get(bucket, key)
            .await
            .map(|e| e.map(|e| e.value))
            .map_err(kv_error))
    }

    async fn set(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .kv
            .stage(bucket, key, Some(value), Condition::None)
            .map_err(kv_error))
    }

    async fn delete(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .kv
            .stage(bucket, key, None, Condition::None)
            .map_err(kv_error))
    }

    async fn exists(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let bucket = self.bucket(&b)?;
        Ok(self
            .kv
            .get(bucket, key)
            .await
            .map(|e| e.is_some())
            .map_err(kv_error))
    }

    async fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let bucket = self.bucket(&b)?;
        Ok(Err(Error::Other(format!(
            "list-keys is not supported by Wharf: listing bucket \"{bucket}\" is unbounded and \
             would not see this delivery's staged writes; keep the keys you need under a key of \
             their own"
        ))))
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.state.take(b, |b| b.name.len())?;
        Ok(())
    }
}

impl atomics::Host for Imports<'_> {
    async fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let bucket = self.bucket(&b)?;
        if self.kv.mode(&bucket) == Some(KvMode::Read) {
            return Ok(Err(Error::AccessDenied));
        }
        let (value, condition) = match self.read_for_write(&bucket, &key).await {
            Ok(read) => read,
            Err(e) => return Ok(Err(kv_error(e))),
        };
        let current = match value {
            None => 0,
            Some(v) => match counter(&v) {
                Some(n) => n,
                None => {
                    return Ok(Err(Error::Other(format!(
                        "key \"{key}\" in bucket \"{bucket}\" holds a value that is not a \
                         decimal integer"
                    ))));
                }
            },
        };
        let Some(next) = current.checked_add(delta) else {
            return Ok(Err(Error::Other(format!(
                "key \"{key}\": {current} + {delta} overflows a 64-bit integer"
            ))));
        };
        Ok(self
            .kv
            .stage(bucket, key, Some(next.to_string().into_bytes()), condition)
            .map(|()| next)
            .map_err(kv_error))
    }

    async fn swap(
        &mut self,
        c: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.state.take(c, |c| c.bucket.len() + c.key.len())?;
        Ok(self
            .kv
            .stage(cas.bucket, cas.key, Some(value), cas.condition)
            .map_err(|e| atomics::CasError::StoreError(kv_error(e))))
    }
}

impl atomics::HostCas for Imports<'_> {
    async fn new(
        &mut self,
        b: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        let bucket = self.bucket(&b)?;
        let (current, condition) = match self.read_for_write(&bucket, &key).await {
            Ok(read) => read,
            Err(e) => return Ok(Err(kv_error(e))),
        };
        let bytes = bucket.len() + key.len();
        let cas = Cas {
            bucket,
            key,
            current,
            condition,
        };
        Ok(Ok(self.state.push(cas, bytes)?))
    }

    async fn current(
        &mut self,
        c: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(Ok(self.state.get(&c)?.current.clone()))
    }

    async fn drop(&mut self, c: Resource<Cas>) -> wasmtime::Result<()> {
        self.state.take(c, |c| c.bucket.len() + c.key.len())?;
        Ok(())
    }
}

impl batch::Host for Imports<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        let bucket = self.bucket(&b)?;
        if keys.len() > MAX_GET_MANY {
            return Ok(Err(Error::Other(format!(
                "limit: at most {MAX_GET_MANY} keys per get-many"
            ))));
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.kv.get(bucket.clone(), key.clone()).await {
                Ok(entry) => out.push(entry.map(|e| (key, e.value))),
                Err(e) => return Ok(Err(kv_error(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        b: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.bucket(&b)?;
        for (key, value) in key_values {
            if let Err(e) = self
                .kv
                .stage(bucket.clone(), key, Some(value), Condition::None)
            {
                return Ok(Err(kv_error(e)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.bucket(&b)?;
        for key in keys {
            if let Err(e) = self.kv.stage(bucket.clone(), key, None, Condition::None) {
                return Ok(Err(kv_error(e)));
            }
        }
        Ok(Ok(()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(counter(b"42"), Some(42));
        assert_eq!(counter(b" -7\n"), Some(-7));
        assert_eq!(counter(b""), None);
        assert_eq!(counter(&42i64.to_be_bytes()), None);
        assert_eq!(counter(b"9223372036854775808"), None);
    }
}
