//! Committing what a successful delivery caused, before its ack: its
//! outputs alone (a flush), or, when it staged key-value writes, its effect
//! record, then its writes, then its outputs.
//!
//! What happens if the host dies at each step of a commit with writes:
//!
//! - before the record is stored: nothing was applied; the redelivery runs
//!   the guest again.
//! - after the record, before or during the writes: the redelivery finds
//!   the record and applies it, never running the guest again; a write
//!   applied before is recognised (it is still its key's last, or whoever
//!   wrote over it marked it applied first) and not applied twice.
//! - after the writes, before or during the outputs or the ack: the same,
//!   and the outputs' deterministic ids keep them from being stored twice.
//! - after the ack: the record is replaced by a done marker; if JetStream
//!   delivers the message again anyway (a server crash lost the ack), the
//!   new delivery finds the marker (on its redelivery, or when it tries to
//!   record its own effects) and applies nothing.
//!
//! A conflict (the conditional write's key moved on) can only happen
//! before anything was applied: the conditional write goes first. The
//! guest then runs again on fresh state, and its new record follows the
//! conflicted one on the record's subject.

use super::dispatcher::Dispatcher;
use crate::config::HandlerConfig;
use crate::effects::classify::FlushError;
use crate::effects::kv::ApplyError;
use crate::effects::outbox;
use crate::effects::record::{ClaimError, Found, Record};
use crate::source::Source;
use crate::staged::Outgoing;
use crate::state::Write;

/// What a successful delivery will do, and how far it got.
#[derive(Debug)]
pub(crate) enum Effects {
    /// Outputs only: released by a flush.
    Outputs(Vec<Outgoing>),
    /// Nothing: an earlier delivery of the message applied its effects and
    /// was acked (JetStream delivered it again after losing the ack).
    Done,
    /// Key-value writes and outputs, committed through an effect record.
    Recorded {
        record: Record,
        /// The record's sequence, once stored or found.
        stored: Option<u64>,
        /// The last record on the message's subject before this one (0:
        /// none): the new one must follow it.
        after: u64,
        /// Whether the writes are applied.
        applied: bool,
        /// Whether they may have been applied before: found recorded, or
        /// tried already. Then each write is looked for before it is made.
        tried: bool,
    },
}

impl Effects {
    /// The effects of a guest run: a record when it staged writes.
    pub(crate) fn of(outputs: Vec<Outgoing>, writes: Vec<Write>, after: u64) -> Effects {
        if writes.is_empty() && after == 0 {
            return Effects::Outputs(outputs);
        }
        Effects::Recorded {
            record: Record {
                id: format!("{:032x}", fastrand::u128(..)),
                writes,
                outputs,
            },
            stored: None,
            after,
            applied: false,
            tried: false,
        }
    }

    /// The effects an earlier delivery recorded, to apply as they are.
    pub(crate) fn recorded(record: Record, sequence: u64) -> Effects {
        Effects::Recorded {
            record,
            stored: Some(sequence),
            after: sequence,
            applied: false,
            tried: true,
        }
    }

    pub(crate) fn outputs(&self) -> &[Outgoing] {
        match self {
            Effects::Outputs(o) => o,
            Effects::Done => &[],
            Effects::Recorded { record, .. } => &record.outputs,
        }
    }

    /// The stored record, if any: its sequence and id.
    pub(crate) fn stored(&self) -> Option<(u64, &str)> {
        match self {
            Effects::Outputs(_) | Effects::Done => None,
            Effects::Recorded { stored, record, .. } => stored.map(|s| (s, record.id.as_str())),
        }
    }

    /// Whether the message's effects go through a record (or were applied
    /// through one before): then its ack must be confirmed.
    pub(crate) fn recorded_ack(&self) -> bool {
        !matches!(self, Effects::Outputs(_))
    }
}

/// Why a commit did not finish.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Refused before anything was applied: the delivery's failure.
    Refused(String),
    /// The conditional write conflicts; nothing was applied. `after` is the
    /// conflicted record, which the next one must follow.
    Conflict { detail: String, after: u64 },
    /// The host's failure: keep the message and try again. A refusal after
    /// something was applied lands here too: the message is held (alone)
    /// until the server takes the rest, since a message whose effects are
    /// partly applied may be neither retried nor dead-lettered.
    Failed(FlushError),
}

