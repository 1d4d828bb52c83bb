//! Carrying out a settlement with the broker: publish the outputs and ack,
//! store the dead-letter copy and term, or nak. A host-side failure on the
//! way holds the message under its lease and tries the step again; nothing
//! acks or terms before JetStream confirmed what it depends on.

use std::time::Duration;

use tracing::{debug, error, warn};

use super::commit::{CommitError, Effects};
use super::dispatcher::{Dispatcher, Version};
use super::failpoint;
use super::lease::Lease;
use super::stalls::StallGuard;
use crate::config::HandlerConfig;
use crate::effects::classify::FlushError;
use crate::effects::dead_letter;
use crate::settle::{Action, DeadLetterKind, Outcome, Settled, settle};
use crate::source::Source;
use crate::text::escape_controls;

/// How carrying out a settlement ended.
pub(super) enum Carried {
    /// The message is settled (or abandoned to `ack_wait`).
    Settled(Settled, Option<String>),
    /// The guest's key-value write conflicted: run it again after `delay`
    /// on fresh state, under the same lease; its next record must follow
    /// the one at `after`.
    Rerun {
        lease: Box<Lease>,
        delay: Duration,
        after: u64,
    },
}

/// Which run of the guest a settlement is for: the delivery's attempt,
/// and how often a conflict ran the guest again within it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub attempt: u32,
    pub reruns: u32,
}

impl Dispatcher {
    /// Carries out the settlement. Every path that ends a message (ack, term)
    /// first has its effects or its dead-letter copy confirmed; a host-side
    /// failure on the way keeps the message (under its lease) and tries the
    /// step again, as `settle` says.
    pub(super) async fn apply(
        &self,
        version: &Version,
        lease: Lease,
        source: &Source,
        run: Run,
        action: Action,
        effects: &mut Effects,
    ) -> Carried {
        let Run { attempt, reruns } = run;
        let handler = version.guest.handler();
        let settle = |outcome| settle(outcome, attempt, handler.max_attempts, &version.backoff);
        let mut action = action;
        // The step to try again after `Action::RetryStep`, and how often it failed.
        let mut again: Option<Action> = None;
        let mut tries = 0u32;
        let mut held = Held::default();
        let mut confirmed = vec![false; effects.outputs().len()];
        loop {
            let step = match action {
                Action::RetryStep { delay } => {
                    tokio::time::sleep(delay).await;
                    again.take().expect("a retry follows a failed step")
                }
                other => other,
            };
            let failed = match &step {
                Action::Nak { delay } => return nak(lease, *delay).await,
                Action::Rerun { delay } => {
                    return Carried::Rerun {
                        lease: Box::new(lease),
                        delay: *delay,
                        after: effects.stored().map_or(0, |(s, _)| s),
                    };
                }
                Action::PublishThenAck => {
                    let first_try = attempt == 1 && tries == 0 && reruns == 0;
                    match self
                        .commit(handler, source, effects, &mut confirmed, first_try)
                        .await
                    {
                        Ok(()) => {
                            failpoint::after_outbox();
                            let outputs = effects.outputs().len();
                            if !effects.recorded_ack() {
                                return ack(lease, handler.double_ack, outputs).await;
                            }
                            // The record is marked done only once the ack is
                            // confirmed: a lost ack redelivers the message,
                            // which must find its record.
                            let acked = ack(lease, true, outputs).await;
                            if let Carried::Settled(Settled::Acked, _) = acked
                                && let (Some((sequence, id)), Some(state)) =
                                    (effects.stored(), &self.state)
                            {
                                state.records.forget(source, sequence, id);
                            }
                            return acked;
                        }
                        Err(CommitError::Refused(detail)) => {
                            warn!(detail = %escape_controls(&detail), "the server refused an output");
                            action = settle(Outcome::OutputRefused { detail });
                            continue;
                        }
                        Err(CommitError::Conflict { detail, after }) => {
                            debug!(detail = %escape_controls(&detail), reruns, "key-value write conflicted");
                            if let Effects::Recorded {
                                after: a, stored, ..
                            } = effects
                            {
                                *a = after;
                                *stored = Some(after);
                            }
                            action = settle(Outcome::Conflict { reruns, detail });
                            continue;
                        }
                        Err(CommitError::Failed(e)) => e,
                    }
                }
                Action::DeadLetter { kind, reason } => {
                    let Some(subject) = &handler.dead_letter else {
                        return drop_message(lease, *kind, reason.clone()).await;
                    };
                    let copy = dead_letter::Reason {
                        kind: *kind,
                        text: reason,
                        handler: &handler.name,
                        deliveries: u64::from(attempt),
                    };
                    let max_payload = version.guest.max_payload();
                    match self
                        .dead_letter(subject, &lease, source, &copy, max_payload)
                        .await
                    {
                        Ok(()) => {
                            let termed = term(lease, *kind, reason.clone()).await;
                            // A record left by a conflicted run applied
                            // nothing, and the message will not be back.
                            if let (Some((sequence, id)), Some(state)) =
                                (effects.stored(), &self.state)
                            {
                                state.records.forget(source, sequence, id);
                            }
                            return termed;
                        }
                        Err(e) => e,
                    }
                }
                Action::RetryStep { .. } => unreachable!("settle never retries a retry"),
            };
            self.log_host_failure(handler, &step, &failed);
            held.enter(self, &failed);
            again = Some(step);
            let outage = matches!(failed, FlushError::Unavailable(_));
            action = settle(Outcome::HostFailed { tries, outage });
            tries += 1;
        }
    }

