//! One partition's pull loop in ordered mode: pulls while this host holds
//! the partition's pin (or waits on standby for it), renews the pin while
//! every place is taken, fences the partition when it arrives, takes over
//! what the host before left unsettled, and gives the partition up when
//! `spread` asks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tracing::{info, warn};

use crate::delivery::binding::{self, BindError, GROUP, PIN_MARGIN, Seen};
use crate::delivery::order::Item;
use crate::delivery::order_line::Held;
use crate::delivery::pinned::{Ended, Pinned};
use crate::delivery::pull::wait_or_stop;
use crate::delivery::slot::{Ctx, Slot};
use crate::delivery::stopped::first_value;

/// How often a host that holds a pin renews it while it has no room to pull.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a host that gave a partition up leaves it to the others.
const COOL_DOWN: Duration = Duration::from_secs(10);

/// One partition's loop: pulls while this host is pinned (or waits on
/// standby, its request open at the server, until the pin comes to it),
/// renews the pin while every place is taken, and gives the partition up
/// when `spread` asks. Returns an error only when the consumer can no
/// longer be bound as configured.
pub(crate) async fn serve(ctx: &Ctx, slot: &Arc<Slot>) -> anyhow::Result<()> {
    let grouped = binding::pinned(&ctx.handler);
    let mut pull = Pinned::new(
        ctx.js.clone(),
        &ctx.handler.stream,
        &slot.handler.consumer,
        grouped,
    );
    if !grouped && !wait_for_earlier(ctx, slot).await {
        return Ok(());
    }
    let mut failures = 0u32;
    while !ctx.stop.is_cancelled() {
        tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            _ = ctx.dispatcher.stalls.cleared() => {}
        }
        let cool = *slot.cool_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = cool.filter(|u| *u > Instant::now()) {
            if wait_or_stop(&ctx.stop, until - Instant::now()).await {
                break;
            }
            continue;
        }
        if slot.release.load(Ordering::Relaxed) && grouped {
            if give_up(ctx, slot, &mut pull).await {
                continue;
            }
            let _ = pull.renew().await;
            if wait_or_stop(&ctx.stop, RENEW_EVERY).await {
                break;
            }
            continue;
        }
        let want = if pull.pinned() { ctx.share() } else { 1 };
        let first = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            place = ctx.places.clone().acquire_owned() => place.expect("semaphore is never closed"),
            _ = tokio::time::sleep(RENEW_EVERY), if grouped && pull.pinned() => {
                if let Ok(Ended::PinLost) = pull.renew().await {
                    lost(ctx, slot).await;
                }
                continue;
            }
        };
        let mut reserved = vec![first];
        while reserved.len() < want
            && let Ok(place) = ctx.places.clone().try_acquire_owned()
        {
            reserved.push(place);
        }
        slot.asking.store(true, Ordering::Relaxed);
        let asked = Instant::now();
        let pulled = pull
            .pull(reserved.len(), |msg, gained| {
                if gained {
                    slot.pinned.store(true, Ordering::Relaxed);
                    ctx.fence(slot);
                    // JetStream redelivers before it delivers anything new:
                    // a partition that comes with a redelivery was left by
                    // a host that is gone (its messages passed their ack
                    // deadlines before the pin moved) or that handed them
                    // back. They are all waiting for redelivery, though not
                    // in stream order, so take them at once. One that comes
                    // with a new message may still have messages at a host
                    // that lives: they settle there.
                    if msg.info().is_ok_and(|i| i.delivered > 1) {
                        slot.take_over.store(true, Ordering::Relaxed);
                    }
                    info!(handler = %ctx.handler.name, partition = slot.index, consumer = %slot.handler.consumer, "serving the partition");
                }
                take(ctx, slot, msg, asked, reserved.pop());
            })
            .await;
        slot.asking.store(false, Ordering::Relaxed);
        drop(reserved);
        if slot.take_over.swap(false, Ordering::Relaxed) {
            take_over(ctx, slot, &mut pull).await;
        }
        match pulled {
            Ok(Ended::Done) => failures = 0,
            Ok(Ended::PinLost) => lost(ctx, slot).await,
            Err(e) => {
                failures += 1;
                if failures >= 2 {
                    warn!(handler = %ctx.handler.name, partition = slot.index, error = %e, "pulling keeps failing; binding the consumer again");
                    rebind(ctx, slot).await?;
                    failures = 0;
                }
            }
        }
    }
    Ok(())
}

/// A pulled message joins the line under its key.
fn take(
    ctx: &Ctx,
    slot: &Slot,
    msg: jetstream::Message,
    asked: Instant,
    place: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let order_by = ctx.handler.order_by.as_ref().expect("an ordered handler");
    let key = order_by.key(msg.subject.as_str(), |name| {
        msg.headers.as_ref().and_then(|h| first_value(h, name))
    });
    let Some(lease) = slot.leases.hold_asked(msg, asked) else {
        warn!(handler = %ctx.handler.name, "pulled a message without a reply subject; ignoring it");
        return;
    };
    let sequence = lease.message().info().map_or(0, |i| i.stream_sequence);
    ctx.line.join(
        key,
        Item {
            value: Held { lease, place },
            sequence,
            partition: slot.index,
            since: Instant::now(),
        },
    );
}

