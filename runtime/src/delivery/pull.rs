//! One handler's pull loop: pulls no more than the handler can run at once
//! plus its bounded `prefetch` line, hands each message to the line, rebinds
//! the consumer after errors, and drains on shutdown.

mod drain;

pub(crate) use drain::{HAND_BACK_GRACE, bounded, run_finals};

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::Batch;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::delivery::binding::{self, BindError, PULL_EXPIRES, Seen};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::gather;
use crate::delivery::lease::Leases;
use crate::delivery::line::{self, Line, Waiting};

/// How long after a pull's expiry the host waits for the server to end it.
const PULL_GRACE: Duration = Duration::from_millis(500);

/// Pulls and dispatches until `stop` fires, then drains: in-flight deliveries
/// get until `drain_timeout` to finish, and everything else (messages still
/// waiting in line included) is nak'd without delay so another host takes it
/// at once. Returns an error only when the handler cannot go on (its
/// consumer was deleted, or changed under it).
///
/// The host holds at most `concurrency + prefetch` messages: `concurrency`
/// running and up to `prefetch` pulled ahead, waiting for a free slot, so a
/// slot that frees up does not sit idle for a pull's round trip. For a batch
/// handler, `concurrency` batches of up to `max_messages` run.
pub(crate) async fn run(
    dispatcher: Arc<Dispatcher>,
    js: jetstream::Context,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    let handler = dispatcher.handler.clone();
    let status = dispatcher.telemetry.status.clone();
    let puller = Puller {
        places: Arc::new(Semaphore::new(handler.held())),
        line: Arc::new(Line::new(status.clone())),
        leases: Leases::new(js.client(), handler.ack_wait),
        // This handler's own stop: it ends alone when its consumer is gone,
        // and the caller then stops the others.
        stop: stop.child_token(),
        handler,
        status,
        dispatcher,
        js,
    };
    let background = CancellationToken::new();
    tokio::spawn(puller.leases.clone().keep_alive(background.clone()));
    tokio::spawn(watch_consumer(
        puller.js.clone(),
        puller.handler.clone(),
        puller.status.clone(),
        background.clone(),
    ));
    // One long-lived task per slot, instead of a task per delivery: spawning
    // one cost about a tenth of the host's CPU per message (BENCHMARKS.md).
    let workers = TaskTracker::new();
    let abort = CancellationToken::new();
    for _ in 0..puller.handler.concurrency {
        let (dispatcher, line, stop) = (
            puller.dispatcher.clone(),
            puller.line.clone(),
            puller.stop.clone(),
        );
        if puller.handler.batch.is_some() {
            workers.spawn(gather::work(dispatcher, line, stop, abort.clone()));
        } else {
            workers.spawn(line::work(dispatcher, line, stop, abort.clone()));
        }
    }
    let ended = puller.pull_until_stopped().await;
    puller.drain(workers, abort, drain_timeout).await;
    background.cancel();
    puller.status.alive.store(false, Ordering::Relaxed);
    puller.status.bound.store(false, Ordering::Relaxed);
    ended
}

/// One handler's pulling side.
struct Puller {
    handler: Arc<crate::config::HandlerConfig>,
    dispatcher: Arc<Dispatcher>,
    status: Arc<crate::telemetry::HandlerStatus>,
    js: jetstream::Context,
    stop: CancellationToken,
    /// Free places: running plus waiting in line.
    places: Arc<Semaphore>,
    line: Arc<Line>,
    leases: Arc<Leases>,
}

/// Why a bound consumer stopped being pulled from.
enum Unbound {
    Stopped,
    /// Pulling failed; bind again.
    Failing,
}

/// The first delay before binding again, and the longest: short, so a host
/// resumes soon after a consumer's leader is back.
const REBIND_FIRST: Duration = Duration::from_millis(100);
const REBIND_MAX: Duration = Duration::from_secs(1);

