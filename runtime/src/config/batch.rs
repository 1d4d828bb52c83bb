//! A handler's `batch` table: how many messages one call of a batch
//! handler's `handle-batch` gets, how long the host waits to fill a batch,
//! and whether a failed batch is split to find the message that failed it.

use std::time::Duration;

use serde::Deserialize;

use super::units::{DurationText, parse_duration};
use super::{ConfigError, Site};

/// The most messages one batch may hold: a batch's messages are in guest
/// memory together, and each may stage its own outbox and writes in the host.
pub const MAX_BATCH_MESSAGES: usize = 1000;

/// The longest `max_wait`: messages waiting for a batch to fill are held
/// (and kept alive) by the host, not running.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(300);

/// How a batch handler's messages are gathered and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most messages one call of `handle-batch` gets.
    pub max_messages: usize,
    /// How long the host waits, from a batch's first message, for more
    /// messages to fill it; then it runs what it has.
    pub max_wait: Duration,
    /// After a batch fails as a whole (a trap, a timeout, the memory cap, a
    /// result list of the wrong length), run its messages again in halves,
    /// within the same delivery, until the message that fails is alone.
    pub bisect: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    max_messages: Option<usize>,
    max_wait: Option<DurationText>,
    bisect: Option<bool>,
}

pub(super) fn validate(site: &Site<'_>, raw: RawBatch) -> Result<BatchConfig, ConfigError> {
    let max_messages = raw.max_messages.ok_or_else(|| {
        site.err(
            "batch.max_messages",
            "missing: say how many messages one call of handle-batch gets, e.g. 64",
        )
    })?;
    if max_messages == 0 || max_messages > MAX_BATCH_MESSAGES {
        return Err(site.err(
            "batch.max_messages",
            format!("must be between 1 and {MAX_BATCH_MESSAGES}"),
        ));
    }
    let max_wait = match raw.max_wait.as_deref() {
        None => {
            return Err(site.err(
                "batch.max_wait",
                "missing: say how long to wait for a batch to fill, e.g. \"50ms\"",
            ));
        }
        Some(s) => parse_duration(s).map_err(|e| site.err("batch.max_wait", e))?,
    };
    if max_wait > MAX_BATCH_WAIT {
        return Err(site.err("batch.max_wait", "must be at most 5m"));
    }
    Ok(BatchConfig {
        max_messages,
        max_wait,
        bisect: raw.bisect.unwrap_or(true),
    })
}

impl super::HandlerConfig {
    /// The most messages one host holds for the handler: those running (in
    /// `concurrency` deliveries, or batches of up to `max_messages`) and
    /// the `prefetch` line.
    pub fn held(&self) -> usize {
        self.concurrency * self.batch.map_or(1, |b| b.max_messages) + self.prefetch
    }

    /// How many places must be free before another pull goes out while one
    /// is being read: half the bound, or a batch's worth if that is less,
    /// so that a batch that settles refills the line at once instead of
    /// waiting for the next one to settle too.
    pub fn pull_at(&self) -> usize {
        let half = self.held() / 2;
        self.batch.map_or(half, |b| b.max_messages.min(half)).max(1)
    }
}
