//! The `log` import: guest log lines into the host's log, tagged with the
//! handler (and, through the delivery span, the message), within a byte
//! budget per delivery.

use std::sync::Arc;

use crate::sandbox::bindings::Level;

/// Longest log line a guest may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

/// What one delivery may still log.
#[derive(Debug)]
pub(crate) struct LogBudget {
    handler: Arc<str>,
    cap: usize,
    /// Bytes the guest may still write in this delivery.
    left: usize,
    /// Lines dropped because the budget ran out.
    pub dropped: u64,
}

impl LogBudget {
    pub(crate) fn new(handler: Arc<str>, cap: usize) -> LogBudget {
        LogBudget {
            handler,
            cap,
            left: cap,
            dropped: 0,
        }
    }

    /// Starts the next delivery's budget (reuse mode).
    pub(crate) fn reset(&mut self) {
        self.left = self.cap;
        self.dropped = 0;
    }

    pub(crate) fn write(&mut self, level: Level, message: String) {
        let message = crate::text::head(&message, MAX_LOG_LINE, "…");
        let message = crate::text::escape_controls(&message);
        if message.len() > self.left {
            self.left = 0;
            self.dropped += 1;
            return;
        }
        self.left -= message.len();
        let handler = &*self.handler;
        match level {
            Level::Trace => tracing::trace!(target: "wharf::guest", handler, "{message}"),
            Level::Debug => tracing::debug!(target: "wharf::guest", handler, "{message}"),
            Level::Info => tracing::info!(target: "wharf::guest", handler, "{message}"),
            Level::Warn => tracing::warn!(target: "wharf::guest", handler, "{message}"),
            Level::Error => tracing::error!(target: "wharf::guest", handler, "{message}"),
        }
    }
}
