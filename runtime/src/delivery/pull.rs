//! One handler's pull loop: pulls no more than the handler can run at once
//! plus its bounded `prefetch` line, hands each message to the line, rebinds
//! the consumer after errors, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::delivery::binding::{self, BindError, PULL_EXPIRES, Seen};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::lease::Leases;
use crate::delivery::line::{self, Line, Waiting};

/// How long after a pull's expiry the host waits for the server to end it.
const PULL_GRACE: Duration = Duration::from_millis(500);

/// How long, after the drain, the host keeps trying to hand back what it
/// still holds before it gives up and leaves it to `ack_wait`.
pub(crate) const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

/// Pulls and dispatches until `stop` fires, then drains: in-flight deliveries
/// get until `drain_timeout` to finish, and everything else (messages still
/// waiting in line included) is nak'd without delay so another host takes it
/// at once. Returns an error only when the handler cannot go on (its
/// consumer was deleted, or changed under it).
///
/// The host holds at most `concurrency + prefetch` messages: `concurrency`
/// running and up to `prefetch` pulled ahead, waiting for a free slot, so a
/// slot that frees up does not sit idle for a pull's round trip.
pub(crate) async fn run(
    dispatcher: Arc<Dispatcher>,
    js: jetstream::Context,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    let handler = dispatcher.handler.clone();
    let status = dispatcher.telemetry.status.clone();
    let puller = Puller {
        places: Arc::new(Semaphore::new(handler.concurrency + handler.prefetch)),
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
        workers.spawn(line::work(
            puller.dispatcher.clone(),
            puller.line.clone(),
            puller.stop.clone(),
            abort.clone(),
        ));
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

    /// Pulls batches from a bound consumer until `stop` fires or pulling
    /// fails twice in a row.
    async fn pull_from(&self, consumer: &PullConsumer) -> Unbound {
        let mut failures_in_a_row = 0u32;
        loop {
            // While a stream this handler needs is unavailable, pull nothing
            // new: it would only meet the same outage.
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Unbound::Stopped,
                _ = self.dispatcher.stalls.cleared() => {}
            }
            // Reserve every free place (at least one) and pull exactly that
            // many, so nothing is held beyond the bound.
            let first = tokio::select! {
                // Once `stop` has fired, never pull again, even with places free.
                biased;
                _ = self.stop.cancelled() => return Unbound::Stopped,
                place = self.places.clone().acquire_owned() => place.expect("semaphore is never closed"),
            };
            let mut reserved = vec![first];
            while let Ok(place) = self.places.clone().try_acquire_owned() {
                reserved.push(place);
            }
            match self.pull_batch(consumer, reserved).await {
                Ok(()) => failures_in_a_row = 0,
                Err(e) => {
                    failures_in_a_row += 1;
                    debug!(handler = %self.handler.name, error = %e, "pull failed");
                    if failures_in_a_row >= 2 {
                        if let Some(suppressed) = self.dispatcher.throttle.admit("pulling") {
                            warn!(handler = %self.handler.name, error = %e, suppressed, "pulling keeps failing; rebinding the consumer");
                        }
                        return Unbound::Failing;
                    }
                }
            }
        }
    }

    /// One pull of `reserved.len()` messages into the line. A batch ends
    /// when it delivered what was asked or its pull expired, so reading it
    /// to the end after `stop` loses nothing. What arrives then is handed
    /// back once the batch is over: handed back while the pull is still
    /// open, a message would be delivered straight back into it, again and
    /// again, and every delivery counts as an attempt.
    async fn pull_batch(
        &self,
        consumer: &PullConsumer,
        mut reserved: Vec<OwnedSemaphorePermit>,
    ) -> Result<(), async_nats::Error> {
        let mut batch = consumer
            .batch()
            .max_messages(reserved.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        let mut failed = None;
        // The server ends a pull when it expires. One that the consumer's
        // leader took down with it is never answered; the client would wait
        // several seconds more, so the host gives up on it sooner.
        let given_up = tokio::time::sleep(PULL_EXPIRES + PULL_GRACE);
        tokio::pin!(given_up);
        loop {
            let next = tokio::select! {
                biased;
                next = batch.next() => match next {
                    Some(next) => next,
                    None => break,
                },
                _ = &mut given_up => {
                    failed = Some(Box::from(format!(
                        "the pull was not answered within {}",
                        humantime::format_duration(PULL_EXPIRES + PULL_GRACE)
                    )));
                    break;
                }
            };
            let msg = match next {
                Ok(msg) => msg,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            let Some(lease) = self.leases.hold(msg) else {
                warn!(handler = %self.handler.name, "pulled a message without a reply subject; ignoring it");
                continue;
            };
            // After `stop`, the workers take nothing new: what arrives waits
            // in line for the drain, which hands it back once this pull has
            // closed.
            let place = reserved
                .pop()
                .expect("the pull asked for no more than the free places");
            self.line.join(Waiting {
                lease,
                _place: place,
            });
        }
        drop(reserved);
        failed.map_or(Ok(()), Err)
    }

    /// Hands back what waits in line, lets running deliveries finish for up
    /// to `drain_timeout`, then hands back the rest. Bounded even when the
    /// server is gone.
    async fn drain(&self, workers: TaskTracker, abort: CancellationToken, drain_timeout: Duration) {
        // Workers take nothing new once `stop` has fired.
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + drain_timeout;
        // A hand-back counts as a delivery: a message waiting on its final
        // attempt would come back past it, and be dead-lettered without
        // ever running. Such messages run within the drain, once the
        // running deliveries are done (so no more instances run at once
        // than `concurrency`); the others go back at once.
        let max = self.dispatcher.current().guest.handler().max_attempts;
        let (last, others): (Vec<Waiting>, Vec<Waiting>) =
            self.line.take_all().into_iter().partition(|w| {
                w.lease
                    .message()
                    .info()
                    .is_ok_and(|i| i.delivered >= i64::from(max))
            });
        let mut settled = bounded(async {
            for w in others {
                w.lease.hand_back().await;
            }
        })
        .await;
        let in_flight = self.line.running();
        if in_flight > 0 {
            info!(handler = %self.handler.name, in_flight, "draining in-flight deliveries");
        }
        workers.close();
        let mut drained = tokio::time::timeout_at(deadline, workers.wait())
            .await
            .is_ok();
        if drained {
            let (dispatcher, status) = (self.dispatcher.clone(), self.status.clone());
            let run = move |waiting, abort: CancellationToken| {
                let (dispatcher, status) = (dispatcher.clone(), status.clone());
                async move { line::run(&dispatcher, &status, waiting, &abort).await }
            };
            let finals = run_finals(last, self.handler.concurrency, deadline, &abort, run);
            let (done, ok) = finals.await;
            drained = done;
            settled &= ok;
        } else {
            // Out of time: what waits for its final attempt goes back too.
            settled &= bounded(async {
                for w in last {
                    w.lease.hand_back().await;
                }
            })
            .await;
        }
        if !drained {
            warn!(handler = %self.handler.name, remaining = self.line.running(), "drain timeout; handing the rest back");
            abort.cancel();
            settled &= bounded(workers.wait()).await;
        }
        let unsettled = self.leases.count();
        if !settled || unsettled > 0 {
            warn!(
                handler = %self.handler.name,
                unsettled,
                "could not hand every message back (is the server reachable?); ack_wait will redeliver them"
            );
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

/// Runs the messages of a drain that wait for their final attempt, at most
/// `concurrency` at once, until `deadline`; past it, aborts them (their
/// messages are handed back). Returns whether they finished in time, and
/// whether every abort settled.
pub(crate) async fn run_finals<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    deadline: tokio::time::Instant,
    abort: &CancellationToken,
    run: F,
) -> (bool, bool)
where
    T: Send + 'static,
    F: Fn(T, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let finals = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(concurrency));
    for item in items {
        let (slots, work) = (slots.clone(), run(item, abort.clone()));
        finals.spawn(async move {
            let _slot = slots.acquire_owned().await;
            work.await
        });
    }
    finals.close();
    if tokio::time::timeout_at(deadline, finals.wait())
        .await
        .is_ok()
    {
        return (true, true);
    }
    abort.cancel();
    (false, bounded(finals.wait()).await)
}

/// Runs `work` for at most `HAND_BACK_GRACE`; returns whether it finished.
pub(crate) async fn bounded(work: impl Future<Output = ()>) -> bool {
    tokio::time::timeout(HAND_BACK_GRACE, work).await.is_ok()
}

/// Sleeps, unless `stop` fires first; returns whether it did.
pub(crate) async fn wait_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
