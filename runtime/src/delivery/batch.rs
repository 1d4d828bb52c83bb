//! One batch: its messages read, the guest run once for those that need it
//! (in halves after a failure of the whole, `super::bisect`), and every
//! message then settled on its own by the same settlement table and the
//! same commit as a message delivered alone (`super::apply`): its outputs
//! and key-value writes, staged under its index, are released only if it
//! succeeded, through its own effect record when it wrote state.
//!
//! What if the host dies at each step? Until a message is settled, it is
//! held under its lease and nothing it staged has left the host, except
//! what its own commit already stored (its effect record, its writes, its
//! outputs), which its redelivery finds or deduplicates exactly as for a
//! message delivered alone. Messages of one batch share nothing on the
//! broker: each is redelivered, recorded, acked or dead-lettered by itself.

use std::time::{Duration, Instant};

use tracing::{Instrument, debug, info_span};

use super::apply::{Carried, Run};
use super::bisect::{self, Whole};
use super::commit::Effects;
use super::dispatch::{Incoming, incoming, log_outcome};
use super::dispatcher::{Dispatcher, Version};
use super::lease::Lease;
use crate::effects::record::Found;
use crate::sandbox::bindings::{Delivery, Message};
use crate::sandbox::guest::{BatchRan, Ran};
use crate::settle::{Outcome, settle};
use crate::telemetry::Record;

/// One message of a batch, between its runs and its settlement.
struct Item {
    incoming: Incoming,
    pulled: Instant,
    /// The effect record a rerun's record must follow (a conflict), or 0.
    after: u64,
    /// How often a conflict ran the guest again for it in this delivery.
    reruns: u32,
}

/// A message ready to be settled: what it produced and what it will do.
type Decided = (Lease, Item, Outcome, Effects);

