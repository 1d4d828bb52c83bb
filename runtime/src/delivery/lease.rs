//! Leases on pulled messages. From the moment a message is pulled until it
//! is settled (acked, nak'd, termed or handed back), the host holds it: one
//! task per handler sends in-progress acks (`+WPI`) for every held message,
//! whether it waits in line, runs, or waits for its outputs or dead-letter
//! copy to be stored, so its `ack_wait` never runs out underneath it.
//!
//! In ordered mode every held message gets one in each round, in stream
//! order, and a message pulled behind a later one (a redelivery), or
//! delivered before a round that it missed (still on its way), is
//! refreshed at once with the ones after it: the ack deadlines of the held
//! messages follow the stream's order, so that if the host dies,
//! JetStream's redeliveries (which follow the deadlines) come back in
//! stream order too. And a nak does not go to the server: the lease goes back to the
//! per-key line, which runs the message again in place (`order.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::{self, AckKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Every message one handler holds, for the keep-alive task.
pub(crate) struct Leases {
    client: async_nats::Client,
    /// How often a held message gets an in-progress ack: a third of `ack_wait`.
    every: Duration,
    held: Mutex<HashMap<u64, Held>>,
    /// Taken by a round of in-progress acks and by a settlement ending its
    /// lease, so that no in-progress ack goes out after the message's ack,
    /// nak or term: one sent after a nak would replace the nak's delay with
    /// a whole `ack_wait`.
    sending: tokio::sync::Mutex<()>,
    next: AtomicU64,
    /// Ordered mode: every round refreshes every held message, in stream order.
    in_order: bool,
    /// When the last round of in-progress acks began.
    last_round: Mutex<Option<Instant>>,
}

struct Held {
    reply: Subject,
    since: Instant,
    /// The message's stream sequence, for rounds in stream order.
    sequence: u64,
}

impl Leases {
    pub(crate) fn new(client: async_nats::Client, ack_wait: Duration) -> Arc<Leases> {
        Leases::with(client, ack_wait, false)
    }

    /// Leases for ordered mode: each round refreshes every held message in
    /// stream order, so their ack deadlines follow the stream's order.
    pub(crate) fn in_order(client: async_nats::Client, ack_wait: Duration) -> Arc<Leases> {
        Leases::with(client, ack_wait, true)
    }

    fn with(client: async_nats::Client, ack_wait: Duration, in_order: bool) -> Arc<Leases> {
        Arc::new(Leases {
            client,
            every: ack_wait / 3,
            held: Mutex::default(),
            sending: tokio::sync::Mutex::default(),
            next: AtomicU64::new(0),
            in_order,
            last_round: Mutex::new(None),
        })
    }

    /// Takes a lease on a pulled message; `None` for a message that cannot
    /// be settled (no reply subject: not from JetStream).
    pub(crate) fn hold(self: &Arc<Leases>, msg: jetstream::Message) -> Option<Lease> {
        self.hold_asked(msg, Instant::now())
    }

    /// `hold` for a message pulled by a request sent at `asked`.
    pub(crate) fn hold_asked(
        self: &Arc<Leases>,
        msg: jetstream::Message,
        asked: Instant,
    ) -> Option<Lease> {
        let reply = msg.reply.clone()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let sequence = msg.info().map_or(0, |i| i.stream_sequence);
        let behind = {
            let mut held = self.lock();
            let missed = self
                .last_round
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|r| r >= asked);
            let behind = self.in_order && (missed || held.values().any(|h| h.sequence > sequence));
            held.insert(
                id,
                Held {
                    reply,
                    since: Instant::now(),
                    sequence,
                },
            );
            behind
        };
        if behind {
            tokio::spawn(self.clone().refresh_after(sequence));
        }
        Some(Lease {
            id,
            leases: self.clone(),
            msg,
            pulled: Instant::now(),
            in_order: None,
        })
    }

    /// How many messages are held now.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends an in-progress ack for the held message `sequence` and every
    /// one after it, in stream order, so that their ack deadlines stay
    /// behind those of the messages before it.
    async fn refresh_after(self: Arc<Leases>, sequence: u64) {
        let _turn = self.sending.lock().await;
        let mut due: Vec<(u64, Subject)> = self
            .lock()
            .values()
            .filter(|h| h.sequence >= sequence)
            .map(|h| (h.sequence, h.reply.clone()))
            .collect();
        due.sort_unstable_by_key(|(sequence, _)| *sequence);
        for (_, reply) in due {
            if let Err(e) = self.client.publish(reply, AckKind::Progress.into()).await {
                debug!(error = %e, "in-progress ack failed");
            }
        }
    }

    /// Sends in-progress acks until `stop` fires: every third of `ack_wait`,
    /// for each message held for at least that long. A message taken just
    /// after a tick gets its first one within two thirds of `ack_wait`.
    pub(crate) async fn keep_alive(self: Arc<Leases>, stop: CancellationToken) {
        let mut pulse =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = pulse.tick() => {}
            }
            let _turn = self.sending.lock().await;
            *self.last_round.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            let due: Vec<Subject> = {
                let now = Instant::now();
                let held = self.lock();
                let mut due: Vec<(u64, Subject)> = held
                    .values()
                    .filter(|h| self.in_order || now.duration_since(h.since) >= self.every)
                    .map(|h| (h.sequence, h.reply.clone()))
                    .collect();
                if self.in_order {
                    due.sort_unstable_by_key(|(sequence, _)| *sequence);
                }
                due.into_iter().map(|(_, reply)| reply).collect()
            };
            for reply in due {
                if let Err(e) = self.client.publish(reply, AckKind::Progress.into()).await {
                    debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    }
}

