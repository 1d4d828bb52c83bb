//! WASI key-value on Wharf's key-value capability (`crate::sandbox::host::kv`),
//! whichever draft of the proposal the component imports (`capabilities`
//! binds `0.2.0-draft2`, `keyvalue_draft` the earlier `0.2.0-draft`): the
//! calls below, which each version's bindings translate.
//!
//! Reads go to the bucket and see the delivery's own staged writes; writes
//! are staged and applied, exactly once in effect, only if the handler
//! succeeds; `open` reaches only the buckets the handler's `kv` table
//! names, in its mode. `increment` and compare-and-swap are a read and a
//! write conditional on the revision read: a delivery's one conditional
//! write, checked when its writes are applied (a key that moved on makes
//! the host apply nothing and run the handler again on fresh state, so
//! `cas-failed` is never returned). Counters are decimal text. `list-keys`
//! is refused: listing a bucket is unbounded and would not see the staged
//! writes.

use wasmtime::component::Resource;

use super::Imports;
use crate::config::KvMode;
use crate::sandbox::bindings::KvError;
use crate::state::Condition;

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

impl Cas {
    fn bytes(&self) -> usize {
        self.bucket.len() + self.key.len()
    }
}

/// Why a key-value call failed, before a version's bindings name it.
pub(super) enum Failure {
    /// The bucket is not the handler's, or is read-only and the call writes.
    Denied,
    /// Anything else, with the reason.
    Other(String),
}

impl From<KvError> for Failure {
    fn from(e: KvError) -> Failure {
        match e {
            KvError::Denied(m) => {
                tracing::debug!(reason = %m, "wasi:keyvalue access denied");
                Failure::Denied
            }
            KvError::Invalid(m) => Failure::Other(format!("invalid: {m}")),
            KvError::Limit(m) => Failure::Other(format!("limit: {m}")),
            KvError::Unavailable(m) => Failure::Other(format!("unavailable: {m}")),
        }
    }
}

/// A call's result: `Err` traps (a bad handle, a resource limit); the
/// inner `Err` goes back to the guest.
pub(super) type Called<T> = wasmtime::Result<Result<T, Failure>>;

