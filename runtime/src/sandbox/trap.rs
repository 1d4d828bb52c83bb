//! What a failed guest call was, in words a person can act on: a trap, a
//! timeout or the memory cap, told apart by the limiter's and the
//! deadline's records, and for a trap a reason that starts with what the
//! guest said last (a Rust panic's message and place, a Python or
//! JavaScript error's last line), then the wasm detail, then the end of
//! the guest's stderr, within the reason's limit.

use wasmtime::Trap;

use crate::config::HandlerConfig;
use crate::settle::{Failure, MAX_REASON_BYTES};

/// The longest headline a reason starts with.
const HEADLINE: usize = 300;
/// The most of the end of a guest's stderr a reason keeps after its
/// headline and detail.
const STDERR_TAIL: usize = 700;
/// Below this, the end of stderr says too little to be worth a place.
const MIN_TAIL: usize = 40;

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
        (_, Some(Trap::StackOverflow)) => (Failure::Trap, reason("stack overflow", stderr)),
        (_, Some(t)) => {
            let t = t.to_string();
            let t = t.strip_prefix("wasm trap: ").unwrap_or(&t);
            (Failure::Trap, reason(&format!("trap: {t}"), stderr))
        }
        // The cause first: the chain around it starts with a wasm backtrace,
        // and a reason keeps only its first kilobyte.
        (_, None) => (
            Failure::Trap,
            reason(&format!("{} ({err:#})", err.root_cause()), stderr),
        ),
    }
}

/// A trap's reason: `<headline>; <detail>; stderr: …<end of stderr>`, the
/// headline being what the guest said last, and the end of stderr leaving
/// out the lines the headline came from.
pub(super) fn reason(detail: &str, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some((headline, rest)) = headline(&text) else {
        return detail.to_string();
    };
    let headline = crate::text::head(&headline, HEADLINE, "…");
    let reason = format!("{headline}; {detail}");
    let room = MAX_REASON_BYTES
        .saturating_sub(reason.len() + "; stderr: ".len())
        .min(STDERR_TAIL);
    let rest = rest.trim();
    if rest.is_empty() || room < MIN_TAIL {
        return reason;
    }
    format!("{reason}; stderr: {}", crate::text::tail(rest, room, "…"))
}

/// What the guest said last, and the stderr before it: a Rust panic's
/// message with its place (`boom (at src/lib.rs:7:5)`), else the last
/// line that is not empty (a Python traceback's or a JavaScript error's
/// `Name: message`).
fn headline(stderr: &str) -> Option<(String, &str)> {
    let lines: Vec<&str> = stderr.lines().collect();
    // std's panic output: "thread '…' (id) panicked at <place>:", the
    // message, then a note on backtraces.
    if let Some(at) = lines
        .iter()
        .rposition(|l| l.starts_with("thread '") && l.contains(" panicked at "))
    {
        let place = lines[at]
            .split_once(" panicked at ")
            .map(|(_, p)| p.trim_end_matches(':'))
            .unwrap_or_default();
        let message: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note: "))
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if !message.is_empty() {
            let before = line_start(stderr, &lines, at);
            return Some((
                format!("{} (at {place})", message.join(" ")),
                &stderr[..before],
            ));
        }
    }
    let last = lines.iter().rposition(|l| !l.trim().is_empty())?;
    let before = line_start(stderr, &lines, last);
    Some((lines[last].trim().to_string(), &stderr[..before]))
}

/// Where line `i` of `lines` (from `text.lines()`) starts in `text`.
fn line_start(text: &str, lines: &[&str], i: usize) -> usize {
    lines[i].as_ptr() as usize - text.as_ptr() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_comes_first_and_the_end_of_stderr_last() {
        let stderr = format!(
            "Traceback (most recent call last):\n{}  File \"handler.py\", line 8\nKeyError: 'amount' (at handler.py:8)\n",
            "  x\n".repeat(500)
        );
        let r = reason(
            "trap: wasm `unreachable` instruction executed",
            stderr.as_bytes(),
        );
        assert!(
            r.starts_with(
                "KeyError: 'amount' (at handler.py:8); trap: wasm `unreachable` instruction \
                 executed; stderr: …"
            ),
            "{r}"
        );
        assert!(r.ends_with("File \"handler.py\", line 8"), "{r}");
        assert!(r.len() <= MAX_REASON_BYTES, "{}", r.len());
        assert_eq!(reason("trap", b"  \n"), "trap");
        assert_eq!(reason("trap", b"TypeError: x\n"), "TypeError: x; trap");
    }

    #[test]
    fn a_rust_panic_reads_as_its_message_and_place() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:37:20:\n\
            fixture panicked on purpose\n\
            note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            reason("trap: wasm `unreachable` instruction executed", stderr),
            "fixture panicked on purpose (at src/lib.rs:37:20); trap: wasm `unreachable` \
             instruction executed"
        );
        let logged = b"starting\nthread 'main' (1) panicked at src/main.rs:2:5:\nno\n";
        assert_eq!(
            reason("trap", logged),
            "no (at src/main.rs:2:5); trap; stderr: starting"
        );
    }

    #[test]
    fn a_long_last_line_is_cut_and_the_reason_fits() {
        let stderr = format!("{}\n{}\n", "y".repeat(2000), "E".repeat(5000));
        let r = reason("trap: x", stderr.as_bytes());
        assert!(r.starts_with(&"E".repeat(100)), "{r}");
        assert!(r.contains("…; trap: x; stderr: …yyy"), "{r}");
        assert!(r.len() <= MAX_REASON_BYTES, "{}", r.len());
    }
}
