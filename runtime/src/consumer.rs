//! The pull loop: binds a handler to its durable consumer (creating or
//! verifying it), pulls no more than the handler can run at once plus its
//! bounded `prefetch` line, and hands each message to the dispatcher.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::HandlerConfig;
use crate::dispatch::Dispatcher;

/// How long one pull request waits for messages. It bounds how long an idle
/// handler takes to notice shutdown, at the cost of one request per period.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The consumer settings Wharf needs for `handler`.
pub fn desired_consumer(handler: &HandlerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(handler.consumer.clone()),
        description: Some(format!("wharf handler \"{}\"", handler.name)),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: handler.ack_wait,
        // Unlimited: the host dead-letters on the final attempt itself, so
        // JetStream's own limit must never be what stops a message.
        max_deliver: -1,
        filter_subject: handler.filter_subject.clone().unwrap_or_default(),
        max_ack_pending: max_ack_pending(handler),
        ..Default::default()
    }
}

/// Room for several hosts sharing the consumer, each holding `concurrency`
/// running and `prefetch` waiting.
fn max_ack_pending(handler: &HandlerConfig) -> i64 {
    ((handler.concurrency + handler.prefetch) as i64 * 16).max(1000)
}

/// The handler's stream, or an error that names the handler and says how to
/// get the stream.
pub async fn handler_stream(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> anyhow::Result<jetstream::stream::Stream> {
    js.get_stream(&handler.stream).await.map_err(|e| {
        anyhow::anyhow!(
            "handler \"{}\": field `stream`: stream \"{}\" is not available ({e}); create it, \
             or declare it in [[stream]] and use `wharf dev`",
            handler.name,
            handler.stream
        )
    })
}

/// Creates the durable consumer, or checks that an existing one has the
/// settings Wharf relies on and says exactly what differs.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> anyhow::Result<PullConsumer> {
    let stream = handler_stream(js, handler).await?;
    let desired = desired_consumer(handler);
    let consumer: PullConsumer = match stream.consumer_info(&handler.consumer).await {
        Ok(existing) => {
            let have = &existing.config;
            let mut diffs = Vec::new();
            if have.ack_policy != AckPolicy::Explicit {
                diffs.push(format!(
                    "ack_policy is {:?}, Wharf needs Explicit",
                    have.ack_policy
                ));
            }
            if have.deliver_subject.is_some() {
                diffs.push("it is a push consumer, Wharf needs a pull consumer".to_string());
            }
            if have.filter_subject != desired.filter_subject {
                diffs.push(format!(
                    "filter_subject is \"{}\", config says \"{}\"",
                    have.filter_subject, desired.filter_subject
                ));
            }
            if have.ack_wait != desired.ack_wait {
                diffs.push(format!(
                    "ack_wait is {}, config says {}",
                    humantime::format_duration(have.ack_wait),
                    humantime::format_duration(desired.ack_wait)
                ));
            }
            if have.max_deliver > 0 && have.max_deliver <= i64::from(handler.max_attempts) {
                diffs.push(format!(
                    "max_deliver is {}, which would stop redelivery before Wharf's final attempt ({}); \
                     Wharf needs -1 (unlimited)",
                    have.max_deliver, handler.max_attempts
                ));
            }
            if !diffs.is_empty() {
                bail!(
                    "handler \"{}\": consumer \"{}\" on stream \"{}\" exists with different settings: {}; \
                     delete it (it will be recreated) or change the config to match",
                    handler.name,
                    handler.consumer,
                    handler.stream,
                    diffs.join("; ")
                );
            }
            stream
                .get_consumer(&handler.consumer)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!(
                        "handler \"{}\": binding consumer \"{}\"",
                        handler.name, handler.consumer
                    )
                })?
        }
        Err(_) => {
            info!(handler = %handler.name, consumer = %handler.consumer, stream = %handler.stream, "creating durable consumer");
            stream
                .create_consumer(desired)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!(
                        "handler \"{}\": creating consumer \"{}\" on stream \"{}\"",
                        handler.name, handler.consumer, handler.stream
                    )
                })?
        }
    };
    Ok(consumer)
}

