//! Key-value buckets on JetStream: reading a key as it is now (the
//! `crate::state::Reader` the sandbox's `kv` capability uses), and applying
//! a record's staged writes.
//!
//! Writes are publishes to the bucket's subjects, as JetStream key-value
//! does them, each expecting the key's last revision (the guest's
//! condition, or the revision just read), with a `Nats-Msg-Id` derived
//! from the record and the write's index, and headers naming the record
//! (`Wharf-Effect`, `Wharf-Record`, `Wharf-Write`).
//!
//! A record applied after a crash must tell its writes that were applied
//! from those that were not, even when a key has been written over since
//! (a bucket keeps one revision per key, and a restarted server forgets
//! the ids of messages it no longer holds). So whoever writes over a key
//! whose last write belongs to a record that is still there (its message
//! not settled yet) first marks that write as applied, on the record's own
//! subjects in the effects stream, and only then writes: a write of a
//! record is applied if it is still the key's last, or if it is marked.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};

use super::Jet;
use super::classify::{FlushError, Looked, classify};
use super::record::{RECORD_ID, RECORD_SUBJECT, Record, Records, WRITE_INDEX};
use crate::state::{Condition, Entry, ReadFuture, Reader, Write};

const KV_OPERATION: &str = "KV-Operation";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// How often one write races another writer of its key (the key moved
/// between reading it and writing) before the host gives up for now.
const WRITE_TRIES: usize = 16;

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

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }

    /// Whether this is write `index` of record `id`.
    fn is_write(&self, id: &str, index: usize) -> bool {
        self.header(RECORD_ID) == Some(id)
            && self.header(WRITE_INDEX) == Some(index.to_string().as_str())
    }

    /// The record and write this message is, if Wharf wrote it.
    fn writer(&self) -> Option<(&str, &str, usize)> {
        Some((
            self.header(RECORD_ID)?,
            self.header(RECORD_SUBJECT)?,
            self.header(WRITE_INDEX)?.parse().ok()?,
        ))
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

    /// Applies a record's writes: the conditional one first (a conflict
    /// there leaves everything unapplied), then the others together.
    /// `replay` says whether any of them may have been applied before (a
    /// redelivery, or another try after a host-side failure): then each is
    /// first looked for on its key and among the record's marks.
    pub(crate) async fn apply(
        &self,
        jet: &Jet,
        records: &Records,
        subject: &str,
        record: &Record,
        replay: bool,
    ) -> Result<(), ApplyError> {
        let (conditional, plain): (Vec<_>, Vec<_>) = record
            .writes
            .iter()
            .enumerate()
            .partition(|(_, w)| w.condition != Condition::None);
        for (index, write) in conditional {
            self.apply_one(jet, records, subject, record, index, write, replay)
                .await?;
        }
        let plain = plain.into_iter().map(|(index, write)| {
            self.apply_one(jet, records, subject, record, index, write, replay)
        });
        for result in futures::future::join_all(plain).await {
            result?;
        }
        Ok(())
    }

    /// Applies write `index` of `record`, once.
    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        jet: &Jet,
        records: &Records,
        subject: &str,
        record: &Record,
        index: usize,
        write: &Write,
        replay: bool,
    ) -> Result<(), ApplyError> {
        let key_subject = self.put_subject(&write.bucket, &write.key).map_err(host)?;
        let what = || format!("key \"{}\" in bucket \"{}\"", write.key, write.bucket);
        for _ in 0..WRITE_TRIES {
            let last = self
                .last(&write.bucket, &write.key)
                .await
                .map_err(|e| host(format!("reading {}: {e}", what())))?;
            if replay {
                if last.as_ref().is_some_and(|l| l.is_write(&record.id, index)) {
                    return Ok(());
                }
                if records
                    .is_marked(subject, index)
                    .await
                    .map_err(ApplyError::Failed)?
                {
                    return Ok(());
                }
            }
            let now = last.as_ref().map(|l| (l.revision, l.is_value()));
            let expected = match (write.condition, now) {
                (Condition::None, now) => now.map_or(0, |(r, _)| r),
                (Condition::Revision(r), Some((at, _))) if at == r => r,
                (Condition::Absent, None) => 0,
                (Condition::Absent, Some((at, false))) => at,
                (condition, now) => {
                    let now = match now {
                        Some((at, true)) => format!("revision {at}"),
                        Some((at, false)) => format!("deleted at revision {at}"),
                        None => "no value".into(),
                    };
                    let wanted = match condition {
                        Condition::Revision(r) => format!("revision {r}"),
                        _ => "no value".into(),
                    };
                    return Err(ApplyError::Conflict(format!(
                        "{} has {now}; the write expected {wanted}",
                        what()
                    )));
                }
            };
            // The write about to be written over stays provably applied.
            if let Some((id, their_subject, their_index)) = last.as_ref().and_then(Last::writer)
                && id != record.id
            {
                records
                    .mark_if_pending(jet, their_subject, id, their_index)
                    .await
                    .map_err(ApplyError::Failed)?;
            }
            tracing::debug!(key = %write.key, record = %record.id, expected, base = ?last.as_ref().and_then(|l| l.header(RECORD_ID).map(str::to_string)), "writing");
            let headers = write_headers(record, subject, index, write, expected);
            let payload = write.value.clone().unwrap_or_default();
            let failed = match jet
                .publish
                .publish_with_headers(key_subject.clone(), headers, payload)
                .await
            {
                // A duplicate: this very write was stored before (servers
                // before 2.10 drop a repeated id before they check the
                // expectation).
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if failed.kind() != PublishErrorKind::WrongLastSequence {
                let what = format!("key-value write to \"{key_subject}\"");
                let mut looked = Looked::default();
                return Err(ApplyError::Failed(
                    classify(jet, &mut looked, &what, &key_subject, failed, &|_: &str| {
                        true
                    })
                    .await,
                ));
            }
            // Another writer came between the read and the write: read again.
        }
        Err(ApplyError::Failed(FlushError::Unavailable(
            anyhow::anyhow!(
                "{} kept changing under {WRITE_TRIES} tries to write it",
                what()
            ),
        )))
    }
}

/// The headers of write `index` of `record`, whose record is on `subject`.
fn write_headers(
    record: &Record,
    subject: &str,
    index: usize,
    write: &Write,
    expected: u64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        crate::headers::MSG_ID,
        crate::headers::kv_write_id(&record.id, index).as_str(),
    );
    headers.insert(RECORD_ID, record.id.as_str());
    headers.insert(RECORD_SUBJECT, subject);
    headers.insert(WRITE_INDEX, index.to_string().as_str());
    if write.value.is_none() {
        headers.insert(KV_OPERATION, "DEL");
    }
    headers.insert(
        EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
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