    /// Stores the message's dead-letter copy.
    async fn dead_letter(
        &self,
        subject: &str,
        lease: &Lease,
        source: &Source,
        reason: &dead_letter::Reason<'_>,
        max_payload: Option<usize>,
    ) -> Result<(), FlushError> {
        let msg = lease.message();
        let room = max_payload.map(|max| max.saturating_sub(msg.payload.len()));
        let copy = dead_letter::copy_headers(msg.headers.as_ref(), source, reason, room);
        dead_letter::publish(&self.jet, subject, copy, msg.payload.clone()).await
    }

    /// One error line per kind of failure and interval, with how many were not logged.
    fn log_host_failure(&self, handler: &HandlerConfig, step: &Action, e: &FlushError) {
        let (kind, what) = match step {
            Action::DeadLetter { .. } => ("dead-letter", "dead-letter copy not stored"),
            _ => (
                "outbox",
                "outputs not confirmed, or key-value writes not applied",
            ),
        };
        if let Some(suppressed) = self.throttle.admit(kind) {
            error!(
                handler = %handler.name,
                error = %e,
                suppressed,
                "{what}; holding the message and trying again"
            );
        }
    }
}

/// What a delivery held for a host-side failure counts in, while it lasts.
#[derive(Default)]
struct Held<'a> {
    /// In the handler's held gauge.
    _counted: Option<crate::telemetry::Hold<'a>>,
    /// In the handler's stalls while the latest failure is an outage: it
    /// pauses the handler's pulls. A copy the server refuses (too large for
    /// the stream, say) holds only its message, even after an outage.
    _stalled: Option<StallGuard<'a>>,
}

impl<'a> Held<'a> {
    fn enter(&mut self, dispatcher: &'a Dispatcher, e: &FlushError) {
        self._counted
            .get_or_insert_with(|| dispatcher.telemetry.status.hold());
        if matches!(e, FlushError::Unavailable(_)) {
            self._stalled
                .get_or_insert_with(|| dispatcher.stalls.enter());
        } else {
            self._stalled = None;
        }
    }
}

async fn ack(lease: Lease, double: bool, outputs: usize) -> Carried {
    match lease.ack(double).await {
        Ok(()) => {
            debug!(outputs, "acked");
            Carried::Settled(Settled::Acked, None)
        }
        Err(e) => {
            // The outputs are stored with deterministic ids, so the
            // redelivery this causes will not duplicate them.
            warn!(error = %e, "ack failed; the message will be redelivered");
            Carried::Settled(Settled::Abandoned, None)
        }
    }
}

async fn nak(lease: Lease, delay: Duration) -> Carried {
    match lease.nak(delay).await {
        Ok(()) => Carried::Settled(Settled::Naked, None),
        Err(e) => {
            warn!(error = %e, "nak failed; ack_wait will redeliver the message");
            Carried::Settled(Settled::Abandoned, None)
        }
    }
}

async fn term(lease: Lease, kind: DeadLetterKind, reason: String) -> Carried {
    match lease.term().await {
        Ok(()) => Carried::Settled(Settled::DeadLettered(kind), Some(reason)),
        Err(e) => {
            // The copy's id is derived from the source sequence, so
            // dead-lettering it again on redelivery is a no-op.
            warn!(error = %e, "term failed after the dead-letter copy was stored");
            Carried::Settled(Settled::Abandoned, None)
        }
    }
}

async fn drop_message(lease: Lease, kind: DeadLetterKind, reason: String) -> Carried {
    error!(
        kind = %kind,
        reason = %escape_controls(&reason),
        "dropping undeliverable message: no dead_letter subject and drop_after_max_attempts = true"
    );
    match lease.term().await {
        Ok(()) => Carried::Settled(Settled::Dropped, Some(reason)),
        Err(e) => {
            warn!(error = %e, "term failed; ack_wait will redeliver the message");
            Carried::Settled(Settled::Abandoned, None)
        }
    }
}