/// Pulls and dispatches until `stop` fires, then drains: in-flight deliveries
/// get until `drain_timeout` to finish, and everything else (messages still
/// waiting in line included) is nak'd without delay so another host takes it
/// at once.
///
/// The host holds at most `concurrency + prefetch` messages: `concurrency`
/// running and up to `prefetch` pulled ahead, waiting for a free slot, so a
/// slot that frees up does not sit idle for a pull's round trip.
pub async fn run(
    dispatcher: Arc<Dispatcher>,
    js: jetstream::Context,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    let handler = dispatcher.config.clone();
    let slots = Arc::new(Semaphore::new(handler.concurrency + handler.prefetch));
    let abort = CancellationToken::new();
    let line = Arc::new(Line::default());
    // One long-lived task per slot, instead of a task per delivery: spawning
    // one cost about a tenth of the host's CPU per message (BENCHMARKS.md).
    let workers = TaskTracker::new();
    for _ in 0..handler.concurrency {
        workers.spawn(work(
            dispatcher.clone(),
            line.clone(),
            stop.clone(),
            abort.clone(),
        ));
    }
    workers.spawn(keep_waiting_alive(
        line.clone(),
        handler.ack_wait / 3,
        stop.clone(),
    ));
    let mut retry_delay = Duration::from_millis(100);

    'pull: while !stop.is_cancelled() {
        let consumer = match ensure_consumer(&js, &handler).await {
            Ok(c) => c,
            Err(e) => {
                warn!(handler = %handler.name, error = format!("{e:#}"), "consumer unavailable; retrying");
                if wait_or_stop(&stop, retry_delay).await {
                    break 'pull;
                }
                retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry_delay = Duration::from_millis(100);
        let mut failures_in_a_row = 0u32;
        loop {
            // Reserve every free place (at least one) and pull exactly that
            // many, so nothing is held beyond the bound.
            let first = tokio::select! {
                // Once `stop` has fired, never pull again, even with places free.
                biased;
                _ = stop.cancelled() => break 'pull,
                slot = slots.clone().acquire_owned() => slot.expect("semaphore is never closed"),
            };
            let mut reserved = vec![first];
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                reserved.push(slot);
            }
            let batch = consumer
                .batch()
                .max_messages(reserved.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(handler = %handler.name, error = %e, "pull request failed; rebinding the consumer");
                    if wait_or_stop(&stop, retry_delay).await {
                        break 'pull;
                    }
                    continue 'pull;
                }
            };
            // A batch ends when it delivered what was asked or its pull expired,
            // so reading it to the end after `stop` loses nothing. What arrives
            // then is handed back once the batch is over: handed back while the
            // pull is still open, a message would be delivered straight back
            // into it, again and again, and every delivery counts as an attempt.
            let mut after_stop = Vec::new();
            while let Some(next) = batch.next().await {
                match next {
                    Ok(msg) if stop.is_cancelled() => after_stop.push(msg),
                    Ok(msg) => {
                        failures_in_a_row = 0;
                        let slot = reserved
                            .pop()
                            .expect("the pull asked for no more than the free slots");
                        line.join(Waiting { msg, _held: slot });
                    }
                    Err(e) => {
                        failures_in_a_row += 1;
                        debug!(handler = %handler.name, error = %e, "pull error");
                    }
                }
            }
            drop(reserved);
            for msg in &after_stop {
                hand_back(msg).await;
            }
            if failures_in_a_row >= 3 {
                warn!(handler = %handler.name, "pulling keeps failing; rebinding the consumer");
                if wait_or_stop(&stop, retry_delay).await {
                    break 'pull;
                }
                continue 'pull;
            }
        }
    }

    // Workers take nothing new once `stop` has fired: what still waits in
    // line is handed back now, before the running deliveries are drained.
    for w in line.take_all() {
        hand_back(&w.msg).await;
    }
    let in_flight = line.running.load(Ordering::Relaxed);
    if in_flight > 0 {
        info!(handler = %handler.name, in_flight, "draining in-flight deliveries");
    }
    workers.close();
    let drained = tokio::time::timeout(drain_timeout, workers.wait()).await;
    if drained.is_err() {
        warn!(handler = %handler.name, remaining = line.running.load(Ordering::Relaxed), "drain timeout; handing the rest back");
        abort.cancel();
        workers.wait().await;
    }
    Ok(())
}

/// A pulled message waiting for a free slot, holding its place in the bound.
struct Waiting {
    msg: jetstream::Message,
    _held: OwnedSemaphorePermit,
}

/// Messages pulled ahead, oldest first, and a permit for each, so that the
/// workers take them in arrival order (tokio's semaphore is fair).
struct Line {
    waiting: Mutex<VecDeque<Waiting>>,
    ready: Semaphore,
    /// Deliveries running now, for the shutdown log.
    running: AtomicUsize,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            waiting: Mutex::default(),
            ready: Semaphore::new(0),
            running: AtomicUsize::new(0),
        }
    }
}

impl Line {
    fn join(&self, w: Waiting) {
        self.lock().push_back(w);
        self.ready.add_permits(1);
    }

    fn take_all(&self) -> VecDeque<Waiting> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One of the handler's `concurrency` slots: runs the oldest waiting message,
/// then the next, until `stop` fires. On `abort` (the drain timeout) the
/// running delivery is dropped and its message handed back.
async fn work(
    dispatcher: Arc<Dispatcher>,
    line: Arc<Line>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    loop {
        let ready = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ready = line.ready.acquire() => ready.expect("semaphore is never closed"),
        };
        ready.forget();
        // Empty only if shutdown took the line meanwhile.
        let Some(next) = line.lock().pop_front() else {
            continue;
        };
        line.running.fetch_add(1, Ordering::Relaxed);
        // A bug that panics while one message is handled costs that message
        // an `ack_wait`, not the handler one of its slots.
        let delivery = AssertUnwindSafe(dispatcher.deliver(&next.msg)).catch_unwind();
        tokio::select! {
            done = delivery => if done.is_err() {
                error!(handler = %dispatcher.config.name, "delivery panicked; ack_wait will redeliver the message");
            },
            _ = abort.cancelled() => {
                hand_back(&next.msg).await;
            }
        }
        line.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends in-progress acks for the messages waiting in line, like those a
/// running delivery gets, so their `ack_wait` does not run out while they wait.
async fn keep_waiting_alive(line: Arc<Line>, every: Duration, stop: CancellationToken) {
    let mut pulse = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = pulse.tick() => {}
        }
        let waiting: Vec<jetstream::Message> = line.lock().iter().map(|w| w.msg.clone()).collect();
        for msg in waiting {
            if let Err(e) = msg.ack_with(AckKind::Progress).await {
                debug!(error = %e, "in-progress ack failed");
            }
        }
    }
}

/// Naks without delay, so another host can take the message at once; if the
/// nak is lost, `ack_wait` redelivers it.
async fn hand_back(msg: &jetstream::Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        debug!(error = %e, "handing a message back failed; ack_wait will redeliver it");
    }
}

/// Sleeps, unless `stop` fires first; returns whether it did.
async fn wait_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
