//! One handler's pull loop: pulls no more than the handler can run at once
//! plus its bounded `prefetch` line, hands each message to the line, rebinds
//! the consumer after errors, and drains on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::binding::{self, BindError, Seen};
use crate::dispatch::Dispatcher;
use crate::lease::{Lease, Leases};
use crate::line::{self, Line, Waiting};

/// How long one pull request waits for messages. It bounds how long an idle
/// handler takes to notice shutdown, at the cost of one request per period.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long, after the drain, the host keeps trying to hand back what it
/// still holds before it gives up and leaves it to `ack_wait`.
const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

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
    // This handler's own stop: it ends alone when its consumer is gone,
    // and the caller then stops the others.
    let stop = stop.child_token();
    let places = Arc::new(Semaphore::new(handler.concurrency + handler.prefetch));
    let abort = CancellationToken::new();
    let status = dispatcher.telemetry.status.clone();
    let line = Arc::new(Line::new(status.clone()));
    let leases = Leases::new(js.client(), handler.ack_wait);
    let leases_done = CancellationToken::new();
    tokio::spawn(leases.clone().keep_alive(leases_done.clone()));
    tokio::spawn(watch_consumer(
        js.clone(),
        handler.clone(),
        status.clone(),
        leases_done.clone(),
    ));
    // One long-lived task per slot, instead of a task per delivery: spawning
    // one cost about a tenth of the host's CPU per message (BENCHMARKS.md).
    let workers = TaskTracker::new();
    for _ in 0..handler.concurrency {
        workers.spawn(line::work(
            dispatcher.clone(),
            line.clone(),
            stop.clone(),
            abort.clone(),
        ));
    }
    let mut retry_delay = Duration::from_millis(100);
    let mut failed = None;

    'pull: while !stop.is_cancelled() {
        let consumer = match binding::consumer(&js, &handler, Seen::Before).await {
            Ok(c) => {
                status.bound.store(true, Ordering::Relaxed);
                c
            }
            Err(BindError::Config(e)) => {
                failed = Some(e);
                break 'pull;
            }
            Err(BindError::Unavailable(e)) => {
                status.bound.store(false, Ordering::Relaxed);
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
            // While a stream this handler needs is unavailable, pull nothing
            // new: it would only meet the same outage.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break 'pull,
                _ = dispatcher.stalls.cleared() => {}
            }
            // Reserve every free place (at least one) and pull exactly that
            // many, so nothing is held beyond the bound.
            let first = tokio::select! {
                // Once `stop` has fired, never pull again, even with places free.
                biased;
                _ = stop.cancelled() => break 'pull,
                place = places.clone().acquire_owned() => place.expect("semaphore is never closed"),
            };
            let mut reserved = vec![first];
            while let Ok(place) = places.clone().try_acquire_owned() {
                reserved.push(place);
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
                    status.bound.store(false, Ordering::Relaxed);
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
            let mut after_stop: Vec<Lease> = Vec::new();
            while let Some(next) = batch.next().await {
                match next {
                    Ok(msg) => {
                        failures_in_a_row = 0;
                        let Some(lease) = leases.hold(msg) else {
                            warn!(handler = %handler.name, "pulled a message without a reply subject; ignoring it");
                            continue;
                        };
                        if stop.is_cancelled() {
                            after_stop.push(lease);
                            continue;
                        }
                        let place = reserved
                            .pop()
                            .expect("the pull asked for no more than the free places");
                        line.join(Waiting {
                            lease,
                            _place: place,
                        });
                    }
                    Err(e) => {
                        failures_in_a_row += 1;
                        debug!(handler = %handler.name, error = %e, "pull error");
                    }
                }
            }
            drop(reserved);
            for lease in after_stop {
                lease.hand_back().await;
            }
            if failures_in_a_row >= 3 {
                status.bound.store(false, Ordering::Relaxed);
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
    stop.cancel();
    let waiting = line.take_all();
    let handed_back = bounded(async {
        for w in waiting {
            w.lease.hand_back().await;
        }
    })
    .await;
    let in_flight = line.running();
    if in_flight > 0 {
        info!(handler = %handler.name, in_flight, "draining in-flight deliveries");
    }
    workers.close();
    let drained = tokio::time::timeout(drain_timeout, workers.wait()).await;
    let mut settled = handed_back;
    if drained.is_err() {
        warn!(handler = %handler.name, remaining = line.running(), "drain timeout; handing the rest back");
        abort.cancel();
        settled &= bounded(workers.wait()).await;
    }
    leases_done.cancel();
    status.alive.store(false, Ordering::Relaxed);
    status.bound.store(false, Ordering::Relaxed);
    let unsettled = leases.count();
    if !settled || unsettled > 0 {
        warn!(
            handler = %handler.name,
            unsettled,
            "could not hand every message back (is the server reachable?); ack_wait will redeliver them"
        );
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How often the consumer's pending counts are read for the metrics.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Keeps the consumer's pending, ack-pending and redelivered counts in the
/// handler's status, so that lag shows in the metrics.
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
        }
    }
}

/// Runs `work` for at most `HAND_BACK_GRACE`; returns whether it finished.
async fn bounded(work: impl Future<Output = ()>) -> bool {
    tokio::time::timeout(HAND_BACK_GRACE, work).await.is_ok()
}

/// Sleeps, unless `stop` fires first; returns whether it did.
async fn wait_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
