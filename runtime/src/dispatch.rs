//! One delivery: build a fresh Store, run the guest, map its outcome through
//! the settlement table and tell the broker. Only this module creates Stores,
//! and nothing here acks before the guest has returned `ok` and its outbox is
//! confirmed.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tracing::{Instrument, debug, error, info, info_span, warn};
use wasmtime::{Engine, Trap};

use crate::bindings::{Delivery, HandlerError, HandlerPre, Header, Message};
use crate::config::{HandlerConfig, Isolation};
use crate::dead_letter;
use crate::engine::{LimitHit, StoreState, arm, new_store};
use crate::host::HostContext;
use crate::outbox::{self, Outgoing, Source};
use crate::settle::{Action, Backoff, Failure, Outcome, settle};

/// Everything needed to run deliveries for one handler.
pub struct Dispatcher {
    pub config: Arc<HandlerConfig>,
    pub engine: Engine,
    pub pre: HandlerPre<StoreState>,
    pub host: Arc<HostContext>,
    pub backoff: Backoff,
    pub js: jetstream::Context,
    /// Idle instances for `isolation = "reuse"`; each is used by one delivery at a time.
    pub idle: std::sync::Mutex<Vec<Idle>>,
}

/// An instance waiting for its next delivery in reuse mode.
pub struct Idle {
    store: wasmtime::Store<StoreState>,
    instance: crate::bindings::Handler,
    uses: u32,
}

/// How a delivery was settled with the broker, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    Naked,
    DeadLettered,
    /// Undeliverable, terminated without a copy because the operator opted into dropping.
    Dropped,
    /// Nothing could be told to the broker; `ack_wait` will redeliver.
    Abandoned,
}

