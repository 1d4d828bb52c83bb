//! Effect records: the write-ahead record of everything a successful
//! delivery that writes key-value state will do (its writes and its
//! outputs), stored before any of it is applied.
//!
//! Each message has its own subjects in the effects stream, under
//! `$WHARF.fx.<stream>.<consumer>.<sequence>`: `.r` holds its record,
//! `.a.<n>` marks its write `n` as applied once another delivery has
//! written over it (see `super::kv`). A record is created with an
//! expected last sequence for its subject, so of two deliveries of one
//! message (a redelivery racing a slow host) exactly one records its
//! effects, and the other applies those. A redelivery that finds a record
//! applies it instead of running the guest again, so its outputs never
//! come from a state that already holds its own writes. Once the
//! message's ack is confirmed, its record is replaced by a small done
//! marker: JetStream may deliver an acked message again after a server
//! crash (acks not yet on disk are lost), and the marker keeps its writes
//! from being applied twice, for as long as the effects stream keeps it
//! (`max_age`).

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;

mod codec;

use codec::{decode, encode};

use super::Jet;
use super::classify::FlushError;
use crate::source::Source;
use crate::staged::Outgoing;
use crate::state::Write;

/// The header naming a record's id, and (on key-value writes) the record
/// that wrote them.
pub(crate) const RECORD_ID: &str = "Wharf-Effect";
/// On key-value writes: the subjects of the record that wrote them.
pub(crate) const RECORD_SUBJECT: &str = "Wharf-Record";
/// On key-value writes: which of its record's writes this is.
pub(crate) const WRITE_INDEX: &str = "Wharf-Write";
/// On a record's subject: the record it replaced was applied and its
/// message acked.
pub(crate) const DONE: &str = "Wharf-Done";

/// The subject prefix of effect records.
pub(crate) const PREFIX: &str = "$WHARF.fx";

/// Everything a delivery will do once applied.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Unique per run of the guest: names the record's writes, so that
    /// their ids differ from another run's.
    pub id: String,
    pub writes: Vec<Write>,
    pub outputs: Vec<Outgoing>,
}

/// A record as stored.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub sequence: u64,
    pub record: Record,
}

/// What a message's record subject holds.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing: no delivery of the message recorded effects (or their
    /// marker is gone with the stream's `max_age`).
    Nothing,
    /// A record, not known to be done.
    Record(Stored),
    /// A done marker: the message's effects were applied and it was acked.
    Done,
}

/// Why a record could not be created.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// Another delivery of the message recorded first (its sequence is
    /// newer than the one this delivery expected).
    Taken,
    /// The record could not be stored.
    Failed(FlushError),
}

/// The effects stream, as the host uses it.
#[derive(Clone)]
pub(crate) struct Records {
    stream: Stream,
    /// Records to mark done (their subject, the record's sequence and id),
    /// in the order their messages were acked.
    applied: tokio::sync::mpsc::Sender<(String, u64, String)>,
}

/// Markers waiting at most: past this, a record is left as it is (applying
/// it again changes nothing) rather than holding up a delivery.
const FORGET_QUEUE: usize = 4096;

