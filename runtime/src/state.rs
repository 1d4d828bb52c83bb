//! Key-value state as the layers share it: a key's entry, a staged write,
//! the key grammar, and the reader the sandbox's `kv` capability reads
//! through (implemented on JetStream by `crate::effects::kv`, handed down
//! by `crate::service`, so the sandbox imports no NATS code).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A key's value and the revision (bucket stream sequence) that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub value: Bytes,
    pub revision: u64,
}

/// When a staged write may be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// Always.
    None,
    /// Only while the key's revision is still this one.
    Revision(u64),
    /// Only while the key has no value (never written, deleted or purged).
    Absent,
}

/// One key-value write a delivery staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub bucket: String,
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Bytes>,
    pub condition: Condition,
}

/// Why a read failed: the server could not answer.
pub(crate) type ReadError = String;

/// A boxed future, as a trait object's method returns it.
pub(crate) type ReadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Entry>, ReadError>> + Send + 'a>>;

/// Reads keys from buckets as they are now.
pub(crate) trait Reader: Send + Sync {
    /// The key's current entry, `None` when it has no value.
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> ReadFuture<'a>;
}

/// The reader a handler's guests use, set once the host has connected
/// (`wharf check` never connects; its probes read nothing).
#[derive(Clone, Default)]
pub(crate) struct ReaderCell(Arc<OnceLock<Arc<dyn Reader>>>);

impl std::fmt::Debug for ReaderCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReaderCell")
    }
}

impl ReaderCell {
    pub(crate) fn set(&self, reader: Arc<dyn Reader>) {
        let _ = self.0.set(reader);
    }

    pub(crate) fn get(&self) -> Option<&Arc<dyn Reader>> {
        self.0.get()
    }
}

/// JetStream key-value's key grammar: letters, digits and `-/_=.`, not
/// starting or ending with `.`, and no empty token.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_key_value_grammar() {
        for good in ["a", "acct.42", "a/b=c_d-e", "A.B.C"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "ü",
            &"k".repeat(1025),
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }
}
