//! The `wharf:handler/host` imports: what a guest may ask of the host while it runs.

use std::sync::Arc;

use crate::bindings::wharf::handler::{host, types};
use crate::bindings::{Header, Level, PublishError};
use crate::config::HandlerConfig;
use crate::engine::StoreState;

/// Longest log line a guest may write; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

/// Per-handler facts the imports need, shared by every delivery's Store.
#[derive(Debug)]
pub struct HostContext {
    pub handler: Arc<HandlerConfig>,
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<(), PublishError> {
        self.outbox.push(subject, payload, headers)
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.host.handler.values.get(&key).cloned()
    }

    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let cut = floor_char_boundary(&message, MAX_LOG_LINE);
            message.truncate(cut);
            message.push('…');
        }
        if message.len() > self.log_budget {
            self.log_budget = 0;
            self.log_dropped += 1;
            return;
        }
        self.log_budget -= message.len();
        let handler = self.host.handler.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "wharf::guest", handler, "{message}"),
            Level::Debug => tracing::debug!(target: "wharf::guest", handler, "{message}"),
            Level::Info => tracing::info!(target: "wharf::guest", handler, "{message}"),
            Level::Warn => tracing::warn!(target: "wharf::guest", handler, "{message}"),
            Level::Error => tracing::error!(target: "wharf::guest", handler, "{message}"),
        }
    }
}

/// The largest index `<= max` that falls on a character boundary of `s`.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