/// A counter's value: decimal text.
fn counter(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

impl Imports<'_> {
    fn bucket_name(&self, r: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.state.get(r)?.name.clone())
    }

    /// Reads a key for a conditional write: its value, and the condition
    /// the write needs (none when this delivery wrote the key already: the
    /// first write's condition holds for both).
    async fn read_for_write(
        &mut self,
        bucket: &str,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, Condition), Failure> {
        let entry = self.kv.get(bucket.to_string(), key.to_string()).await?;
        let condition = match (&entry, self.kv.is_staged(bucket, key)) {
            (_, true) => Condition::None,
            (Some(e), false) => Condition::Revision(e.revision),
            (None, false) => Condition::Absent,
        };
        Ok((entry.map(|e| e.value), condition))
    }

    pub(super) fn kv_open(&mut self, identifier: String) -> Called<Resource<Bucket>> {
        if self.kv.mode(&identifier).is_none() {
            tracing::debug!(bucket = %identifier, "wasi:keyvalue open refused: not in the handler's `kv` table");
            return Ok(Err(Failure::Denied));
        }
        let bytes = identifier.len();
        Ok(Ok(self.state.push(Bucket { name: identifier }, bytes)?))
    }

    pub(super) fn kv_drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.state.take(b, |b| b.name.len())?;
        Ok(())
    }

    pub(super) async fn kv_get(
        &mut self,
        b: &Resource<Bucket>,
        key: String,
    ) -> Called<Option<Vec<u8>>> {
        let bucket = self.bucket_name(b)?;
        Ok(self
            .kv
            .get(bucket, key)
            .await
            .map(|e| e.map(|e| e.value))
            .map_err(Failure::from))
    }

    pub(super) async fn kv_exists(&mut self, b: &Resource<Bucket>, key: String) -> Called<bool> {
        Ok(self.kv_get(b, key).await?.map(|v| v.is_some()))
    }

    /// Stages a value (`Some`) or a delete (`None`) of the key, unconditionally.
    pub(super) fn kv_write(
        &mut self,
        b: &Resource<Bucket>,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Called<()> {
        let bucket = self.bucket_name(b)?;
        Ok(self
            .kv
            .stage(bucket, key, value, Condition::None)
            .map_err(Failure::from))
    }

    pub(super) fn kv_list_keys(&mut self, b: &Resource<Bucket>) -> Called<()> {
        let bucket = self.bucket_name(b)?;
        Ok(Err(Failure::Other(format!(
            "list-keys is not supported by Wharf: listing bucket \"{bucket}\" is unbounded and \
             would not see this delivery's staged writes; keep the keys you need under a key of \
             their own"
        ))))
    }

    /// Reads the counter, stages the sum conditional on the revision read,
    /// and returns the sum.
    pub(super) async fn kv_increment(
        &mut self,
        b: &Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Called<i64> {
        let bucket = self.bucket_name(b)?;
        if self.kv.mode(&bucket) == Some(KvMode::Read) {
            return Ok(Err(Failure::Denied));
        }
        let (value, condition) = match self.read_for_write(&bucket, &key).await {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let current = match value.as_deref().map(counter) {
            None => 0,
            Some(Some(n)) => n,
            Some(None) => {
                return Ok(Err(Failure::Other(format!(
                    "key \"{key}\" in bucket \"{bucket}\" holds a value that is not a decimal integer"
                ))));
            }
        };
        let Some(next) = current.checked_add(delta) else {
            return Ok(Err(Failure::Other(format!(
                "key \"{key}\": {current} + {delta} overflows a 64-bit integer"
            ))));
        };
        Ok(self
            .kv
            .stage(bucket, key, Some(next.to_string().into_bytes()), condition)
            .map(|()| next)
            .map_err(Failure::from))
    }

    pub(super) async fn kv_cas(
        &mut self,
        b: &Resource<Bucket>,
        key: String,
    ) -> Called<Resource<Cas>> {
        let bucket = self.bucket_name(b)?;
        let (current, condition) = match self.read_for_write(&bucket, &key).await {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let cas = Cas {
            bucket,
            key,
            current,
            condition,
        };
        let bytes = cas.bytes();
        Ok(Ok(self.state.push(cas, bytes)?))
    }

    pub(super) fn kv_cas_current(&mut self, c: &Resource<Cas>) -> Called<Option<Vec<u8>>> {
        Ok(Ok(self.state.get(c)?.current.clone()))
    }

    pub(super) fn kv_swap(&mut self, c: Resource<Cas>, value: Vec<u8>) -> Called<()> {
        let cas = self.state.take(c, Cas::bytes)?;
        Ok(self
            .kv
            .stage(cas.bucket, cas.key, Some(value), cas.condition)
            .map_err(Failure::from))
    }

    pub(super) fn kv_cas_drop(&mut self, c: Resource<Cas>) -> wasmtime::Result<()> {
        self.state.take(c, Cas::bytes)?;
        Ok(())
    }

    pub(super) async fn kv_get_many(
        &mut self,
        b: &Resource<Bucket>,
        keys: Vec<String>,
    ) -> Called<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = self.bucket_name(b)?;
        if keys.len() > MAX_GET_MANY {
            return Ok(Err(Failure::Other(format!(
                "limit: at most {MAX_GET_MANY} keys per get-many"
            ))));
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.kv.get(bucket.clone(), key.clone()).await {
                Ok(entry) => out.push(entry.map(|e| (key, e.value))),
                Err(e) => return Ok(Err(e.into())),
            }
        }
        Ok(Ok(out))
    }

    /// Stages each write in order; the first that cannot be staged ends
    /// the call, those before it staged.
    pub(super) fn kv_write_many(
        &mut self,
        b: &Resource<Bucket>,
        writes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Called<()> {
        let bucket = self.bucket_name(b)?;
        for (key, value) in writes {
            if let Err(e) = self.kv.stage(bucket.clone(), key, value, Condition::None) {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
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