/// Takes what the host before left unsettled of a partition, in one pull
/// that may go beyond the bound (by at most what that host held, which
/// its own bound limited): the fence waits until all of it is here, and a
/// host whose places are taken could not pull it otherwise.
async fn take_over(ctx: &Ctx, slot: &Slot, pull: &mut Pinned) {
    let Ok(stream) = ctx.js.get_stream_no_info(&ctx.handler.stream).await else {
        return;
    };
    let Ok(info) = stream.consumer_info(&slot.handler.consumer).await else {
        return;
    };
    let missing = info
        .num_ack_pending
        .saturating_sub(ctx.line.held(slot.index))
        .min(ctx.handler.concurrency + ctx.handler.prefetch);
    if missing == 0 {
        return;
    }
    let asked = Instant::now();
    if let Ok(Ended::PinLost) = pull
        .pull(missing, |msg, _| take(ctx, slot, msg, asked, None))
        .await
    {
        lost(ctx, slot).await;
    }
}

/// The server moved the partition to another host: this host finishes
/// what it holds (the other one is fenced until then) and waits on
/// standby. If the partition was still fenced here, nothing of what this
/// host holds of it has started, and the other host's fence waits for it
/// while this one waits for the other's: the host hands it back instead,
/// in stream order.
async fn lost(ctx: &Ctx, slot: &Slot) {
    if slot.pinned.swap(false, Ordering::Relaxed) {
        info!(handler = %ctx.handler.name, partition = slot.index, "the partition moved to another host");
    }
    if ctx.line.is_fenced(slot.index) {
        for item in ctx.line.take_partition(slot.index) {
            item.value.lease.hand_back().await;
        }
        *slot.fenced_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        ctx.line.fence(slot.index, false);
    }
}

/// Gives the partition up once nothing of it is held here: unpins it, so
/// that a host waiting on standby takes it at once, and leaves it alone
/// for a while. Returns whether it did.
async fn give_up(ctx: &Ctx, slot: &Slot, pull: &mut Pinned) -> bool {
    if slot.leases.count() > 0 {
        return false;
    }
    if let Ok(stream) = ctx.js.get_stream_no_info(&ctx.handler.stream).await
        && stream
            .unpin_consumer(&slot.handler.consumer, GROUP)
            .await
            .is_ok()
    {
        pull.unpinned();
        slot.pinned.store(false, Ordering::Relaxed);
        slot.release.store(false, Ordering::Relaxed);
        *slot.cool_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + COOL_DOWN);
        info!(handler = %ctx.handler.name, partition = slot.index, "gave the partition up to spread the partitions between the hosts");
        return true;
    }
    false
}

/// Binds the partition's consumer again after failed pulls.
async fn rebind(ctx: &Ctx, slot: &Slot) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    loop {
        match binding::consumer(&ctx.js, &slot.handler, Seen::Before).await {
            Ok(_) => return Ok(()),
            Err(BindError::Config(e)) => return Err(e),
            Err(BindError::Unavailable(e)) => {
                if let Some(suppressed) = ctx.dispatcher.throttle.admit("unavailable") {
                    warn!(handler = %ctx.handler.name, partition = slot.index, error = format!("{e:#}"), suppressed, "consumer unavailable; retrying");
                }
            }
        }
        if wait_or_stop(&ctx.stop, delay).await {
            return Ok(());
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Without priority groups (`single_host`), a host that starts while an
/// earlier run's messages are still unsettled waits until they have passed
/// their ack deadline, so that JetStream redelivers them before anything
/// new, and fences the partition until they are all here, sorted per key.
/// Returns false if `stop` fired meanwhile.
async fn wait_for_earlier(ctx: &Ctx, slot: &Slot) -> bool {
    slot.pinned.store(true, Ordering::Relaxed);
    ctx.fence(slot);
    slot.take_over.store(true, Ordering::Relaxed);
    let pending = match ctx.js.get_stream_no_info(&ctx.handler.stream).await {
        Ok(stream) => stream
            .consumer_info(&slot.handler.consumer)
            .await
            .map_or(0, |i| i.num_ack_pending),
        Err(_) => 0,
    };
    if pending == 0 {
        return true;
    }
    let wait = ctx.handler.ack_wait + PIN_MARGIN;
    info!(handler = %ctx.handler.name, partition = slot.index, pending, wait = %humantime::format_duration(wait), "messages of an earlier run are unsettled; waiting for them to come back first");
    !wait_or_stop(&ctx.stop, wait).await
}
