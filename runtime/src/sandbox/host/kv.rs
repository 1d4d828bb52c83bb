//! The `kv` import: reads go to the bucket (through the handler's
//! `crate::state::Reader`) and see the delivery's own staged writes; writes
//! are staged, checked against the handler's `kv` table, the key grammar
//! and its limits, and never touch the network while the guest runs.
//!
//! One delivery may stage any number of unconditional writes but at most
//! one conditional one (`put` or `delete` with `expected`, or `create`):
//! the host applies the conditional write first, so a conflict leaves
//! nothing applied, and the unconditional ones after it cannot fail.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{KvConfig, KvMode};
use crate::sandbox::bindings::{Entry, KvError};
use crate::state::{self, Condition, ReaderCell, Write};

/// What every Store of one handler shares: its buckets and their reader.
#[derive(Debug, Clone)]
pub(crate) struct KvAccess {
    pub config: Arc<KvConfig>,
    pub reader: ReaderCell,
    handler: Arc<str>,
}

impl KvAccess {
    pub(crate) fn new(handler: Arc<str>, config: KvConfig, reader: ReaderCell) -> KvAccess {
        KvAccess {
            config: Arc::new(config),
            reader,
            handler,
        }
    }
}

/// One staged key, and the revision the guest's conditions are about.
#[derive(Debug)]
struct Staged {
    write: Write,
    /// The revision the key had before this delivery, when known (read
    /// by the guest, or named by its condition).
    base: Option<u64>,
}

/// The writes one delivery staged, in the order first staged.
#[derive(Debug)]
pub(crate) struct Kv {
    access: KvAccess,
    staged: Vec<Staged>,
    bytes: u64,
}

impl Kv {
    pub(crate) fn new(access: KvAccess) -> Kv {
        Kv {
            access,
            staged: Vec::new(),
            bytes: 0,
        }
    }

    fn check(&self, bucket: &str, key: &str, write: bool) -> Result<(), KvError> {
        match self.access.config.buckets.get(bucket) {
            None => {
                return Err(KvError::Denied(format!(
                    "bucket \"{bucket}\" is not in handler \"{}\"'s `kv` table",
                    self.access.handler
                )));
            }
            Some(KvMode::Read) if write => {
                return Err(KvError::Denied(format!(
                    "bucket \"{bucket}\" is read-only for handler \"{}\"",
                    self.access.handler
                )));
            }
            Some(_) => {}
        }
        if !state::is_valid_key(key) {
            return Err(KvError::Invalid(format!(
                "\"{}\" is not a valid key: letters, digits and -/_=. only, not starting or \
                 ending with '.'",
                crate::text::escape_controls(&crate::text::head(key, 200, "…"))
            )));
        }
        Ok(())
    }

    /// How the handler may use `bucket`, if at all.
    pub(crate) fn mode(&self, bucket: &str) -> Option<KvMode> {
        self.access.config.buckets.get(bucket).copied()
    }

    /// Whether this delivery has staged a write of the key already.
    pub(crate) fn is_staged(&self, bucket: &str, key: &str) -> bool {
        self.find(bucket, key).is_some()
    }

    fn find(&self, bucket: &str, key: &str) -> Option<usize> {
        self.staged
            .iter()
            .position(|s| s.write.bucket == bucket && s.write.key == key)
    }

    /// The key's value as this delivery sees it: its own staged write, or
    /// the bucket's.
    pub(crate) async fn get(
        &mut self,
        bucket: String,
        key: String,
    ) -> Result<Option<Entry>, KvError> {
        self.check(&bucket, &key, false)?;
        if let Some(i) = self.find(&bucket, &key) {
            let s = &self.staged[i];
            return Ok(s.write.value.as_ref().map(|v| Entry {
                value: v.to_vec(),
                revision: s.base.unwrap_or(0),
            }));
        }
        let Some(reader) = self.access.reader.get().cloned() else {
            return Err(KvError::Unavailable("not connected to a server".into()));
        };
        match reader.get(&bucket, &key).await {
            Ok(entry) => Ok(entry.map(|e| Entry {
                value: e.value.to_vec(),
                revision: e.revision,
            })),
            Err(e) => Err(KvError::Unavailable(format!(
                "reading \"{key}\" from bucket \"{bucket}\": {e}"
            ))),
        }
    }

    /// Stages a write, folding it into an earlier write of the same key.
    pub(crate) fn stage(
        &mut self,
        bucket: String,
        key: String,
        value: Option<Vec<u8>>,
        condition: Condition,
    ) -> Result<(), KvError> {
        self.check(&bucket, &key, true)?;
        let limits = &self.access.config;
        let size = (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
        let existing = self.find(&bucket, &key);
        let previous = existing.map_or(0, |i| {
            let w = &self.staged[i].write;
            (w.key.len() + w.value.as_ref().map_or(0, Bytes::len)) as u64
        });
        if self.bytes - previous + size > limits.max_write_bytes {
            return Err(KvError::Limit(format!(
                "at most {} bytes of keys and values staged per delivery",
                limits.max_write_bytes
            )));
        }
        if existing.is_none() && self.staged.len() >= limits.max_writes {
            return Err(KvError::Limit(format!(
                "at most {} keys written per delivery",
                limits.max_writes
            )));
        }
        let value = value.map(Bytes::from);
        match existing {
            Some(i) => {
                let s = &self.staged[i];
                // The key's condition is about its state before this
                // delivery; a later write may repeat it but not change it.
                let condition = match (s.write.condition, condition) {
                    (first, Condition::None) => first,
                    (Condition::None, later) => later,
                    (first, later) if first == later => first,
                    (_, _) => {
                        return Err(KvError::Invalid(format!(
                            "key \"{key}\" was already written in this delivery under another \
                             condition; a later write may repeat it or give none"
                        )));
                    }
                };
                self.check_one_condition(Some(i), condition)?;
                let s = &mut self.staged[i];
                if let Condition::Revision(r) = condition {
                    s.base = Some(r);
                }
                s.write.value = value;
                s.write.condition = condition;
            }
            None => {
                self.check_one_condition(None, condition)?;
                let base = match condition {
                    Condition::Revision(r) => Some(r),
                    _ => None,
                };
                self.staged.push(Staged {
                    write: Write {
                        bucket,
                        key,
                        value,
                        condition,
                    },
                    base,
                });
            }
        }
        self.bytes = self.bytes - previous + size;
        Ok(())
    }

    /// At most one key per delivery carries a condition.
    fn check_one_condition(&self, at: Option<usize>, condition: Condition) -> Result<(), KvError> {
        if condition == Condition::None {
            return Ok(());
        }
        let other = self
            .staged
            .iter()
            .enumerate()
            .find(|(i, s)| Some(*i) != at && s.write.condition != Condition::None);
        match other {
            Some((_, s)) => Err(KvError::Limit(format!(
                "one conditional write per delivery (put or delete with `expected`, or create); \
                 key \"{}\" in bucket \"{}\" already has one",
                s.write.key, s.write.bucket
            ))),
            None => Ok(()),
        }
    }

    /// Empties the staged writes, returning them in the order staged.
    pub(crate) fn take(&mut self) -> Vec<Write> {
        self.bytes = 0;
        std::mem::take(&mut self.staged)
            .into_iter()
            .map(|s| s.write)
            .collect()
    }
}

#[cfg(test)]
mod tests;
