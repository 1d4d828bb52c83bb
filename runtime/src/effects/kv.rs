//! Key-value buckets on JetStream: reading a key as it is now (the
//! `crate::state::Reader` the sandbox's `kv` capability uses), and applying
//! a record's staged writes.
//!
//! Writes are plain publishes to the bucket's subjects, as JetStream
//! key-value does them, with three additions: a `Nats-Msg-Id` derived from
//! the record and the write's index, so that applying a record again
//! (after a crash) stores nothing twice within the bucket's duplicate
//! window; the record's id in a `Wharf-Effect` header, so that a write
//! applied earlier is recognised on its key; and the write's condition as
//! an expected last sequence for the key's subject.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{
    DirectGetErrorKind, LastRawMessageErrorKind, RawMessageErrorKind,
};

use super::Jet;
use super::classify::{FlushError, Looked, classify};
use super::record::{RECORD_ID, Record};
use crate::state::{Condition, Entry, ReadFuture, Reader, Write};

const KV_OPERATION: &str = "KV-Operation";
/// The prefix of the keys whose purge markers settle whether a write was
/// stored; they never hold a value.
const FENCE_PREFIX: &str = "_wharf.fence";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Why a record's writes were not all applied.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The conditional write's condition no longer holds, and this record
    /// did not apply it earlier: nothing of the record is applied.
    Conflict(String),
    /// A write could not be stored; as for outputs, refused or unavailable.
    Failed(FlushError),
}

/// The buckets the handlers may use, opened at start-up.
#[derive(Clone, Default)]
pub(crate) struct Buckets(Arc<BTreeMap<String, kv::Store>>);

/// The last message on a key's subject, with its headers.
struct Last {
    revision: u64,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

impl Last {
    /// Whether the message is a value (not a delete or purge marker).
    fn is_value(&self) -> bool {
        self.headers
            .get(KV_OPERATION)
            .is_none_or(|op| op.as_str() == "PUT")
    }
}

impl Buckets {
    pub(crate) fn new(stores: BTreeMap<String, kv::Store>) -> Buckets {
        Buckets(Arc::new(stores))
    }

    fn store(&self, bucket: &str) -> Result<&kv::Store, String> {
        self.0
            .get(bucket)
            .ok_or_else(|| format!("bucket \"{bucket}\" was not opened at start-up"))
    }

    /// The last message on `key`'s subject, with its headers.
    async fn last(&self, bucket: &str, key: &str) -> Result<Option<Last>, String> {
        let store = self.store(bucket)?;
        let subject = format!("{}{key}", store.prefix);
        let stream = &store.stream;
        let found = if stream.cached_info().config.allow_direct {
            match stream.direct_get_last_for_subject(subject.as_str()).await {
                Ok(m) => Some((m.sequence, m.headers, m.payload)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
                Err(e) => return Err(e.to_string()),
            }
        } else {
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => Some((m.sequence, m.headers, m.payload)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(e.to_string()),
            }
        };
        Ok(found.map(|(revision, headers, payload)| Last {
            revision,
            headers,
            payload,
        }))
    }

    /// The subject a write of `key` is published to.
    fn put_subject(&self, bucket: &str, key: &str) -> Result<String, String> {
        let store = self.store(bucket)?;
        // Buckets are opened through the default JetStream API prefix
        // (never across domains), so puts go to the bucket's own subjects.
        if store.use_jetstream_prefix {
            return Err(format!(
                "bucket \"{bucket}\" is in another JetStream domain"
            ));
        }
        let mut subject = String::new();
        subject.push_str(store.put_prefix.as_ref().unwrap_or(&store.prefix));
        subject.push_str(key);
        Ok(subject)
    }

    /// Settles whether write `index` of `record` was stored, by publishing
    /// its id once more on a key of its own where no one else writes (a
    /// purge marker, so the key never shows a value). JetStream drops that
    /// as a duplicate only if a message with the id was stored within the
    /// bucket's duplicate window, and its PubAck names the message: the
    /// write (applied), or this fence from an earlier try (not applied).
    /// If neither was stored, the fence now holds the id, so the write can
    /// never be stored later either.
    async fn fence(
        &self,
        jet: &Jet,
        bucket: &str,
        record: &Record,
        index: usize,
    ) -> Result<bool, ApplyError> {
        let subject = self.fence_subject(bucket, record, index)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            crate::headers::MSG_ID,
            crate::headers::kv_write_id(&record.id, index).as_str(),
        );
        headers.insert(KV_OPERATION, "PURGE");
        headers.insert("Nats-Rollup", "sub");
        let stored = match jet
            .publish
            .publish_with_headers(subject.clone(), headers, bytes::Bytes::new())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let ack = match stored {
            Ok(ack) => ack,
            Err(e) => {
                let what = format!("key-value fence \"{subject}\"");
                let mut looked = Looked::default();
                return Err(ApplyError::Failed(
                    classify(jet, &mut looked, &what, &subject, e, &|_: &str| true).await,
                ));
            }
        };
        if !ack.duplicate {
            return Ok(false);
        }
        self.is_fence(bucket, &subject, ack.sequence)
            .await
            .map(|fence| !fence)
    }