impl Records {
    /// The records on `stream`, and a task that marks applied ones done,
    /// one at a time. The task ends when the last `Records` is dropped.
    pub(crate) fn new(stream: Stream, jet: Jet) -> Records {
        let (applied, mut queue) =
            tokio::sync::mpsc::channel::<(String, u64, String)>(FORGET_QUEUE);
        tokio::spawn(async move {
            while let Some((subject, sequence, id)) = queue.recv().await {
                let mut headers = HeaderMap::new();
                headers.insert(DONE, id.as_str());
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    sequence.to_string().as_str(),
                );
                let stored = match jet
                    .publish
                    .publish_with_headers(format!("{subject}.r"), headers, Bytes::new())
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = stored {
                    tracing::debug!(error = %e, %subject, "could not mark an effect record done");
                }
            }
        });
        Records { stream, applied }
    }

    /// The subjects of the record of `source`'s message (the record is on
    /// `.r` below it, the marks on `.a.<n>`).
    pub(crate) fn subject(source: &Source) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            source.stream, source.consumer, source.stream_sequence
        )
    }

    /// The last message on `subject`, if any.
    async fn last(&self, subject: &str) -> Result<Option<(u64, HeaderMap, Bytes)>, FlushError> {
        if self.stream.cached_info().config.allow_direct {
            match self.stream.direct_get_last_for_subject(subject).await {
                Ok(m) => Ok(Some((m.sequence, m.headers, m.payload))),
                Err(e)
                    if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(unavailable(e, "reading the effects stream")),
            }
        } else {
            match self.stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Ok(Some((m.sequence, m.headers, m.payload))),
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    Ok(None)
                }
                Err(e) => Err(unavailable(e, "reading the effects stream")),
            }
        }
    }

    /// Whether write `index` of the record on `subject` is marked applied.
    pub(crate) async fn is_marked(&self, subject: &str, index: usize) -> Result<bool, FlushError> {
        Ok(self.last(&format!("{subject}.a.{index}")).await?.is_some())
    }

    /// Marks write `index` of record `id` (on `subject`) as applied, if
    /// that record is still there: its message is not settled, so a
    /// redelivery may have to tell whether the write was applied. Returns
    /// once the mark is stored.
    pub(crate) async fn mark_if_pending(
        &self,
        jet: &Jet,
        subject: &str,
        id: &str,
        index: usize,
    ) -> Result<(), FlushError> {
        if !subject.starts_with(PREFIX) {
            return Ok(());
        }
        let pending = self
            .last(&format!("{subject}.r"))
            .await?
            .is_some_and(|(_, h, _)| h.get(RECORD_ID).is_some_and(|v| v.as_str() == id));
        tracing::debug!(%subject, record = %id, pending, "overwriting another record's write");
        if !pending {
            return Ok(());
        }
        let mark = format!("{subject}.a.{index}");
        let mut headers = HeaderMap::new();
        headers.insert(RECORD_ID, id);
        match jet
            .publish
            .publish_with_headers(mark.clone(), headers, Bytes::new())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        }
        .map_err(|e| unavailable(e, &format!("marking \"{mark}\"")))
    }

    /// What the message's record subject holds.
    pub(crate) async fn lookup(&self, source: &Source) -> Result<Found, FlushError> {
        let subject = format!("{}.r", Records::subject(source));
        let found = self.last(&subject).await?;
        let Some((sequence, headers, payload)) = found else {
            return Ok(Found::Nothing);
        };
        if headers.get(DONE).is_some() {
            return Ok(Found::Done);
        }
        let id = headers
            .get(RECORD_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let record = decode(id, payload).map_err(|e| {
            FlushError::Unavailable(anyhow::anyhow!(
                "the effect record on \"{subject}\" (sequence {sequence}) cannot be read: {e}; \
                 the message is held until it is removed or repaired"
            ))
        })?;
        Ok(Found::Record(Stored { sequence, record }))
    }

    /// Stores `record` as the message's, if the last record on its subject
    /// is still the one at `after` (0: none).
    pub(crate) async fn claim(
        &self,
        jet: &Jet,
        source: &Source,
        record: &Record,
        after: u64,
    ) -> Result<u64, ClaimError> {
        let mut headers = HeaderMap::new();
        headers.insert(RECORD_ID, record.id.as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            after.to_string().as_str(),
        );
        let subject = format!("{}.r", Records::subject(source));
        let failed = match jet
            .publish
            .publish_with_headers(subject.clone(), headers, encode(record))
            .await
        {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if failed.kind() == PublishErrorKind::WrongLastSequence {
            return Err(ClaimError::Taken);
        }
        let what = format!("effect record on \"{subject}\"");
        let mut looked = super::classify::Looked::default();
        let configured = |_: &str| true;
        Err(ClaimError::Failed(
            super::classify::classify(jet, &mut looked, &what, &subject, failed, &configured).await,
        ))
    }

    /// Replaces, soon, the record of `source`'s message (at `sequence`, with
    /// `id`) with a done marker, once the message is acked (confirmed) or
    /// dead-lettered. A record left as it is (the host stopped first, or the
    /// queue was full) is applied again if the message comes back, which
    /// stores nothing twice.
    pub(crate) fn forget(&self, source: &Source, sequence: u64, id: &str) {
        let marked = (Records::subject(source), sequence, id.to_string());
        if self.applied.try_send(marked).is_err() {
            tracing::debug!("effect record left as it is");
        }
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static, what: &str) -> FlushError {
    FlushError::Unavailable(anyhow::Error::new(e).context(what.to_string()))
}