impl Dispatcher {
    /// Runs one delivery to its settlement.
    pub async fn deliver(&self, msg: &jetstream::Message) -> Settled {
        let info = match msg.info() {
            Ok(info) => info,
            Err(e) => {
                warn!(handler = %self.config.name, error = %e, "message without JetStream metadata; ignoring it");
                return Settled::Abandoned;
            }
        };
        let attempt = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
        let source = Source {
            stream: info.stream.to_string(),
            subject: msg.subject.as_str().to_owned(),
            stream_sequence: info.stream_sequence,
            traceparent: msg
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_string()),
        };
        let span = info_span!(
            "delivery",
            handler = %self.config.name,
            messaging.system = "nats",
            messaging.destination.name = %source.subject,
            messaging.consumer.group.name = %info.consumer,
            messaging.message.id = info.stream_sequence,
            messaging.message.delivery_count = attempt,
        );
        let message = Message {
            subject: source.subject.clone(),
            payload: msg.payload.to_vec(),
            headers: headers_for_guest(msg.headers.as_ref()),
            delivery: Delivery {
                stream: source.stream.clone(),
                consumer: info.consumer.to_string(),
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                attempt,
                max_attempts: self.config.max_attempts,
                published_at_nanos: u64::try_from(info.published.unix_timestamp_nanos())
                    .unwrap_or(0),
            },
        };
        async move {
            // A slow but healthy delivery is kept alive, so it is not
            // redelivered underneath itself; the guest's own deadline bounds
            // how long that lasts.
            let (outcome, outputs) = self.keep_alive(msg, self.run_guest(message)).await;
            match &outcome {
                Outcome::Failed { failure, detail } => {
                    warn!(?failure, detail = %detail, "guest failed")
                }
                Outcome::Retry { delay } => debug!(?delay, "guest asked to retry"),
                Outcome::Reject { reason } => debug!(%reason, "guest rejected the message"),
                Outcome::Ok => {}
            }
            let action = settle(outcome, attempt, self.config.max_attempts, &self.backoff);
            self.apply(msg, &source, attempt, action, outputs).await
        }
        .instrument(span)
        .await
    }

    /// Runs `work`, sending in-progress acks every third of `ack_wait` while
    /// it lasts, so the broker does not redeliver the message meanwhile.
    async fn keep_alive<F: Future>(&self, msg: &jetstream::Message, work: F) -> F::Output {
        tokio::pin!(work);
        let every = self.config.ack_wait / 3;
        loop {
            tokio::select! {
                // Work first: a delivery that finishes on its first poll never
                // registers the timer.
                biased;
                done = &mut work => return done,
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        debug!(error = %e, "in-progress ack failed");
                    }
                }
            }
        }
    }

    /// Runs `handle` in a fresh instance, or, with `isolation = "reuse"`, in an
    /// idle instance that has served fewer than its limit and never failed.
    async fn run_guest(&self, message: Message) -> (Outcome, Vec<Outgoing>) {
        let reused = match self.config.isolation {
            Isolation::Fresh => None,
            Isolation::Reuse(_) => self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop(),
        };
        let (mut store, instance, uses) = match reused {
            Some(mut idle) => {
                arm(&mut idle.store);
                (idle.store, Ok(idle.instance), idle.uses)
            }
            None => {
                let mut store = new_store(&self.engine, self.host.clone());
                let instance = self.pre.instantiate_async(&mut store).await;
                (store, instance, 0)
            }
        };
        let (result, instance) = match instance {
            Ok(instance) => (
                instance.call_handle(&mut store, &message).await,
                Some(instance),
            ),
            Err(e) => (Err(e), None),
        };
        let state = store.data_mut();
        let (stdout, stderr, dropped) = state.output.take();
        log_output(&self.config.name, &stdout, &stderr, dropped);
        if state.log_dropped > 0 {
            warn!(target: "wharf::guest", handler = %self.config.name, dropped = state.log_dropped, "guest log lines over the cap were dropped");
        }
        let outcome = match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(HandlerError::Retry(ms))) => Outcome::Retry {
                delay: ms.map(Duration::from_millis),
            },
            Ok(Err(HandlerError::Reject(reason))) => Outcome::Reject { reason },
            Err(e) => {
                let (failure, detail) = classify(&e, state.limits.hit, &self.config, &stderr);
                Outcome::Failed { failure, detail }
            }
        };
        let outputs = if outcome == Outcome::Ok {
            state.outbox.take()
        } else {
            Vec::new()
        };
        // A failed instance is never used again: its state may be anything.
        if let (Isolation::Reuse(limit), Some(instance)) = (self.config.isolation, instance)
            && !matches!(outcome, Outcome::Failed { .. })
            && uses + 1 < limit
        {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Idle {
                    store,
                    instance,
                    uses: uses + 1,
                });
        }
        (outcome, outputs)
    }

    /// Carries out the settlement. Every path that ends a message (ack, term)
    /// first has its outputs or its dead-letter copy confirmed.
    async fn apply(
        &self,
        msg: &jetstream::Message,
        source: &Source,
        attempt: u32,
        action: Action,
        outputs: Vec<Outgoing>,
    ) -> Settled {
        match action {
            Action::PublishThenAck => {
                let count = outputs.len();
                if let Err(e) = outbox::flush(&self.js, source, outputs).await {
                    error!(
                        error = format!("{e:#}"),
                        "outbox not confirmed; the message will be redelivered"
                    );
                    return self.nak(msg, self.backoff.delay(attempt)).await;
                }
                failpoint_after_outbox();
                let acked = if self.config.double_ack {
                    msg.double_ack().await
                } else {
                    msg.ack().await
                };
                match acked {
                    Ok(()) => {
                        debug!(outputs = count, "acked");
                        Settled::Acked
                    }
                    Err(e) => {
                        // The outputs are stored with deterministic ids, so the
                        // redelivery this causes will not duplicate them.
                        warn!(error = %e, "ack failed; the message will be redelivered");
                        Settled::Abandoned
                    }
                }
            }
            Action::Nak { delay } => self.nak(msg, delay).await,
            Action::DeadLetter { kind, reason } => {
                let Some(subject) = &self.config.dead_letter else {
                    error!(
                        kind = %kind,
                        reason = %reason,
                        "dropping undeliverable message: no dead_letter subject and drop_after_max_attempts = true"
                    );
                    return match msg.ack_with(AckKind::Term).await {
                        Ok(()) => Settled::Dropped,
                        Err(_) => Settled::Abandoned,
                    };
                };
                let reason_info = dead_letter::Reason {
                    kind,
                    text: &reason,
                    handler: &self.config.name,
                    deliveries: u64::from(attempt),
                };
                let headers = dead_letter::copy_headers(msg.headers.as_ref(), source, &reason_info);
                if let Err(e) =
                    dead_letter::publish(&self.js, subject, headers, msg.payload.clone()).await
                {
                    error!(
                        error = format!("{e:#}"),
                        "dead-letter copy not confirmed; the message stays pending and will be redelivered"
                    );
                    return self.nak(msg, self.backoff.delay(attempt)).await;
                }
                match msg.ack_with(AckKind::Term).await {
                    Ok(()) => {
                        info!(kind = %kind, reason = %dead_letter::clean_reason(&reason), "dead-lettered");
                        Settled::DeadLettered
                    }
                    Err(e) => {
                        // The copy's id is derived from the source sequence, so
                        // dead-lettering it again on redelivery is a no-op.
                        warn!(error = %e, "term failed after the dead-letter copy was stored");
                        Settled::Abandoned
                    }
                }
            }
        }
    }

    async fn nak(&self, msg: &jetstream::Message, delay: Duration) -> Settled {
        match msg.ack_with(AckKind::Nak(Some(delay))).await {
            Ok(()) => Settled::Naked,
            Err(e) => {
                warn!(error = %e, "nak failed; ack_wait will redeliver the message");
                Settled::Abandoned
            }
        }
    }
}