    /// Whether the message at `sequence` of `bucket` is the fence on
    /// `subject`. A fence is never written over (its key is its own), so
    /// a message that is gone was not one.
    async fn is_fence(
        &self,
        bucket: &str,
        subject: &str,
        sequence: u64,
    ) -> Result<bool, ApplyError> {
        let stream = &self.store(bucket).map_err(host)?.stream;
        let original = if stream.cached_info().config.allow_direct {
            match stream.direct_get(sequence).await {
                Ok(m) => Some(m.subject),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
                Err(e) => return Err(host(format!("reading bucket \"{bucket}\": {e}"))),
            }
        } else {
            match stream.get_raw_message(sequence).await {
                Ok(m) => Some(m.subject),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(host(format!("reading bucket \"{bucket}\": {e}"))),
            }
        };
        Ok(original.is_some_and(|s| s.as_str() == subject))
    }

    /// The subject of the fence of write `index` of `record`.
    fn fence_subject(
        &self,
        bucket: &str,
        record: &Record,
        index: usize,
    ) -> Result<String, ApplyError> {
        self.put_subject(bucket, &format!("{FENCE_PREFIX}.{}.{index}", record.id))
            .map_err(host)
    }

    /// Applies a record's writes: the conditional one first (a conflict
    /// there leaves everything unapplied), then the others together. Every
    /// write that was applied before (by an earlier try of this record) is
    /// recognised and not applied again.
    pub(crate) async fn apply(&self, jet: &Jet, record: &Record) -> Result<(), ApplyError> {
        let (conditional, plain): (Vec<_>, Vec<_>) = record
            .writes
            .iter()
            .enumerate()
            .partition(|(_, w)| w.condition != Condition::None);
        for (index, write) in conditional {
            self.apply_conditional(jet, record, index, write).await?;
        }
        let mut pending = Vec::new();
        for (index, write) in plain {
            let subject = self.put_subject(&write.bucket, &write.key).map_err(host)?;
            let headers = write_headers(record, index, write, None);
            let payload = write.value.clone().unwrap_or_default();
            pending.push((subject.clone(), async move {
                match jet
                    .publish
                    .publish_with_headers(subject, headers, payload)
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }));
        }
        let (subjects, futures): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let results = futures::future::join_all(futures).await;
        let mut looked = Looked::default();
        for (subject, result) in subjects.iter().zip(results) {
            if let Err(e) = result {
                let what = format!("key-value write to \"{subject}\"");
                return Err(ApplyError::Failed(
                    classify(jet, &mut looked, &what, subject, e, &|_: &str| true).await,
                ));
            }
        }
        Ok(())
    }

