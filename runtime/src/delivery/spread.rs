//! Watching an ordered handler's consumers, from JetStream's own state:
//!
//! - the fence: a partition this host has just taken over starts nothing
//!   until the consumer's unsettled messages are all held here, so that
//!   what the previous host still holds (a consumer leader change moves the
//!   pin while that host lives) settles first; then, with
//!   `key_after_dead_letter = "stop"`, the stopped keys are read back;
//! - the spread: every host keeps a request open at the server for each
//!   partition it does not serve (standby), so the requests waiting on a
//!   served partition count the other hosts; a host that serves more than
//!   its share of the partitions gives one up (`ordered::give_up`);
//! - the values telemetry reports: lag, keys waiting, the longest wait,
//!   the partitions served.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::delivery::binding;
use crate::delivery::slot::{Ctx, Slot};

/// How often a fenced partition's consumer is looked at.
const FENCE_EVERY: Duration = Duration::from_millis(250);
/// How often every partition's consumer is looked at (metrics, spread).
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How long a fence may stay up before the host says so in its log.
const FENCE_WARN: Duration = Duration::from_secs(30);

/// How many partitions a host serving `served` of `partitions` should
/// give up, when `others` other hosts wait on standby: all above its fair
/// share (the partitions split evenly, rounded up).
pub(crate) fn excess(partitions: usize, served: usize, others: usize) -> usize {
    let hosts = 1 + others;
    served.saturating_sub(partitions.div_ceil(hosts))
}

/// Watches until `stop` fires.
pub(crate) async fn watch(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = Instant::now() - WATCH_EVERY;
    // The smaller of the last two counts of other hosts, so that one
    // request caught in flight does not move a partition.
    let mut others_before = 0usize;
    let mut warned = Instant::now() - FENCE_WARN;
    let status = ctx.dispatcher.telemetry.status.clone();
    loop {
        // A scrape asks for the counts afresh (`recount`); it does not
        // move partitions sooner.
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = status.recount.notified() => true,
        };
        let full = last_full.elapsed() >= WATCH_EVERY;
        let count = full || asked;
        let mut lag = (0u64, 0u64, 0u64);
        let mut others_now = 0usize;
        for slot in &ctx.slots {
            let fenced = ctx.line.is_fenced(slot.index);
            if !fenced && !count {
                continue;
            }
            // The partition's messages waiting here, counted before asking:
            // while it is fenced none of them starts, so the count only
            // grows, and a message pulled meanwhile only makes the server's
            // count larger, which keeps the fence up. Messages running here
            // (from before the fence) count as elsewhere: they must settle
            // first too.
            let held = ctx.line.held(slot.index);
            let Some(info) = consumer_info(&ctx, slot).await else {
                continue;
            };
            if fenced {
                open_fence(&ctx, slot, held, &info, &mut warned).await;
            }
            lag.0 += info.num_pending;
            lag.1 += info.num_ack_pending as u64;
            lag.2 += info.num_redelivered as u64;
            if slot.pinned.load(Ordering::Relaxed) {
                let mine = usize::from(slot.asking.load(Ordering::Relaxed));
                others_now = others_now.max(info.num_waiting.saturating_sub(mine));
            }
        }
        report(&ctx, count.then_some(lag));
        if count {
            status.counted.send_modify(|n| *n += 1);
        }
        if full {
            last_full = Instant::now();
            spread(&ctx, others_now.min(others_before));
            others_before = others_now;
        }
    }
}

async fn consumer_info(ctx: &Ctx, slot: &Slot) -> Option<consumer::Info> {
    let stream = ctx.js.get_stream_no_info(&ctx.handler.stream).await.ok()?;
    stream.consumer_info(&slot.handler.consumer).await.ok()
}

/// Opens a fenced partition once every unsettled message of its consumer
/// waits here (none is left to settle elsewhere, or running).
async fn open_fence(
    ctx: &Ctx,
    slot: &Slot,
    held: usize,
    info: &consumer::Info,
    warned: &mut Instant,
) {
    if info.num_ack_pending > held {
        let since = *slot.fenced_at.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_some_and(|s| s.elapsed() >= FENCE_WARN) && warned.elapsed() >= FENCE_WARN {
            *warned = Instant::now();
            warn!(
                handler = %ctx.handler.name,
                partition = slot.index,
                elsewhere = info.num_ack_pending - held,
                "the partition waits for messages another host has not settled; if that host is \
                 gone, restarting this one lets JetStream redeliver them all in stream order"
            );
        }
        return;
    }
    if let Some(stopped) = &ctx.line.stopped
        && let Err(e) = stopped.load().await
    {
        debug!(handler = %ctx.handler.name, error = format!("{e:#}"), "reading stopped keys back; the partition stays fenced");
        return;
    }
    *slot.fenced_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    ctx.line.fence(slot.index, false);
    debug!(handler = %ctx.handler.name, partition = slot.index, "fence open");
}

/// Gives one partition up when this host serves more than its share.
fn spread(ctx: &Ctx, others: usize) {
    if !binding::pinned(&ctx.handler) || ctx.slots.len() < 2 {
        return;
    }
    let served: Vec<&Arc<Slot>> = ctx
        .slots
        .iter()
        .filter(|s| s.pinned.load(Ordering::Relaxed) && !s.release.load(Ordering::Relaxed))
        .collect();
    if excess(ctx.slots.len(), served.len(), others) == 0 {
        return;
    }
    if let Some(slot) = served.iter().min_by_key(|s| s.leases.count()) {
        info!(
            handler = %ctx.handler.name,
            partition = slot.index,
            served = served.len(),
            hosts = others + 1,
            "serving more than a fair share of the partitions; giving one up"
        );
        slot.release.store(true, Ordering::Relaxed);
    }
}

/// Hands the values telemetry reports over.
fn report(ctx: &Ctx, lag: Option<(u64, u64, u64)>) {
    let status = &ctx.dispatcher.telemetry.status;
    if let Some((pending, ack_pending, redelivered)) = lag {
        status.pending.store(pending, Ordering::Relaxed);
        status.ack_pending.store(ack_pending, Ordering::Relaxed);
        status.redelivered.store(redelivered, Ordering::Relaxed);
    }
    let Some(order) = &status.order else { return };
    let (keys, longest) = ctx.line.blocked();
    let served = ctx
        .slots
        .iter()
        .filter(|s| s.pinned.load(Ordering::Relaxed))
        .map(|s| s.index as u32)
        .collect();
    order.set(
        keys,
        longest,
        ctx.line.stopped.as_ref().map_or(0, |s| s.count()),
        ctx.partitions,
        served,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gives_up_what_is_above_its_fair_share() {
        // Alone, a host keeps every partition.
        assert_eq!(excess(8, 8, 0), 0);
        // Three hosts: three, three and two.
        assert_eq!(excess(8, 8, 2), 5);
        assert_eq!(excess(8, 3, 2), 0);
        assert_eq!(excess(8, 4, 2), 1);
        // More hosts than partitions: one each, the rest on standby.
        assert_eq!(excess(2, 2, 4), 1);
        assert_eq!(excess(2, 1, 4), 0);
    }
}