/// Turns the input's headers into the WIT shape, sorted by name so guests see a stable order.
fn headers_for_guest(map: Option<&async_nats::HeaderMap>) -> Vec<Header> {
    let Some(map) = map else { return Vec::new() };
    let mut out: Vec<Header> = map
        .iter()
        .map(|(name, values)| Header {
            name: name.to_string(),
            values: values.iter().map(|v| v.as_str().to_string()).collect(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Tells a limit from a trap, and says which in words fit for a dead-letter reason.
fn classify(
    err: &wasmtime::Error,
    hit: Option<LimitHit>,
    config: &HandlerConfig,
    stderr: &[u8],
) -> (Failure, String) {
    let trap = err.downcast_ref::<Trap>().copied();
    match (hit, trap) {
        (Some(LimitHit::Timeout), _) => (
            Failure::Timeout,
            format!(
                "handler exceeded its timeout of {}",
                humantime::format_duration(config.timeout)
            ),
        ),
        (_, Some(Trap::OutOfFuel)) => (Failure::Timeout, "handler ran out of fuel".to_string()),
        (Some(LimitHit::Memory), _) => (
            Failure::Memory,
            format!(
                "handler exceeded its memory limit of {} bytes",
                config.memory
            ),
        ),
        (_, Some(Trap::StackOverflow)) => {
            (Failure::Trap, with_stderr("stack overflow".into(), stderr))
        }
        (_, Some(t)) => (Failure::Trap, with_stderr(format!("trap: {t}"), stderr)),
        (None, None) => (Failure::Trap, with_stderr(format!("{err:#}"), stderr)),
    }
}

/// Appends the end of the guest's stderr (where a Rust panic message lands) to a trap reason.
fn with_stderr(detail: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return detail;
    }
    const TAIL: usize = 300;
    let start = text.len().saturating_sub(TAIL);
    let mut start_ok = start;
    while !text.is_char_boundary(start_ok) {
        start_ok += 1;
    }
    format!("{detail}; stderr: {}", &text[start_ok..])
}

fn log_output(handler: &str, stdout: &[u8], stderr: &[u8], dropped: u64) {
    for line in String::from_utf8_lossy(stdout).lines() {
        info!(target: "wharf::guest", handler, stream = "stdout", "{line}");
    }
    for line in String::from_utf8_lossy(stderr).lines() {
        warn!(target: "wharf::guest", handler, stream = "stderr", "{line}");
    }
    if dropped > 0 {
        warn!(target: "wharf::guest", handler, dropped, "guest output over the cap was dropped");
    }
}

/// Test hook for crash-safety tests: with `WHARF_FAILPOINT_EXIT_AFTER_OUTBOX=N`
/// set, the process exits on its N-th confirmed outbox, after the outputs are
/// stored and before the input is acked: the worst moment for duplicates.
fn failpoint_after_outbox() {
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