impl Dispatcher {
    /// Commits `effects`; `confirmed` tracks which outputs JetStream has
    /// confirmed, across tries.
    pub(super) async fn commit(
        &self,
        handler: &HandlerConfig,
        source: &Source,
        effects: &mut Effects,
        confirmed: &mut Vec<bool>,
        first_try: bool,
    ) -> Result<(), CommitError> {
        let refused = |e| match e {
            FlushError::Refused(d) => CommitError::Refused(d),
            e => CommitError::Failed(e),
        };
        match effects {
            Effects::Done => return Ok(()),
            Effects::Outputs(outputs) => {
                return self
                    .flush(handler, source, outputs, confirmed, first_try)
                    .await
                    .map_err(refused);
            }
            Effects::Recorded {
                record,
                stored: stored @ None,
                after,
                tried,
                ..
            } => {
                let configured = |s: &str| handler.publish.literals().any(|l| l == s);
                outbox::check_destinations(&self.jet, &self.streams, &record.outputs, configured)
                    .await
                    .map_err(refused)?;
                let ours = record.id.clone();
                match self.claim(source, record, *after).await? {
                    Some(sequence) => {
                        *stored = Some(sequence);
                        // Another delivery's record, adopted: it may have
                        // been applied already.
                        *tried |= record.id != ours;
                    }
                    None => {
                        *effects = Effects::Done;
                        return Ok(());
                    }
                }
                confirmed.clear();
                confirmed.resize(record.outputs.len(), false);
            }
            Effects::Recorded { .. } => {}
        }
        let Effects::Recorded {
            record,
            stored: Some(stored),
            applied,
            tried,
            ..
        } = effects
        else {
            unreachable!("a record is stored above");
        };
        let state = self.state()?;
        if !*applied {
            let replay = std::mem::replace(tried, true);
            let subject = crate::effects::record::Records::subject(source);
            match state
                .buckets
                .apply(&self.jet, &state.records, &subject, record, replay)
                .await
            {
                Ok(()) => *applied = true,
                Err(ApplyError::Conflict(detail)) => {
                    return Err(CommitError::Conflict {
                        detail,
                        after: *stored,
                    });
                }
                Err(ApplyError::Failed(e)) => return Err(CommitError::Failed(e)),
            }
            super::failpoint::after_writes();
        }
        self.flush(handler, source, &record.outputs, confirmed, first_try)
            .await
            .map_err(CommitError::Failed)
    }

    /// Stores the record, or finds the one another delivery of the message
    /// stored first (whose effects this delivery then applies).
    async fn claim(
        &self,
        source: &Source,
        record: &mut Record,
        after: u64,
    ) -> Result<Option<u64>, CommitError> {
        let state = self.state()?;
        match state.records.claim(&self.jet, source, record, after).await {
            Ok(sequence) => {
                tracing::debug!(record = %record.id, sequence, after, "recorded the delivery's effects");
                Ok(Some(sequence))
            }
            Err(ClaimError::Taken) => match state.records.lookup(source).await {
                Ok(Found::Record(theirs)) => {
                    *record = theirs.record;
                    Ok(Some(theirs.sequence))
                }
                Ok(Found::Done) => Ok(None),
                Ok(Found::Nothing) => Err(CommitError::Failed(FlushError::Unavailable(
                    anyhow::anyhow!(
                        "another delivery's effect record was expected on \"{}\" but is gone",
                        crate::effects::record::Records::subject(source)
                    ),
                ))),
                Err(e) => Err(CommitError::Failed(e)),
            },
            Err(ClaimError::Failed(FlushError::Refused(d))) => Err(CommitError::Refused(d)),
            Err(ClaimError::Failed(e)) => Err(CommitError::Failed(e)),
        }
    }

    /// The effects an earlier delivery of the message recorded, for a
    /// redelivery of a handler that writes state: such a delivery applies
    /// those and does not run the guest again (or, when they were applied
    /// and the message acked, applies nothing).
    pub(super) async fn recorded_if_any(
        &self,
        handler: &HandlerConfig,
        attempt: u32,
        source: &Source,
    ) -> Found {
        match &self.state {
            Some(_) if attempt > 1 && handler.kv.writes() => self.recorded(source).await,
            _ => Found::Nothing,
        }
    }

    /// The message's effect record, if an earlier delivery stored one. A
    /// server that cannot say is asked again (the message stays under its
    /// lease): running the guest without knowing could apply its writes twice.
    async fn recorded(&self, source: &Source) -> Found {
        let Some(state) = self.state.as_ref() else {
            return Found::Nothing;
        };
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match state.records.lookup(source).await {
                Ok(found) => return found,
                Err(e) => {
                    if let Some(suppressed) = self.throttle.admit("record") {
                        tracing::error!(
                            handler = %self.handler.name,
                            error = %e,
                            suppressed,
                            "cannot read the delivery's effect record; holding the message and asking again"
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(crate::settle::HOST_RETRY_OUTAGE_MAX);
                }
            }
        }
    }

    fn state(&self) -> Result<&crate::effects::State, CommitError> {
        self.state.as_ref().ok_or_else(|| {
            CommitError::Failed(FlushError::Unavailable(anyhow::anyhow!(
                "key-value writes without the buckets and the effects stream bound"
            )))
        })
    }

    /// Publishes the outputs not confirmed yet; a subject only a wildcard
    /// allowed and no stream stores is the output's failure, a subject the
    /// config names is the host's.
    async fn flush(
        &self,
        handler: &HandlerConfig,
        source: &Source,
        outputs: &[Outgoing],
        confirmed: &mut [bool],
        first_try: bool,
    ) -> Result<(), FlushError> {
        let configured = |s: &str| handler.publish.literals().any(|l| l == s);
        outbox::flush(
            &self.jet,
            &self.streams,
            source,
            outputs,
            confirmed,
            first_try,
            configured,
        )
        .await
    }
}