/// One held message. Settling it ends the lease; so does dropping it, which
/// leaves the message to `ack_wait`.
pub(crate) struct Lease {
    id: u64,
    leases: Arc<Leases>,
    msg: jetstream::Message,
    pulled: Instant,
    /// Set by ordered mode's line.
    in_order: Option<InOrder>,
}

/// What ordered mode's line attaches to a lease.
#[derive(Default)]
pub(crate) struct InOrder {
    /// Retries in place so far in this delivery: the attempt is JetStream's
    /// delivery count plus these.
    pub retries: u32,
    /// Where a nak sends the lease back, for a retry in place after the
    /// delay; the message stays held meanwhile.
    pub retry: Option<oneshot::Sender<(Lease, Duration)>>,
    /// Set for a message parked behind its stopped key: why.
    pub stopped: Option<String>,
}

impl Lease {
    /// When the message was pulled.
    pub(crate) fn pulled(&self) -> Instant {
        self.pulled
    }

    pub(crate) fn message(&self) -> &jetstream::Message {
        &self.msg
    }

    /// Acks; with `double`, waits for the server to confirm the ack.
    pub(crate) async fn ack(self, double: bool) -> Result<(), async_nats::Error> {
        self.end().await;
        if double {
            self.msg.double_ack().await
        } else {
            self.msg.ack().await
        }
    }

    /// Asks for redelivery after `delay`; in ordered mode, goes back to the
    /// per-key line instead, still held, to run again in place after `delay`.
    pub(crate) async fn nak(mut self, delay: Duration) -> Result<(), async_nats::Error> {
        if let Some(back) = self.in_order.as_mut().and_then(|o| o.retry.take()) {
            // If the line is gone (shutdown), dropping the lease leaves the
            // message to `ack_wait`.
            let _ = back.send((self, delay));
            return Ok(());
        }
        self.end().await;
        self.msg.ack_with(AckKind::Nak(Some(delay))).await
    }

    /// Ordered mode's state on this lease.
    pub(crate) fn in_order(&mut self) -> &mut InOrder {
        self.in_order.get_or_insert_with(InOrder::default)
    }

    /// Retries in place so far (ordered mode), added to the delivery count.
    pub(crate) fn retries_in_place(&self) -> u32 {
        self.in_order.as_ref().map_or(0, |o| o.retries)
    }

    /// Why the message is parked behind its stopped key, if it is.
    pub(crate) fn stopped_key(&self) -> Option<&str> {
        self.in_order.as_ref().and_then(|o| o.stopped.as_deref())
    }

    /// Ends the message for good (after its dead-letter copy was stored).
    pub(crate) async fn term(self) -> Result<(), async_nats::Error> {
        self.end().await;
        self.msg.ack_with(AckKind::Term).await
    }

    /// Naks without delay, so another host can take the message at once; if
    /// the nak is lost, `ack_wait` redelivers it.
    pub(crate) async fn hand_back(self) {
        self.end().await;
        if let Err(e) = self.msg.ack_with(AckKind::Nak(None)).await {
            debug!(error = %e, "handing a message back failed; ack_wait will redeliver it");
        }
    }

    /// A way to hand the message back after the lease's owner was dropped
    /// (a delivery abandoned at the drain timeout).
    pub(crate) fn handle(&self) -> HandBack {
        HandBack {
            id: self.id,
            leases: self.leases.clone(),
            reply: self.msg.reply.clone(),
        }
    }

    /// Ends the lease before the message is settled, between two rounds of
    /// in-progress acks.
    async fn end(&self) {
        let _turn = self.leases.sending.lock().await;
        self.release();
    }

    fn release(&self) {
        self.leases.lock().remove(&self.id);
    }
}

/// Hands a message back without holding its lease.
pub(crate) struct HandBack {
    id: u64,
    leases: Arc<Leases>,
    reply: Option<Subject>,
}

impl HandBack {
    /// Whether the message's lease is still held: not settled, and its
    /// owner not dropped yet.
    pub(crate) fn is_held(&self) -> bool {
        self.leases.lock().contains_key(&self.id)
    }

    /// Naks without delay; if the nak is lost, `ack_wait` redelivers the
    /// message. Between two rounds of in-progress acks, like a settlement.
    pub(crate) async fn hand_back(self) {
        let _turn = self.leases.sending.lock().await;
        if let Some(reply) = self.reply
            && let Err(e) = self
                .leases
                .client
                .publish(reply, AckKind::Nak(None).into())
                .await
        {
            debug!(error = %e, "handing a message back failed; ack_wait will redeliver it");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}
