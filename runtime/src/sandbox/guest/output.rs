//! Passing a guest's captured output (stdout, stderr, and what went over
//! its caps) on to the host's log.

use tracing::{info, warn};

use crate::sandbox::host::wasi::Output;

pub(super) fn log_output(handler: &str, output: &Output, log_dropped: u64) {
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = crate::text::escape_controls(line);
        info!(target: "wharf::guest", handler, stream = "stdout", "{line}");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        let line = crate::text::escape_controls(line);
        warn!(target: "wharf::guest", handler, stream = "stderr", "{line}");
    }
    if output.dropped > 0 {
        warn!(target: "wharf::guest", handler, dropped = output.dropped, "guest output over the cap was dropped");
    }
    if log_dropped > 0 {
        warn!(target: "wharf::guest", handler, dropped = log_dropped, "guest log lines over the cap were dropped");
    }
}