impl Puller {
    /// Binds and pulls until `stop` fires; an error when the consumer can
    /// no longer be bound as configured.
    async fn pull_until_stopped(&self) -> anyhow::Result<()> {
        let mut delay = REBIND_FIRST;
        while !self.stop.is_cancelled() {
            match binding::consumer(&self.js, &self.handler, Seen::Before).await {
                Ok(consumer) => {
                    self.status.bound.store(true, Ordering::Relaxed);
                    delay = REBIND_FIRST;
                    match self.pull_from(&consumer).await {
                        Unbound::Stopped => break,
                        Unbound::Failing => {}
                    }
                }
                Err(BindError::Config(e)) => {
                    self.stop.cancel();
                    return Err(e);
                }
                Err(BindError::Unavailable(e)) => {
                    if let Some(suppressed) = self.dispatcher.throttle.admit("unavailable") {
                        warn!(handler = %self.handler.name, error = format!("{e:#}"), suppressed, "consumer unavailable; retrying");
                    }
                }
            }
            self.status.bound.store(false, Ordering::Relaxed);
            if wait_or_stop(&self.stop, delay).await {
                break;
            }
            delay = (delay * 2).min(REBIND_MAX);
        }
        Ok(())
    }

    /// Pulls from a bound consumer until `stop` fires or pulling fails
    /// twice in a row. Each pull asks for exactly the places it reserved,
    /// so nothing is held beyond the bound. While one pull is read, the
    /// next goes out as soon as half the bound (a batch, for a batch handler, if less) is free, so the server
    /// always has a pull to fill (as async-nats' own pull stream does).
    /// Both open pulls are read at once: the server takes turns between
    /// the pulls waiting on a consumer, so a message sent into the second
    /// must not wait for the first to expire; messages join the line in
    /// the order they arrive.
    async fn pull_from(&self, consumer: &PullConsumer) -> Unbound {
        let mut failures_in_a_row = 0u32;
        let mut failing = false;
        let mut open: VecDeque<Open> = VecDeque::with_capacity(MAX_OPEN);
        let early = u32::try_from(self.handler.pull_at()).unwrap_or(u32::MAX);
        loop {
            let another = open.len() < MAX_OPEN
                && !failing
                && !self.stop.is_cancelled()
                && self.dispatcher.stalls.is_clear();
            if open.is_empty() {
                if failing {
                    return Unbound::Failing;
                }
                // While a stream this handler needs is unavailable, pull
                // nothing new: it would only meet the same outage.
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Unbound::Stopped,
                    _ = self.dispatcher.stalls.cleared() => {}
                }
                let first = tokio::select! {
                    // Once `stop` has fired, never pull again, even with places free.
                    biased;
                    _ = self.stop.cancelled() => return Unbound::Stopped,
                    place = self.places.clone().acquire_owned() => place.expect("semaphore is never closed"),
                };
                match self.start(consumer, first).await {
                    Ok(pull) => open.push_back(pull),
                    Err(e) => failing = self.failed(&mut failures_in_a_row, e),
                }
                continue;
            }
            if another && self.places.available_permits() >= early as usize {
                let places = self.places.clone().try_acquire_many_owned(early);
                if let Ok(places) = places {
                    match self.start(consumer, places).await {
                        Ok(pull) => open.push_back(pull),
                        Err(e) => failing |= self.failed(&mut failures_in_a_row, e),
                    }
                    continue;
                }
            }
            let event = {
                let mut pulls = open.iter_mut();
                let first = pulls.next().expect("an open pull");
                let mut second = pulls.next();
                let two = second.is_some();
                tokio::select! {
                    biased;
                    next = first.next() => match next {
                        Some(msg) => {
                            self.join(msg, first);
                            Event::Joined
                        }
                        None => Event::Ended(0),
                    },
                    next = async { second.as_mut().expect("two pulls open").next().await }, if two => match next {
                        Some(msg) => {
                            self.join(msg, second.expect("two pulls open"));
                            Event::Joined
                        }
                        None => Event::Ended(1),
                    },
                    places = self.places.clone().acquire_many_owned(early), if another => {
                        Event::Free(places.expect("semaphore is never closed"))
                    }
                }
            };
            match event {
                Event::Joined => {}
                Event::Ended(i) => match open.remove(i).expect("the pull that ended").failed {
                    None => failures_in_a_row = 0,
                    Some(e) => failing |= self.failed(&mut failures_in_a_row, e),
                },
                Event::Free(places) => match self.start(consumer, places).await {
                    Ok(pull) => open.push_back(pull),
                    Err(e) => failing |= self.failed(&mut failures_in_a_row, e),
                },
            }
        }
    }

    /// Counts a failed pull; true when pulling keeps failing and the
    /// consumer should be bound again (once the open pulls have ended).
    fn failed(&self, in_a_row: &mut u32, e: async_nats::Error) -> bool {
        *in_a_row += 1;
        debug!(handler = %self.handler.name, error = %e, "pull failed");
        if *in_a_row >= 2 {
            if let Some(suppressed) = self.dispatcher.throttle.admit("pulling") {
                warn!(handler = %self.handler.name, error = %e, suppressed, "pulling keeps failing; rebinding the consumer");
            }
            return true;
        }
        false
    }

    /// Sends a pull for `reserved` and every other free place.
    async fn start(
        &self,
        consumer: &PullConsumer,
        mut reserved: OwnedSemaphorePermit,
    ) -> Result<Open, async_nats::Error> {
        let free = self.places.available_permits();
        if free > 0
            && let Ok(more) = self.places.clone().try_acquire_many_owned(free as u32)
        {
            reserved.merge(more);
        }
        let batch = consumer
            .batch()
            .max_messages(reserved.num_permits())
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        Ok(Open {
            batch,
            reserved,
            // The server ends a pull when it expires. One that the
            // consumer's leader took down with it is never answered; the
            // client would wait several seconds more, so the host gives up
            // on it sooner.
            given_up: Box::pin(tokio::time::sleep(PULL_EXPIRES + PULL_GRACE)),
            failed: None,
        })
    }

    /// Puts a pulled message in line, under its lease and in a place the
    /// pull reserved. After `stop`, the workers take nothing new: what
    /// arrives waits in line for the drain, which hands it back once the
    /// pulls have closed (handed back while a pull is still open, a message
    /// would be delivered straight back into it, again and again, and
    /// every delivery counts as an attempt).
    fn join(&self, msg: jetstream::Message, pull: &mut Open) {
        let Some(lease) = self.leases.hold(msg) else {
            warn!(handler = %self.handler.name, "pulled a message without a reply subject; ignoring it");
            return;
        };
        let place = pull
            .reserved
            .split(1)
            .expect("a pull asks for no more than the places it reserved");
        self.line.join(Waiting {
            lease,
            _place: place,
        });
    }
}

