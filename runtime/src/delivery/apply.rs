//! Carrying out a settlement with the broker: publish the outputs and ack,
//! store the dead-letter copy and term, or nak. A host-side failure on the
//! way holds the message under its lease and tries the step again; nothing
//! acks or terms before JetStream confirmed what it depends on.

use std::time::Duration;

use tracing::{debug, error, warn};

use super::dispatch::{Dispatcher, Version};
use super::lease::Lease;
use super::stalls::StallGuard;
use crate::config::HandlerConfig;
use crate::effects::classify::FlushError;
use crate::effects::{dead_letter, outbox};
use crate::settle::{Action, DeadLetterKind, Outcome, Settled, settle};
use crate::source::Source;
use crate::staged::Outgoing;
use crate::text::escape_controls;

impl Dispatcher {
    /// Carries out the settlement. Every path that ends a message (ack, term)
    /// first has its outputs or its dead-letter copy confirmed; a host-side
    /// failure on the way keeps the message (under its lease) and tries the
    /// step again, as `settle` says.
    pub(super) async fn apply(
        &self,
        version: &Version,
        lease: Lease,
        source: &Source,
        attempt: u32,
        action: Action,
        outputs: &[Outgoing],
    ) -> (Settled, Option<String>) {
        let handler = version.guest.handler();
        let settle = |outcome| settle(outcome, attempt, handler.max_attempts, &version.backoff);
        let mut action = action;
        // The step to try again after `Action::RetryStep`, and how often it failed.
        let mut again: Option<Action> = None;
        let mut tries = 0u32;
        let mut held = Held::default();
        let mut confirmed = vec![false; outputs.len()];
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
                Action::PublishThenAck => {
                    let first_try = attempt == 1 && tries == 0;
                    match self
                        .flush(handler, source, outputs, &mut confirmed, first_try)
                        .await
                    {
                        Ok(()) => {
                            failpoint::after_outbox();
                            return ack(lease, handler.double_ack, outputs.len()).await;
                        }
                        Err(FlushError::Refused(detail)) => {
                            warn!(detail = %escape_controls(&detail), "the server refused an output");
                            action = settle(Outcome::OutputRefused { detail });
                            continue;
                        }
                        Err(e) => e,
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
                        Ok(()) => return term(lease, *kind, reason.clone()).await,
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
            _ => ("outbox", "outputs not confirmed"),
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

async fn ack(lease: Lease, double: bool, outputs: usize) -> (Settled, Option<String>) {
    match lease.ack(double).await {
        Ok(()) => {
            debug!(outputs, "acked");
            (Settled::Acked, None)
        }
        Err(e) => {
            // The outputs are stored with deterministic ids, so the
            // redelivery this causes will not duplicate them.
            warn!(error = %e, "ack failed; the message will be redelivered");
            (Settled::Abandoned, None)
        }
    }
}

async fn nak(lease: Lease, delay: Duration) -> (Settled, Option<String>) {
    match lease.nak(delay).await {
        Ok(()) => (Settled::Naked, None),
        Err(e) => {
            warn!(error = %e, "nak failed; ack_wait will redeliver the message");
            (Settled::Abandoned, None)
        }
    }
}

async fn term(lease: Lease, kind: DeadLetterKind, reason: String) -> (Settled, Option<String>) {
    match lease.term().await {
        Ok(()) => (Settled::DeadLettered(kind), Some(reason)),
        Err(e) => {
            // The copy's id is derived from the source sequence, so
            // dead-lettering it again on redelivery is a no-op.
            warn!(error = %e, "term failed after the dead-letter copy was stored");
            (Settled::Abandoned, None)
        }
    }
}

async fn drop_message(
    lease: Lease,
    kind: DeadLetterKind,
    reason: String,
) -> (Settled, Option<String>) {
    error!(
        kind = %kind,
        reason = %escape_controls(&reason),
        "dropping undeliverable message: no dead_letter subject and drop_after_max_attempts = true"
    );
    match lease.term().await {
        Ok(()) => (Settled::Dropped, Some(reason)),
        Err(e) => {
            warn!(error = %e, "term failed; ack_wait will redeliver the message");
            (Settled::Abandoned, None)
        }
    }
}

/// Crash-test hooks, compiled in only with the `failpoints` feature.
mod failpoint {
    /// With `WHARF_FAILPOINT_EXIT_AFTER_OUTBOX=N` set, the process exits on
    /// its N-th confirmed outbox, after the outputs are stored and before
    /// the input is acked: the worst moment for duplicates.
    #[cfg(feature = "failpoints")]
    pub(super) fn after_outbox() {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static EVERY: OnceLock<Option<u64>> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let every = EVERY.get_or_init(|| {
            std::env::var("WHARF_FAILPOINT_EXIT_AFTER_OUTBOX")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
        });
        if let Some(n) = every
            && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            eprintln!("failpoint: exiting after the outbox was confirmed, before the ack");
            std::process::exit(86);
        }
    }

    #[cfg(not(feature = "failpoints"))]
    pub(super) fn after_outbox() {}
}
