//! A handler's key-value access: the `kv` table (bucket → mode) and the
//! limits on what one delivery may stage.

use std::collections::BTreeMap;

use super::{Site, defaults};

/// What a handler may do with one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    /// `get` only.
    Read,
    /// `get`, and staged `put`, `create` and `delete`.
    ReadWrite,
}

/// A handler's key-value access.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvConfig {
    /// The buckets the handler's guests may reach, and how.
    pub buckets: BTreeMap<String, KvMode>,
    /// Most writes one delivery may stage.
    pub max_writes: usize,
    /// Most bytes (keys and values) one delivery may stage.
    pub max_write_bytes: u64,
}

impl KvConfig {
    /// Whether any bucket may be written: then every delivery that stages a
    /// write is committed through an effect record.
    pub fn writes(&self) -> bool {
        self.buckets.values().any(|m| *m == KvMode::ReadWrite)
    }
}

/// JetStream's rule for bucket names: letters, digits, `-` and `_`.
pub fn is_valid_bucket(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn validate(
    site: &Site<'_>,
    table: BTreeMap<String, String>,
    max_writes: Option<usize>,
    max_write_bytes: Option<&str>,
) -> KvConfig {
    let mut buckets = BTreeMap::new();
    for (bucket, mode) in table {
        if !is_valid_bucket(&bucket) {
            site.report(
                "kv",
                format!("\"{bucket}\" is not a valid bucket name (letters, digits, '-' and '_')"),
            );
            continue;
        }
        let mode = match mode.as_str() {
            "read" => KvMode::Read,
            "read-write" => KvMode::ReadWrite,
            other => {
                site.report(
                    "kv",
                    format!(
                        "bucket \"{bucket}\": unknown mode \"{other}\"; expected \"read\" or \"read-write\""
                    ),
                );
                continue;
            }
        };
        buckets.insert(bucket, mode);
    }
    let max_writes = max_writes.unwrap_or(defaults::MAX_KV_WRITES);
    if max_writes == 0 || max_writes > 1000 {
        site.report("max_kv_writes", "must be between 1 and 1000");
    }
    KvConfig {
        buckets,
        max_writes,
        max_write_bytes: site.read_size(
            "max_kv_write_bytes",
            max_write_bytes,
            defaults::MAX_KV_WRITE_BYTES,
        ),
    }
}