    async fn apply_conditional(
        &self,
        jet: &Jet,
        record: &Record,
        index: usize,
        write: &Write,
    ) -> Result<(), ApplyError> {
        let subject = self.put_subject(&write.bucket, &write.key).map_err(host)?;
        let mut expected = match write.condition {
            Condition::Revision(r) => r,
            _ => 0,
        };
        // A create may find a delete or purge marker instead of nothing; it
        // then expects that marker, once.
        for _ in 0..2 {
            let headers = write_headers(record, index, write, Some(expected));
            let payload = write.value.clone().unwrap_or_default();
            let failed = match jet
                .publish
                .publish_with_headers(subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => match ack.await {
                    // Servers before 2.10 drop a repeated id before they
                    // check the expectation: the id may be this write's,
                    // applied before, or its fence's, which means it never
                    // was.
                    Ok(ack) if ack.duplicate => {
                        let fence = self.fence_subject(&write.bucket, record, index)?;
                        if self.is_fence(&write.bucket, &fence, ack.sequence).await? {
                            return Err(ApplyError::Conflict(format!(
                                "key \"{}\" in bucket \"{}\": an earlier try of this write found \
                                 the key moved on",
                                write.key, write.bucket
                            )));
                        }
                        return Ok(());
                    }
                    Ok(_) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if failed.kind() != PublishErrorKind::WrongLastSequence {
                let what = format!("key-value write to \"{subject}\"");
                let mut looked = Looked::default();
                return Err(ApplyError::Failed(
                    classify(jet, &mut looked, &what, &subject, failed, &|_: &str| true).await,
                ));
            }
            let last = self
                .last(&write.bucket, &write.key)
                .await
                .map_err(|e| host(format!("reading \"{}\" after a conflict: {e}", write.key)))?;
            match last {
                // This record's write, applied before: nothing to do.
                Some(l)
                    if l.headers
                        .get(RECORD_ID)
                        .is_some_and(|id| id.as_str() == record.id) =>
                {
                    return Ok(());
                }
                Some(l)
                    if write.condition == Condition::Absent && !l.is_value() && expected == 0 =>
                {
                    expected = l.revision;
                    continue;
                }
                _ => {}
            }
            // The key moved on. Either another delivery wrote it first (a
            // conflict), or this record's write was applied before (a
            // crash, a lost PubAck) and written over since: servers from
            // 2.10 on check the expectation before the duplicate id, so the
            // error does not tell. The fence does.
            let applied = self.fence(jet, &write.bucket, record, index).await?;
            tracing::debug!(key = %write.key, record = %record.id, applied, "fenced a conditional write that met a moved key");
            if applied {
                return Ok(());
            }
            let wanted = match write.condition {
                Condition::Absent => "no value".to_string(),
                _ => format!("revision {expected}"),
            };
            return Err(ApplyError::Conflict(format!(
                "key \"{}\" in bucket \"{}\" moved on; the write expected {wanted}",
                write.key, write.bucket
            )));
        }
        Err(ApplyError::Conflict(format!(
            "key \"{}\" in bucket \"{}\" changed while it was created",
            write.key, write.bucket
        )))
    }
}

/// The headers of write `index` of `record`.
fn write_headers(record: &Record, index: usize, write: &Write, expected: Option<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        crate::headers::MSG_ID,
        crate::headers::kv_write_id(&record.id, index).as_str(),
    );
    headers.insert(RECORD_ID, record.id.as_str());
    if write.value.is_none() {
        headers.insert(KV_OPERATION, "DEL");
    }
    if let Some(expected) = expected {
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
    }
    headers
}

fn host(e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Failed(FlushError::Unavailable(anyhow::anyhow!("{e}")))
}

impl Reader for Buckets {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> ReadFuture<'a> {
        Box::pin(async move {
            Ok(self
                .last(bucket, key)
                .await?
                .filter(Last::is_value)
                .map(|l| Entry {
                    value: l.payload,
                    revision: l.revision,
                }))
        })
    }
}
