//! Telling how a guest failed (a trap, its deadline, its memory cap) in
//! words fit for a dead-letter reason, and passing its captured output on
//! to the host's log.

use tracing::{info, warn};

use crate::config::HandlerConfig;
use crate::sandbox::host::wasi::Output;
use crate::settle::Failure;
use wasmtime::Trap;

/// How much of the end of a guest's stderr a trap's reason keeps: that is
/// where a Rust panic message, a Python traceback's last line or a JS
/// error's `name: message` land.
const STDERR_TAIL: usize = 700;

/// Tells a limit from a trap, and says which in words fit for a dead-letter reason.
pub(super) fn classify(
    err: &wasmtime::Error,
    hit: Option<Failure>,
    config: &HandlerConfig,
    stderr: &[u8],
) -> (Failure, String) {
    let trap = err.downcast_ref::<Trap>().copied();
    match (hit, trap) {
        (Some(Failure::Timeout), _) => (
            Failure::Timeout,
            format!(
                "handler exceeded its timeout of {}",
                humantime::format_duration(config.timeout)
            ),
        ),
        (_, Some(Trap::OutOfFuel)) => (Failure::Timeout, "handler ran out of fuel".to_string()),
        (Some(Failure::Memory), _) => (
            Failure::Memory,
            format!(
                "handler exceeded its memory limit of {} bytes",
                config.memory
            ),
        ),
        (_, Some(Trap::StackOverflow)) => {
            (Failure::Trap, with_stderr("stack overflow".into(), stderr))
        }
        (_, Some(t)) => (Failure::Trap, with_stderr(format!("trap: {t}"), stderr)),
        // The cause first: the chain around it starts with a wasm backtrace,
        // and a reason keeps only its first kilobyte.
        (_, None) => (
            Failure::Trap,
            with_stderr(format!("{} ({err:#})", err.root_cause()), stderr),
        ),
    }
}

/// Appends the end of the guest's stderr to a trap reason.
fn with_stderr(detail: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return detail;
    }
    format!(
        "{detail}; stderr: {}",
        crate::text::tail(text, STDERR_TAIL, "…")
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_reason_keeps_the_end_of_stderr() {
        let stderr = format!("{}\nValueError: the last line", "x".repeat(2000));
        let reason = with_stderr("trap: unreachable".into(), stderr.as_bytes());
        assert!(
            reason.starts_with("trap: unreachable; stderr: …"),
            "{reason}"
        );
        assert!(reason.ends_with("ValueError: the last line"), "{reason}");
        assert!(reason.len() < 800, "{}", reason.len());
        assert_eq!(with_stderr("trap".into(), b"  \n"), "trap");
    }
}