/// How many pulls may be open at once: the current one, and the next.
const MAX_OPEN: usize = 2;

/// What woke the pull loop.
enum Event {
    /// A message arrived and joined the line.
    Joined,
    /// The open pull at this index ended.
    Ended(usize),
    /// Enough places are free for another pull.
    Free(OwnedSemaphorePermit),
}

/// A pull in flight: its messages as they arrive, the places reserved for
/// those not arrived yet, and when the host stops waiting for it. A pull
/// ends when it delivered what was asked or expired, so reading it to its
/// end after `stop` loses nothing.
struct Open {
    batch: Batch,
    reserved: OwnedSemaphorePermit,
    given_up: Pin<Box<tokio::time::Sleep>>,
    /// The first error the pull met, if any.
    failed: Option<async_nats::Error>,
}

impl Open {
    /// The pull's next message, or `None` once it has ended.
    async fn next(&mut self) -> Option<jetstream::Message> {
        loop {
            tokio::select! {
                biased;
                next = self.batch.next() => match next? {
                    Ok(msg) => return Some(msg),
                    Err(e) => {
                        self.failed.get_or_insert(e);
                    }
                },
                _ = &mut self.given_up => {
                    self.failed.get_or_insert(Box::from(format!(
                        "the pull was not answered within {}",
                        humantime::format_duration(PULL_EXPIRES + PULL_GRACE)
                    )));
                    return None;
                }
            }
        }
    }
}

/// How often the consumer's pending counts are read for the metrics.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Keeps the consumer's pending, ack-pending and redelivered counts in the
/// handler's status, so that lag shows in the metrics: every `WATCH_EVERY`,
/// and at once when a scrape asks.
async fn watch_consumer(
    js: jetstream::Context,
    handler: Arc<crate::config::HandlerConfig>,
    status: Arc<crate::telemetry::HandlerStatus>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = status.recount.notified() => {}
        }
        let Ok(stream) = js.get_stream_no_info(&handler.stream).await else {
            continue;
        };
        if let Ok(info) = stream.consumer_info(&handler.consumer).await {
            status.pending.store(info.num_pending, Ordering::Relaxed);
            status
                .ack_pending
                .store(info.num_ack_pending as u64, Ordering::Relaxed);
            status
                .redelivered
                .store(info.num_redelivered as u64, Ordering::Relaxed);
            status.counted.send_modify(|n| *n += 1);
        }
    }
}

/// Sleeps, unless `stop` fires first; returns whether it did.
pub(crate) async fn wait_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
