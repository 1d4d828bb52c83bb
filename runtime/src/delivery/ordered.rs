//! Ordered mode for one handler (`order_by`): one durable per partition of
//! its stream (`partition.rs`), each pulled by a loop of its own through
//! the pinned pulls of `pinned.rs`, so that one host at a time serves a
//! partition; every pulled message joins the per-key line (`order.rs`),
//! which the handler's `concurrency` workers run (`order_line.rs`). The
//! partitions share the host's bound of `concurrency + prefetch` held
//! messages. `spread.rs` watches the consumers: it opens the fence of a
//! partition this host has just taken over, keeps the metrics, and gives
//! partitions up when this host serves more than its share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::AfterDeadLetter;
use crate::delivery::binding::{self, BindError, GROUP, Seen};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::lease::Leases;
use crate::delivery::order::Item;
use crate::delivery::order_line::{self, Held, OrderLine};
use crate::delivery::partition::bind;
use crate::delivery::pull::{HAND_BACK_GRACE, bounded, run_finals, wait_or_stop};
use crate::delivery::serve::serve;
use crate::delivery::slot::{Ctx, Slot};
use crate::delivery::spread;
use crate::delivery::stopped::Stopped;

/// Runs an ordered handler until `stop` fires, then drains.
pub(crate) async fn run(
    dispatcher: Arc<Dispatcher>,
    js: jetstream::Context,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    let handler = dispatcher.handler.clone();
    let status = dispatcher.telemetry.status.clone();
    let stop = stop.child_token();
    let plan = loop {
        match bind(&js, &handler, Seen::Before).await {
            Ok(plan) => break plan,
            Err(BindError::Config(e)) => {
                status.alive.store(false, Ordering::Relaxed);
                return Err(e);
            }
            Err(BindError::Unavailable(e)) => {
                if let Some(suppressed) = dispatcher.throttle.admit("unavailable") {
                    warn!(handler = %handler.name, error = format!("{e:#}"), suppressed, "consumer unavailable; retrying");
                }
                if wait_or_stop(&stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    };
    status.bound.store(true, Ordering::Relaxed);
    let stopped = match handler.key_after_dead_letter {
        AfterDeadLetter::Stop => Stopped::new(js.clone(), handler.clone()),
        AfterDeadLetter::Continue => None,
    };
    let line = OrderLine::new(
        plan.parts.len(),
        status.clone(),
        stopped,
        handler.key_after_dead_letter,
    );
    let slots = plan
        .parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            Arc::new(Slot {
                index,
                handler: part.clone(),
                leases: Leases::in_order(js.client(), handler.ack_wait),
                pinned: AtomicBool::new(false),
                release: AtomicBool::new(false),
                cool_until: Mutex::new(None),
                asking: AtomicBool::new(false),
                fenced_at: Mutex::new(None),
                take_over: AtomicBool::new(false),
            })
        })
        .collect();
    let ctx = Arc::new(Ctx {
        places: Arc::new(Semaphore::new(handler.concurrency + handler.prefetch)),
        partitions: plan.partitions,
        dispatcher,
        handler,
        js,
        line,
        slots,
        stop,
    });
    let background = CancellationToken::new();
    for slot in &ctx.slots {
        tokio::spawn(slot.leases.clone().keep_alive(background.clone()));
    }
    tokio::spawn(spread::watch(ctx.clone(), background.clone()));
    let workers = TaskTracker::new();
    let abort = CancellationToken::new();
    for _ in 0..ctx.handler.concurrency {
        workers.spawn(order_line::work(
            ctx.dispatcher.clone(),
            ctx.line.clone(),
            ctx.stop.clone(),
            abort.clone(),
        ));
    }
    let loops = TaskTracker::new();
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    for slot in &ctx.slots {
        let (ctx, slot, failed) = (ctx.clone(), slot.clone(), failed.clone());
        loops.spawn(async move {
            if let Err(e) = serve(&ctx, &slot).await {
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
                ctx.stop.cancel();
            }
        });
    }
    loops.close();
    ctx.stop.cancelled().await;
    loops.wait().await;
    drain(&ctx, workers, abort, drain_timeout).await;
    background.cancel();
    ctx.dispatcher
        .telemetry
        .status
        .alive
        .store(false, Ordering::Relaxed);
    ctx.dispatcher
        .telemetry
        .status
        .bound
        .store(false, Ordering::Relaxed);
    let failed = failed.lock().unwrap_or_else(|e| e.into_inner()).take();
    failed.map_or(Ok(()), Err)
}

/// Hands back what waits, lets running deliveries finish for up to
/// `drain_timeout`, runs the messages on their final delivery that are
/// their key's next (a hand-back would dead-letter them unrun), hands back
/// the rest, and unpins the partitions, so another host takes them at once.
async fn drain(ctx: &Ctx, workers: TaskTracker, abort: CancellationToken, drain_timeout: Duration) {
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let max = ctx.dispatcher.current().guest.handler().max_attempts;
    let (finals, others): (Vec<_>, Vec<_>) =
        ctx.line
            .take_waiting()
            .into_iter()
            .partition(|(_, item, head)| {
                *head
                    && item
                        .value
                        .lease
                        .message()
                        .info()
                        .is_ok_and(|i| i.delivered >= i64::from(max))
            });
    let mut settled = hand_back(others).await;
    workers.close();
    let mut drained = tokio::time::timeout_at(deadline, workers.wait())
        .await
        .is_ok();
    if drained {
        let (dispatcher, line) = (ctx.dispatcher.clone(), ctx.line.clone());
        let run = move |(key, item, _), abort: CancellationToken| {
            let (dispatcher, line) = (dispatcher.clone(), line.clone());
            async move { order_line::run(&dispatcher, &line, key, item, &abort).await }
        };
        let (done, ok) = run_finals(finals, ctx.handler.concurrency, deadline, &abort, run).await;
        drained = done;
        settled &= ok;
    } else {
        settled &= hand_back(finals).await;
        abort.cancel();
        settled &= bounded(workers.wait()).await;
    }
    // Retries that came back meanwhile.
    settled &= hand_back(ctx.line.take_waiting()).await;
    if binding::pinned(&ctx.handler)
        && let Ok(stream) = ctx.js.get_stream_no_info(&ctx.handler.stream).await
    {
        for slot in ctx
            .slots
            .iter()
            .filter(|s| s.pinned.load(Ordering::Relaxed))
        {
            let _ = tokio::time::timeout(
                HAND_BACK_GRACE,
                stream.unpin_consumer(&slot.handler.consumer, GROUP),
            )
            .await;
        }
    }
    let unsettled: usize = ctx.slots.iter().map(|s| s.leases.count()).sum();
    if !drained {
        warn!(handler = %ctx.handler.name, "drain timeout; handed the rest back");
    }
    if !settled || unsettled > 0 {
        warn!(
            handler = %ctx.handler.name,
            unsettled,
            "could not hand every message back (is the server reachable?); ack_wait will redeliver them"
        );
    }
}

/// Hands messages back in the order given (lowest sequence first within a
/// partition), so that JetStream redelivers them in that order.
async fn hand_back(items: Vec<(String, Item<Held>, bool)>) -> bool {
    bounded(async {
        for (_, item, _) in items {
            item.value.lease.hand_back().await;
        }
    })
    .await
}
