//! The host's imports as the rest of the SDK reaches them: the bindings
//! generated from `wit/0.2.0` in a component, the test host
//! (`crate::testing`) in a native build with std.
//!
//! Each world's imports are separate functions, and the key-value calls of
//! each world are a separate table ([`Kv`]), so that a component links only
//! the imports its handler reaches: a `handler` component never imports
//! `batch-host`, a `batch-handler` component never imports `host` or `kv`
//! (unless its code calls the single-message functions, which the SDK's
//! documentation rules out), and a handler that uses neither publish,
//! config, log nor key-value imports nothing at all.

use alloc::string::String;

use crate::__bindings::wharf::handler::kv_types::{Entry, KvError};
use crate::__bindings::wharf::handler::types::{Header, Level, PublishError};

/// `put`: message index, bucket, key, value, expected revision.
type Put = fn(u32, &str, &str, &[u8], Option<u64>) -> Result<(), KvError>;

/// The key-value calls of one world; `index` is the message's place in a
/// batch, and 0 (unused) in the `handler` world.
pub(crate) struct Kv {
    pub get: fn(u32, &str, &str) -> Result<Option<Entry>, KvError>,
    pub put: Put,
    pub create: fn(u32, &str, &str, &[u8]) -> Result<(), KvError>,
    pub delete: fn(u32, &str, &str, Option<u64>) -> Result<(), KvError>,
}

#[cfg(any(target_arch = "wasm32", not(feature = "std")))]
mod imp {
    use super::*;
    use crate::__batch_bindings::wharf::handler::batch_host;
    use crate::__bindings::wharf::handler::{host, kv};

    pub(crate) fn publish(
        subject: &str,
        payload: &[u8],
        headers: &[Header],
    ) -> Result<(), PublishError> {
        host::publish(subject, payload, headers)
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        host::config(key)
    }

    pub(crate) fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    pub(crate) static KV: Kv = Kv {
        get: |_, b, k| kv::get(b, k),
        put: |_, b, k, v, e| kv::put(b, k, v, e),
        create: |_, b, k, v| kv::create(b, k, v),
        delete: |_, b, k, e| kv::delete(b, k, e),
    };

    pub(crate) fn batch_publish(
        index: u32,
        subject: &str,
        payload: &[u8],
        headers: &[Header],
    ) -> Result<(), PublishError> {
        batch_host::publish(index, subject, payload, headers)
    }

    pub(crate) fn batch_config(key: &str) -> Option<String> {
        batch_host::config(key)
    }

    pub(crate) fn batch_log(level: Level, message: &str) {
        batch_host::log(level, message);
    }

    pub(crate) static BATCH_KV: Kv = Kv {
        get: batch_host::kv_get,
        put: batch_host::kv_put,
        create: batch_host::kv_create,
        delete: batch_host::kv_delete,
    };
}

#[cfg(all(not(target_arch = "wasm32"), feature = "std"))]
mod imp {
    use super::*;
    use crate::testing::session::{self, World};

    pub(crate) fn publish(
        subject: &str,
        payload: &[u8],
        headers: &[Header],
    ) -> Result<(), PublishError> {
        session::publish(
            World::Handler,
            "wharf_guest::publish",
            0,
            subject,
            payload,
            headers,
        )
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        session::config(World::Handler, "wharf_guest::config", key)
    }

    pub(crate) fn log(level: Level, message: &str) {
        session::log(World::Handler, "wharf_guest::log", level, message);
    }

    pub(crate) static KV: Kv = Kv {
        get: |_, b, k| session::kv_get(World::Handler, 0, b, k),
        put: |_, b, k, v, e| session::kv_put(World::Handler, 0, b, k, v, e),
        create: |_, b, k, v| session::kv_create(World::Handler, 0, b, k, v),
        delete: |_, b, k, e| session::kv_delete(World::Handler, 0, b, k, e),
    };

    pub(crate) fn batch_publish(
        index: u32,
        subject: &str,
        payload: &[u8],
        headers: &[Header],
    ) -> Result<(), PublishError> {
        session::publish(
            World::Batch,
            "BatchMessage::publish",
            index,
            subject,
            payload,
            headers,
        )
    }

    pub(crate) fn batch_config(key: &str) -> Option<String> {
        session::config(World::Batch, "Batch::config", key)
    }

    pub(crate) fn batch_log(level: Level, message: &str) {
        session::log(World::Batch, "a batch's log", level, message);
    }

    pub(crate) static BATCH_KV: Kv = Kv {
        get: |i, b, k| session::kv_get(World::Batch, i, b, k),
        put: |i, b, k, v, e| session::kv_put(World::Batch, i, b, k, v, e),
        create: |i, b, k, v| session::kv_create(World::Batch, i, b, k, v),
        delete: |i, b, k, e| session::kv_delete(World::Batch, i, b, k, e),
    };
}

pub(crate) use imp::*;