impl Dispatcher {
    /// Runs one batch to the settlement of each of its messages.
    pub(crate) async fn deliver_batch(&self, leases: Vec<Lease>) {
        let version = self.current();
        let handler = version.guest.handler().clone();
        let span = info_span!(
            "batch",
            handler = %handler.name,
            messaging.system = "nats",
            messaging.batch.message_count = leases.len(),
        );
        let mut items = Vec::with_capacity(leases.len());
        span.in_scope(|| {
            for lease in leases {
                // A message without metadata cannot be settled; its lease
                // ends here, as for a message delivered alone.
                if let Some(incoming) =
                    incoming(&handler, lease.message(), lease.retries_in_place())
                {
                    let pulled = lease.pulled();
                    let item = Item {
                        incoming,
                        pulled,
                        after: 0,
                        reruns: 0,
                    };
                    items.push((lease, item));
                }
            }
        });
        async {
            // A redelivery of a handler that writes state may find the
            // effects an earlier delivery recorded: it applies those and
            // is not run again. Past its final attempt, a message is
            // dead-lettered without running.
            let redelivered = items.iter().any(|(_, item)| item.incoming.attempt > 1);
            let recorded = if redelivered && self.state.is_some() {
                futures::future::join_all(items.iter().map(|(_, item)| {
                    let i = &item.incoming;
                    self.recorded_if_any(&handler, i.attempt, &i.source)
                        .instrument(i.span.clone())
                }))
                .await
            } else {
                items.iter().map(|_| Found::Nothing).collect()
            };
            let mut decided: Vec<Decided> = Vec::new();
            let mut to_run = Vec::new();
            for ((lease, item), recorded) in items.into_iter().zip(recorded) {
                match recorded {
                    Found::Record(stored) => {
                        item.incoming.span.in_scope(|| debug!(record = %stored.record.id, sequence = stored.sequence, "applying the effects an earlier delivery recorded"));
                        let effects = Effects::recorded(stored.record, stored.sequence);
                        decided.push((lease, item, Outcome::Ok, effects));
                    }
                    Found::Done => {
                        item.incoming.span.in_scope(|| debug!("an earlier delivery applied this message's effects and was acked"));
                        decided.push((lease, item, Outcome::Ok, Effects::Done));
                    }
                    Found::Nothing if item.incoming.attempt > handler.max_attempts => {
                        let effects = Effects::Outputs(Vec::new());
                        decided.push((lease, item, Outcome::PastFinalAttempt, effects));
                    }
                    Found::Nothing => to_run.push((lease, item)),
                }
            }
            loop {
                if !to_run.is_empty() {
                    decided.extend(self.run_items(&version, std::mem::take(&mut to_run)).await);
                }
                let settled = futures::future::join_all(
                    decided
                        .drain(..)
                        .map(|d| self.settle_item(&version, d)),
                )
                .await;
                // Messages whose key-value write conflicted run again, on
                // fresh state, within this delivery, as a batch of their own.
                let mut delay = Duration::ZERO;
                for (lease, item, wait) in settled.into_iter().flatten() {
                    delay = delay.max(wait);
                    to_run.push((lease, item));
                }
                if to_run.is_empty() {
                    break;
                }
                tokio::time::sleep(delay).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Runs the guest once for these messages (in halves after a failure
    /// of the whole, when `bisect` is on) and pairs each with its outcome
    /// and effects, in order.
    async fn run_items(&self, version: &Version, items: Vec<(Lease, Item)>) -> Vec<Decided> {
        let guest = &version.guest;
        let bisect = guest.handler().batch.is_none_or(|b| b.bisect);
        let mut items = items;
        // Lent to the guest and back, rather than copied: a rerun needs them.
        let messages: Vec<Message> = items
            .iter_mut()
            .map(|(_, item)| std::mem::replace(&mut item.incoming.message, lent()))
            .collect();
        let results = bisect::run(messages.len(), bisect, |range| {
            let messages = &messages[range];
            async move {
                let ran = guest.run_batch(messages).await;
                self.telemetry.ran(ran.times, messages.len());
                match ran.ran {
                    BatchRan::Each(each) => Ok(each),
                    BatchRan::Failed { failure, detail } => Err(Whole { failure, detail }),
                }
            }
        })
        .await;
        for ((_, item), message) in items.iter_mut().zip(messages) {
            item.incoming.message = message;
        }
        items
            .into_iter()
            .zip(results)
            .map(|((lease, item), result)| {
                let (outcome, effects) = match result {
                    Ok(Ran {
                        outcome,
                        outputs,
                        writes,
                        ..
                    }) => (outcome, Effects::of(outputs, writes, item.after)),
                    Err(Whole { failure, detail }) => (
                        Outcome::Failed { failure, detail },
                        Effects::Outputs(Vec::new()),
                    ),
                };
                item.incoming.span.in_scope(|| log_outcome(&outcome));
                (lease, item, outcome, effects)
            })
            .collect()
    }

    /// Settles one message of a batch by what it produced, as a message
    /// delivered alone is settled; hands it back, with the delay before it
    /// may run again, when its key-value write conflicted.
    async fn settle_item(
        &self,
        version: &Version,
        (lease, mut item, outcome, mut effects): Decided,
    ) -> Option<(Lease, Item, Duration)> {
        let handler = version.guest.handler();
        let attempt = item.incoming.attempt;
        let action = settle(outcome, attempt, handler.max_attempts, &version.backoff);
        let span = item.incoming.span.clone();
        async move {
            let run = Run {
                attempt,
                reruns: item.reruns,
            };
            let source = &item.incoming.source;
            match self
                .apply(version, lease, source, run, action, &mut effects)
                .await
            {
                Carried::Settled(settled, reason) => {
                    self.telemetry.settled(&Record {
                        settled,
                        pulled: item.pulled,
                        // The guest's time is recorded per call, not per message.
                        ran: None,
                        outputs: effects.outputs().len(),
                        reruns: item.reruns,
                        reason: reason.as_deref(),
                        source,
                        parent: item.incoming.parent.as_ref(),
                    });
                    None
                }
                Carried::Rerun {
                    lease,
                    delay,
                    after,
                } => {
                    item.after = after;
                    item.reruns += 1;
                    Some((*lease, item, delay))
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// What stands in for a message lent to the guest; allocates nothing.
fn lent() -> Message {
    Message {
        subject: String::new(),
        payload: Vec::new(),
        headers: Vec::new(),
        delivery: Delivery {
            stream: String::new(),
            consumer: String::new(),
            stream_sequence: 0,
            consumer_sequence: 0,
            attempt: 0,
            max_attempts: 0,
            published_at_nanos: 0,
        },
    }
}
